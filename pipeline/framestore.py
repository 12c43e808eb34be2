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


BLOB_PATH = "/v1/blobs/"   # a blob service's path for a frame: BLOB_PATH + frame id


class LocalDirFrameStore(FrameStore):
    """One file per blob in a directory (tmpfs in production, so nothing reaches a disk).

    ``public_url``: the base URL of the site's blob service (pipeline/edge/blobservice.py) when
    processors are elsewhere; ``put`` then returns ``<public_url>/v1/blobs/<frame id>``, the
    address a remote processor fetches and deletes it at, instead of a file URI."""

    def __init__(self, root: Path, ttl_seconds: float, public_url: str = "") -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.ttl_seconds = ttl_seconds
        self.public_url = public_url.rstrip("/")

    def path_of(self, frame_id: str) -> Path:
        if not _FRAME_ID.match(frame_id):
            raise BlobRejected("malformed_record", "frame id is not a UUID")
        return self.root / f"{frame_id}.bin"

    def _path_for(self, uri: str, frame_id: str) -> Path:
        expected = self.path_of(frame_id)
        u = urlparse(uri)
        if u.scheme != "file":
            raise BlobRejected("unsupported_store", f"blob URI scheme {u.scheme!r} is not served by this store")
        if Path(u.path) != expected:
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
        return f"{self.public_url}{BLOB_PATH}{frame_id}" if self.public_url else final.as_uri()

    def get(self, uri: str, frame_id: str, max_bytes: int) -> bytes:
        return self.read(self._path_for(uri, frame_id), max_bytes)

    def read(self, p: Path, max_bytes: int) -> bytes:
        """The blob at ``p`` (a path :meth:`path_of` gave), refusing anything but a regular file."""
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
        return self.unlink(self._path_for(uri, frame_id))

    @staticmethod
    def unlink(p: Path) -> bool:
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


def origin_of(url: str) -> str:
    """``https://host:port`` of a URL (port made explicit), for comparing origins exactly."""
    u = urlparse(url)
    if u.scheme != "https" or not u.hostname:
        raise ValueError(f"{url!r} is not an https URL")
    return f"https://{u.hostname.lower()}:{u.port or 443}"


class RemoteFrameStore(FrameStore):
    """A processor's client of the sites' blob services (pipeline/edge/blobservice.py): GET and
    DELETE over HTTPS, with the deployment's CA pinned and a bearer token.

    Why confinement matters more here: a forged reference must not make the processor fetch from,
    or send its token to, any host the deployment did not list. A URI is served only if it is
    exactly ``https://<listed origin>/v1/blobs/<its frame id>`` (no user, query or fragment).
    Connections are pooled (a TLS handshake per frame would add milliseconds to every deletion).
    Sweeping is the blob service's job; :meth:`stats` asks every listed service.
    """

    def __init__(self, origins: list[str], token: str, ca_file: str, ttl_seconds: float,
                 timeout_seconds: float = 2.0) -> None:
        import urllib3

        if not origins:
            raise ValueError("a remote frame store needs at least one blob service origin")
        self.origins = {origin_of(o) for o in origins}
        self.ttl_seconds = ttl_seconds
        self._auth = {"Authorization": f"Bearer {token}"}
        self._pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca_file, num_pools=max(4, len(origins)),
                                         maxsize=4, retries=urllib3.Retry(total=2, connect=2, read=1, redirect=0,
                                                                          status=0, backoff_factor=0.05),
                                         timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds))

    def _url_for(self, uri: str, frame_id: str) -> str:
        if not _FRAME_ID.match(frame_id):
            raise BlobRejected("malformed_record", "frame id is not a UUID")
        u = urlparse(uri)
        if u.scheme != "https":
            raise BlobRejected("unsupported_store", f"blob URI scheme {u.scheme!r} is not served by this store")
        try:
            origin = origin_of(uri)
        except ValueError:
            origin = ""
        if (origin not in self.origins or u.username or u.password or u.query or u.fragment or u.params
                or u.path != f"{BLOB_PATH}{frame_id}"):
            raise BlobRejected("foreign_blob_uri", "blob URI does not name this frame at a listed blob service")
        return f"{origin}{BLOB_PATH}{frame_id}"

    def _request(self, method: str, url: str, **kw):
        import urllib3

        try:
            return self._pool.request(method, url, headers=self._auth, redirect=False, **kw)
        except urllib3.exceptions.HTTPError as e:
            raise BlobRejected("blob_store_unavailable", f"blob service did not answer ({type(e).__name__})") from None

    @staticmethod
    def _refused(status: int) -> BlobRejected:
        if status in (401, 403):
            return BlobRejected("blob_store_refused", f"blob service refused the processor's token (HTTP {status})")
        return BlobRejected("blob_store_unavailable", f"blob service answered HTTP {status}")

    def put(self, frame_id: str, data: bytes) -> str:
        raise NotImplementedError("blobs are written at the edge, into the site's own store")

    def get(self, uri: str, frame_id: str, max_bytes: int) -> bytes:
        r = self._request("GET", self._url_for(uri, frame_id), preload_content=False)
        try:
            if r.status == 404:
                raise BlobNotFound("blob not in store (processed, swept or never stored)")
            if r.status != 200:
                raise self._refused(r.status)
            declared = int(r.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise BlobRejected("oversized_frame", f"blob is {declared} bytes, limit {max_bytes}")
            data = r.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise BlobRejected("oversized_frame", f"blob is over the limit of {max_bytes} bytes")
            return data
        finally:
            r.release_conn()

    def delete(self, uri: str, frame_id: str) -> bool:
        r = self._request("DELETE", self._url_for(uri, frame_id))
        if r.status in (200, 204):
            return True
        if r.status == 404:
            return False
        raise self._refused(r.status)

    def sweep(self, now: float | None = None) -> list[str]:
        return []

    def stats(self, now: float | None = None) -> StoreStats:
        n, oldest = 0, 0.0
        for origin in sorted(self.origins):
            r = self._request("GET", f"{origin}/v1/stats")
            if r.status != 200:
                raise self._refused(r.status)
            body = r.json()
            n += int(body["blobs"])
            oldest = max(oldest, float(body["oldest_age_seconds"]))
        return StoreStats(n, oldest)


class RoutingFrameStore(FrameStore):
    """A processor's store when some sites' blobs are remote: file URIs go to the local
    directory, https URIs to the listed blob services; writing and sweeping stay local."""

    def __init__(self, local: LocalDirFrameStore, remote: RemoteFrameStore) -> None:
        self.local, self.remote = local, remote
        self.ttl_seconds = local.ttl_seconds

    def _for(self, uri: str) -> FrameStore:
        return self.remote if uri.startswith("https:") else self.local

    def put(self, frame_id: str, data: bytes) -> str:
        return self.local.put(frame_id, data)

    def get(self, uri: str, frame_id: str, max_bytes: int) -> bytes:
        return self._for(uri).get(uri, frame_id, max_bytes)

    def delete(self, uri: str, frame_id: str) -> bool:
        return self._for(uri).delete(uri, frame_id)

    def sweep(self, now: float | None = None) -> list[str]:
        return self.local.sweep(now)

    def stats(self, now: float | None = None) -> StoreStats:
        a, b = self.local.stats(now), self.remote.stats(now)
        return StoreStats(a.blobs + b.blobs, max(a.oldest_age_seconds, b.oldest_age_seconds))


def open_store(url: str, ttl_seconds: float, *, public_url: str = "", remote_origins: list[str] | None = None,
               token_file: str | Path | None = None, ca_file: str | Path | None = None,
               timeout_seconds: float = 2.0) -> FrameStore:
    """The local directory store of ``url`` (file://), publishing ``public_url`` URIs if set;
    with ``remote_origins``, routed together with a client of those blob services."""
    u = urlparse(url)
    if u.scheme != "file":
        raise ValueError(f"frame store URL {url!r}: the local store is a file:// directory (remote blob services "
                         f"are listed in store.remote_origins)")
    local = LocalDirFrameStore(Path(u.path), ttl_seconds, public_url)
    if not remote_origins:
        return local
    if token_file is None or ca_file is None or not Path(token_file).is_file() or not Path(ca_file).is_file():
        raise ValueError(f"store.remote_origins is set but the blob service token ({token_file}) or CA "
                         f"certificate ({ca_file}) is missing; `flowctl stack up` creates them on the local stack")
    token = Path(token_file).read_text().strip()
    return RoutingFrameStore(local, RemoteFrameStore(remote_origins, token, str(ca_file), ttl_seconds, timeout_seconds))


def store_from_settings(s) -> FrameStore:
    """The frame store a component of ``s`` (Settings) uses."""
    st = s.store
    return open_store(st.url, st.ttl_seconds, public_url=st.public_url, remote_origins=st.remote_origins,
                      token_file=st.token_file, ca_file=st.ca_file, timeout_seconds=st.request_timeout_seconds)


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
