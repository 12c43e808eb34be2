"""Ephemeral store for encrypted frames.

Blobs live for seconds: the processor deletes each one right after use, and a sweeper deletes
anything older than the TTL even if no processor ever came. The interface is small so that an
HTTP or S3-style store (with a bucket lifecycle rule as the sweeper) can replace the local one.
"""
from __future__ import annotations

import os
import stat
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

_FRAME_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BlobNotFound(Exception):
    """The blob is gone: already processed, swept after its TTL, or never stored."""


class BlobRejected(Exception):
    """The reference is not acceptable (outside the store, bad id, too large)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StoreStats:
    blobs: int
    oldest_age_seconds: float  # 0 when empty


class FrameStore(ABC):
    ttl_seconds: float

    @abstractmethod
    def put(self, frame_id: str, data: bytes) -> str:
        """Store a blob and return its URI."""

    @abstractmethod
    def get(self, uri: str, frame_id: str, max_bytes: int) -> bytes: ...

    @abstractmethod
    def delete(self, uri: str, frame_id: str) -> bool:
        """Delete; True if the blob existed."""

    @abstractmethod
    def sweep(self, now: float | None = None) -> list[str]:
        """Delete blobs older than the TTL; return the swept frame ids."""

    @abstractmethod
    def stats(self, now: float | None = None) -> StoreStats: ...


class LocalDirFrameStore(FrameStore):
    """One file per blob in a directory (tmpfs in production, so nothing reaches a disk)."""

    def __init__(self, root: Path, ttl_seconds: float) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.ttl_seconds = ttl_seconds

    def _path_for(self, uri: str, frame_id: str) -> Path:
        if not _FRAME_ID.match(frame_id):
            raise BlobRejected("malformed_record", "frame id is not a UUID")
        u = urlparse(uri)
        if u.scheme != "file":
            raise BlobRejected("unsupported_store", f"blob URI scheme {u.scheme!r} is not served by this store")
        p = Path(u.path)
        expected = self.root / f"{frame_id}.bin"
        if p != expected:
            # Never follow a reference outside the store: a forged FrameRef must not make the
            # processor read or delete arbitrary files.
            raise BlobRejected("foreign_blob_uri", "blob URI does not name this frame inside the frame store")
        return expected

    def put(self, frame_id: str, data: bytes) -> str:
        if not _FRAME_ID.match(frame_id):
            raise ValueError("frame id must be a UUID")
        final = self.root / f"{frame_id}.bin"
        tmp = self.root / f".{frame_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
        return final.as_uri()

    def get(self, uri: str, frame_id: str, max_bytes: int) -> bytes:
        p = self._path_for(uri, frame_id)
        try:
            # O_NONBLOCK: opening a FIFO planted at a blob path must not block the worker forever;
            # O_NOFOLLOW: a symlink must not lead the processor out of the store.
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise BlobNotFound("blob not in store (processed, swept or never stored)") from None
        except OSError as e:
            raise BlobRejected("unreadable_blob", f"blob path cannot be opened as a file ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BlobRejected("unreadable_blob", "blob path is not a regular file")
            if st.st_size > max_bytes:
                raise BlobRejected("oversized_frame", f"blob is {st.st_size} bytes, limit {max_bytes}")
            return f.read(max_bytes + 1)

    def delete(self, uri: str, frame_id: str) -> bool:
        p = self._path_for(uri, frame_id)
        try:
            p.unlink()
            return True
        except FileNotFoundError:
            return False

    def _entries(self):
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.endswith(".bin") or e.name.endswith(".tmp"):
                    try:
                        yield e, e.stat().st_mtime
                    except FileNotFoundError:
                        continue

    def sweep(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        swept = []
        for e, mtime in self._entries():
            if now - mtime >= self.ttl_seconds:
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    continue
                if e.name.endswith(".bin"):
                    swept.append(e.name[:-4])
        return swept

    def stats(self, now: float | None = None) -> StoreStats:
        now = time.time() if now is None else now
        n, oldest = 0, 0.0
        for _e, mtime in self._entries():
            n += 1
            oldest = max(oldest, now - mtime)
        return StoreStats(n, oldest)


def open_store(url: str, ttl_seconds: float) -> FrameStore:
    u = urlparse(url)
    if u.scheme == "file":
        return LocalDirFrameStore(Path(u.path), ttl_seconds)
    raise ValueError(f"frame store URL {url!r}: only file:// stores are implemented")


class Sweeper:
    """Background thread that enforces the TTL. Runs wherever blobs are written."""

    def __init__(self, store: FrameStore, interval: float, on_swept: Callable[[list[str]], None] | None = None) -> None:
        self.store, self.interval, self.on_swept = store, interval, on_swept
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-sweeper", daemon=True)
        self.swept_total = 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            swept = self.store.sweep()
            if swept:
                self.swept_total += len(swept)
                if self.on_swept:
                    self.on_swept(swept)

    def __enter__(self) -> "Sweeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
