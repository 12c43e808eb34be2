"""The processor's blob service client serves only exact blob URIs at listed origins (its
confinement, before any connection), and the store settings refuse what is not an https
origin. The HTTPS round trip itself is tested against a real service in
tests/integration/test_networked_store.py."""
from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from pipeline.framestore import BLOB_PATH, BlobRejected, LocalDirFrameStore, RemoteFrameStore, origin_of
from pipeline.settings import StoreSettings

FID = str(uuid.UUID(int=7))


@pytest.fixture()
def remote(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    return RemoteFrameStore(["https://edge-1.example:19443", "https://edge-2.example"], "t" * 64, str(ca), 30.0)


def test_exact_uris_at_listed_origins_are_served(remote):
    assert remote._url_for(f"https://edge-1.example:19443{BLOB_PATH}{FID}", FID) == \
        f"https://edge-1.example:19443{BLOB_PATH}{FID}"
    # the default port is made explicit on both sides
    assert remote._url_for(f"https://EDGE-2.example{BLOB_PATH}{FID}", FID) == f"https://edge-2.example:443{BLOB_PATH}{FID}"
    assert origin_of("https://a.example/x") == "https://a.example:443"


@pytest.mark.parametrize("uri,reason", [
    (f"https://edge-3.example:19443{BLOB_PATH}{FID}", "foreign_blob_uri"),             # not listed
    (f"https://edge-1.example:19444{BLOB_PATH}{FID}", "foreign_blob_uri"),             # another port
    (f"https://u:p@edge-1.example:19443{BLOB_PATH}{FID}", "foreign_blob_uri"),         # credentials
    (f"https://edge-1.example:19443{BLOB_PATH}{FID}?x=1", "foreign_blob_uri"),         # a query
    (f"https://edge-1.example:19443{BLOB_PATH}{FID}#f", "foreign_blob_uri"),           # a fragment
    (f"https://edge-1.example:19443{BLOB_PATH}../{FID}", "foreign_blob_uri"),          # another path
    (f"https://edge-1.example:19443{BLOB_PATH}{uuid.UUID(int=8)}", "foreign_blob_uri"),  # another frame
    (f"http://edge-1.example:19443{BLOB_PATH}{FID}", "unsupported_store"),             # plain http
    (f"file:///tmp/{FID}.bin", "unsupported_store"),
])
def test_anything_else_is_refused_before_a_connection(remote, uri, reason):
    with pytest.raises(BlobRejected) as e:
        remote._url_for(uri, FID)
    assert e.value.reason == reason


def test_a_bad_frame_id_is_refused(remote):
    with pytest.raises(BlobRejected) as e:
        remote._url_for(f"https://edge-1.example:19443{BLOB_PATH}x", "x")
    assert e.value.reason == "malformed_record"


def test_the_edge_publishes_service_uris_when_processors_are_remote(tmp_path):
    store = LocalDirFrameStore(tmp_path, 30.0, "https://edge-1.example:19443")
    assert store.put(FID, b"c") == f"https://edge-1.example:19443{BLOB_PATH}{FID}"
    assert (tmp_path / f"{FID}.bin").read_bytes() == b"c"
    assert LocalDirFrameStore(tmp_path / "b", 30.0).put(FID, b"c").startswith("file://")


@pytest.mark.parametrize("field,value", [
    ("public_url", "http://edge-1.example:19443"), ("public_url", "https://edge-1.example/blobs"),
    ("remote_origins", ["edge-1.example:19443"]), ("remote_origins", ["https://edge-1.example/v1"]),
])
def test_store_settings_refuse_what_is_not_an_https_origin(field, value):
    with pytest.raises(ValidationError, match="https"):
        StoreSettings(**{field: value})
