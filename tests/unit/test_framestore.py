import os
import time
import uuid

import pytest

from pipeline.framestore import BlobNotFound, BlobRejected, LocalDirFrameStore, open_store


@pytest.fixture()
def store(tmp_path):
    return LocalDirFrameStore(tmp_path / "frames", ttl_seconds=5)


def test_put_get_delete(store):
    fid = str(uuid.uuid4())
    uri = store.put(fid, b"cipher")
    assert store.get(uri, fid, 100) == b"cipher"
    assert store.delete(uri, fid) is True
    assert store.delete(uri, fid) is False
    with pytest.raises(BlobNotFound):
        store.get(uri, fid, 100)


def test_refuses_uris_outside_the_store(store, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    fid = str(uuid.uuid4())
    for uri in (victim.as_uri(), f"file://{store.root}/../victim.txt", f"file://{store.root}/{uuid.uuid4()}.bin",
                f"s3://bucket/{fid}.bin"):
        with pytest.raises(BlobRejected):
            store.delete(uri, fid)
    with pytest.raises(BlobRejected):
        store.get(victim.as_uri(), "../victim", 100)
    assert victim.read_text() == "keep me"


def test_oversized_blob_is_rejected(store):
    fid = str(uuid.uuid4())
    uri = store.put(fid, b"x" * 1000)
    with pytest.raises(BlobRejected) as ei:
        store.get(uri, fid, 999)
    assert ei.value.reason == "oversized_frame"


def test_sweep_deletes_only_expired(store):
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    store.put(old, b"a")
    store.put(new, b"b")
    past = time.time() - 10
    os.utime(store.root / f"{old}.bin", (past, past))
    st = store.stats()
    assert st.blobs == 2 and st.oldest_age_seconds >= 10
    assert store.sweep() == [old]
    assert store.stats().blobs == 1


def test_store_dir_is_private(store):
    assert store.root.stat().st_mode & 0o077 == 0


def test_unknown_scheme():
    with pytest.raises(ValueError):
        open_store("http://example.invalid/frames", 5)
