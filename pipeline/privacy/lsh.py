"""Seeded locality-sensitive hash onto exactly ``n_groups`` groups.

Family: "nearest of n_groups orthonormal random directions" (a spherical
Voronoi / cross-polytope-style LSH, Andoni et al. 2015): the group of a vector
z is ``argmax_j <c_j, z> / s_j`` where c_1..c_n are orthonormal rows of a
seeded Haar-random rotation. Why this family:

* exactly ``n_groups`` outputs, no folding of a power of two;
* it is close to the best possible LSH on the sphere, so the 50 % re-capture
  rate is reached with the most noise (the most blurring) the target allows;
* for an isotropic input every direction is equally likely to win, by
  symmetry, so groups fill equally. The working vector is isotropic only
  inside the ``signal_rank``-dimensional subspace the projection spans, so each
  direction's score is divided by its own standard deviation ``s_j`` (signal
  share of that direction plus the isotropic noise), which restores the
  symmetry to first order;
* real descriptors are clustered (many people wear black, blue jeans...), so
  even whitened they are not uniform on the sphere and a few cones would
  collect most people. Per-group offsets ``b_j`` fitted on sample descriptors
  (``argmax_j <c_j, z>/s_j + b_j``, a power diagram) move the cell borders
  until every group receives the same share; see calibration.fit_offsets;
* appearance is correlated with gender (clothing colours), so cells of
  appearance space are not gender-neutral and a group id would betray a
  person's likely gender. When the parameter set has demographic *strata*,
  each stratum has its own offsets, fitted so that every group receives the
  same share *of that stratum*; then P(group | stratum) is the same for all
  strata and the group id carries (up to estimation error) no information
  about the stratum.

Learned quantizer (issue 10): when the parameter set has a ``codebook``
(pipeline/privacy/quantizer.py), the directions are not random: they are the
codebook's unit centroids ``v_j``, stored in coordinates rotated by the seed's
secret rotation ``R`` and mapped into the working space by the projection
``M``, i.e. ``c_j = M R^T v_j``. The scores are then computed in the reduced
space (``u = z M R^T``, ``s_j = <v_j, u>``), which is the same number at a
fraction of the arithmetic. All centroids lie in the signal subspace, so the
per-direction standardisation is one common factor, and the offsets ``b_j``
balance the groups exactly as for the hash.
"""

from __future__ import annotations

import numpy as np

from pipeline.privacy.params import PrivacyParams
from pipeline.privacy.quantizer import quantizer_rotation
from pipeline.privacy.seeding import DOMAIN_HASH, random_partial_isometry, seeded_rng

__all__ = ["GroupHash"]


class GroupHash:
    """The seeded hash family of one parameter set, bound to one projection."""

    def __init__(self, params: PrivacyParams, projection: np.ndarray, signal_rank: int) -> None:
        # (working_dim, k): maps a working vector to the codebook's rotated reduced coordinates; None for the hash.
        self.to_codebook: np.ndarray | None = None
        if params.codebook is not None:
            k = params.codebook.shape[1]
            if projection.shape[1] != k or k > projection.shape[0]:
                raise ValueError(f"codebook of dimension {k} does not fit a projection of shape {projection.shape}")
            rot = quantizer_rotation(params.seed, k)
            self.to_codebook = (projection.astype(np.float64) @ rot.T).astype(np.float32)
            # (n_groups, k) unit rows: each centroid is a unit direction of the signal subspace.
            self.directions = params.codebook.astype(np.float32)
            self._signal_var = np.full(params.n_groups, 1.0 / float(signal_rank))
        else:
            rng = seeded_rng(params.seed, DOMAIN_HASH, params.working_dim, params.n_groups)
            # (n_groups, working_dim) with orthonormal rows.
            self.directions = random_partial_isometry(rng, params.n_groups, params.working_dim).astype(np.float32)
            # Share of each direction lying in the signal subspace, and the resulting score std.
            self._signal_var = np.sum((self.directions.astype(np.float64) @ projection.astype(np.float64)) ** 2,
                                      axis=1) / float(signal_rank)
        self.inv_std = self._inv_std(params.noise_scale)
        self.n_groups = params.n_groups
        pooled = (np.zeros(params.n_groups, dtype=np.float32) if params.hash_offsets is None
                  else params.hash_offsets.astype(np.float32))
        # Row 0: pooled offsets (no or unknown stratum); rows 1..: one per stratum.
        rows = [pooled] + ([] if params.stratum_offsets is None else list(params.stratum_offsets.astype(np.float32)))
        self.offset_table = np.stack(rows)
        self.offsets = pooled

    def _inv_std(self, noise_scale: float) -> np.ndarray:
        score_var = self._signal_var + float(noise_scale) ** 2
        return (1.0 / np.sqrt(np.maximum(score_var, 1e-30))).astype(np.float32)

    def with_noise_scale(self, noise_scale: float) -> "GroupHash":
        """The same family standardised for another noise scale (calibration tries many)."""
        other = object.__new__(GroupHash)
        other.__dict__.update(self.__dict__)
        other.inv_std = self._inv_std(noise_scale)
        return other

    def scores(self, z: np.ndarray) -> np.ndarray:
        """Standardised projection scores, (n, n_groups)."""
        if self.to_codebook is not None:
            return ((z @ self.to_codebook) @ self.directions.T) * self.inv_std
        return (z @ self.directions.T) * self.inv_std

    def __call__(self, z: np.ndarray, offset_rows: np.ndarray | None = None) -> np.ndarray:
        """Group index per row of the (noisy) working vectors ``z``.

        ``offset_rows[i]`` selects the offsets for row i (0 = pooled, s + 1 = stratum s).
        """
        if z.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        off = self.offsets if offset_rows is None else self.offset_table[offset_rows]
        return np.argmax(self.scores(z) + off, axis=1).astype(np.int64)
