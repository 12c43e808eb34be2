import contextlib
import subprocess
import sys
import uuid

import time

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from pipeline.envelope import ensure_keypair
from pipeline.privacy.deployment import ensure_deployment_params
from pipeline.privacy.release import ensure_noise_key
from pipeline.ops.topics import admin_client, apply_policy, policy_for_settings
from pipeline.settings import REPO_ROOT, Settings, load_settings, settings_as_env
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.migrations import migrate
from pipeline.ops.local_grants import clickhouse_grants
from tests.sample_data import footage_path
from pipeline.ops.acls import acl_policy, apply_acls, remove_acls
from pipeline.ops.kafka_clients import client_config


@pytest.fixture(scope="session")
def footage():
    return footage_path()


def _isolated_topics(s: Settings) -> None:
    """Every topic a test touches must be its own: the teardown deletes them."""
    defaults = Settings().kafka
    for name, value in s.kafka.model_dump().items():
        if name.endswith("_topic"):
            assert value != getattr(defaults, name), f"test settings reuse the shared topic {value}"


@pytest.fixture()
def env(stack, tmp_path):
    """Settings isolated per test: fresh topics, ClickHouse database, keys and frame store."""
    with isolated_settings(tmp_path) as s:
        yield s


@contextlib.contextmanager
def isolated_settings(tmp_path, keys_dir=None):
    """A test's own topics, ClickHouse database, frame store and (unless ``keys_dir`` is given:
    a second deployment sharing the first one's keys, noise key and privacy parameters, for
    comparing two runs exactly) keys; everything is removed at exit."""
    tag = uuid.uuid4().hex[:8]
    base = load_settings()
    s = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={
            "frame_refs_topic": f"t{tag}.frames.refs",
            "occurrences_topic": f"t{tag}.flow.group-occurrences",
            "demographics_topic": f"t{tag}.flow.demographic-counts",
            "crossings_topic": f"t{tag}.flow.line-crossings",
            "receipts_topic": f"t{tag}.ops.deletion-receipts",
            "dead_letter_topic": f"t{tag}.ops.dead-letters",
            "ledger_topic": f"t{tag}.ops.frame-ledger",
            "partials_topic": f"t{tag}.flow.aggregator-partials",
            "partitions_changelog_topic": f"t{tag}.flow.aggregator-partitions-changelog",
            "combiner_changelog_topic": f"t{tag}.flow.aggregator-combiner-changelog",
            "flow_components_topic": f"t{tag}.flow.flow-components",
            "footfall_components_topic": f"t{tag}.flow.footfall-components",
            "demographics_changelog_topic": f"t{tag}.flow.aggregator-demographics-changelog",
            "crossings_changelog_topic": f"t{tag}.flow.aggregator-crossings-changelog",
            "demographic_components_topic": f"t{tag}.flow.demographic-components",
            "crossing_components_topic": f"t{tag}.flow.crossing-components",
        }),
        "aggregator": base.aggregator.model_copy(update={"app_id": f"agg-{tag}", "window_seconds": 10}),
        "clickhouse": base.clickhouse.model_copy(update={"database": f"test_{tag}"}),
        "store": base.store.model_copy(update={"url": (tmp_path / f"frames-{tag}").as_uri()}),
        "keys": base.keys.model_copy(update={"dir": keys_dir or tmp_path / "keys"}),
        "processor": base.processor.model_copy(update={"app_id": f"proc-{tag}", "window_seconds": 10,
                                                        "idle_flush_seconds": 2.0}),
        "sink": base.sink.model_copy(update={"group_id": f"sink-{tag}", "batch_max_seconds": 0.5}),
    })
    _isolated_topics(s)
    ensure_keypair(s.keys.dir)
    ensure_deployment_params(s.keys.dir)  # a secret parameter set, as `flowctl keys init` makes
    ensure_noise_key(s.keys.dir)
    admin = admin_client(s)
    apply_policy(admin, policy_for_settings(s))
    grants = acl_policy(s) if s.kafka.security_protocol == "SASL_SSL" else []
    apply_acls(admin, grants)   # each role's rights on this test's own topics and groups
    wh = ServerWarehouse(s.clickhouse, role="admin")
    migrate(wh)
    with clickhouse_grants(s.clickhouse.database):
        yield s
    wh.execute(f"DROP DATABASE IF EXISTS {s.clickhouse.database}")
    # only this test's own grants: the stack-wide ones (cluster, shared prefixes, the default
    # topics) stay for everything else
    remove_acls(admin, sorted(set(grants) - set(acl_policy(Settings()))))
    futs = admin.delete_topics([t.name for t in policy_for_settings(s).topics], operation_timeout=30)
    for f in futs.values():
        try:
            f.result()
        except Exception:
            pass


def settings_env(s: Settings) -> dict[str, str]:
    """The same settings as FLOW_* environment variables, for flowctl subprocesses."""
    return settings_as_env(s)


def flowctl(s: Settings, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=settings_env(s), capture_output=True,
                       text=True, timeout=timeout, cwd=REPO_ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"flowctl {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def past_window_start(window_seconds: float, duration_seconds: float):
    """The start of the latest window of ``window_seconds`` that a replay of ``duration_seconds``
    fits into entirely in the past: frames are never sent before their capture time (the
    processor refuses capture times ahead of the broker's clock), so a replay starting at the
    current window would have to wait for its frames' times to come."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).timestamp()
    start = now - now % window_seconds
    while start + duration_seconds > now:
        start -= window_seconds
    return datetime.fromtimestamp(start, tz=timezone.utc)


def read_topic(s: Settings, topic: str, max_wait: float = 60.0) -> list:
    """Every record on ``topic`` up to each partition's high watermark at the time of the call.

    Evidence by offsets, not by silence: "nothing arrived" is a statement about the watermarks
    (the producers under test have flushed and exited), not about 3 quiet seconds. A partition
    that ends in a transaction marker reports end-of-partition instead of a last record."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({**client_config(s, "admin"), "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True,
                  "isolation.level": "read_committed",
                  # a reader closed before its group coordinator connection finished the SASL
                  # handshake logs a harmless transport error; real errors surface as exceptions
                  "log_level": 2})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        todo = {p for p, (lo, hi) in ends.items() if hi > lo}
        c.assign([TopicPartition(topic, p, ends[p][0]) for p in sorted(todo)])
        out, deadline = [], time.monotonic() + max_wait
        while todo:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: partitions {sorted(todo)} not read to their end in {max_wait} s")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(m.partition())
                continue
            if m.offset() < ends[m.partition()][1]:
                out.append(m)
            if m.offset() >= ends[m.partition()][1] - 1:
                todo.discard(m.partition())
        return out
    finally:
        c.close()


def set_config(admin, topic, **cfg):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET) for k, v in cfg.items()])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(timeout=10)
    # KRaft publishes config changes asynchronously: wait until the broker reports them
    want = {k.replace("_", "."): v for k, v in cfg.items()}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        fut = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        cur = next(iter(fut.values())).result(timeout=10)
        if all(cur[k].value == v for k, v in want.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"broker never reported {want} for {topic}")


def shorten_raw_topic(s: Settings, retention_ms: int, segment_ms: int) -> None:
    """Tighten a test's raw topic (still inside the raw policy) so expiry tests stay short."""
    set_config(admin_client(s), s.kafka.frame_refs_topic, retention_ms=str(retention_ms),
               segment_ms=str(segment_ms))
