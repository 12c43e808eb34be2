"""Declarative topic policy: load it, apply it to a broker, and report drift.

Raw-data topics are where personal data could linger, so their limits are checked when the
policy is loaded (a policy that breaks them is refused) and again against the live broker.
Restricted topics carry pseudonymous data (per-window group cells: linkable by design, issue
11) that lives only as long as the flow aggregator needs it; they get the same enforcement
with their own, longer limits (worst record age under two hours).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from pipeline.settings import REPO_ROOT

DEFAULT_POLICY = REPO_ROOT / "infra" / "topics.yaml"


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: str
    raw: bool
    partitions: int
    config: dict[str, str]
    restricted: bool = False

    @property
    def tier(self) -> str:
        return "raw" if self.raw else "restricted" if self.restricted else "other"


@dataclass(frozen=True)
class Policy:
    topics: tuple[TopicSpec, ...]
    max_retention_ms: int
    max_segment_ms: int
    restricted_max_retention_ms: int = 6_000_000
    restricted_max_segment_ms: int = 600_000
    # Durability: every topic gets this many replicas and refuses writes (acks=all) when fewer
    # than min_insync_replicas are in sync; 1/1 on the single-broker development stack, 3/2 on a
    # cluster (kafka.replication_factor, kafka.min_insync_replicas).
    replication_factor: int = 1
    min_insync_replicas: int = 1

    def limits(self, spec: TopicSpec) -> tuple[int, int] | None:
        """(max retention ms, max segment ms) for a raw or restricted topic, None otherwise."""
        if spec.raw:
            return self.max_retention_ms, self.max_segment_ms
        if spec.restricted:
            return self.restricted_max_retention_ms, self.restricted_max_segment_ms
        return None

    def config_of(self, spec: TopicSpec) -> dict[str, str]:
        """The topic's configuration including the policy's durability setting."""
        return {**spec.config, "min.insync.replicas": str(self.min_insync_replicas)}

    def renamed(self, names: dict[str, str]) -> "Policy":
        """Same policy with topics renamed by role (tests use per-test topic names)."""
        return replace(self, topics=tuple(replace(t, name=names.get(t.role, t.name)) for t in self.topics))


@dataclass
class Finding:
    topic: str
    severity: str  # "violation" | "drift" | "info"
    message: str


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]

    @property
    def ok(self) -> bool:
        return not self.violations


def load_policy(path: Path = DEFAULT_POLICY) -> Policy:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PolicyError(f"cannot read topic policy {path}: {e}") from e
    limits = doc.get("raw_limits", {})
    max_ret, max_seg = int(limits.get("max_retention_ms", 60000)), int(limits.get("max_segment_ms", 10000))
    rlim = doc.get("restricted_limits", {})
    r_ret, r_seg = int(rlim.get("max_retention_ms", 6_000_000)), int(rlim.get("max_segment_ms", 600_000))
    specs = []
    for i, t in enumerate(doc.get("topics", [])):
        unknown = set(t) - {"name", "role", "raw", "restricted", "partitions", "config"}
        if unknown:
            raise PolicyError(f"{path}: topics[{i}] has unknown keys {sorted(unknown)}")
        try:
            spec = TopicSpec(str(t["name"]), str(t["role"]), bool(t["raw"]), int(t["partitions"]),
                             {str(k): str(v) for k, v in (t.get("config") or {}).items()},
                             bool(t.get("restricted", False)))
        except KeyError as e:
            raise PolicyError(f"{path}: topics[{i}] lacks {e}") from None
        if spec.raw and spec.restricted:
            raise PolicyError(f"{path}: topic {spec.name} is declared both raw and restricted; choose one")
        lim = (max_ret, max_seg) if spec.raw else (r_ret, r_seg) if spec.restricted else None
        if lim:
            problems = raw_problems(spec.config, *lim)
            if problems:
                raise PolicyError(f"{path}: {spec.tier} topic {spec.name} breaks the {spec.tier}-data limits: "
                                  f"{'; '.join(problems)}")
        specs.append(spec)
    return Policy(tuple(specs), max_ret, max_seg, r_ret, r_seg)


def raw_problems(config: dict[str, str], max_retention_ms: int, max_segment_ms: int) -> list[str]:
    out = []
    ret = int(config.get("retention.ms", "604800000"))
    seg = int(config.get("segment.ms", "604800000"))
    if ret < 0 or ret > max_retention_ms:
        out.append(f"retention.ms={ret} exceeds {max_retention_ms}")
    if seg > max_segment_ms:
        out.append(f"segment.ms={seg} exceeds {max_segment_ms}")
    if "compact" in config.get("cleanup.policy", "delete"):
        out.append(f"cleanup.policy={config.get('cleanup.policy')} keeps records past retention")
    return out


def admin_client(settings: Any, role: str = "admin") -> AdminClient:
    """An admin client authenticated as ``role`` (pipeline.ops.kafka_clients)."""
    from pipeline.ops.kafka_clients import client_config

    return AdminClient(client_config(settings, role, **{"socket.timeout.ms": 10000}))


def wait_for_group(admin: AdminClient, group_id: str, timeout: float, alive: Any = None, members: int = 1) -> float:
    """Wait until consumer group ``group_id`` is stable with ``members`` members; returns the
    seconds waited. Why: a processor loads its models before it joins its group, so frames sent
    before then queue for seconds and the latency audit reports the start-up, not the pipeline
    (the demo's p99 of ~3 s). ``alive``: a callable that is False once the member's process died
    (then this raises at once instead of waiting out the timeout)."""
    from confluent_kafka import ConsumerGroupState

    t0 = time.monotonic()
    while True:
        try:
            g = admin.describe_consumer_groups([group_id])[group_id].result(10)
            if g.state == ConsumerGroupState.STABLE and len(g.members) >= members:
                return time.monotonic() - t0
        except KafkaException:
            pass   # not known yet
        if alive is not None and not alive():
            raise RuntimeError(f"the member of consumer group {group_id!r} exited before joining it")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"consumer group {group_id!r} had no stable member after {timeout:.0f} s")
        time.sleep(0.5)


def _describe(admin: AdminClient, names: list[str], wait: float = 15.0) -> dict[str, dict[str, str]]:
    """Each topic's configuration. A topic just created may be unknown to the broker that
    answers for a moment (KRaft publishes metadata to each broker asynchronously; on a cluster
    an audit right after `apply` hit this): asked again for up to ``wait`` seconds."""
    out: dict[str, dict[str, str]] = {}
    todo = list(names)
    deadline = time.monotonic() + wait
    while todo:
        res = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in todo]
        todo = []
        for r, fut in admin.describe_configs(res).items():
            try:
                out[r.name] = {k: v.value for k, v in fut.result(timeout=15).items()}
            except KafkaException as e:
                if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                    raise
                todo.append(r.name)
        if todo:
            time.sleep(0.2)
    return out


def apply_policy(admin: AdminClient, policy: Policy, timeout: float = 30.0) -> list[str]:
    """Create missing topics and alter configs to match; returns human-readable actions."""
    actions: list[str] = []
    md = admin.list_topics(timeout=timeout)
    missing = [t for t in policy.topics if t.name not in md.topics]
    if missing:
        futs = admin.create_topics(
            [NewTopic(t.name, num_partitions=t.partitions, replication_factor=policy.replication_factor,
                      config=policy.config_of(t)) for t in missing],
            operation_timeout=timeout,
        )
        for name, fut in futs.items():
            try:
                fut.result()
                actions.append(f"created {name}")
            except KafkaException as e:
                if e.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a concurrent apply won
                    raise
    existing = [t for t in policy.topics if t not in missing]
    current = _describe(admin, [t.name for t in existing])
    for t in existing:
        diff = {k: v for k, v in policy.config_of(t).items() if current[t.name].get(k) != v}
        if diff:
            res = ConfigResource(ConfigResource.Type.TOPIC, t.name, incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in diff.items()])
            for fut in admin.incremental_alter_configs([res]).values():
                fut.result(timeout=timeout)
            actions.append(f"altered {t.name}: " + ", ".join(f"{k}={v}" for k, v in diff.items()))
        have = len(md.topics[t.name].partitions)
        if have < t.partitions:
            for fut in admin.create_partitions([NewPartitions(t.name, t.partitions)]).values():
                fut.result(timeout=timeout)
            actions.append(f"grew {t.name} from {have} to {t.partitions} partitions")
    return actions


def audit(admin: AdminClient, policy: Policy, timeout: float = 30.0, ignore_prefixes: tuple[str, ...] = ("__",)) -> AuditReport:
    """Compare the broker with the policy, including topics nobody declared."""
    rep = AuditReport()
    md = admin.list_topics(timeout=timeout)
    declared = {t.name: t for t in policy.topics}
    live = [n for n in md.topics if not n.startswith(ignore_prefixes)]
    current = _describe(admin, live)
    for name in sorted(live):
        cfg = current[name]
        spec = declared.get(name)
        if spec is None:
            rep.findings.append(Finding(name, "violation", "undeclared topic: not in the topic policy, so nobody vouches for its retention"))
            continue
        lim = policy.limits(spec)
        for k, v in policy.config_of(spec).items():
            if cfg.get(k) != v:
                sev = "violation" if lim or k == "min.insync.replicas" else "drift"
                rep.findings.append(Finding(name, sev, f"{k} is {cfg.get(k)!r}, policy says {v!r}"))
        # Replication: fewer replicas than the policy can lose acknowledged data with one broker;
        # replicas out of sync are reported while they catch up.
        for pid, part in sorted(md.topics[name].partitions.items()):
            if len(part.replicas) < policy.replication_factor:
                rep.findings.append(Finding(name, "violation", f"partition {pid} has {len(part.replicas)} replica(s), "
                                                               f"policy says {policy.replication_factor}"))
            elif len(part.isrs) < len(part.replicas):
                rep.findings.append(Finding(name, "drift", f"partition {pid}: {len(part.isrs)} of "
                                                           f"{len(part.replicas)} replicas in sync"))
        if lim:
            for p in raw_problems(cfg, *lim):
                rep.findings.append(Finding(name, "violation", f"{spec.tier} topic: {p}"))
        have = len(md.topics[name].partitions)
        if have != spec.partitions:
            rep.findings.append(Finding(name, "drift", f"{have} partitions, policy says {spec.partitions}"))
    for name, spec in declared.items():
        if name not in md.topics:
            rep.findings.append(Finding(name, "drift", "declared but missing on the broker (run `flowctl topics apply`)"))
    return rep


def policy_for_settings(settings: Any, path: Path = DEFAULT_POLICY) -> Policy:
    """The policy with topic names taken from settings (kafka.<role>_topic), if set."""
    pol = load_policy(path)
    names = {}
    for t in pol.topics:
        attr = f"{t.role}_topic"
        if hasattr(settings.kafka, attr):
            names[t.role] = getattr(settings.kafka, attr)
    k = settings.kafka
    return replace(pol.renamed(names), replication_factor=k.replication_factor,
                   min_insync_replicas=k.min_insync_replicas)
