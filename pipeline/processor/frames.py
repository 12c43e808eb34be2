"""One frame reference in, anonymous groups and a deletion receipt out. Pure logic, no Kafka.

Whatever happens, a blob that was fetched is deleted before this returns, and the plaintext
and data key go out of scope here: the only things that leave are group ids (already noised
and hashed by the privacy core), a frame-level receipt, or a payload-free dead-letter reason.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from pipeline import serde
from pipeline.serde import epoch_ms
from pipeline.envelope import EnvelopeError, Keyring, associated_data
from pipeline.framestore import BlobNotFound, BlobRejected, FrameStore
from pipeline.vision.descriptor import describe as describe_hsv
from pipeline.privacy import UNKNOWN
from pipeline.vision.crops import crop_weights
from pipeline.vision.detector import Detector


class ProcessingError(Exception):
    """A frame that goes to the dead-letter topic. Message and fields are payload-free."""

    def __init__(self, reason: str, detail: str, ref: dict[str, Any] | None = None,
                 receipt: dict[str, Any] | None = None, skew_ms: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.ref = ref
        self.receipt = receipt
        self.skew_ms = skew_ms


@dataclass
class FrameResult:
    site_id: str
    camera_id: str
    captured_at_ms: int
    receipt: dict[str, Any]
    persons: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Per detection, for the pass counter only (in memory, never emitted): the box (x, y, w, h),
    # the appearance descriptor (averaged over the pass, then grouped: assign_groups) and label.
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    labels: list[tuple[str, str]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    frame_size: tuple[int, int] | None = None  # (width, height) of the decoded image
    # The edge's clock minus the broker's append time (None without an append time): its skew
    # minus the delivery delay. ``captured_at_ms`` is the capture time clamped to the trusted time.
    skew_ms: int | None = None
    # Per detection, the weight of its crop in the pass's mean descriptor (0: cut by the frame
    # border or overlapped by another person).
    quality: list[float] = field(default_factory=list)

    @property
    def scored_boxes(self) -> list[tuple[int, int, int, int, float]]:
        return [(*b, s) for b, s in zip(self.boxes, self.scores)]


class FrameProcessor:
    def __init__(self, store: FrameStore, keyring: Keyring, detector: Detector, anonymizer: Any,
                 max_blob_bytes: int, max_pixels: int = 4096 * 4096, demographics: Any = None,
                 describe: Callable[[np.ndarray, list], np.ndarray] = describe_hsv,
                 skew_tolerance_ms: int = 5000, store_ttl_ms: int = 30_000) -> None:
        """``demographics``: an object with ``counts(image, boxes) -> Counter[(age_band, gender)]``
        (pipeline.vision.age_gender.DemographicEstimator), or None for no demographic counts.
        ``skew_tolerance_ms``: how far a capture time, or the edge's clock, may be ahead of the
        broker's append time before the frame is a ``clock_skew`` dead letter (the edge's clock
        may also be behind by up to ``store_ttl_ms`` more: the frame store's TTL, which the edge
        adds to its clock to stamp the expiry)."""
        self.store = store
        self.keyring = keyring
        self.detector = detector
        self.anonymizer = anonymizer
        self.max_blob_bytes = max_blob_bytes
        self.max_pixels = max_pixels
        self.demographics = demographics
        self.describe = describe
        self.skew_tolerance_ms = skew_tolerance_ms
        self.store_ttl_ms = store_ttl_ms

    def process(self, value: bytes | None, now: float | None = None, appended_ms: int | None = None) -> FrameResult:
        """``appended_ms``: the broker's LogAppendTime of the record (trusted time); None when the
        topic keeps the producer's CreateTime, which is the edge's own clock: then only the
        processor's clock bounds a capture time from above."""
        try:
            ref = serde.decode("FrameRef", value)
        except serde.SerdeError as e:
            raise ProcessingError("malformed_record", str(e)) from None
        fid = ref["frame_id"]
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        deleted = False
        deleted_at: float | None = None   # when the blob was deleted: the receipt's time, not when it is sent
        try:
            try:
                for key in ("site_id", "camera_id"):
                    # refused inside the try, so the blob the reference names is still deleted
                    if not serde.valid_identifier(ref[key]):
                        raise ProcessingError("malformed_record", f"{key} must be 1-64 characters of A-Z a-z 0-9 "
                                              ". _ : - (no control, space or bidirectional characters)", ref)
                if ref["blob_size"] > self.max_blob_bytes:
                    raise ProcessingError("oversized_frame", f"blob_size {ref['blob_size']} exceeds {self.max_blob_bytes}", ref)
                now_s = time.time() if now is None else now
                captured = epoch_ms(ref["captured_at"])
                trusted = int(now_s * 1000) if appended_ms is None else int(appended_ms)
                ahead = captured - trusted
                if ahead > self.skew_tolerance_ms:
                    raise ProcessingError("clock_skew", f"capture time is {ahead / 1000:.1f} s ahead of the broker's "
                                          f"append time (tolerance {self.skew_tolerance_ms / 1000:g} s): the "
                                          f"edge's clock is ahead", ref, skew_ms=ahead)
                skew = None
                if appended_ms is not None:
                    # The edge's own clock when it stored the blob: it stamps the expiry as that
                    # time plus the store's TTL. Capture times may be older (replays, backfills);
                    # the edge's clock may not be off.
                    skew = epoch_ms(ref["expires_at"]) - self.store_ttl_ms - trusted
                    if skew > self.skew_tolerance_ms or -skew > self.store_ttl_ms + self.skew_tolerance_ms:
                        raise ProcessingError("clock_skew", f"the edge's clock is {abs(skew) / 1000:.1f} s "
                                              f"{'ahead of' if skew > 0 else 'behind'} the broker's append time "
                                              f"(judged from the frame's expiry; tolerance "
                                              f"{self.skew_tolerance_ms / 1000:g} s ahead, "
                                              f"{(self.store_ttl_ms + self.skew_tolerance_ms) / 1000:g} s behind)",
                                              ref, skew_ms=skew)
                if epoch_ms(ref["expires_at"]) < now_s * 1000:
                    raise ProcessingError("expired_frame", "frame reference is past its expiry", ref)
                blob = self.store.get(ref["blob_uri"], fid, self.max_blob_bytes)
            except BlobNotFound as e:
                raise ProcessingError("missing_blob", str(e), ref) from None
            except BlobRejected as e:
                raise ProcessingError(e.reason, str(e), ref) from None
            if hashlib.sha256(blob).hexdigest() != ref["blob_sha256"]:
                raise ProcessingError("tampered_ciphertext", "blob hash does not match the reference", ref)
            aad = associated_data(fid, ref["site_id"], ref["camera_id"], epoch_ms(ref["captured_at"]))
            try:
                plain = self.keyring.open(ref["key_id"], ref["wrapped_key"], ref["nonce"], blob, aad)
            except EnvelopeError as e:
                raise ProcessingError(e.reason, str(e), ref) from None
            del blob
            # The blob is no longer needed: delete before the (slow) inference, not after.
            deleted = self.store.delete(ref["blob_uri"], fid)
            deleted_at = time.time()
            timings["fetch_decrypt"] = (time.perf_counter() - t0) * 1000
            # The pixel limit is checked on the image header, before decoding: a small JPEG can
            # declare a huge canvas, and decoding it first would allocate it.
            dims = image_dimensions(plain)
            if dims is None:
                raise ProcessingError("undecodable_image", "decrypted payload is not a decodable image", ref)
            if dims[0] * dims[1] > self.max_pixels:
                raise ProcessingError("oversized_frame", f"image {dims[0]}x{dims[1]} exceeds the pixel limit", ref)
            image = cv2.imdecode(np.frombuffer(plain, dtype=np.uint8), cv2.IMREAD_COLOR)
            del plain
            if image is None:
                raise ProcessingError("undecodable_image", "decrypted payload is not a decodable image", ref)
            frame_size = (int(image.shape[1]), int(image.shape[0]))
            t1 = time.perf_counter()
            boxes = self.detector.detect(image)
            timings["detect"] = (time.perf_counter() - t1) * 1000
            labels: list[tuple[str, str]] = [(UNKNOWN, UNKNOWN)] * len(boxes)
            if self.demographics is not None and boxes:
                t3 = time.perf_counter()
                labels = [e.key for e in self.demographics.estimate(image, boxes)]  # face crops stay inside
                timings["demographics"] = (time.perf_counter() - t3) * 1000
            t2 = time.perf_counter()
            emb = self.describe(image, boxes) if boxes else np.zeros((0, 0), dtype=np.float32)
            quality = crop_weights(boxes, image.shape[1], image.shape[0])
            del image
            timings["describe"] = (time.perf_counter() - t2) * 1000
        except ProcessingError as e:
            e.receipt = self._delete_and_receipt(ref, already=deleted, at=deleted_at)
            raise
        except Exception as exc:
            # A bug after the blob was fetched: the blob is gone either way, so the receipt must
            # still be sent (else the audit reports a frame that was in fact deleted).
            receipt = self._delete_and_receipt(ref, already=deleted, at=deleted_at)
            raise ProcessingError("internal_error", type(exc).__name__, ref, receipt) from exc
        # Stamped with the deletion, which came before inference (the receipt used to be stamped
        # after it, adding the detector's time to the measured capture-to-deletion latency).
        receipt = self._receipt(ref, "DELETED" if deleted else "ALREADY_ABSENT", deleted_at)
        # Counted at the capture time, but never later than the trusted time: a frame ahead by
        # up to the tolerance would otherwise push the camera's window watermark and its
        # tracker's clock forward, so on-time frames after it would open window fragments (each
        # padded with fictitious persons) and end passes early (issue 13). Honest clocks are
        # unaffected: a frame is appended after it is captured.
        return FrameResult(ref["site_id"], ref["camera_id"], min(captured, trusted), receipt,
                           persons=len(boxes), timings_ms=timings,
                           boxes=[(int(b.x), int(b.y), int(b.w), int(b.h)) for b in boxes], descriptors=emb,
                           labels=labels, scores=[float(b.score) for b in boxes], quality=quality,
                           frame_size=frame_size, skew_ms=skew)

    def assign_groups(self, descriptors: list[np.ndarray]) -> list[int]:
        """Groups of ended passes' mean descriptors (the privacy core; fresh noise per call)."""
        if not descriptors:
            return []
        return [int(g) for g in self.anonymizer.assign_groups(np.stack(descriptors))]

    def _delete_and_receipt(self, ref: dict[str, Any], already: bool, at: float | None = None) -> dict[str, Any] | None:
        if already:
            return self._receipt(ref, "DELETED", at)
        try:
            existed = self.store.delete(ref["blob_uri"], ref["frame_id"])
        except BlobRejected:
            return None  # a foreign URI: never touch it, and there is no blob of ours to vouch for
        return self._receipt(ref, "DELETED" if existed else "ALREADY_ABSENT", time.time())

    @staticmethod
    def _receipt(ref: dict[str, Any], outcome: str, at: float | None = None) -> dict[str, Any]:
        return {"frame_id": ref["frame_id"], "site_id": ref["site_id"], "camera_id": ref["camera_id"],
                "captured_at": epoch_ms(ref["captured_at"]), "deleted_at": int((time.time() if at is None else at) * 1000),
                "outcome": outcome, "deleted_by": "processor"}


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header without decoding its pixels; None if unreadable."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:
        return 1 << 20, 1 << 20  # far over any pixel limit: reported as oversized, never decoded
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def dead_letter(err: Exception, value: bytes | None, topic: str, partition: int, offset: int, stage: str) -> dict[str, Any]:
    """A payload-free description of a failed record."""
    reason = getattr(err, "reason", "internal_error")
    ref = getattr(err, "ref", None) or {}
    detail = getattr(err, "detail", None) or type(err).__name__
    return {
        "source_topic": topic, "source_partition": int(partition), "source_offset": int(offset),
        "failed_at": int(time.time() * 1000), "stage": stage, "reason": reason,
        "error_class": type(err).__name__, "detail": str(detail)[:300],
        "payload_size": len(value or b""), "payload_sha256": hashlib.sha256(value or b"").hexdigest(),
        # ids that failed validation are not repeated where they could forge log or report lines
        "site_id": ref.get("site_id") if serde.valid_identifier(ref.get("site_id")) else None,
        "camera_id": ref.get("camera_id") if serde.valid_identifier(ref.get("camera_id")) else None,
        "frame_id": ref.get("frame_id"),
    }


__all__ = ["FrameProcessor", "FrameResult", "ProcessingError", "dead_letter"]
