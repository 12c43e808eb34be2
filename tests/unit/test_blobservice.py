"""The site blob service's tokens, through its real aiohttp application (no TLS here; the
integration test runs it over HTTPS as a process): the processors' token reaches every route,
the monitoring token only the stats and the metrics, never a frame."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.edge.blobservice import BlobService
from pipeline.framestore import BLOB_PATH, LocalDirFrameStore

PROCESSOR, MONITOR = "p" * 64, "m" * 64


def _calls(tmp_path, calls):
    """Run ``calls`` (method, path, token) against a fresh service holding one blob; statuses and
    whether the blob is still there."""
    store = LocalDirFrameStore(tmp_path / "site", 60.0)
    fid = str(uuid.uuid4())
    store.put(fid, b"ciphertext")

    async def run():
        async with TestClient(TestServer(BlobService(store, [PROCESSOR], 1 << 20, [MONITOR]).app())) as client:
            out = []
            for method, path, token in calls:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = await client.request(method, path.format(blob=f"{BLOB_PATH}{fid}"), headers=headers)
                out.append(r.status)
            return out

    return asyncio.run(run()), (store.root / f"{fid}.bin").exists()


def test_the_monitoring_token_reads_counts_and_ages_never_a_frame(tmp_path):
    statuses, kept = _calls(tmp_path, [("GET", "/v1/stats", MONITOR), ("GET", "/metrics", MONITOR),
                                       ("GET", "{blob}", MONITOR), ("DELETE", "{blob}", MONITOR),
                                       ("POST", "/v1/stats", MONITOR), ("GET", "/healthz", None)])
    assert statuses == [200, 200, 403, 403, 403, 200] and kept


def test_the_processors_token_reaches_everything_and_strangers_nothing(tmp_path):
    statuses, kept = _calls(tmp_path, [("GET", "/v1/stats", None), ("GET", "{blob}", "x" * 64),
                                       ("GET", "/metrics", PROCESSOR), ("GET", "{blob}", PROCESSOR),
                                       ("DELETE", "{blob}", PROCESSOR)])
    assert statuses == [401, 401, 200, 200, 204] and not kept


@pytest.mark.parametrize("tokens,monitor", [([PROCESSOR], [PROCESSOR]), ([PROCESSOR], ["short"]), ([], [MONITOR])])
def test_tokens_that_would_widen_access_are_refused(tmp_path, tokens, monitor):
    with pytest.raises(ValueError):
        BlobService(LocalDirFrameStore(tmp_path / "site", 60.0), tokens, 1 << 20, monitor)
