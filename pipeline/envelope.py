"""Envelope encryption for frames: AES-256-GCM under a fresh data key per frame, the data key
sealed (libsodium sealed box, X25519 + XSalsa20-Poly1305) to the processors' public key.

The edge holds only the public key, so a compromised edge or Kafka cluster cannot read frames.
The associated data binds the ciphertext to its frame id, site, camera and capture time, so a
blob swapped under another FrameRef fails authentication instead of being misattributed.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    # Atomic: edges and processors re-read `current` while running (KeyDirectory, CurrentPublicKey).
    tmp = key_dir / ".current.tmp"
    tmp.write_text(kid + "\n")
    os.replace(tmp, key_dir / "current")
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


# --- rotation without restarts ---------------------------------------------------------------

def _current_state(key_dir: Path) -> tuple[str, float]:
    """(current key id, when it became current: the mtime of `current`)."""
    cur = key_dir / "current"
    st = cur.stat()
    return cur.read_text().strip(), st.st_mtime


class KeyDirectory:
    """The processor's keyring as the key directory holds it now.

    Why: the keyring used to be read once at start, so after `flowctl keys init --rotate` every
    frame sealed to the new key was dead-lettered (and its blob deleted) until the processors
    restarted. This re-reads the directory at most every ``check_seconds`` and at once (at most
    every 0.2 s) when a frame names a key it does not hold.

    Retirement: a key that is no longer current opens frames for ``retire_after_seconds`` after
    the rotation (the frame store's TTL plus margins: frames sealed to it before the edges
    switched are gone by then), and is dropped afterwards, so a stolen old key no longer opens
    anything this processor accepts. `flowctl keys retire` deletes such keys from disk.
    """

    def __init__(self, key_dir: Path, retire_after_seconds: float, check_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.key_dir = Path(key_dir)
        self.retire_after = retire_after_seconds
        self.check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: Keyring | None = None
        self._checked = -1e18
        self._signature: tuple | None = None
        self._retire_at = float("inf")
        self.reloads = 0
        self._refresh(force=True)

    def _scan(self) -> tuple:
        keys = sorted((p.name, p.stat().st_mtime_ns) for p in self.key_dir.glob("*.key"))
        cur = self.key_dir / "current"
        return tuple(keys), cur.stat().st_mtime_ns if cur.exists() else 0

    def _refresh(self, force: bool = False) -> Keyring:
        now = self._clock()
        with self._lock:
            due = now - self._checked >= (0.2 if force else self.check_seconds) or now >= self._retire_at
            if self._ring is not None and not due:
                return self._ring
            self._checked = now
            sig = self._scan()
            if self._ring is not None and sig == self._signature and now < self._retire_at:
                return self._ring
            current, since = _current_state(self.key_dir)
            live = now < since + self.retire_after   # superseded keys still open frames
            keep = [p for p in sorted(self.key_dir.glob("*.key")) if live or p.stem == current]
            if not any(p.stem == current for p in keep):
                raise FileNotFoundError(f"no private key for the current key id {current} in {self.key_dir}")
            self._ring = Keyring([p.read_bytes() for p in keep])
            self._signature = sig
            self._retire_at = since + self.retire_after if live and len(keep) > 1 else float("inf")
            self.reloads += 1
            return self._ring

    @property
    def key_ids(self) -> list[str]:
        return self._refresh().key_ids

    def open(self, key_id: str, wrapped_key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        ring = self._refresh()
        if key_id not in ring.key_ids:
            ring = self._refresh(force=True)
        return ring.open(key_id, wrapped_key, nonce, ciphertext, aad)


class CurrentPublicKey:
    """The edge's view of the processors' current public key, re-read when `current` changes
    (checked at most every ``check_seconds``), so a rotation reaches running edges in seconds."""

    def __init__(self, key_dir: Path, check_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.key_dir = Path(key_dir)
        self.check_seconds = check_seconds
        self._clock = clock
        self._checked = clock()
        self._mtime = (self.key_dir / "current").stat().st_mtime_ns
        self._key = load_public_key(self.key_dir)

    def get(self) -> bytes:
        now = self._clock()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            try:
                mtime = (self.key_dir / "current").stat().st_mtime_ns
                if mtime != self._mtime:
                    self._key, self._mtime = load_public_key(self.key_dir), mtime
            except OSError:
                pass  # mid-rotation or unreadable: keep sealing to the key we have
        return self._key


def retire_keys(key_dir: Path, retire_after_seconds: float, now: float | None = None) -> list[str]:
    """Delete the private keys that are no longer current and were superseded more than
    ``retire_after_seconds`` ago; returns their key ids."""
    now = time.time() if now is None else now
    current, since = _current_state(key_dir)
    if now < since + retire_after_seconds:
        return []
    gone = []
    for p in sorted(key_dir.glob("*.key")):
        if p.stem != current:
            p.unlink()
            gone.append(p.stem)
    return gone
