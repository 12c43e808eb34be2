"""Noise for the published tier: discrete Laplace, keyed by the published row.

Why keyed and not fresh: the aggregator may emit an hour more than once (a restart replays, a
late snapshot re-emits). Fresh noise on every emission would hand an analyst several
independent draws of the same value to average away, as soon as two emissions coexist in the
table before ClickHouse merges them. Here the noise of a row is a function of a secret key
and the row's identity (HMAC-SHA256 seeds the draw), so every emission of a row carries the
same noise, replays stay bit-identical, and without the key the noise is unpredictable. The
key lives beside the processor key (0600) and only the aggregator reads it.

Why discrete: published values are integers (the warehouse keeps no floats), and the discrete
Laplace mechanism (Ghosh, Roughgarden, Sundararajan 2009; Canonne, Kamath, Steinke 2020)
gives epsilon-DP for integer queries without floating-point side channels in the output.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
from pathlib import Path

import numpy as np

NOISE_KEY_FILE = "release-noise.key"
KEY_BYTES = 32


class NoiseKeyError(RuntimeError):
    pass


def discrete_laplace_variance(scale: float) -> float:
    """Variance of the discrete Laplace distribution with P(x) ∝ exp(-|x| / scale)."""
    if scale <= 0:
        return 0.0
    q = math.exp(-1.0 / scale)
    return 2.0 * q / (1.0 - q) ** 2


class KeyedNoise:
    """Discrete Laplace noise of a given scale, deterministic per (key, label)."""

    def __init__(self, key: bytes, scale: float) -> None:
        if len(key) < 16:
            raise NoiseKeyError("the release-noise key must hold at least 128 bits")
        if scale < 0 or not math.isfinite(scale):
            raise ValueError(f"noise scale must be a finite number >= 0, not {scale}")
        self._key = key
        self.scale = float(scale)
        self._p = 1.0 - math.exp(-1.0 / scale) if scale > 0 else 1.0
        self.variance = discrete_laplace_variance(scale)

    def draw(self, label: str) -> int:
        """The noise of the value named ``label`` (e.g. a published row's key): an integer,
        the difference of two geometric variables, which is discrete Laplace."""
        if self.scale == 0:
            return 0
        digest = hmac.new(self._key, label.encode(), hashlib.sha256).digest()
        g = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
        a, b = g.geometric(self._p, size=2)
        return int(a) - int(b)


def ensure_noise_key(keys_dir: Path) -> Path:
    """Create the release-noise key (OS entropy, 0600) if missing; return its path."""
    keys_dir = Path(keys_dir)
    path = keys_dir / NOISE_KEY_FILE
    if path.exists():
        return path
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
    return path


def load_noise_key(keys_dir: Path) -> bytes:
    path = Path(keys_dir) / NOISE_KEY_FILE
    if not path.is_file():
        raise NoiseKeyError(f"no release-noise key at {path}: run `flowctl keys init` (it creates one beside the "
                            "processor key)")
    if path.stat().st_mode & 0o077:
        raise NoiseKeyError(f"{path} is readable by group or others; run `chmod 600 {path}`")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise NoiseKeyError(f"{path} holds {len(key)} bytes, not {KEY_BYTES}: it is damaged; restore it from the "
                            "backup taken with the processor key")
    return key
