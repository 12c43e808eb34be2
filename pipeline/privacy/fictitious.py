"""Fictitious persons: extra occurrences per (camera, window) that hide the real ones.

Mechanism. For every group g of one (camera, window), independently of the
real counts, add ``F_g = floor + G_g`` fictitious occurrences where
``G_g ~ Geometric(r)`` on {0, 1, 2, ...}, ``P(G = n) = (1 - r) r^n``.

Why this distribution (and not Poisson, and not "pad small counts up"):

* Linkage bound. An adversary who knows a target's appearance asks "was the
  target at this camera in this window?". Whatever else is in the counts, the
  likelihood ratio of the published counts for "target present" over "target
  absent" is ``sum_g P(target -> g) * f(n_g - 1) / f(n_g)`` where ``f`` is the
  distribution of everything else in group g. Because the geometric satisfies
  ``P(G = n - 1) <= P(G = n) / r`` for every n (and this survives adding any
  independent background, and the floor), the ratio is at most ``1 / r``: the
  adversary's odds can rise by a factor ``1/r`` at most. A Poisson has no such
  bound (``f(n-1)/f(n) = n/lambda`` grows with n); padding that depends on the
  real counts leaks them.
* Singling out. The floor puts at least ``floor`` fictitious persons in every
  group count, so a real occurrence is never alone in its published count:
  with floor 2, each count holding a real person holds >= 3 indistinguishable
  occurrences (the seed's "groups of three"). The floor is a known constant, so
  it adds no variance to any estimate.
* Unbiased estimators. The expected number added per group is
  ``params.fictitious_rate`` = floor + r/(1-r), known exactly, so count and flow
  estimators subtract it; its variance ``r/(1-r)^2`` per group is what the
  padding costs in precision.

The output is a plain count per group: real and fictitious occurrences are
indistinguishable by construction.
"""

from __future__ import annotations

import numpy as np

from pipeline.privacy.noise import fresh_rng
from pipeline.privacy.params import PrivacyParams

__all__ = ["pad_with_fictitious", "fictitious_counts", "WINDOW_MARKER_GROUP"]

# Group id of a window marker: the one cell (0 occurrences) sent for a closed window that padding
# left empty, so footfall counts the window as live (pipeline/processor/app.py: occurrence_records).
WINDOW_MARKER_GROUP = 0


def fictitious_counts(params: PrivacyParams, rng: np.random.Generator | None = None,
                      size: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Draw fictitious counts for ``size`` (default: all groups of one window)."""
    g = fresh_rng() if rng is None else rng
    shape = params.n_groups if size is None else size
    r = params.fictitious_ratio
    extra = np.zeros(shape, dtype=np.int64) if r == 0 else g.geometric(1.0 - r, size=shape) - 1
    return extra + params.fictitious_floor


def pad_with_fictitious(counts: dict[int, int], params: PrivacyParams,
                        rng: np.random.Generator | None = None) -> dict[int, int]:
    """Add fictitious occurrences to the real per-group counts of one (camera, window).

    ``counts`` maps group id -> number of real occurrences (missing = 0).
    Returns a new dict over every group whose padded count is positive (with
    the default floor of 2 that is all ``n_groups`` groups). ``rng`` is for
    tests and simulation; by default the draw uses fresh OS entropy.
    """
    n = params.n_groups
    real = np.zeros(n, dtype=np.int64)
    for g, c in counts.items():
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)):
            raise ValueError(f"group ids must be integers, got {type(g).__name__}")
        if not 0 <= g < n:
            raise ValueError(f"group id {g} outside [0, {n})")
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
            raise ValueError(f"count for group {g} must be a non-negative integer")
        real[int(g)] += int(c)
    total = real + fictitious_counts(params, rng)
    nz = np.flatnonzero(total)
    return {int(g): int(total[g]) for g in nz}
