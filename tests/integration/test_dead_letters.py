"""Bad input never crashes the processor: each case lands on the dead-letter topic with a reason,
the worker goes on to process the good frame behind it, and nothing personal travels along."""
import hashlib
import time
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

from pipeline import serde
from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import Sealer, ensure_keypair, load_public_key
from pipeline.framestore import open_store
from tests.integration.conftest import flowctl
from tests.integration.test_end_to_end import read_all
from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration


def test_bad_frames_go_to_dead_letters_and_processing_continues(env, footage, tmp_path):
    s = env
    store = open_store(s.store.url, s.store.ttl_seconds)
    img = next(iter(open_source(str(footage), 1.0, 320, 240))).image
    sent = []

    class Capture:  # holds references back so the test can corrupt copies before publishing
        def produce(self, topic, key, value, on_delivery=None):
            if topic == s.kafka.frame_refs_topic:
                sent.append(value)

        def poll(self, t):
            return 0

    ep = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="dlq-site", camera_id="cam-x", producer=Capture())
    prod = Producer({**client_config(s, "admin")})
    topic = s.kafka.frame_refs_topic
    now = datetime.now(timezone.utc)

    # capture well-formed refs by sending through the real edge, then corrupt copies of them
    for _ in range(6):
        ep.send(img, now)
    # a capture stamped an hour ahead, and an edge whose clock is two hours behind (it stamps
    # the expiry from that clock, which used to read as expired_frame): judged against the
    # broker's append time
    ep.send(img, now + timedelta(hours=1))
    ep.send(img, now - timedelta(hours=2))
    refs = [serde.decode("FrameRef", v) for v in sent]
    refs[7]["expires_at"] = serde.epoch_ms(refs[7]["expires_at"]) - 2 * 3600 * 1000

    def put(ref):
        prod.produce(topic, key=b"cam-x", value=serde.encode("FrameRef", ref))

    cases = {}
    prod.produce(topic, key=b"cam-x", value=b"\x00garbage that is not avro")
    cases["malformed_record"] = 1
    # tampered ciphertext: flip a byte in the stored blob and fix the hash so only GCM can tell
    r = dict(refs[0])
    p = store.root / f"{r['frame_id']}.bin"
    blob = bytearray(p.read_bytes()); blob[5] ^= 0xFF; p.write_bytes(bytes(blob))
    r["blob_sha256"] = hashlib.sha256(bytes(blob)).hexdigest()
    put(r); cases["tampered_ciphertext"] = 1
    # metadata swapped onto another frame's blob: the AAD no longer matches
    r = dict(refs[1]); r["camera_id"] = "cam-y"; put(r); cases["tampered_ciphertext"] += 1
    # unknown processor key
    other = tmp_path / "otherkeys"; ensure_keypair(other)
    r = dict(refs[2]); x = Sealer(load_public_key(other)).seal(b"x", b"y"); r["key_id"] = x.key_id; put(r)
    cases["unknown_key"] = 1
    # missing blob
    r = dict(refs[3]); store.delete(r["blob_uri"], r["frame_id"]); put(r); cases["missing_blob"] = 1
    # oversized
    r = dict(refs[4]); r["blob_size"] = s.store.max_blob_bytes + 1; put(r); cases["oversized_frame"] = 1
    # a reference pointing outside the store must never be read or deleted
    victim = tmp_path / "victim.bin"; victim.write_bytes(b"not yours")
    r = dict(refs[5]); r["blob_uri"] = victim.as_uri(); put(r); cases["foreign_blob_uri"] = 1
    put(refs[6]); put(refs[7]); cases["clock_skew"] = 2
    # and one good frame behind all of them
    ep2 = EdgeProducer(s, store, load_public_key(s.keys.dir), site_id="dlq-site", camera_id="cam-x")
    ep2.send(img, now)
    ep2.producer.flush(10)
    prod.flush(10)
    total = sum(cases.values()) + 1

    proc = flowctl(s, "process", "--max-frames", str(total), "--max-seconds", "120")
    assert f"processor: {total} frames" in proc.stderr, proc.stderr[-2000:]
    assert victim.read_bytes() == b"not yours"

    dls = [serde.decode("DeadLetter", m.value()) for m in read_all(s, s.kafka.dead_letter_topic)]
    got: dict[str, int] = {}
    for d in dls:
        got[d["reason"]] = got.get(d["reason"], 0) + 1
        assert d["stage"] == "processor" and d["source_topic"] == topic and d["payload_sha256"]
    assert got == cases
    skewed = sorted(d["detail"] for d in dls if d["reason"] == "clock_skew")
    assert "ahead of the broker's append time" in skewed[0] and "clock is 7200" in skewed[1] and "behind" in skewed[1]

    # dead letters carry no payload: no wrapped key, nonce or blob bytes in them
    raw = b"".join(m.value() for m in read_all(s, s.kafka.dead_letter_topic))
    for ref in refs:
        assert ref["wrapped_key"] not in raw and ref["nonce"] not in raw
        assert ref["wrapped_key"].hex().encode() not in raw

    # blobs of rejected frames were deleted too; the only one left is the blob whose reference was
    # redirected elsewhere (the processor never learned its URI), and the TTL sweeper removes it
    left = sorted(p.name for p in store.root.glob("*.bin"))
    assert left == [f"{refs[5]['frame_id']}.bin"]
    assert store.sweep(now=time.time() + s.store.ttl_seconds) == [refs[5]["frame_id"]]
