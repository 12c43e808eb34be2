"""The site's blob service: processors elsewhere fetch and delete the site's encrypted frames over
HTTPS; the site's TTL sweeper runs here (docs/SCALING.md, issue 14 item 3).

Why an edge-side service rather than S3: the frames are meant to live for seconds, at the site,
on tmpfs. An object store at the centre would hold every site's raw frames in one place, keep
them until a lifecycle rule runs (S3 expiry is daily at best: far over the 30-s bound), and no
S3-compatible server is installable here from the reachable registries. The service adds
nothing to the data path but a GET and a DELETE per frame over a pooled TLS connection.

What it serves (every route but /healthz needs ``Authorization: Bearer <processor token>``; the
two read-only routes marked * also take the monitoring token, which can never read or delete a
frame: what the centre's exporter holds to watch every site's ages):

    GET    /v1/blobs/<frame id>   the ciphertext (404 when processed, swept or never stored)
    DELETE /v1/blobs/<frame id>   204 when it existed, 404 when not
    GET    /v1/stats            * {"blobs", "oldest_age_seconds", "ttl_seconds"}: what audits read
    GET    /metrics             * Prometheus: blob count, oldest age against the TTL, swept and
                                  served counts, refused requests (no frame id in any label)
    GET    /healthz               "ok"

It never lists blobs, never accepts a path other than a frame id (a UUID, checked before the file
system is touched), never follows a symlink or opens a FIFO (the local store's own checks), and
logs no frame id. The token is compared by its SHA-256 in constant time. TLS uses a certificate
signed by the deployment's CA (infra/local/security.sh, ``blobstore/server.pem``).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
from pathlib import Path
from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from pipeline.framestore import BLOB_PATH, BlobNotFound, BlobRejected, LocalDirFrameStore, Sweeper

log = logging.getLogger("flowpipe.blobservice")


# Routes the monitoring token may call: counts and ages, never a frame.
MONITOR_ROUTES = frozenset({("GET", "/v1/stats"), ("GET", "/metrics")})


class BlobService:
    def __init__(self, store: LocalDirFrameStore, tokens: list[str], max_bytes: int,
                 monitor_tokens: list[str] | tuple[str, ...] = ()) -> None:
        if not tokens or any(len(t) < 32 for t in [*tokens, *monitor_tokens]):
            raise ValueError("the blob service needs at least one token, and every token of 32 characters or more")
        if set(tokens) & set(monitor_tokens):
            raise ValueError("a monitoring token must differ from the processors' (it would read and delete frames)")
        self.store = store
        self.max_bytes = max_bytes
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
        self._monitor_digests = [hashlib.sha256(t.encode()).digest() for t in monitor_tokens]
        self.registry = CollectorRegistry()
        self.served = Counter("flowpipe_blobservice_requests", "Requests by method and outcome",
                              ["method", "outcome"], registry=self.registry)
        self.swept = Counter("flowpipe_blobservice_swept_blobs", "Blobs deleted by the TTL sweeper",
                             registry=self.registry)
        blobs = Gauge("flowpipe_framestore_blobs", "Encrypted frame blobs in the store", registry=self.registry)
        # the exporter's names, so the FrameBlobOutlivesTTL alert reads a site's service unchanged
        oldest = Gauge("flowpipe_framestore_oldest_blob_age_seconds", "Age of the oldest blob in the store",
                       registry=self.registry)
        ttl = Gauge("flowpipe_framestore_ttl_seconds", "The store's TTL", registry=self.registry)
        ttl.set(store.ttl_seconds)
        blobs.set_function(lambda: store.stats().blobs)
        oldest.set_function(lambda: store.stats().oldest_age_seconds)

    def _scope(self, request: web.Request) -> str | None:
        """"processor", "monitor" or None, from the bearer token (compared by digest, in constant
        time against every known token)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return None
        d = hashlib.sha256(token.encode()).digest()
        processor = any([hmac.compare_digest(d, x) for x in self._digests])
        monitor = any([hmac.compare_digest(d, x) for x in self._monitor_digests])
        return "processor" if processor else "monitor" if monitor else None

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.path != "/healthz":
            scope = self._scope(request)
            if scope is None:
                self.served.labels(request.method, "refused").inc()
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
            if scope == "monitor" and (request.method, request.path) not in MONITOR_ROUTES:
                self.served.labels(request.method, "forbidden").inc()
                raise web.HTTPForbidden()
        return await handler(request)

    def _path(self, request: web.Request) -> Path:
        try:
            return self.store.path_of(request.match_info["frame_id"])
        except BlobRejected:
            self.served.labels(request.method, "bad_id").inc()
            raise web.HTTPBadRequest(text="frame id is not a UUID") from None

    async def get(self, request: web.Request) -> web.Response:
        p = self._path(request)
        try:
            data = self.store.read(p, self.max_bytes)
        except BlobNotFound:
            self.served.labels("GET", "absent").inc()
            raise web.HTTPNotFound() from None
        except BlobRejected as e:
            self.served.labels("GET", e.reason).inc()
            raise web.HTTPUnprocessableEntity(text=e.reason) from None
        self.served.labels("GET", "served").inc()
        return web.Response(body=data, content_type="application/octet-stream")

    async def delete(self, request: web.Request) -> web.Response:
        existed = self.store.unlink(self._path(request))
        self.served.labels("DELETE", "deleted" if existed else "absent").inc()
        if not existed:
            raise web.HTTPNotFound()
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        s = self.store.stats()
        return web.json_response({"blobs": s.blobs, "oldest_age_seconds": s.oldest_age_seconds,
                                  "ttl_seconds": self.store.ttl_seconds})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    @staticmethod
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=1024)
        app.add_routes([web.get(BLOB_PATH + "{frame_id}", self.get), web.delete(BLOB_PATH + "{frame_id}", self.delete),
                        web.get("/v1/stats", self.stats), web.get("/metrics", self.metrics),
                        web.get("/healthz", self.healthz)])
        return app


def tls_context(cert_file: Path) -> ssl.SSLContext:
    """Server TLS from one PEM holding key, certificate and CA chain (security.sh's layout)."""
    if not Path(cert_file).is_file():
        raise FileNotFoundError(f"blob service certificate {cert_file} not found; `flowctl stack up` creates it on "
                                f"the local stack (or set store.server_cert_file)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file))
    return ctx


def serve(store: LocalDirFrameStore, tokens: list[str], max_bytes: int, host: str, port: int, cert_file: Path,
          sweep_interval: float, on_swept: Callable[[list[str]], None] | None = None,
          monitor_tokens: list[str] | tuple[str, ...] = ()) -> None:
    """Run until interrupted, with the TTL sweeper beside it (``on_swept``: e.g. receipts)."""
    svc = BlobService(store, tokens, max_bytes, monitor_tokens)
    ctx = tls_context(cert_file)

    def swept(ids: list[str]) -> None:
        svc.swept.inc(len(ids))
        if on_swept:
            on_swept(ids)

    with Sweeper(store, sweep_interval, on_swept=swept):
        log.info("blob service on https://%s:%d serving %s (TTL %.0f s)", host, port, store.root, store.ttl_seconds)
        web.run_app(svc.app(), host=host, port=port, ssl_context=ctx, access_log=None,
                    print=None, handle_signals=True)
