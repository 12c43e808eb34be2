"""edge → Kafka → processor (faust worker subprocess) → sink → ClickHouse, on real footage."""
import base64

import pytest

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.aggregator.counts import demographic_grid
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl, read_topic

pytestmark = pytest.mark.integration

N_FRAMES = 24


class RecordingStore:
    """Wraps the real store to remember what the edge wrote (to search for it downstream)."""

    def __init__(self, inner):
        self.inner, self.blobs = inner, []
        self.ttl_seconds = inner.ttl_seconds

    def put(self, frame_id, data):
        self.blobs.append(data)
        return self.inner.put(frame_id, data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def read_all(s, topic):
    """Every record on the topic now (offset evidence: tests.integration.conftest.read_topic)."""
    return read_topic(s, topic)


def test_frames_flow_end_to_end_and_leave_nothing_personal(env, footage, monkeypatch):
    s = env
    import pipeline.envelope as envelope

    data_keys = []
    real_new_key = envelope.new_data_key

    def record_key():
        k = real_new_key()
        data_keys.append(k)
        return k
    monkeypatch.setattr(envelope, "new_data_key", record_key)
    store = RecordingStore(open_store(s.store.url, s.store.ttl_seconds))
    ep = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="e2e-site", camera_id="cam-a")
    wrapped_keys, nonces = [], []
    orig = ep.sealer.seal

    def spy(plain, aad):
        sealed = orig(plain, aad)
        wrapped_keys.append(sealed.wrapped_key)
        nonces.append(sealed.nonce)
        return sealed
    ep.sealer.seal = spy
    frames = open_source(str(footage), s.edge.sample_fps, s.edge.max_width, s.edge.max_height)
    stats = ep.run(frames, max_frames=N_FRAMES)
    assert stats.delivered == N_FRAMES and stats.failed == 0

    proc = flowctl(s, "--log-level", "DEBUG", "process", "--max-frames", str(N_FRAMES), "--max-seconds", "240")
    assert f"processor: {N_FRAMES} frames" in proc.stderr, proc.stderr[-2000:]

    # every blob was deleted by the processor, not left for the sweeper
    assert open_store(s.store.url, s.store.ttl_seconds).stats().blobs == 0

    # The restricted cells go through the flow aggregator, which publishes camera-hours.
    agg = flowctl(s, "aggregate", "--idle-timeout", "4", "--max-seconds", "120", "--flush", "--no-cold-starts")
    sink = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink"))
    sstats = sink.run(idle_timeout=4, max_seconds=120)
    wh = ServerWarehouse(s.clickhouse, role="admin")
    db = s.clickhouse.database
    receipts = wh.rows(f"SELECT outcome, deleted_by, count(), max(latency_ms) FROM {db}.deletion_receipts GROUP BY outcome, deleted_by")
    assert receipts and receipts[0][:3] == ("DELETED", "processor", N_FRAMES), receipts
    foot = wh.rows(f"SELECT count(), sum(windows), min(noise_var_milli), any(params_version) "
                   f"FROM {db}.footfall_components FINAL WHERE site_id = 'e2e-site' AND camera_id = 'cam-a'")
    rows, windows, noise, version = foot[0]
    assert rows >= 1 and noise > 0 and version, (agg.stderr[-3000:], agg.stdout[-1500:], foot, sstats)
    assert sstats.inserted["footfall_components"] >= rows
    # demographics: the whole (band, gender) grid of every camera-hour, each cell noised
    demo = wh.rows(f"SELECT count(), uniqExact(hour), min(noise_var_milli) FROM {db}.demographic_components FINAL "
                   f"WHERE site_id = 'e2e-site' AND camera_id = 'cam-a'")
    cells, hours, demo_noise = demo[0]
    assert hours >= 1 and cells == hours * len(demographic_grid()) and demo_noise > 0, demo
    # no per-window group cell reached the warehouse
    assert wh.rows("SELECT count() FROM system.columns WHERE database = %(db)s AND name = 'group_id'",
                   {"db": db})[0][0] == 0   # no table can hold one (migration 0009)
    assert "group_occurrences" not in sstats.inserted

    # the processor really found people in this footage (HOG finds some of the ~5-8 present)
    assert "persons" in proc.stderr
    persons = int(proc.stderr.split("frames, ")[1].split(" persons")[0])
    assert persons >= N_FRAMES // 2, proc.stderr[-1000:]

    assert read_all(s, s.kafka.dead_letter_topic) == []   # dead letters' contents: test_dead_letters.py

    # privacy: no blob bytes, data key material or nonces in ClickHouse, dead letters or logs
    dump = "".join(str(r) for t in ("footfall_components", "flow_components", "deletion_receipts", "demographic_components")
                   for r in wh.rows(f"SELECT * FROM {db}.{t}"))
    logs = proc.stdout + proc.stderr + agg.stdout + agg.stderr
    assert len(data_keys) == N_FRAMES
    for secret in data_keys + wrapped_keys[:5] + nonces[:5] + [b[:32] for b in store.blobs[:5]]:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            assert form not in dump and form not in logs
