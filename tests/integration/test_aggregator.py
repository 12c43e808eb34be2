"""The flow aggregator on the real broker: group occurrences in, published components out, and a
worker killed with SIGKILL mid-stream publishing exactly what an uninterrupted run publishes."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline import serde
from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.model import FlowComponent, FootfallComponent, OccurrenceCell
from pipeline.privacy.release import load_noise_key
from pipeline.processor.app import occurrence_key
from pipeline.settings import REPO_ROOT, Settings
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl, read_topic, settings_env
from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration

CAMERAS = [("site-a", "entrance"), ("site-a", "till"), ("site-b", "door")]


def synthetic_cells(hours: int, seed: int = 7) -> list[OccurrenceCell]:
    """Cells as processors emit them (window order), with real flows: people seen at one camera
    reappear, in the same group, at another a few windows later; plus background groups."""
    rng = np.random.default_rng(seed)
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    t0 = int(start.timestamp() * 1000)
    windows = hours * 60
    counts: dict[tuple[int, int, int], int] = {}
    for t in range(windows):
        for ci in range(len(CAMERAS)):
            for g in rng.integers(0, 1000, size=rng.poisson(4)):
                counts[(t, ci, int(g))] = counts.get((t, ci, int(g)), 0) + 1
        for g in rng.integers(0, 1000, size=rng.poisson(2)):   # movers entrance -> till / door
            counts[(t, 0, int(g))] = counts.get((t, 0, int(g)), 0) + 1
            dest, lag = (1, int(rng.integers(1, 6))) if rng.random() < 0.7 else (2, int(rng.integers(10, 25)))
            if t + lag < windows and rng.random() < 0.5:
                counts[(t + lag, dest, int(g))] = counts.get((t + lag, dest, int(g)), 0) + 1
    return [OccurrenceCell("v-test", CAMERAS[ci][0], CAMERAS[ci][1], t0 + t * 60_000, 60, g, c)
            for (t, ci, g), c in sorted(counts.items())]


def produce_cells(s: Settings, cells: list[OccurrenceCell]) -> None:
    p = Producer({**client_config(s, "admin"), "enable.idempotence": True, "linger.ms": 20})
    for c in cells:
        rec = {"site_id": c.site_id, "camera_id": c.camera_id, "window_start": c.window_start_ms,
               "window_seconds": c.window_seconds, "group_id": c.group_id, "occurrences": c.occurrences,
               "params_version": c.params_version}
        p.produce(s.kafka.occurrences_topic, key=occurrence_key(c.group_id), value=serde.encode("GroupOccurrence", rec))
        p.poll(0)
    assert p.flush(30) == 0


def read_all(s: Settings, topic: str, record: str) -> list[dict]:
    """Every record of ``topic``; a batch message of published components gives all its rows."""
    return [r for m in read_topic(s, topic) for r in serde.decode_rows(record, m.value())]


def high_watermarks(s: Settings, topic: str) -> int:
    c = Consumer({**client_config(s, "admin"), "group.id": "hw"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions)
    finally:
        c.close()


def published(s: Settings) -> tuple[dict[tuple, FlowComponent], dict[tuple, FootfallComponent], int]:
    """Published rows by key; asserts that every re-emission of a key is identical."""
    flows: dict[tuple, FlowComponent] = {}
    foot: dict[tuple, FootfallComponent] = {}
    emitted = 0
    for kind, topic, record, out in ((FlowComponent, s.kafka.flow_components_topic, "FlowComponent", flows),
                                     (FootfallComponent, s.kafka.footfall_components_topic, "FootfallComponent", foot)):
        for r in read_all(s, topic, record):
            row = kind.from_record(r)
            emitted += 1
            if row.key in out:
                assert out[row.key] == row, f"a replay changed a published row: {out[row.key]} != {row}"
            out[row.key] = row
    return flows, foot, emitted


@pytest.fixture()
def agg_env(env: Settings) -> Settings:
    """One-minute windows, as deployed (the shared fixture shortens the processor's)."""
    return env.model_copy(update={
        "processor": env.processor.model_copy(update={"window_seconds": 60}),
        "aggregator": env.aggregator.model_copy(update={"window_seconds": 60, "snapshot_interval_seconds": 0.5,
                                                        "idle_advance_seconds": 3600}),
    })


def test_a_worker_killed_mid_stream_publishes_what_an_uninterrupted_run_publishes(agg_env: Settings) -> None:
    s = agg_env
    cells = synthetic_cells(hours=6)
    # The uninterrupted run, in-process, with the deployment's noise key: replays must carry the
    # same keyed noise, so even noisy rows are equal.
    want_flow, want_foot = aggregate_cells(cells, s.aggregator.spec(), partitions=s.aggregator.partitions,
                                           noise_key=load_noise_key(s.keys.dir))
    assert any(r.noise_var_milli > 0 for r in want_flow) and any(r.noise_var_milli > 0 for r in want_foot)
    assert sum(r.s for r in want_flow if r.kind == "lag") > 0 and want_foot

    split = next(i for i, c in enumerate(cells) if c.window_start_ms >= cells[0].window_start_ms + 4 * 3_600_000)
    produce_cells(s, cells[:split])
    env_vars = settings_env(s)
    worker = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "aggregate", "--max-seconds", "600"],
                              env=env_vars, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Wait until the first hour is published (so the kill lands after real progress)...
        deadline = time.monotonic() + 180
        while high_watermarks(s, s.kafka.flow_components_topic) == 0:
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the aggregator published nothing within 180 s"
            time.sleep(0.5)
        # ... then give it the rest and kill it while it is reading.
        produce_cells(s, cells[split:])
        time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
    before_flow, _, _ = published(s)
    assert 0 < len(before_flow) < len(want_flow), "the kill should land mid-stream"

    out = flowctl(s, "aggregate", "--idle-timeout", "5", "--max-seconds", "300", "--flush")
    # Every partition and the combiner resumed from a snapshot, not from scratch.
    text = out.stdout + out.stderr
    assert text.count("partitions[") >= s.aggregator.partitions and "combiner[0]@" in text, text

    # The restart had input left in some stage after its snapshot (group cells, or partials the
    # combiner had not snapshotted): the kill landed mid-stream, not after a clean finish.
    read = {k: int(v) for k, v in re.findall(r"'(partitions|combiner)': (\d+)", text)}
    assert sum(read.values()) > 0, f"the restart should have records left to read after the kill: {text}"

    got_flow, got_foot, _ = published(s)
    assert set(got_flow) == {r.key for r in want_flow}
    assert got_flow == {r.key: r for r in want_flow}
    assert got_foot == {r.key: r for r in want_foot}

    # The sink lands them, and ClickHouse's FINAL view equals the uninterrupted run.
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3.0, max_seconds=120)
    wh = ServerWarehouse(s.clickhouse, role="admin")
    db = s.clickhouse.database
    (n, total_s, total_nn), = wh.rows(f"SELECT count(), sum(s), sum(nn) FROM {db}.flow_components FINAL")
    assert n == len(want_flow)
    assert total_s == sum(r.s for r in want_flow) and total_nn == sum(r.nn for r in want_flow)
    (occ,), = wh.rows(f"SELECT sum(occurrences) FROM {db}.footfall_components FINAL")
    assert occ == sum(r.occurrences for r in want_foot)
    assert abs(occ - sum(c.occurrences for c in cells)) < 10 * len(want_foot) ** 0.5 * s.aggregator.spec().footfall_noise_scale
    # Nothing finer than a camera-hour reached the warehouse: no table can even hold a group cell
    # (migration 0009 dropped group_occurrences and what was built on it).
    (cell_columns,), = wh.rows("SELECT count() FROM system.columns WHERE database = %(db)s AND name = 'group_id'",
                               {"db": db})
    assert cell_columns == 0


def test_bad_and_skewed_records_are_dead_lettered_without_their_counts(agg_env: Settings) -> None:
    s = agg_env
    good = synthetic_cells(hours=1)[:50]
    produce_cells(s, good)
    p = Producer({**client_config(s, "admin")})
    p.produce(s.kafka.occurrences_topic, key=b"1", value=b"\x00not avro")
    future = int((time.time() + 7200) * 1000) // 60_000 * 60_000
    p.produce(s.kafka.occurrences_topic, key=b"2", value=serde.encode("GroupOccurrence", {
        "site_id": "site-a", "camera_id": "entrance", "window_start": future, "window_seconds": 60,
        "group_id": 2, "occurrences": 987654, "params_version": "v-test"}))
    assert p.flush(10) == 0
    out = flowctl(s, "aggregate", "--idle-timeout", "4", "--max-seconds", "120", "--flush")
    assert "malformed" in out.stdout + out.stderr and "future_window" in out.stdout + out.stderr
    letters = read_all(s, s.kafka.dead_letter_topic, "DeadLetter")
    assert sorted(d["reason"] for d in letters) == ["future_window", "malformed"]
    assert all(d["stage"] == "aggregator-partitions" for d in letters)
    assert not any("987654" in str(d) for d in letters)
    _, foot, _ = published(s)
    # Only the good cells' cameras, from their hour on (every later hour is published too, zero
    # plus noise), never the skewed record's hour two hours ahead: its 987,654 occurrences never counted.
    hour = min(c.window_start_ms for c in good) // 3_600_000 * 3_600_000
    assert {(r.camera_id, r.hour_ms) for r in foot.values()} >= {(c.camera_id, hour) for c in good}
    assert {r.camera_id for r in foot.values()} == {c.camera_id for c in good}
    assert all(hour <= r.hour_ms <= hour + 3_600_000 for r in foot.values()), sorted(foot)
    # footfall carries its noise (its variance is in every row): the sum within 4.5 SD of it
    noise_sd = sum(r.noise_var_milli for r in foot.values()) ** 0.5 / 1000 ** 0.5
    assert abs(sum(r.occurrences for r in foot.values()) - sum(c.occurrences for c in good)) < 4.5 * noise_sd


def test_the_age_audit_sees_old_windows_in_the_aggregators_state(agg_env: Settings) -> None:
    """A backfill of day-old cells leaves windows a day old in the aggregator's snapshots: more
    than its state bound, and `flowctl audit ages` must say so and exit non-zero."""
    s = agg_env
    produce_cells(s, synthetic_cells(hours=1)[:200])
    flowctl(s, "aggregate", "--idle-timeout", "3", "--max-seconds", "120")
    p = flowctl(s, "audit", "ages", check=False)
    text = (p.stdout + p.stderr).replace("\n", " ")
    assert p.returncode == 1 and "aggregator state in" in text, text


def test_a_simulated_day_sent_to_kafka_is_counted_whole_by_the_aggregator(agg_env: Settings, tmp_path) -> None:
    """`flowctl simulate run --to kafka` sends cells as processors do (window order, keyed by
    group), so the aggregator counts every camera: each camera's published footfall matches what
    was produced, within the published noise. (Sent camera by camera, every camera after a
    partition's first arrived late and was dropped.)"""
    import json

    s = agg_env
    truth = tmp_path / "truth.json"
    flowctl(s, "simulate", "run", "small", "--to", "kafka", "--truth", str(truth))
    flowctl(s, "aggregate", "--flush", "--no-cold-starts", "--idle-timeout", "4", "--max-seconds", "240")
    t = json.loads(truth.read_text())
    produced = {c: t["captures_per_camera"][c] + t["notes"]["fictitious_per_camera"][c] for c in t["captures_per_camera"]}
    _, foot, _ = published(s)
    got: dict[str, int] = {}
    hours: dict[str, int] = {}
    for r in foot.values():
        got[r.camera_id] = got.get(r.camera_id, 0) + r.occurrences
        hours[r.camera_id] = hours.get(r.camera_id, 0) + 1
    var = next(iter(foot.values())).noise_var_milli / 1000
    assert set(got) == set(produced)
    for cam, n in produced.items():
        assert abs(got[cam] - n) <= 5 * (hours[cam] * var) ** 0.5, (cam, got[cam], n, hours[cam])
