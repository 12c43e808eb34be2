"""Native descriptor -> normalised working vector (1,024 "measuring points").

Why: the appearance model's native size is arbitrary (an HSV histogram of a
few hundred bins today, a CNN embedding later), but the privacy mechanism is
specified and calibrated on a fixed working size. A fixed seeded projection
with orthonormal rows/columns maps any size to the working size without
distorting distances, after the descriptor has been centred and whitened with
reference statistics so that it is roughly isotropic. The result is put on the
unit sphere so the noise scale means the same thing for every model.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.privacy.params import PrivacyParams
from pipeline.privacy.seeding import DOMAIN_PROJECTION, random_partial_isometry, seeded_rng

__all__ = ["Projector", "validate_embeddings"]

log = logging.getLogger(__name__)

_EPS = 1e-12


def validate_embeddings(embeddings: np.ndarray, input_dim: int) -> np.ndarray:
    """Check shape and values, return a float32 C-contiguous 2-D array.

    Raises ValueError naming the problem (never the values: they are personal data).
    """
    if not isinstance(embeddings, np.ndarray):
        raise ValueError(f"embeddings must be a numpy array, got {type(embeddings).__name__}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, {input_dim}), got {embeddings.ndim}-D shape {embeddings.shape}")
    if embeddings.shape[1] != input_dim:
        raise ValueError(f"embeddings have {embeddings.shape[1]} columns, this anonymizer expects {input_dim}")
    if not np.issubdtype(embeddings.dtype, np.number) or np.issubdtype(embeddings.dtype, np.complexfloating):
        raise ValueError(f"embeddings must be real numbers, got dtype {embeddings.dtype}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise ValueError(f"embeddings contain NaN or infinity in {bad} row(s)")
    return x


class Projector:
    """Centre, whiten, project to the working size and normalise. Deterministic given the params."""

    def __init__(self, params: PrivacyParams, input_dim: int) -> None:
        if input_dim <= 0:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        self.input_dim = int(input_dim)
        self.working_dim = params.working_dim
        ref = params.reference
        if ref is not None and ref.input_dim != self.input_dim:
            raise ValueError(f"parameter set {params.version} was calibrated for {ref.input_dim}-dim descriptors, "
                             f"got input_dim={self.input_dim}; run `flowctl privacy calibrate` for this model")
        self.reduced_dim = self.input_dim if ref is None else ref.reduced_dim
        if ref is None:
            log.warning("privacy parameters %s have no reference statistics: descriptors are only centred "
                        "per vector; groups will not fill equally for non-isotropic descriptors", params.version)
            self._mean = None
            self._whitening = None
        else:
            self._mean = ref.mean.astype(np.float32)
            self._whitening = ref.whitening.astype(np.float32)
        rng = seeded_rng(params.seed, DOMAIN_PROJECTION, self.reduced_dim, self.working_dim)
        # (working_dim, reduced_dim): orthonormal columns if reduced_dim <= working_dim, else orthonormal rows.
        self.matrix = random_partial_isometry(rng, self.working_dim, self.reduced_dim).astype(np.float32)
        # Rank of the projected signal: the working vector lives in this many dimensions.
        self.signal_rank = min(self.reduced_dim, self.working_dim)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """Centre and whiten (and possibly reduce) in the native space: (n, input_dim) -> (n, reduced_dim)."""
        if self._mean is None:
            return x - x.mean(axis=1, keepdims=True)
        return (x - self._mean) @ self._whitening.T

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Map validated (n, input_dim) float32 descriptors to unit-norm (n, working_dim) vectors."""
        w = self.standardise(x) @ self.matrix.T
        norms = np.linalg.norm(w, axis=1, keepdims=True)
        # A descriptor equal to the reference mean has no direction; it maps to
        # the zero vector and its group is then decided by the noise alone.
        return (w / np.maximum(norms, _EPS)).astype(np.float32, copy=False)
