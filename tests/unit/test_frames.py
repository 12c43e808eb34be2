"""FrameProcessor's guards on one frame, without Kafka: identifiers, the pixel limit before any
decoding, and the deletion receipt when a bug strikes after the blob was fetched (issue 13)."""
import hashlib
import os
import struct
import threading
import time
import uuid
import zlib

import cv2
import numpy as np
import pytest

from pipeline import serde
from pipeline.envelope import Sealer, associated_data, ensure_keypair, load_keyring, load_public_key
from pipeline.framestore import BlobRejected, LocalDirFrameStore
from pipeline.processor.frames import FrameProcessor, ProcessingError, dead_letter, image_dimensions


class NoPeople:
    name = "none"

    def detect(self, image):
        return []


class Broken:
    name = "broken"

    def detect(self, image):
        raise RuntimeError("a bug")


@pytest.fixture()
def kit(tmp_path):
    ensure_keypair(tmp_path / "keys")
    store = LocalDirFrameStore(tmp_path / "frames", ttl_seconds=600)
    sealer = Sealer(load_public_key(tmp_path / "keys"))

    def ref(payload: bytes, site="s1", cam="c1", cap=None, expires=None):
        fid, cap = str(uuid.uuid4()), int(time.time() * 1000) if cap is None else cap
        sealed = sealer.seal(payload, associated_data(fid, site, cam, cap))
        uri = store.put(fid, sealed.ciphertext)
        return serde.encode("FrameRef", dict(
            frame_id=fid, site_id=site, camera_id=cam, captured_at=cap,
            expires_at=cap + 600_000 if expires is None else expires, blob_uri=uri,
            blob_sha256=hashlib.sha256(sealed.ciphertext).hexdigest(), blob_size=len(sealed.ciphertext),
            nonce=sealed.nonce, key_id=sealed.key_id, wrapped_key=sealed.wrapped_key, width=64, height=64)), fid

    def proc(detector=NoPeople(), max_pixels=4096 * 4096):
        return FrameProcessor(store, load_keyring(tmp_path / "keys"), detector, None, 4_000_000,
                              max_pixels=max_pixels, store_ttl_ms=600_000)

    return ref, proc, store


def jpeg(w=64, h=48) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


def png_declaring(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h (valid CRC) with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_an_image_declaring_a_huge_canvas_is_refused_from_its_header_and_its_blob_deleted(kit):
    ref, proc, store = kit
    assert image_dimensions(png_declaring(8000, 6000)) == (8000, 6000)
    assert image_dimensions(b"not an image") is None
    value, fid = ref(png_declaring(30000, 30000))
    with pytest.raises(ProcessingError) as e:
        proc(max_pixels=640 * 480).process(value)
    assert e.value.reason == "oversized_frame" and e.value.receipt["outcome"] == "DELETED"
    assert not (store.root / f"{fid}.bin").exists()


def test_identifiers_with_control_or_bidi_characters_are_malformed(kit):
    ref, proc, store = kit
    for bad in ("cam\n1", "cam\x00", "cam\u202e1", "", "x" * 65):
        value, fid = ref(jpeg(), cam=bad)
        with pytest.raises(ProcessingError) as e:
            proc().process(value)
        assert e.value.reason == "malformed_record" and "camera_id" in e.value.detail
        assert not (store.root / f"{fid}.bin").exists()  # refused, and its blob deleted all the same
        dl = dead_letter(e.value, value, "frames.refs", 0, 1, "processor")
        assert dl["camera_id"] is None and dl["site_id"] == "s1"  # the bad id is not repeated


def test_a_bug_after_decryption_still_yields_the_deletion_receipt(kit):
    ref, proc, store = kit
    value, fid = ref(jpeg())
    with pytest.raises(ProcessingError) as e:
        proc(detector=Broken()).process(value)
    assert e.value.reason == "internal_error" and e.value.detail == "RuntimeError"
    assert e.value.receipt["outcome"] == "DELETED" and e.value.receipt["frame_id"] == fid
    assert not (store.root / f"{fid}.bin").exists()


def test_a_fifo_at_a_blob_path_is_rejected_without_blocking(kit):
    _, _, store = kit
    fid = str(uuid.uuid4())
    path = store.root / f"{fid}.bin"
    os.mkfifo(path)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        err=pytest.raises(BlobRejected, store.get, path.as_uri(), fid, 1000)))
    t.start()
    t.join(5)
    assert not t.is_alive() and result["err"].value.reason == "unreadable_blob"


def test_capture_times_are_judged_against_the_brokers_append_time(kit):
    """Issue 13: one frame stamped an hour ahead used to push its camera's window watermark and
    tracker clock an hour forward (10 frames of one person became 10 passes, one window became
    10 padded fragments), and an edge clock behind by more than the TTL read as expired_frame."""
    ref, proc, store = kit
    p = proc()
    value, fid = ref(jpeg())
    cap = serde.decode("FrameRef", value)["captured_at"]
    cap_ms = serde.epoch_ms(cap)
    # an hour ahead of the append time: dead letter, blob deleted, receipt sent
    with pytest.raises(ProcessingError) as e:
        p.process(value, appended_ms=cap_ms - 3_600_000)
    assert e.value.reason == "clock_skew" and "ahead" in e.value.detail
    assert e.value.skew_ms == 3_600_000 and e.value.receipt["outcome"] == "DELETED"
    assert not list(store.root.glob("*.bin"))
    # an edge clock two hours behind (its expiry, which that clock wrote, is long past):
    # clock_skew, not expired_frame, so the dead letters name the cause
    value, fid = ref(jpeg())
    cap_ms = serde.epoch_ms(serde.decode("FrameRef", value)["captured_at"])
    with pytest.raises(ProcessingError) as e:
        p.process(value, now=cap_ms / 1000 + 7200, appended_ms=cap_ms + 7_200_000)
    assert e.value.reason == "clock_skew" and "behind" in e.value.detail and e.value.skew_ms == -7_200_000
    # a replayed capture two hours old from an edge whose clock is right: a late frame, counted
    now_ms = int(time.time() * 1000)
    value, fid = ref(jpeg(), cap=now_ms - 7_200_000, expires=now_ms + 600_000)
    res = p.process(value, appended_ms=now_ms + 20)
    assert res.captured_at_ms == now_ms - 7_200_000 and res.skew_ms == -20
    # ahead by less than the tolerance: processed, counted at the append time
    value, fid = ref(jpeg())
    cap_ms = serde.epoch_ms(serde.decode("FrameRef", value)["captured_at"])
    res = p.process(value, appended_ms=cap_ms - 3000)
    assert res.captured_at_ms == cap_ms - 3000 and res.skew_ms == 3000
    # an honest clock: appended after capture, counted at its capture time
    value, fid = ref(jpeg())
    cap_ms = serde.epoch_ms(serde.decode("FrameRef", value)["captured_at"])
    res = p.process(value, appended_ms=cap_ms + 40)
    assert res.captured_at_ms == cap_ms and res.skew_ms == -40
    # without an append time (a CreateTime topic) the processor's own clock bounds it from above
    value, fid = ref(jpeg())
    cap_ms = serde.epoch_ms(serde.decode("FrameRef", value)["captured_at"])
    with pytest.raises(ProcessingError) as e:
        p.process(value, now=cap_ms / 1000 - 3600)
    assert e.value.reason == "clock_skew"


def _tamper(store, fid):
    p = store.root / f"{fid}.bin"
    blob = bytearray(p.read_bytes())
    blob[3] ^= 0xFF
    p.write_bytes(bytes(blob))
    return hashlib.sha256(bytes(blob)).hexdigest()


# Every dead-letter reason FrameProcessor can give, each on a direct call: how to make the frame
# bad, and whether its blob (when there is one of ours) is gone afterwards with a receipt.
CASES = {
    "malformed_record": lambda r, store, fid, tmp: b"\x00not avro",
    "oversized_frame": lambda r, store, fid, tmp: {**r, "blob_size": 4_000_001},
    "expired_frame": lambda r, store, fid, tmp: {**r, "expires_at": serde.epoch_ms(r["captured_at"]) - 1},
    "missing_blob": lambda r, store, fid, tmp: (store.delete(r["blob_uri"], fid), r)[1],
    "foreign_blob_uri": lambda r, store, fid, tmp: {**r, "blob_uri": (tmp / "elsewhere.bin").as_uri()},
    "unsupported_store": lambda r, store, fid, tmp: {**r, "blob_uri": f"s3://bucket/{fid}.bin"},
    "tampered_ciphertext": lambda r, store, fid, tmp: {**r, "blob_sha256": _tamper(store, fid)},
    "unknown_key": lambda r, store, fid, tmp: {**r, "key_id": "0" * 16},
    "key_unwrap_failed": lambda r, store, fid, tmp: {**r, "wrapped_key": bytes(len(r["wrapped_key"]))},
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_every_dead_letter_reason_directly(kit, tmp_path, reason):
    ref, proc, store = kit
    value, fid = ref(jpeg())
    bad = CASES[reason](serde.decode("FrameRef", value), store, fid, tmp_path)
    value = bad if isinstance(bad, bytes) else serde.encode("FrameRef", bad)
    with pytest.raises(ProcessingError) as e:
        proc().process(value, appended_ms=int(time.time() * 1000))
    assert e.value.reason == reason, e.value.detail
    dl = dead_letter(e.value, value, "frames.refs", 0, 7, "processor")
    assert dl["reason"] == reason and dl["payload_sha256"] == hashlib.sha256(value).hexdigest()
    if reason in ("malformed_record", "foreign_blob_uri", "unsupported_store"):
        assert e.value.receipt is None   # nothing of ours to vouch for
    else:
        assert e.value.receipt["frame_id"] == fid
        assert e.value.receipt["outcome"] == ("ALREADY_ABSENT" if reason == "missing_blob" else "DELETED")
    # a reference that cannot be read, or names a blob outside the store, never touches our blob
    # (the TTL sweeper removes it); every other case deletes it
    untouched = reason in ("malformed_record", "foreign_blob_uri", "unsupported_store")
    assert (store.root / f"{fid}.bin").exists() == untouched


def test_a_payload_that_is_not_an_image_is_undecodable(kit):
    ref, proc, store = kit
    value, fid = ref(b"GIF89a but not really an image")
    with pytest.raises(ProcessingError) as e:
        proc().process(value)
    assert e.value.reason == "undecodable_image" and e.value.receipt["outcome"] == "DELETED"
    assert not (store.root / f"{fid}.bin").exists()


def test_the_receipt_is_stamped_when_the_blob_is_deleted_not_after_inference(kit):
    """Issue 14: receipts were stamped after inference, adding the detector's time to the
    capture-to-deletion latency that SREs are shown."""
    ref, proc, store = kit

    class Slow:
        name = "slow"
        started = None

        def detect(self, image):
            Slow.started = time.time()
            time.sleep(0.3)
            return []

    value, fid = ref(jpeg())
    res = proc(detector=Slow()).process(value)
    assert res.receipt["outcome"] == "DELETED"
    assert res.receipt["deleted_at"] <= int(Slow.started * 1000) + 1
