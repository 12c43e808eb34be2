"""Faults on the real stack: kill -9 of the processor and of the sink, a broker stop and start,
ClickHouse down for 30 s. Each test counts what lands in ClickHouse and holds it to what the
fault may lose, nothing more:

- processor kill -9: frames in flight whose blobs were already deleted cannot be replayed. On
  restart their references are read again and find no blob: a ``missing_blob`` dead letter and
  an ALREADY_ABSENT receipt. Every frame still ends with a receipt; none is processed twice.
  Open windows (counts in memory) die with the process (measured in the issue notes).
- sink kill -9 mid-batch: nothing. The warehouse holds each row's source offset; the restart
  resumes after it, so no row is lost or landed twice.
- broker stop and start during production: nothing, while the outage is shorter than the edge
  producer's delivery timeout and the blobs' TTL.
- ClickHouse down for 30 s: nothing; the sink retries, and finds out whether an interrupted
  insert landed before repeating it.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Producer

from pipeline import serde
from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store
from pipeline.ops.kafka_clients import client_config
from pipeline.settings import REPO_ROOT
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import read_topic, settings_env

pytestmark = pytest.mark.integration

KAFKA_SH = str(REPO_ROOT / "infra" / "local" / "kafka.sh")
CLICKHOUSE_SH = str(REPO_ROOT / "infra" / "local" / "clickhouse.sh")


def _start(s, *args):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=settings_env(s), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _receipts(s):
    return len(read_topic(s, s.kafka.receipts_topic))


def _produce_receipts(s, n, start=0):
    p = Producer(client_config(s, "admin", **{"enable.idempotence": True, "linger.ms": 20}))
    for i in range(start, start + n):
        t = 1_790_000_000_000 + 10 * i
        rec = dict(frame_id=f"{i:032x}", site_id="flt", camera_id=f"c{i % 7}", captured_at=t, deleted_at=t + 40,
                   outcome="DELETED", deleted_by="processor")
        p.produce(s.kafka.receipts_topic, key=rec["camera_id"].encode(), value=serde.encode("DeletionReceipt", rec))
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def _landed(s):
    """(rows, distinct frames) of the receipts table: equal when nothing landed twice."""
    return ServerWarehouse(s.clickhouse, role="admin").rows(
        f"SELECT count(), uniqExact(frame_id) FROM {s.clickhouse.database}.deletion_receipts")[0]


def _kill9(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _camera(env, footage, n, camera, ttl_seconds):
    """Settings with a longer blob TTL, n frames of footage and an edge for them."""
    s = env.model_copy(update={"store": env.store.model_copy(update={"ttl_seconds": ttl_seconds})})
    store = open_store(s.store.url, s.store.ttl_seconds)
    frames = list(open_source(str(footage), s.edge.sample_fps, s.edge.max_width, s.edge.max_height))[:n]
    return s, frames, EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="flt", camera_id=camera)


def test_processor_kill_9_mid_stream_loses_only_frames_in_flight(env, footage):
    # blobs must outlive the restart (model loading takes seconds), as they would in production
    n = 80
    s, frames, ep = _camera(env, footage, n, "cam-k", 300.0)
    assert ep.run(frames).delivered == n

    proc = _start(s, "process", "--idle-timeout", "8", "--max-seconds", "240")
    _wait(lambda: _receipts(s) >= n // 4 or proc.poll() is not None, 180, "the processor to handle a quarter")
    assert proc.poll() is None, "the processor finished before it could be killed; the test proves nothing"
    _kill9(proc)
    handled_before = _receipts(s)
    assert handled_before < n

    # the new worker gets the partitions once the dead one's session (processor.session_timeout_seconds)
    # has expired; its idle clock must outlast that
    again = _start(s, "process", "--idle-timeout", str(s.processor.session_timeout_seconds + 12), "--max-seconds", "240")
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out[-2000:]
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=120)

    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
    ledger = wh.rows(f"SELECT uniqExact(frame_id) FROM {db}.frame_ledger")[0][0]
    per_frame = dict(wh.rows(f"SELECT outcome, uniqExact(frame_id) FROM {db}.deletion_receipts GROUP BY outcome"))
    covered = wh.rows(f"SELECT uniqExact(frame_id) FROM {db}.deletion_receipts")[0][0]
    assert ledger == n and covered == n, (ledger, covered, per_frame)     # every frame has a receipt
    assert open_store(s.store.url, s.store.ttl_seconds).stats().blobs == 0   # and no blob is left
    letters = [serde.decode("DeadLetter", m.value()) for m in read_topic(s, s.kafka.dead_letter_topic)]
    reasons = {d["reason"] for d in letters}
    assert reasons <= {"missing_blob"}, reasons
    # References the dead worker had not committed come back and find no blob: a dead letter and
    # an ALREADY_ABSENT receipt each. Most of them it had processed (DELETED receipt sent, counts
    # in windows that died with it); a frame whose blob it deleted but whose receipt it never
    # sent has only the ALREADY_ABSENT one. No frame is decrypted twice.
    absent = per_frame.get("ALREADY_ABSENT", 0)
    deleted = per_frame.get("DELETED", 0)
    assert absent == len(letters)
    rows = dict(wh.rows(f"SELECT outcome, count() FROM {db}.deletion_receipts GROUP BY outcome"))
    assert rows["DELETED"] == deleted                      # no frame decrypted (and counted) twice
    assert deleted >= n - absent and absent <= n - handled_before + absent
    print(f"\nprocessor kill -9: {n} frames, {handled_before} receipts before the kill; {absent} uncommitted "
          f"references re-read after restart (missing_blob), {n - deleted} frames without a DELETED receipt "
          f"(deleted, receipt lost with the process); {deleted} processed once")


def test_sink_kill_9_mid_batch_loses_and_duplicates_nothing(env):
    s = env.model_copy(update={"sink": env.sink.model_copy(update={"batch_max_rows": 2000})})
    m = 60_000
    _produce_receipts(s, m)
    sink = _start(s, "sink", "--idle-timeout", "5", "--max-seconds", "300")
    _wait(lambda: _landed(s)[0] >= 4000 or sink.poll() is not None, 120, "the sink to land some rows")
    assert sink.poll() is None, "the sink finished before it could be killed"
    _kill9(sink)
    rows_at_kill = _landed(s)[0]
    assert rows_at_kill < m
    again = _start(s, "sink", "--idle-timeout", "5", "--max-seconds", "300")
    out = again.communicate(timeout=320)[0]
    assert again.returncode == 0, out[-2000:]
    assert _landed(s) == (m, m)
    print(f"\nsink kill -9: {rows_at_kill} of {m} rows landed at the kill; after restart {m} rows, {m} distinct")


def test_a_broker_stop_and_start_during_production_loses_nothing(env, footage):
    n = 40
    s, frames, ep = _camera(env, footage, n, "cam-b", 120.0)
    result = {}
    # 40 frames at 2 fps: 20 s of live camera, with the broker down for ~10 s in the middle
    feeder = threading.Thread(target=lambda: result.setdefault("st", ep.run(frames, realtime=True)))
    feeder.start()
    time.sleep(5)
    assert subprocess.call(["bash", KAFKA_SH, "down"]) == 0
    time.sleep(8)
    assert subprocess.call(["bash", KAFKA_SH, "up"]) == 0
    feeder.join(120)
    st = result["st"]
    assert st.frames == n and st.delivered == n and st.failed == 0, st

    proc = _start(s, "process", "--max-frames", str(n), "--max-seconds", "240")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-2000:]
    sunk = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=120)
    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
    assert wh.rows(f"SELECT uniqExact(frame_id) FROM {db}.frame_ledger")[0][0] == n
    # Once (CI, 2026-11-30) 29 of 40 receipts landed and it passed on every rerun: the message
    # tells a sink that stopped early (sink stats) from receipts missing in Kafka (topic count).
    assert dict(wh.rows(f"SELECT outcome, uniqExact(frame_id) FROM {db}.deletion_receipts GROUP BY outcome")) == \
        {"DELETED": n}, (sunk, len(read_topic(s, s.kafka.receipts_topic)))
    assert read_topic(s, s.kafka.dead_letter_topic) == []
    print(f"\nbroker stop/start: {n} frames sent, {st.delivered} delivered, {n} processed, 0 dead letters")


def test_clickhouse_down_for_30_s_during_the_sinks_run_loses_nothing(env):
    s = env.model_copy(update={"sink": env.sink.model_copy(update={"batch_max_rows": 2000})})
    m = 40_000
    _produce_receipts(s, m)
    sink = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink"))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("st", sink.run(idle_timeout=5, max_seconds=240)))
    t.start()
    _wait(lambda: _landed(s)[0] > 0, 60, "the sink's first insert")
    assert subprocess.call(["bash", CLICKHOUSE_SH, "down"]) == 0
    down_at = time.monotonic()
    time.sleep(30)
    assert subprocess.call(["bash", CLICKHOUSE_SH, "up"]) == 0
    t.join(240)
    assert not t.is_alive(), "the sink did not finish"
    assert time.monotonic() - down_at >= 30
    assert _landed(s) == (m, m), result
    st = result["st"]
    print(f"\nClickHouse down 30 s: {m} rows, {m} landed once; {st.batches} batches, "
          f"{st.ambiguous_landed} interrupted inserts found applied")
