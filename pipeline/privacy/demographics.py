"""Age bands, genders and small-count protection for the demographic counts.

Why apart from the groups: demographics are counted per (camera, window) on
their own topic, with no occurrence identifier, order or timestamp, so they
cannot be joined to group occurrences; this module only deals with the
demographic side.

Decisions (documented in docs/PRIVACY.md):

* Bands are 10 years wide starting at 18: 18-27, 28-37, ..., 68-77, then 78+.
* Minors are not profiled: an estimated age under 18 (and a missing or
  non-finite estimate) maps to ``None``; the processor counts such persons
  under the band ``"unknown"``. A child therefore never gets an age band.
* Protection is **suppression with pooling**: in one (camera, window), every
  (band, gender) cell below ``params.demographic_min_count`` (3) is removed and
  its people are added to the cell ``("unknown", "unknown")``; if that pooled
  cell is itself below the threshold it is removed too. No published cell
  describes fewer than 3 people, and totals stay exact whenever the pool
  reaches 3. No noise is added (so ``rng`` is accepted and unused); the cost is
  that rare bands at quiet cameras are under-reported, which the evaluation
  measures.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.privacy.params import PrivacyParams

__all__ = ["AGE_BANDS", "GENDERS", "UNKNOWN", "age_to_band", "check_demographic_counts", "protect_demographic_counts"]

UNKNOWN = "unknown"
_BAND_WIDTH = 10
_MIN_AGE = 18
_LAST_BAND_START = 78
AGE_BANDS: tuple[str, ...] = tuple(
    f"{a}-{a + _BAND_WIDTH - 1}" for a in range(_MIN_AGE, _LAST_BAND_START, _BAND_WIDTH)
) + (f"{_LAST_BAND_START}+",)
GENDERS: tuple[str, ...] = ("female", "male", UNKNOWN)
_VALID_BANDS = frozenset(AGE_BANDS) | {UNKNOWN}


def age_to_band(age_years: float) -> str | None:
    """The 10-year band of an estimated age, or None for under 18 / unknown (counted as "unknown")."""
    if age_years is None or isinstance(age_years, bool):
        return None
    try:
        a = float(age_years)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(a) or a < _MIN_AGE:
        return None
    if a >= _LAST_BAND_START:
        return AGE_BANDS[-1]
    return AGE_BANDS[int((a - _MIN_AGE) // _BAND_WIDTH)]


def check_demographic_counts(counts: dict[tuple[str, str], int]) -> None:
    """ValueError unless every key is a known (age_band, gender) and every count an integer >= 0."""
    for key, c in counts.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError("demographic keys must be (age_band, gender) tuples")
        band, gender = key
        if band not in _VALID_BANDS:
            raise ValueError(f"unknown age band {band!r}; expected one of {sorted(_VALID_BANDS)}")
        if gender not in GENDERS:
            raise ValueError(f"unknown gender {gender!r}; expected one of {list(GENDERS)}")
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
            raise ValueError(f"count for {key} must be a non-negative integer")


def protect_demographic_counts(counts: dict[tuple[str, str], int], params: PrivacyParams,
                               rng: np.random.Generator | None = None) -> dict[tuple[str, str], int]:
    """Suppress-and-pool small cells of one (camera, window). ``rng`` is unused (no noise)."""
    k = params.demographic_min_count
    out: dict[tuple[str, str], int] = {}
    pooled = 0
    check_demographic_counts(counts)
    for key, c in counts.items():
        band, gender = key
        c = int(c)
        if key == (UNKNOWN, UNKNOWN):
            pooled += c
        elif c >= k:
            out[(band, gender)] = c
        else:
            pooled += c
    if pooled >= k:
        out[(UNKNOWN, UNKNOWN)] = pooled
    return out
