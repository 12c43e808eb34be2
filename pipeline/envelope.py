"""Envelope encryption for frames: AES-256-GCM under a fresh data key per frame, the data key
sealed (libsodium sealed box, X25519 + XSalsa20-Poly1305) to the processors' public key.

The edge holds only the public key, so a compromised edge or Kafka cluster cannot read frames.
The associated data binds the ciphertext to its frame id, site, camera and capture time, so a
blob swapped under another FrameRef fails authentication instead of being misattributed.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

NONCE_BYTES = 12
KEY_BYTES = 32


class EnvelopeError(Exception):
    """Decryption failed. ``reason`` is one of unknown_key, key_unwrap_failed, tampered_ciphertext."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def associated_data(frame_id: str, site_id: str, camera_id: str, captured_at_ms: int) -> bytes:
    return f"flowpipe/v1|{frame_id}|{site_id}|{camera_id}|{captured_at_ms}".encode()


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes  # includes the 16-byte GCM tag
    nonce: bytes
    wrapped_key: bytes
    key_id: str


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


class Sealer:
    """Edge side: encrypts frames for one recipient public key."""

    def __init__(self, recipient_public_key: bytes) -> None:
        if len(recipient_public_key) != 32:
            raise ValueError("processor public key must be 32 bytes (X25519)")
        self._box = SealedBox(PublicKey(recipient_public_key))
        self.key_id = key_id_of(recipient_public_key)

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        data_key = bytearray(new_data_key())
        try:
            nonce = os.urandom(NONCE_BYTES)
            ct = AESGCM(bytes(data_key)).encrypt(nonce, plaintext, aad)
            wrapped = self._box.encrypt(bytes(data_key))
        finally:
            _wipe(data_key)
        return Sealed(ct, nonce, wrapped, self.key_id)


class Keyring:
    """Processor side: every private key it may still need, by key id, so keys can rotate."""

    def __init__(self, private_keys: list[bytes]) -> None:
        self._boxes: dict[str, SealedBox] = {}
        for raw in private_keys:
            sk = PrivateKey(raw)
            self._boxes[key_id_of(bytes(sk.public_key))] = SealedBox(sk)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._boxes)

    def open(self, key_id: str, wrapped_key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        box = self._boxes.get(key_id)
        if box is None:
            raise EnvelopeError("unknown_key", f"no private key for key id {key_id}")
        try:
            data_key = bytearray(box.decrypt(wrapped_key))
        except CryptoError:
            raise EnvelopeError("key_unwrap_failed", "the wrapped data key does not open with this key") from None
        try:
            if len(data_key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
                raise EnvelopeError("tampered_ciphertext", "data key or nonce has the wrong length")
            return AESGCM(bytes(data_key)).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise EnvelopeError("tampered_ciphertext", "GCM authentication failed (blob or metadata altered)") from None
        finally:
            _wipe(data_key)


def _wipe(buf: bytearray) -> None:
    """Best effort: Python copies bytes freely, but the mutable master copy is zeroed."""
    for i in range(len(buf)):
        buf[i] = 0


# --- key files -------------------------------------------------------------------------------

def generate_keypair(key_dir: Path) -> str:
    """Create a new processor key pair in key_dir; returns its key id. Older keys stay for rotation."""
    key_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(key_dir, 0o700)
    sk = PrivateKey.generate()
    pub = bytes(sk.public_key)
    kid = key_id_of(pub)
    priv_path = key_dir / f"{kid}.key"
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(sk))
    (key_dir / f"{kid}.pub").write_bytes(pub)
    (key_dir / "current").write_text(kid + "\n")
    return kid


def ensure_keypair(key_dir: Path) -> str:
    cur = key_dir / "current"
    if cur.exists():
        return cur.read_text().strip()
    return generate_keypair(key_dir)


def load_public_key(key_dir: Path) -> bytes:
    cur = key_dir / "current"
    if not cur.exists():
        raise FileNotFoundError(f"no processor public key in {key_dir}: run `flowctl keys init`")
    return (key_dir / f"{cur.read_text().strip()}.pub").read_bytes()


def load_keyring(key_dir: Path) -> Keyring:
    keys = [p.read_bytes() for p in sorted(key_dir.glob("*.key"))]
    if not keys:
        raise FileNotFoundError(f"no processor private keys in {key_dir}: run `flowctl keys init`")
    return Keyring(keys)
