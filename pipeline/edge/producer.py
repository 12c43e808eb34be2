"""The edge producer: camera frames in, encrypted blobs in the frame store and FrameRefs on Kafka.

Nothing that leaves this process is readable without the processors' private key, and the
blobs are swept after their TTL by the sweeper that runs alongside, even if no processor comes.
"""
from __future__ import annotations

import logging
import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import cv2
from confluent_kafka import KafkaError, Message, Producer

from pipeline import serde
from pipeline.ops.kafka_clients import client_config
from pipeline.edge.sources import SampledFrame
from pipeline.envelope import CurrentPublicKey, Sealer, associated_data, key_id_of
from pipeline.framestore import FrameStore, Sweeper
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def kafka_producer(settings: Settings, **extra: object) -> Producer:
    conf = {
        **client_config(settings, "edge"),
        "client.id": settings.kafka.client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # FrameRefs are ~500 bytes of mostly random ciphertext metadata: compression buys nothing,
        # and every consumer (aiokafka included) reads uncompressed batches without extra codecs.
        "compression.type": "none",
        "message.timeout.ms": 30000,
    }
    conf.update(extra)
    return Producer(conf)


@dataclass
class EdgeStats:
    frames: int = 0
    delivered: int = 0
    failed: int = 0
    swept: int = 0
    bytes_stored: int = 0
    errors: list[str] = field(default_factory=list)


class EdgeProducer:
    def __init__(self, settings: Settings, store: FrameStore, public_key: "bytes | CurrentPublicKey", *,
                 site_id: str | None = None, camera_id: str | None = None, producer: Producer | None = None) -> None:
        """``public_key``: fixed bytes, or a :class:`CurrentPublicKey` so that a key rotation
        reaches the running edge within a second."""
        self.s = settings
        self.store = store
        self._keys = public_key if isinstance(public_key, CurrentPublicKey) else None
        self.sealer = Sealer(public_key if self._keys is None else self._keys.get())
        self.site_id = site_id or settings.edge.site_id
        self.camera_id = camera_id or settings.edge.camera_id
        self.producer = producer or kafka_producer(settings)
        self.stats = EdgeStats()
        self._pending: dict[str, int] = {}  # frame_id -> captured_at ms, until delivered+deleted or swept
        self._lock = threading.Lock()

    # -- one frame -----------------------------------------------------------------------------
    def send(self, image, captured_at: datetime) -> str:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.s.edge.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        frame_id = str(uuid.uuid4())
        cap_ms = int(captured_at.timestamp() * 1000)
        if self._keys is not None:
            pub = self._keys.get()
            if self.sealer.key_id != key_id_of(pub):
                self.sealer = Sealer(pub)
                log.info("edge %s/%s: sealing to rotated processor key %s", self.site_id, self.camera_id, self.sealer.key_id)
        sealed = self.sealer.seal(jpeg.tobytes(), associated_data(frame_id, self.site_id, self.camera_id, cap_ms))
        del jpeg
        uri = self.store.put(frame_id, sealed.ciphertext)

        ref = {
            "frame_id": frame_id,
            "site_id": self.site_id,
            "camera_id": self.camera_id,
            "captured_at": cap_ms,
            "expires_at": int((time.time() + self.store.ttl_seconds) * 1000),
            "blob_uri": uri,
            "blob_sha256": hashlib.sha256(sealed.ciphertext).hexdigest(),
            "blob_size": len(sealed.ciphertext),
            "cipher": "AES-256-GCM",
            "nonce": sealed.nonce,
            "key_wrap": "X25519-XSalsa20-Poly1305-SealedBox",
            "key_id": sealed.key_id,
            "wrapped_key": sealed.wrapped_key,
            "media_type": "image/jpeg",
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
        }
        with self._lock:
            self._pending[frame_id] = cap_ms
        self.stats.frames += 1
        self.stats.bytes_stored += len(sealed.ciphertext)
        value = serde.encode("FrameRef", ref)
        self.producer.produce(self.s.kafka.frame_refs_topic, key=self.camera_id.encode(), value=value,
                              on_delivery=self._make_callback(frame_id, uri))
        # The ledger entry lets the retention audit find frames that never got a receipt.
        self.producer.produce(self.s.kafka.ledger_topic, key=self.camera_id.encode(), value=serde.encode(
            "FrameIssued", {"frame_id": frame_id, "site_id": self.site_id, "camera_id": self.camera_id,
                            "captured_at": cap_ms, "expires_at": ref["expires_at"]}))
        self.producer.poll(0)
        return frame_id

    def _make_callback(self, frame_id: str, uri: str) -> Callable[[KafkaError | None, Message], None]:
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self.stats.delivered += 1
                return
            # No reference will ever reach a processor: delete the blob now rather than at TTL.
            self.stats.failed += 1
            self.stats.errors.append(err.str())
            log.error("frame reference not delivered (%s); deleting its blob", err.str())
            self.store.delete(uri, frame_id)
            with self._lock:
                self._pending.pop(frame_id, None)
        return cb

    # -- sweeping ------------------------------------------------------------------------------
    def on_swept(self, frame_ids: list[str]) -> None:
        """Receipts for blobs the TTL sweeper removed (no processor deleted them in time)."""
        now_ms = int(time.time() * 1000)
        for fid in frame_ids:
            with self._lock:
                cap = self._pending.pop(fid, None)
            self.stats.swept += 1
            rec = {"frame_id": fid, "site_id": self.site_id, "camera_id": self.camera_id,
                   "captured_at": cap if cap is not None else now_ms, "deleted_at": now_ms,
                   "outcome": "SWEPT", "deleted_by": "sweeper"}
            self.producer.produce(self.s.kafka.receipts_topic, key=self.camera_id.encode(),
                                  value=serde.encode("DeletionReceipt", rec))
        # Forget frames old enough that their blob is surely gone (processed or swept).
        horizon = now_ms - int(self.store.ttl_seconds * 2000)
        with self._lock:
            for fid in [f for f, c in self._pending.items() if c < horizon]:
                del self._pending[fid]

    # -- a whole source ------------------------------------------------------------------------
    def run(self, frames: Iterable[SampledFrame], *, max_frames: int | None = None, realtime: bool = False,
            speed: float = 1.0, start: datetime | None = None,
            on_frame: Callable[[int], None] | None = None) -> EdgeStats:
        """Send a whole source. ``realtime`` paces frames at media time divided by ``speed``,
        stamped when sent, like a live camera. Otherwise frames are stamped ``start`` plus their
        media time and sent as fast as possible, but never before that time has come: a camera
        cannot send a frame before taking it, and processors dead-letter capture times ahead of
        the broker's clock (clock_skew). The default ``start`` is half the store's TTL ago, so
        a short clip goes at once and a long one becomes real time after its head start."""
        if start is None:
            start = datetime.now(timezone.utc) - (timedelta(0) if realtime else timedelta(seconds=self.store.ttl_seconds / 2))
        t0 = time.monotonic()
        with Sweeper(self.store, self.s.store.sweep_interval_seconds, self.on_swept):
            for i, fr in enumerate(frames):
                if max_frames is not None and i >= max_frames:
                    break
                if realtime:
                    delay = fr.offset_seconds / speed - (time.monotonic() - t0)
                else:
                    delay = start.timestamp() + fr.offset_seconds - time.time()
                if delay > 0:
                    time.sleep(delay)
                # Paced replay behaves like a live camera: the capture time is when the frame is sent.
                offset = fr.offset_seconds / speed if realtime else fr.offset_seconds
                captured = datetime.fromtimestamp(start.timestamp() + offset, tz=timezone.utc)
                self.send(fr.image, captured)
                if on_frame:
                    on_frame(i + 1)
            remaining = self.producer.flush(30)
            if remaining:
                self.stats.errors.append(f"{remaining} frame references still undelivered after 30 s")
        self.producer.flush(10)  # receipts the sweeper produced while stopping
        return self.stats
