"""Least privilege on Kafka: what each role may do, as ACLs for KRaft's StandardAuthorizer.

The broker allows nothing without an ACL (``allow.everyone.if.no.acl.found=false``); ``admin``
and the broker's own certificate are the only super users. Grants follow the data path:

- edge: write frame references, the frame ledger and the receipts of blobs its sweeper deletes;
  it can read nothing, so a stolen edge credential reveals no one's frames or counts.
- processor: read frame references; write group cells, exact demographics and crossings
  (restricted), receipts and dead letters.
- aggregator: read the restricted cells and its own partials and snapshots; write partials,
  snapshots, the published components and dead letters.
- sink: read the published components, receipts and the ledger; write dead letters.
- exporter: describe topics, their configurations and the processor's group (offsets, lag),
  and read the raw and restricted topics to time their oldest record: Kafka has no request
  that returns a partition's oldest timestamp, and the value is dropped unread.
- simulator: write what processors write (it stands in for them in benches and tests).

Topic names and group ids come from the settings, so a deployment or a test with its own
names gets grants for exactly those.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from pipeline.settings import KafkaRole, Settings

CLIENT_ROLES: tuple[KafkaRole, ...] = ("edge", "processor", "aggregator", "sink", "exporter", "simulator")


@dataclass(frozen=True, order=True)
class Grant:
    role: str
    resource: str        # topic | group | cluster
    name: str
    operation: str       # READ | WRITE | DESCRIBE | DESCRIBE_CONFIGS | IDEMPOTENT_WRITE
    prefixed: bool = False


def _topics(s: Settings, *roles: str) -> list[str]:
    return [getattr(s.kafka, f"{r}_topic") for r in roles]


def acl_policy(s: Settings) -> list[Grant]:
    """Every grant the roles need, derived from the settings' topic names and group ids."""
    g: list[Grant] = []

    def topics(role: str, op: str, names: Iterable[str]) -> None:
        g.extend(Grant(role, "topic", n, op) for n in names)

    # Idempotent producers (every writer) need IDEMPOTENT_WRITE on the cluster.
    for role in ("edge", "processor", "aggregator", "sink", "simulator"):
        g.append(Grant(role, "cluster", "kafka-cluster", "IDEMPOTENT_WRITE"))

    topics("edge", "WRITE", _topics(s, "frame_refs", "ledger", "receipts"))

    topics("processor", "READ", _topics(s, "frame_refs"))
    topics("processor", "WRITE", _topics(s, "occurrences", "demographics", "crossings", "receipts", "dead_letter"))
    g.append(Grant("processor", "group", s.processor.app_id, "READ"))

    restricted_in = ("occurrences", "demographics", "crossings")
    own = ("partials", "partitions_changelog", "combiner_changelog", "demographics_changelog", "crossings_changelog")
    published = ("flow_components", "footfall_components", "demographic_components", "crossing_components")
    topics("aggregator", "READ", _topics(s, *restricted_in, *own))
    topics("aggregator", "WRITE", _topics(s, *own, *published, "dead_letter"))
    # its consumer groups: <app_id>-partitions, -combiner, -demographics, -crossings; snapshot
    # restores use throw-away groups restore-<uuid> (assign only, nothing committed)
    g.append(Grant("aggregator", "group", f"{s.aggregator.app_id}-", "READ", prefixed=True))
    g.append(Grant("aggregator", "group", "restore-", "READ", prefixed=True))

    topics("sink", "READ", _topics(s, *published, "receipts", "ledger"))
    topics("sink", "WRITE", _topics(s, "dead_letter"))
    g.append(Grant("sink", "group", s.sink.group_id, "READ"))

    every = sorted({v for k, v in s.kafka.model_dump().items() if k.endswith("_topic")})
    topics("exporter", "DESCRIBE", every)
    topics("exporter", "DESCRIBE_CONFIGS", every)
    topics("exporter", "READ", _topics(s, "frame_refs", "occurrences", "demographics", "crossings", "partials",
                                       *own))
    g.append(Grant("exporter", "group", s.processor.app_id, "DESCRIBE"))
    g.append(Grant("exporter", "group", "flowpipe-exporter-", "READ", prefixed=True))
    g.append(Grant("exporter", "group", "flowpipe-lag-", "READ", prefixed=True))

    topics("simulator", "WRITE", _topics(s, "occurrences", "demographics", "crossings"))
    return sorted(set(g))


def _binding(gr: Grant) -> Any:
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    rtype = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}[gr.resource]
    pattern = ResourcePatternType.PREFIXED if gr.prefixed else ResourcePatternType.LITERAL
    return AclBinding(rtype, gr.name, pattern, f"User:{gr.role}", "*", AclOperation[gr.operation],
                      AclPermissionType.ALLOW)


def apply_acls(admin: Any, grants: list[Grant], timeout: float = 30) -> int:
    """Create the grants (creating an existing ACL is a no-op on the broker) and wait until the
    broker reports them: KRaft publishes ACL changes asynchronously, and a client that starts
    right after would otherwise be refused. Returns how many."""
    if not grants:
        return 0
    futures = admin.create_acls([_binding(gr) for gr in grants], request_timeout=timeout)
    for f in futures.values():
        f.result(timeout=timeout)
    want = {_key(_binding(gr)) for gr in grants}
    deadline = time.monotonic() + timeout
    while True:
        have = {_key(b) for b in _all_acls(admin, timeout)}
        missing = want - have
        if not missing:
            return len(grants)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} ACLs not visible on the broker after {timeout:.0f} s, e.g. {sorted(missing)[0]}")
        time.sleep(0.2)


def _key(b: Any) -> tuple:
    return (str(b.restype), b.name, str(b.resource_pattern_type), b.principal, str(b.operation))


def _all_acls(admin: Any, timeout: float) -> list:
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                         AclPermissionType.ANY)
    return admin.describe_acls(f, request_timeout=timeout).result(timeout=timeout)


def remove_acls(admin: Any, grants: list[Grant], timeout: float = 30) -> None:
    """Delete exactly these grants (a test's own topics, when it tears them down)."""
    from confluent_kafka.admin import AclBindingFilter

    filters = []
    for gr in grants:
        b = _binding(gr)
        filters.append(AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                        b.operation, b.permission_type))
    if filters:
        for f in admin.delete_acls(filters, request_timeout=timeout).values():
            f.result(timeout=timeout)


__all__ = ["Grant", "acl_policy", "apply_acls", "remove_acls", "CLIENT_ROLES"]
