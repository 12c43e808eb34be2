import pytest

from pipeline.envelope import (EnvelopeError, Sealer, associated_data, ensure_keypair, generate_keypair,
                               load_keyring, load_public_key)


@pytest.fixture()
def keydir(tmp_path):
    ensure_keypair(tmp_path)
    return tmp_path


def test_seal_open_round_trip(keydir):
    s = Sealer(load_public_key(keydir))
    aad = associated_data("f", "s", "c", 1)
    sealed = s.seal(b"jpeg bytes", aad)
    assert b"jpeg bytes" not in sealed.ciphertext and len(sealed.wrapped_key) == 80
    assert load_keyring(keydir).open(sealed.key_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext, aad) == b"jpeg bytes"


def test_every_frame_gets_a_fresh_key_and_nonce(keydir):
    s = Sealer(load_public_key(keydir))
    a, b = s.seal(b"x", b"a"), s.seal(b"x", b"a")
    assert a.wrapped_key != b.wrapped_key and a.nonce != b.nonce and a.ciphertext != b.ciphertext


@pytest.mark.parametrize("what", ["ciphertext", "aad", "nonce"])
def test_tampering_is_detected(keydir, what):
    s = Sealer(load_public_key(keydir))
    aad = associated_data("f", "s", "c", 1)
    x = s.seal(b"payload", aad)
    ct, nonce = x.ciphertext, x.nonce
    if what == "ciphertext":
        ct = bytes([ct[0] ^ 1]) + ct[1:]
    elif what == "aad":
        aad = associated_data("f", "s", "other-camera", 1)
    else:
        nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    with pytest.raises(EnvelopeError) as ei:
        load_keyring(keydir).open(x.key_id, x.wrapped_key, nonce, ct, aad)
    assert ei.value.reason == "tampered_ciphertext"


def test_unknown_key_and_foreign_wrap(keydir, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    ensure_keypair(other)
    x = Sealer(load_public_key(other)).seal(b"p", b"a")
    kr = load_keyring(keydir)
    with pytest.raises(EnvelopeError) as ei:
        kr.open(x.key_id, x.wrapped_key, x.nonce, x.ciphertext, b"a")
    assert ei.value.reason == "unknown_key"
    with pytest.raises(EnvelopeError) as ei:
        kr.open(kr.key_ids[0], x.wrapped_key, x.nonce, x.ciphertext, b"a")
    assert ei.value.reason == "key_unwrap_failed"


def test_rotation_keeps_old_keys_usable(keydir):
    old = Sealer(load_public_key(keydir)).seal(b"old", b"a")
    new_id = generate_keypair(keydir)
    assert Sealer(load_public_key(keydir)).key_id == new_id != old.key_id
    kr = load_keyring(keydir)
    assert kr.open(old.key_id, old.wrapped_key, old.nonce, old.ciphertext, b"a") == b"old"


def test_private_key_file_is_owner_only(keydir):
    for p in keydir.glob("*.key"):
        assert p.stat().st_mode & 0o077 == 0


def test_bad_public_key_is_refused():
    with pytest.raises(ValueError):
        Sealer(b"short")


def test_a_running_processor_and_edge_follow_a_rotation_and_the_old_key_retires(keydir):
    """Issue 13: the keyring was read once at start, so after a rotation every frame was
    dead-lettered (and its blob deleted) until the processors restarted."""
    import os

    from pipeline.envelope import CurrentPublicKey, KeyDirectory, retire_keys

    clock = {"t": 1_000_000.0}
    ring = KeyDirectory(keydir, retire_after_seconds=100, clock=lambda: clock["t"])
    edge = CurrentPublicKey(keydir, clock=lambda: clock["t"])
    old = Sealer(edge.get())
    aad = associated_data("f", "s", "c", 1)
    before = old.seal(b"before", aad)

    new_kid = generate_keypair(keydir)
    rotated_at = (keydir / "current").stat().st_mtime
    clock["t"] = rotated_at + 2              # the edge re-reads `current` within its check interval
    new = Sealer(edge.get())
    assert new.key_id == new_kid != old.key_id
    after = new.seal(b"after", aad)
    # the new key opens at once (a frame naming an unknown key forces a re-read) ...
    assert ring.open(after.key_id, after.wrapped_key, after.nonce, after.ciphertext, aad) == b"after"
    # ... and the superseded one keeps opening frames in flight until it retires
    assert ring.open(before.key_id, before.wrapped_key, before.nonce, before.ciphertext, aad) == b"before"
    assert retire_keys(keydir, 100, now=rotated_at + 50) == []
    clock["t"] = rotated_at + 101
    with pytest.raises(EnvelopeError) as e:
        ring.open(before.key_id, before.wrapped_key, before.nonce, before.ciphertext, aad)
    assert e.value.reason == "unknown_key"
    assert ring.key_ids == [new_kid]
    assert retire_keys(keydir, 100, now=rotated_at + 101) == [old.key_id]
    assert sorted(p.stem for p in keydir.glob("*.key")) == [new_kid]
    assert oct(os.stat(keydir / f"{new_kid}.key").st_mode & 0o777) == "0o600"
