"""Calibrated noise from fresh OS entropy.

Why its own module: the noise is the one random element that must *not* be
reproducible. The projection and hash are seeded so that all processors agree;
if the noise were seeded too, anyone holding the parameter file could replay
it and recover a deterministic template per person. Each call therefore draws
a new generator from the operating system's entropy pool; no generator state
outlives the call.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fresh_rng", "add_noise"]


def fresh_rng() -> np.random.Generator:
    """A generator seeded from 128 bits of OS entropy (``secrets``), never from the params."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence()))


def add_noise(vectors: np.ndarray, scale: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Return ``vectors + N(0, scale^2)`` per coordinate (float32). ``rng`` is for tests/simulation only."""
    if scale == 0.0:
        return vectors
    g = fresh_rng() if rng is None else rng
    return vectors + g.standard_normal(vectors.shape, dtype=np.float32) * np.float32(scale)
