"""Soak: with no processor running, how old do raw records and blobs get under the shipped
policy? Feeds real footage at a live camera's pace into fresh topics that copy infra/topics.yaml,
samples the exporter every 2 s, and prints worst ages against their bounds.

    .venv/bin/python bench/retention_soak.py [--seconds 180] [--fps 2]

Needs the local stack (`flowctl stack up`).
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import ensure_keypair, load_public_key
from pipeline.framestore import Sweeper, store_from_settings
from pipeline.ops.exporter import PipelineCollector
from pipeline.ops.topics import Policy, admin_client, apply_policy, policy_for_settings
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.ops.kafka_clients import client_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--fps", type=float, default=2.0)
    a = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp())
    base = load_settings()
    s = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"frame_refs_topic": f"soak{tag}.frames.refs",
                                               "ledger_topic": f"soak{tag}.ops.frame-ledger",
                                               "receipts_topic": f"soak{tag}.ops.deletion-receipts"}),
        "store": base.store.model_copy(update={"url": (tmp / "frames").as_uri()}),
        "keys": base.keys.model_copy(update={"dir": tmp / "keys"}),
        "edge": base.edge.model_copy(update={"sample_fps": a.fps})})
    ensure_keypair(s.keys.dir)
    admin = admin_client(s)
    pol = policy_for_settings(s)
    raw = [t for t in pol.topics if t.raw]
    mine = tuple(t for t in pol.topics if t.role in ("frame_refs", "ledger", "receipts"))
    apply_policy(admin, Policy(mine, pol.max_retention_ms, pol.max_segment_ms))
    footage = subprocess.check_output(["bash", str(REPO_ROOT / "infra/local/footage.sh")], text=True).strip()
    store = store_from_settings(s)
    reg = CollectorRegistry()
    reg.register(PipelineCollector(admin, client_config(s, "admin"), Policy(tuple(raw), pol.max_retention_ms, pol.max_segment_ms),
                                   store, "nobody"))

    def frames():
        base = 0.0
        while True:  # loop the footage for as long as the soak runs, keeping media time monotonic
            last = 0.0
            for f in open_source(footage, a.fps, 640, 480):
                last = f.offset_seconds
                yield replace(f, offset_seconds=base + f.offset_seconds)
            base += last + 1.0 / a.fps

    ep = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="soak", camera_id="cam")
    n = int(a.seconds * a.fps)
    feeder = threading.Thread(target=ep.run, args=(frames(),), kwargs={"realtime": True, "max_frames": n}, daemon=True)
    worst_rec = worst_blob = 0.0
    bound = None
    t0 = time.monotonic()
    with Sweeper(store, s.store.sweep_interval_seconds):
        feeder.start()
        while feeder.is_alive():
            m = {(x.name, tuple(sorted(x.labels.items()))): x.value
                 for f in text_string_to_metric_families(generate_latest(reg).decode()) for x in f.samples}
            worst_rec = max([worst_rec] + [v for (k, l), v in m.items() if k == "flowpipe_raw_oldest_record_age_seconds"])
            worst_blob = max(worst_blob, m.get(("flowpipe_framestore_oldest_blob_age_seconds", ()), 0.0))
            bound = max(v for (k, l), v in m.items() if k == "flowpipe_raw_age_bound_seconds")
            print(f"\r{time.monotonic() - t0:6.0f} s  oldest raw record {worst_rec:5.1f} s  oldest blob {worst_blob:5.1f} s",
                  end="", flush=True)
            time.sleep(2)
    print()
    r, sg = int(raw[0].config["retention.ms"]) / 1000, int(raw[0].config["segment.ms"]) / 1000
    print(f"policy: retention {r:.0f} s, segment {sg:.0f} s, check interval 1 s -> bound {bound:.0f} s; "
          f"store TTL {s.store.ttl_seconds:.0f} s, sweep every {s.store.sweep_interval_seconds:.0f} s")
    print(f"worst oldest raw record: {worst_rec:.1f} s ({worst_rec / bound:.2f} of bound)")
    print(f"worst oldest blob:       {worst_blob:.1f} s ({worst_blob / s.store.ttl_seconds:.2f} of TTL)")
    print(f"frames fed: {ep.stats.frames} at {a.fps} fps, swept by TTL: {ep.stats.swept}")
    admin.delete_topics([f"soak{tag}.frames.refs", f"soak{tag}.ops.frame-ledger", f"soak{tag}.ops.deletion-receipts"])


if __name__ == "__main__":
    main()
