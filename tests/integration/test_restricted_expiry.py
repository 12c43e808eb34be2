"""Restricted data expires everywhere (issue 11): per-window group cells, and what the flow
aggregator keeps of them on the broker (its partials and its two snapshot changelogs), are gone
from every topic partition within their bound (retention + segment roll + the broker's retention
check), nothing of that shape exists in ClickHouse, and `flowctl audit ages` exits 0 then; it
exits 1, naming the culprit, when a restricted topic's configuration could keep records past the
tier limit, when a record does outlive its bound, or when a ClickHouse table has the restricted
shape (a group_id column).

The test's restricted topics get a retention of a few seconds before any record is written (the
policy's own values are an hour and 8 minutes; the limits and the audit are the same)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupState, KafkaError, Producer, TopicPartition

from pipeline import serde
from pipeline.aggregator.model import OccurrenceCell
from pipeline.ops.exporter import oldest_record_ages
from pipeline.ops.topics import admin_client, policy_for_settings
from pipeline.settings import REPO_ROOT, Settings
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl, set_config, settings_env
from tests.integration.test_aggregator import produce_cells
from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration

RETENTION_MS, SEGMENT_MS = 6000, 1000
CHECK_MS = 1000   # log.retention.check.interval.ms of the local broker (infra/local/kafka.sh)
BOUND_S = (RETENTION_MS + SEGMENT_MS + CHECK_MS) / 1000
SLACK_S = 5       # what `flowctl audit ages` allows over a bound (sampling, a busy broker)
CAMERAS = [("site-r", "entrance"), ("site-r", "till"), ("site-r", "door")]
# Every object migrations 0001-0008 created for per-window group cells (0009 drops them).
OLD_CELL_OBJECTS = {"group_occurrences", "occurrences_by_window", "occurrences_by_window_mv", "camera_window_totals",
                    "camera_window_totals_mv", "camera_hourly_occurrences", "footfall_hourly"}


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def restricted_topics(s: Settings) -> list[str]:
    return [t.name for t in policy_for_settings(s).topics if t.tier == "restricted"]


@pytest.fixture()
def short_env(env: Settings) -> Settings:
    """One-minute windows as deployed, and every restricted topic of the test with a retention of
    a few seconds (inside the restricted limits), set before anything is produced."""
    s = env.model_copy(update={
        "processor": env.processor.model_copy(update={"window_seconds": 60}),
        "aggregator": env.aggregator.model_copy(update={"window_seconds": 60, "snapshot_interval_seconds": 0.5,
                                                        "idle_advance_seconds": 3600}),
    })
    admin = admin_client(s)
    names = restricted_topics(s)
    k = s.kafka
    assert {k.occurrences_topic, k.partials_topic, k.partitions_changelog_topic, k.combiner_changelog_topic,
            k.demographics_topic, k.crossings_topic, k.demographics_changelog_topic,
            k.crossings_changelog_topic} == set(names)
    for t in names:
        set_config(admin, t, retention_ms=str(RETENTION_MS), segment_ms=str(SEGMENT_MS))
    assert s.exporter.retention_check_interval_ms == CHECK_MS
    return s


COUNT_PARTITIONS = 4   # of the demographics and crossings topics (infra/topics.yaml)


def produce_counts(s: Settings) -> None:
    """One exact per-window demographic and crossing count into every partition of their topics."""
    w = s.processor.demographics_window_seconds * 1000
    t = int(time.time() * 1000) // w * w - w
    p = Producer({**client_config(s, "admin"), "enable.idempotence": True})
    for part in range(COUNT_PARTITIONS):
        base = {"site_id": "site-a", "camera_id": f"cam-{part}", "window_start": t, "window_seconds": w // 1000,
                "params_version": "v-test"}
        p.produce(s.kafka.demographics_topic, partition=part, key=f"site-a/cam-{part}".encode(),
                  value=serde.encode("DemographicCount", {**base, "age_band": "28-37", "gender": "female",
                                                          "persons": 2}))
        p.produce(s.kafka.crossings_topic, partition=part, key=f"site-a/cam-{part}".encode(),
                  value=serde.encode("LineCrossingCount", {**base, "line": "door", "direction": "in",
                                                           "crossings": 3}))
    assert p.flush(30) == 0


def recent_cells(windows: int = 20, seed: int = 5) -> list[OccurrenceCell]:
    """Cells of the last ~25 minutes as processors emit them: background groups at each camera and
    groups seen at the entrance that reappear at the till a few windows later."""
    rng = np.random.default_rng(seed)
    t0 = (int(time.time()) // 60 - windows - 5) * 60_000
    counts: dict[tuple[int, int, int], int] = {}
    for t in range(windows):
        for ci in range(len(CAMERAS)):
            for g in rng.integers(0, 1000, size=6):
                counts[(t, ci, int(g))] = counts.get((t, ci, int(g)), 0) + 1
        for g in rng.integers(0, 1000, size=3):
            counts[(t, 0, int(g))] = counts.get((t, 0, int(g)), 0) + 1
            lag = int(rng.integers(1, 4))
            if t + lag < windows:
                counts[(t + lag, 1, int(g))] = counts.get((t + lag, 1, int(g)), 0) + 1
    return [OccurrenceCell("v-test", CAMERAS[ci][0], CAMERAS[ci][1], t0 + t * 60_000, 60, g, c)
            for (t, ci, g), c in sorted(counts.items())]


def wait_until_assigned(s: Settings, worker: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Every aggregator stage owns its input partitions (so cells produced now are read at once,
    long before their few seconds of retention run out)."""
    admin = admin_client(s)
    want = {f"{s.aggregator.app_id}-partitions": s.aggregator.partitions, f"{s.aggregator.app_id}-combiner": 1,
            f"{s.aggregator.app_id}-demographics": COUNT_PARTITIONS, f"{s.aggregator.app_id}-crossings": COUNT_PARTITIONS}
    deadline = time.monotonic() + timeout
    while True:
        assert worker.poll() is None, f"the aggregator exited early: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the aggregator's groups were not assigned within {timeout} s"
        ready = True
        for gid, fut in admin.describe_consumer_groups(list(want)).items():
            try:
                d = fut.result(timeout=10)
            except Exception:  # noqa: BLE001 - not created yet
                ready = False
                continue
            owned = sum(len(m.assignment.topic_partitions) for m in d.members if m.assignment)
            ready &= d.state == ConsumerGroupState.STABLE and owned == want[gid]
        if ready:
            return
        time.sleep(0.3)


class OldestRecords:
    """(topic, partition) -> (low watermark, high watermark, age in s of the oldest record left) for
    every restricted topic, sampled as often as wanted while records expire. Like the exporter's
    oldest_record_ages (which the audit uses) it reads the record at the low watermark, but with
    one consumer for all partitions, and a record deleted between the watermark and the fetch ends
    that partition's read at once (EOF) instead of after a timeout."""

    def __init__(self, s: Settings) -> None:
        self.c = Consumer({**client_config(s, "admin"), "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                           "enable.auto.commit": False, "auto.offset.reset": "latest",
                           "enable.partition.eof": True, "fetch.wait.max.ms": 50})
        md = self.c.list_topics(timeout=10)
        self.tps = [(t, p) for t in restricted_topics(s) for p in sorted(md.topics[t].partitions)]

    def sample(self) -> dict[tuple[str, int], tuple[int, int, float]]:
        wm = {tp: self.c.get_watermark_offsets(TopicPartition(*tp), timeout=10) for tp in self.tps}
        age = {tp: 0.0 for tp in self.tps}
        pending = {tp for tp, (low, high) in wm.items() if high > low}
        if pending:
            self.c.assign([TopicPartition(t, p, wm[(t, p)][0]) for t, p in pending])
            deadline = time.monotonic() + 3
            while pending and time.monotonic() < deadline:
                m = self.c.poll(0.2)
                if m is None:
                    continue
                tp = (m.topic(), m.partition())
                if not m.error() and tp in pending:
                    age[tp] = max(0.0, time.time() - m.timestamp()[1] / 1000)   # LogAppendTime: the broker's
                if not m.error() or m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)
            # Fetching would hold the broker connection (fetch.wait.max.ms) and stall the next
            # sample's watermark queries behind it.
            self.c.unassign()
        return {tp: (low, high, age[tp]) for tp, (low, high) in wm.items()}

    def close(self) -> None:
        self.c.close()


def segment_bytes(s: Settings) -> dict[str, int]:
    """Bytes of record data (*.log segment files) per partition directory of the restricted topics
    on the local broker's disk; {} when the broker's data directory is not on this machine."""
    data = Path(os.environ.get("FLOW_VAR_DIR", REPO_ROOT / ".var")) / "kafka" / "data"
    out = {}
    for t in restricted_topics(s):
        for d in data.glob(f"{t}-*"):
            if d.name.rsplit("-", 1)[1].isdigit():
                # a deleted segment is renamed *.log.deleted until the file goes (at once here)
                out[d.name] = sum(f.stat().st_size for f in d.iterdir()
                                  if f.name.endswith((".log", ".log.deleted")) and f.exists())
    return out


def group_cell_tables(s: Settings) -> list[str]:
    wh = ServerWarehouse(s.clickhouse, role="admin")
    return [str(r[0]) for r in wh.rows("SELECT table FROM system.columns WHERE database = %(db)s "
                                       "AND name = 'group_id'", {"db": s.clickhouse.database})]


def test_restricted_data_is_gone_from_the_broker_and_every_store_after_its_bound(short_env: Settings,
                                                                                 tmp_path: Path) -> None:
    s = short_env
    t_start = time.monotonic()
    # After migrations (0009 included) the warehouse has nowhere to put a group cell.
    wh = ServerWarehouse(s.clickhouse, role="admin")
    objects = {str(r[0]) for r in wh.rows("SELECT name FROM system.tables WHERE database = %(db)s",
                                          {"db": s.clickhouse.database})}
    assert objects and not objects & OLD_CELL_OBJECTS, objects & OLD_CELL_OBJECTS
    assert group_cell_tables(s) == []

    # The real aggregator, started first: the cells it reads live only a few seconds.
    cells = recent_cells()
    log = tmp_path / "aggregate.log"
    with log.open("wb") as f:
        worker = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "aggregate", "--idle-timeout", "4",
                                   "--max-seconds", "120"], env=settings_env(s), cwd=REPO_ROOT,
                                  stdout=f, stderr=subprocess.STDOUT)
        try:
            wait_until_assigned(s, worker, log)
            produce_cells(s, cells)
            produce_counts(s)
            worker.wait(150)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    t_last_write = time.monotonic()   # the worker's last restricted write (its final snapshots) is before its exit
    text = flat(log.read_text())
    assert worker.returncode == 0, text[-3000:]
    read = {k: int(v) for k, v in re.findall(r"'(partitions|combiner|demographics|crossings)': (\d+)", text)}
    assert read.get("partitions") == len(cells), f"the aggregator must read every cell before it expires: {text}"
    made = {k: int(v) for v, k in re.findall(r"(\d+) (partials|snapshots)", text)}
    assert read.get("combiner", 0) > 0 and made.get("partials", 0) > 0 and made.get("snapshots", 0) > 0, text

    assert read.get("demographics") == read.get("crossings") == COUNT_PARTITIONS, text
    # Every restricted topic partition held records: occurrences, partials, per-window counts and
    # the four changelogs.
    watch = OldestRecords(s)
    state = watch.sample()
    assert len(state) == 2 * s.aggregator.partitions + 2 + 4 * COUNT_PARTITIONS
    assert all(high > 0 for _low, high, _age in state.values()), state

    # From the last write on, watch every partition's oldest record (as the exporter and the audit
    # read it) until all are gone: none may outlive the bound, and all must be gone within it.
    worst_age = 0.0
    deadline = t_last_write + BOUND_S + SLACK_S
    while True:
        state = watch.sample()
        worst_age = max([worst_age] + [age for _l, _h, age in state.values()])
        disk = segment_bytes(s)
        if all(low == high for low, high, _age in state.values()) and not any(disk.values()):
            break
        assert time.monotonic() < deadline, (
            f"restricted records outlived their bound of {BOUND_S:.0f} s (+{SLACK_S} s): "
            f"{ {k: v for k, v in state.items() if v[0] < v[1]} }, bytes on disk {disk}")
        time.sleep(0.5)
    gone_after = time.monotonic() - t_last_write
    watch.close()
    assert 0 < worst_age <= BOUND_S + SLACK_S, worst_age   # > 0: the watch saw records before they went
    # Nothing is left to read from the beginning of any partition, for a consumer or a restarted aggregator.
    c = Consumer({**client_config(s, "admin"), "group.id": f"late-reader-{time.time()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in state])
    got = [m for m in (c.poll(0.5) for _ in range(6)) if m is not None and not m.error()]
    c.close()
    assert got == [], [(m.topic(), m.partition(), m.offset()) for m in got]

    # The sink lands the published tier; the warehouse still has no table that could hold a cell.
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=2.0, max_seconds=30)
    assert group_cell_tables(s) == []
    p = flowctl(s, "audit", "ages", check=False)
    out = flat(p.stdout + p.stderr)
    assert p.returncode == 0, out
    assert "no restricted group cells" in out and "aggregator state in" not in out
    print(f"restricted data gone {gone_after:.1f} s after the last write (bound {BOUND_S:.0f} s); oldest record "
          f"seen {worst_age:.1f} s; test {time.monotonic() - t_start:.0f} s")


def test_the_age_audit_fails_when_restricted_data_can_or_does_outlive_its_bound(short_env: Settings) -> None:
    s = short_env
    admin = admin_client(s)
    db = s.clickhouse.database

    # 1. A restricted topic whose retention exceeds the tier limit: named, with the remedy.
    changelog = s.kafka.partitions_changelog_topic
    set_config(admin, changelog, retention_ms="86400000")
    p = flowctl(s, "audit", "ages", check=False)
    out = flat(p.stdout)
    assert p.returncode == 1 and f"outlives its bound: {changelog} " in out and "over the restricted limit" in out, out
    assert "flowctl topics apply" in out
    set_config(admin, changelog, retention_ms=str(RETENTION_MS))

    # 2. Group cells in ClickHouse, in any table of the database: named, with the remedy.
    wh = ServerWarehouse(s.clickhouse, role="admin")
    wh.execute(f"CREATE TABLE {db}.cells_copy (camera_id String, window_start DateTime, group_id UInt16, "
               f"occurrences UInt32) ENGINE = MergeTree() ORDER BY (camera_id, window_start)")
    wh.insert("cells_copy", ["camera_id", "window_start", "group_id", "occurrences"],
              [["entrance"], [datetime(2026, 1, 1, 10, 0)], [7], [2]])
    p = flowctl(s, "audit", "ages", check=False)
    out = flat(p.stdout)
    assert p.returncode == 1 and f"{db}.cells_copy" in out and "group_id" in out and "rows stored: 1" in out, out
    assert "outlives its bound" not in out   # the topics are fine: ClickHouse alone fails the audit
    wh.execute(f"DROP TABLE {db}.cells_copy")

    # 3. A ClickHouse that cannot be checked does not pass unseen.
    dead = s.model_copy(update={"clickhouse": s.clickhouse.model_copy(update={"port": 1})})
    p = flowctl(dead, "audit", "ages", check=False)
    assert p.returncode == 1 and "could not be checked" in flat(p.stdout), p.stdout + p.stderr

    # 4. A record that outlives its bound: the occurrences topic compacted (retention no longer
    # deletes anything) with a short retention, so the bound is 3 s and the record stays.
    occ = s.kafka.occurrences_topic
    set_config(admin, occ, cleanup_policy="compact", retention_ms="1000", segment_ms="1000")
    produce_cells(s, recent_cells(windows=1)[:3])
    deadline = time.monotonic() + 60
    while max(pa.oldest_age_seconds for pa in oldest_record_ages(client_config(s, "admin"), occ)) < 3 + SLACK_S + 1:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    p = flowctl(s, "audit", "ages", check=False)
    out = flat(p.stdout)
    assert p.returncode == 1 and f"outlives its bound: {occ}[" in out and "oldest record" in out, out
    assert "cleanup.policy=compact keeps records past retention" in out

    # Repaired, the same audit passes.
    set_config(admin, occ, cleanup_policy="delete", retention_ms=str(RETENTION_MS), segment_ms=str(SEGMENT_MS))
    deadline = time.monotonic() + BOUND_S + SLACK_S + 10
    while any(pa.high > pa.low for pa in oldest_record_ages(client_config(s, "admin"), occ)):
        assert time.monotonic() < deadline, "the records did not expire once the topic was repaired"
        time.sleep(0.5)
    p = flowctl(s, "audit", "ages", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
