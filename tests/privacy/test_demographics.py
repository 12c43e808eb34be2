"""Age bands and small-count protection of demographic counts."""

from __future__ import annotations

import math

import pytest

from pipeline.privacy import AGE_BANDS, PrivacyParams, age_to_band, protect_demographic_counts
from pipeline.privacy.demographics import UNKNOWN


def test_bands_are_ten_years_wide_from_18():
    assert AGE_BANDS[:3] == ("18-27", "28-37", "38-47")
    assert AGE_BANDS[-1] == "78+"
    for band in AGE_BANDS[:-1]:
        lo, hi = map(int, band.split("-"))
        assert hi - lo == 9


@pytest.mark.parametrize("age, band", [
    (18, "18-27"), (18.0, "18-27"), (27.99, "18-27"), (28, "28-37"), (37.5, "28-37"),
    (68, "68-77"), (77.99, "68-77"), (78, "78+"), (104, "78+"),
])
def test_age_to_band(age, band):
    assert age_to_band(age) == band


@pytest.mark.parametrize("age", [17.99, 0, -3, math.nan, math.inf, None, "abc", True])
def test_minors_and_unknown_ages_get_no_band(age):
    assert age_to_band(age) is None


def test_small_cells_are_pooled_and_no_cell_below_threshold():
    p = PrivacyParams.default()
    counts = {("18-27", "female"): 5, ("28-37", "male"): 1, ("38-47", "female"): 2, ("78+", "male"): 1}
    out = protect_demographic_counts(counts, p)
    assert out == {("18-27", "female"): 5, (UNKNOWN, UNKNOWN): 4}
    assert all(v >= p.demographic_min_count for v in out.values())
    assert sum(out.values()) == sum(counts.values())  # pool reached 3: totals exact


def test_pool_below_threshold_is_suppressed():
    p = PrivacyParams.default()
    out = protect_demographic_counts({("18-27", "female"): 4, ("58-67", "male"): 1, (UNKNOWN, UNKNOWN): 1}, p)
    assert out == {("18-27", "female"): 4}


def test_a_lone_person_is_never_published():
    assert protect_demographic_counts({("68-77", "female"): 1}, PrivacyParams.default()) == {}


@pytest.mark.parametrize("bad", [{("17-26", "female"): 3}, {("18-27", "other"): 3}, {("18-27", "male"): -1},
                                 {"18-27": 3}])
def test_invalid_keys_or_counts_are_rejected(bad):
    with pytest.raises(ValueError):
        protect_demographic_counts(bad, PrivacyParams.default())
