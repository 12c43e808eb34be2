"""Edge and processor without a shared file system (issue 14 item 3): the site runs its blob
service (`flowctl store serve`) over its own directory, the edge (its own process) publishes
https blob URIs, and a processor (its own process, its own empty directory) fetches and deletes
every frame over HTTPS. Frames no processor comes for still expire at the site within the TTL,
with a receipt each. The service refuses clients without the token and never serves outside its
store.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from pipeline import serde
from pipeline.framestore import BLOB_PATH, LocalDirFrameStore
from pipeline.settings import REPO_ROOT
from tests.integration.conftest import read_topic, settings_env

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flowctl(s, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=settings_env(s), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _files(d: Path) -> list[Path]:
    return [p for p in d.iterdir()] if d.exists() else []


def _site_and_centre(env, tmp_path, ttl: float):
    port = _free_port()
    base = f"https://127.0.0.1:{port}"
    site_dir, centre_dir = tmp_path / "site-store", tmp_path / "centre-store"
    store = env.store.model_copy(update={"ttl_seconds": ttl, "sweep_interval_seconds": 0.5})
    site = env.model_copy(update={"store": store.model_copy(update={
        "url": f"file://{site_dir}", "public_url": base, "serve_port": port})})
    centre = env.model_copy(update={"store": store.model_copy(update={
        "url": f"file://{centre_dir}", "remote_origins": [base]})})
    return site, centre, site_dir, centre_dir, base


def _serve(site, base):
    svc = _flowctl(site, "store", "serve")
    http = urllib3.PoolManager(ca_certs=str(site.store.ca_file))
    deadline = time.monotonic() + 30
    while True:
        try:
            if http.request("GET", f"{base}/healthz", retries=False).status == 200:
                return svc, http
        except urllib3.exceptions.HTTPError:
            pass
        if svc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"blob service did not start: {svc.communicate()[0][-2000:]}")
        time.sleep(0.3)


def _edge(site, footage, camera: str, n: int) -> list[dict]:
    """Run the edge as its own process for n frames; the references it published."""
    edge = _flowctl(site, "edge", str(footage), "--site", "net", "--camera", camera, "--max-frames", str(n))
    out = edge.communicate(timeout=180)[0]
    assert edge.returncode == 0, out[-2000:]
    return [serde.decode("FrameRef", m.value()) for m in read_topic(site, site.kafka.frame_refs_topic)]


def _bearer(site) -> dict[str, str]:
    """The processors' credentials for the site's service."""
    return {"Authorization": f"Bearer {site.store.token_file.read_text().strip()}"}


def _stop(proc) -> str:
    proc.terminate()
    return proc.communicate(timeout=20)[0]


def test_edge_and_processor_share_no_directory(env, footage, tmp_path):
    site, centre, site_dir, centre_dir, base = _site_and_centre(env, tmp_path, ttl=180.0)
    svc, http = _serve(site, base)
    try:
        n = 24
        refs = _edge(site, footage, "cam-n", n)
        assert len(refs) == n and all(r["blob_uri"] == f"{base}{BLOB_PATH}{r['frame_id']}" for r in refs)
        assert len([p for p in _files(site_dir) if p.suffix == ".bin"]) == n and not _files(centre_dir)

        proc = _flowctl(centre, "process", "--idle-timeout", "8", "--max-seconds", "240")
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-3000:]
        receipts = [serde.decode("DeletionReceipt", m.value()) for m in read_topic(centre, centre.kafka.receipts_topic)]
        by_frame = {r["frame_id"]: r["outcome"] for r in receipts}
        assert {r["frame_id"] for r in refs} <= set(by_frame)
        assert [by_frame[r["frame_id"]] for r in refs] == ["DELETED"] * n     # each fetched and deleted remotely
        assert not read_topic(centre, centre.kafka.dead_letter_topic)
        assert not [p for p in _files(site_dir) if p.suffix == ".bin"]         # nothing left at the site
        assert not _files(centre_dir)                                          # and nothing ever at the centre

        metrics = http.request("GET", f"{base}/metrics", headers=_bearer(site)).data.decode()
        assert 'flowpipe_blobservice_requests_total{method="GET",outcome="served"} 24.0' in metrics
        assert 'flowpipe_blobservice_requests_total{method="DELETE",outcome="deleted"} 24.0' in metrics
        assert "net" not in metrics and not any(r["frame_id"] in metrics for r in refs)   # no ids in metrics
    finally:
        log = _stop(svc)
    assert not any(r["frame_id"] in log for r in refs)   # nor in the service's log


def test_frames_no_processor_fetches_expire_at_the_site_with_receipts(env, footage, tmp_path):
    site, _, site_dir, _, base = _site_and_centre(env, tmp_path, ttl=4.0)
    svc, http = _serve(site, base)
    try:
        n = 6
        refs = _edge(site, footage, "cam-x", n)
        assert len(refs) == n
        # the edge process has exited: its own sweeper is gone, the service's sweeps (TTL + interval)
        oldest = []
        deadline = time.monotonic() + 30
        while True:
            st = http.request("GET", f"{base}/v1/stats", headers=_bearer(site)).json()
            oldest.append(st["oldest_age_seconds"])
            if st["blobs"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert st["blobs"] == 0 and not [p for p in _files(site_dir) if p.suffix == ".bin"]
        assert max(oldest) <= site.store.ttl_seconds + site.store.sweep_interval_seconds + 1.0   # audited bound
        time.sleep(1)
        receipts = [serde.decode("DeletionReceipt", m.value()) for m in read_topic(site, site.kafka.receipts_topic)]
        swept = {r["frame_id"] for r in receipts if r["outcome"] == "SWEPT"}
        assert {r["frame_id"] for r in refs} <= swept
    finally:
        _stop(svc)


def test_the_service_refuses_strangers_and_serves_only_frame_ids(env, tmp_path):
    site, _, site_dir, _, base = _site_and_centre(env, tmp_path, ttl=60.0)
    svc, http = _serve(site, base)
    try:
        fid = str(uuid.uuid4())
        LocalDirFrameStore(site_dir, 60.0, base).put(fid, b"ciphertext")
        (site_dir / "notes.txt").write_text("not a blob")
        token = site.store.token_file.read_text().strip()
        for headers in ({}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": f"Basic {token}"}):
            for method in ("GET", "DELETE"):
                assert http.request(method, f"{base}{BLOB_PATH}{fid}", headers=headers).status == 401
            assert http.request("GET", f"{base}/v1/stats", headers=headers).status == 401
        auth = _bearer(site)
        for bad in ("notes.txt", "..%2Fsecurity%2Fca.crt", "x" * 36, fid.upper()):
            assert http.request("GET", f"{base}{BLOB_PATH}{bad}", headers=auth).status in (400, 404)
        assert http.request("GET", f"{base}{BLOB_PATH}{fid}", headers=auth).data == b"ciphertext"
        # plain HTTP is not spoken, and a client that does not trust the deployment's CA gets nothing
        with pytest.raises(urllib3.exceptions.HTTPError):
            urllib3.PoolManager().request("GET", f"{base}/healthz", retries=False)
        with pytest.raises(urllib3.exceptions.HTTPError):
            urllib3.PoolManager().request("GET", base.replace("https", "http") + "/healthz", retries=False)
        assert (site_dir / f"{fid}.bin").exists() and (site_dir / "notes.txt").exists()
        # The monitoring token (the centre's exporter sets it as its token_file): the site's
        # counts and ages, never a frame, over the same client the exporter uses.
        from pipeline.framestore import BlobRejected, RemoteFrameStore, open_store

        watcher = RemoteFrameStore([base], site.store.monitor_token_file.read_text().strip(),
                                   str(site.store.ca_file), 60.0)
        assert watcher.stats().blobs == 1
        uri = f"{base}{BLOB_PATH}{fid}"
        for call in (lambda: watcher.get(uri, fid, 1 << 20), lambda: watcher.delete(uri, fid)):
            with pytest.raises(BlobRejected) as e:
                call()
            assert e.value.reason == "blob_store_refused" and "403" in str(e.value)
        exporter = open_store(f"file://{tmp_path / 'centre-empty'}", 60.0, remote_origins=[base],
                              token_file=site.store.monitor_token_file, ca_file=site.store.ca_file)
        assert exporter.stats().blobs == 1 and (site_dir / f"{fid}.bin").exists()
    finally:
        _stop(svc)
