"""Derivation of the seeded (reproducible) random objects from the deployment seed.

Why one place: the projection and the hash family must be reproducible from
the parameter set (so every processor in a deployment assigns the same
groups), each must come from its own independent stream (domain separation),
and nothing here may ever be used for the noise, which must come from fresh OS
entropy (see :mod:`pipeline.privacy.noise`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["seeded_rng", "random_partial_isometry"]

# Domain-separation tags: changing one of these changes every deployment's groups.
DOMAIN_PROJECTION = 1
DOMAIN_HASH = 2
DOMAIN_CALIBRATION = 3
# The learned quantizer's secret rotation and its k-means initialisation (pipeline/privacy/quantizer.py).
DOMAIN_QUANTIZER = 4


def seeded_rng(seed: int, domain: int, *extra: int) -> np.random.Generator:
    """A generator fully determined by (seed, domain, extra...)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(domain, *extra))))


def random_partial_isometry(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A Haar-random ``rows x cols`` matrix with orthonormal rows or columns (whichever is fewer).

    Orthonormality keeps geometry: an isotropic input stays isotropic, so
    distances (and therefore hash collisions) mean the same in every direction.
    """
    tall = rows >= cols
    g = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))  # makes the distribution exactly Haar
    return q if tall else q.T
