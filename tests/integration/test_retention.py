"""Raw frame references really expire on the broker, and blobs really leave the frame store,
even when no processor ever comes."""
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store


from tests.integration.conftest import shorten_raw_topic
from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration

RETENTION_MS, SEGMENT_MS = 6000, 2000


def watermarks(s, topic):
    c = Consumer({**client_config(s, "admin"), "group.id": "wm-probe"})
    md = c.list_topics(topic, timeout=10)
    out = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in md.topics[topic].partitions}
    c.close()
    return out


def test_frame_refs_and_blobs_expire_without_a_processor(env, footage):
    s = env.model_copy(update={"store": env.store.model_copy(update={"ttl_seconds": 3.0, "sweep_interval_seconds": 0.5})})
    topic = s.kafka.frame_refs_topic
    shorten_raw_topic(s, RETENTION_MS, SEGMENT_MS)

    store = open_store(s.store.url, s.store.ttl_seconds)
    ep = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="ret", camera_id="cam-r")
    frames = list(open_source(str(footage), 5.0, 320, 240))[:10]
    ep.run(frames)
    produced = {p: hi for p, (lo, hi) in watermarks(s, topic).items()}
    assert sum(produced.values()) == 10

    # bound: retention + segment roll + retention check interval (1 s) + margin
    deadline = time.monotonic() + (RETENTION_MS + SEGMENT_MS + 1000) / 1000 + 20
    worst_blob_age = 0.0
    from pipeline.framestore import Sweeper

    with Sweeper(store, s.store.sweep_interval_seconds):   # the store's sweeper service, standing alone
        while time.monotonic() < deadline:
            worst_blob_age = max(worst_blob_age, store.stats().oldest_age_seconds)
            wm = watermarks(s, topic)
            if all(lo >= produced[p] for p, (lo, hi) in wm.items()) and store.stats().blobs == 0:
                break
            time.sleep(0.5)
    wm = watermarks(s, topic)
    assert all(lo >= produced[p] for p, (lo, hi) in wm.items()), f"raw records still on the broker: {wm}"
    assert store.stats().blobs == 0
    assert worst_blob_age <= s.store.ttl_seconds + s.store.sweep_interval_seconds + 1.0

    # and a consumer starting now finds nothing to read
    c = Consumer({**client_config(s, "admin"), "group.id": "late-reader", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = [m for m in (c.poll(0.5) for _ in range(6)) if m is not None and not m.error()]
    c.close()
    assert got == []
