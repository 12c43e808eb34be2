"""SRE guardrails on the real stack: with processors stopped, raw records and blobs still expire
within their bounds and the exporter shows it; receipts are audited in ClickHouse; no metric
carries personal data."""
import re
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import Sweeper, open_store
from pipeline.ops.exporter import PipelineCollector
from pipeline.ops.topics import admin_client, policy_for_settings
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl, shorten_raw_topic
from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration

RETENTION_MS, SEGMENT_MS = 6000, 2000
ALLOWED_LABELS = {"topic", "partition", "stage", "reason", "outcome", "le", "quantile",
                  # prometheus-client's own process/platform collectors
                  "generation", "implementation", "major", "minor", "patchlevel", "version"}


def scrape(collector):
    reg = CollectorRegistry()
    reg.register(collector)
    text = generate_latest(reg).decode()
    return text, {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_without_processors_raw_data_still_expires_within_bounds(env, footage):
    s = env.model_copy(update={"store": env.store.model_copy(update={"ttl_seconds": 3.0, "sweep_interval_seconds": 0.5})})
    topic = s.kafka.frame_refs_topic
    admin = admin_client(s)
    shorten_raw_topic(s, RETENTION_MS, SEGMENT_MS)
    store = open_store(s.store.url, s.store.ttl_seconds)
    pol = policy_for_settings(s)
    col = PipelineCollector(admin, client_config(s, "admin"), pol, store, s.processor.app_id)

    frames = list(open_source(str(footage), 4.0, 320, 240))[:100]     # 25 s of footage at 4 fps
    ep = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="sre", camera_id="cam-s")
    feeder = threading.Thread(target=ep.run, args=(frames,), kwargs={"realtime": True})
    worst_rec, worst_blob, bound, seen_records, worst_lag = 0.0, 0.0, None, 0, 0.0
    with Sweeper(store, s.store.sweep_interval_seconds):
        feeder.start()
        t_end = time.monotonic() + 40     # feed for 25 s, then watch everything drain
        while time.monotonic() < t_end:
            _, m = scrape(col)
            ages = [v for (n, l), v in m.items() if n == "flowpipe_raw_oldest_record_age_seconds" and ("topic", topic) in l]
            seen_records = max(seen_records, sum(v for (n, l), v in m.items() if n == "flowpipe_raw_records" and ("topic", topic) in l))
            worst_rec = max([worst_rec] + ages)
            worst_lag = max(worst_lag, sum(v for (n, l), v in m.items()
                                           if n == "flowpipe_processor_lag_records" and ("topic", topic) in l))
            worst_blob = max(worst_blob, m[("flowpipe_framestore_oldest_blob_age_seconds", ())])
            bound = m[("flowpipe_raw_age_bound_seconds", (("topic", topic),))]
            time.sleep(0.5)
        feeder.join()
    assert bound == (RETENTION_MS + SEGMENT_MS + 1000) / 1000
    assert seen_records > 0, "the exporter never saw raw records on the broker"
    assert 0 < worst_rec <= bound + 2.0, f"oldest raw record reached {worst_rec:.1f} s (bound {bound} s)"
    assert 0 < worst_blob <= s.store.ttl_seconds + s.store.sweep_interval_seconds + 1.0, worst_blob
    _, m = scrape(col)
    assert sum(v for (n, l), v in m.items() if n == "flowpipe_raw_records" and ("topic", topic) in l) == 0
    assert m[("flowpipe_framestore_blobs", ())] == 0
    # the stopped processor shows as lag: everything on the broker was unconsumed
    assert worst_lag > 0, "a stopped processor must show as lag"


def test_receipts_audit_and_metrics_carry_no_personal_data(env, footage):
    s = env.model_copy(update={"processor": env.processor.model_copy(update={"metrics_port": 19465})})
    store = open_store(s.store.url, s.store.ttl_seconds)
    ep = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="aud", camera_id="cam-a")
    frame_ids = []
    orig = ep.send

    def send(image, captured_at):
        fid = orig(image, captured_at)
        frame_ids.append(fid)
        return fid
    ep.send = send
    ep.run(list(open_source(str(footage), 2.0, 640, 480))[:8])

    scraped = {}

    def scrape_processor():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen("http://127.0.0.1:19465/metrics", timeout=2).read().decode()
                if "flowpipe_processor_frames_total{" in body:
                    scraped["text"] = body
                    if 'outcome="processed"} 8.0' in body:
                        return
            except OSError:
                pass
            time.sleep(0.5)
    t = threading.Thread(target=scrape_processor)
    t.start()
    flowctl(s, "process", "--max-frames", "8", "--max-seconds", "120")
    t.join()
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)

    p = flowctl(s, "audit", "receipts")
    assert "cam-a" in p.stdout and "every issued frame" in p.stdout
    wh = ServerWarehouse(s.clickhouse, role="admin")
    n, p95 = wh.rows(f"SELECT sum(frames), max(p95_ms) FROM {s.clickhouse.database}.deletion_latency WHERE site_id = 'aud'")[0]
    assert n == 8 and p95 > 0

    # a frame issued but never deleted nor swept is caught
    wh.insert("frame_ledger", ["frame_id", "site_id", "camera_id", "captured_at", "captured_at_ms", "expires_at_ms",
                               "kafka_partition", "kafka_offset"],
              [["00000000-0000-4000-8000-000000000000"], ["aud"], ["cam-lost"], [__import__("datetime").datetime(2026, 1, 1)],
               [1_767_225_600_000], [1_767_225_630_000], [99], [0]])
    p = flowctl(s, "audit", "receipts", check=False)
    assert p.returncode == 1 and "cam-lost" in p.stdout

    # metrics: processor's own and the exporter's
    proc_text = scraped.get("text", "")
    assert 'flowpipe_processor_frames_total{outcome="processed"} 8.0' in proc_text
    assert "flowpipe_capture_to_deletion_seconds_bucket" in proc_text
    exp_text = flowctl(s, "exporter", "--once").stdout
    assert "flowpipe_raw_age_bound_seconds" in exp_text
    for text in (proc_text, exp_text):
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                assert set(smp.labels) <= ALLOWED_LABELS, (smp.name, smp.labels)
        for fid in frame_ids:
            assert fid not in text
        assert not re.search(r"[0-9a-f]{32,}", text), "hex blob/key material in metrics"
