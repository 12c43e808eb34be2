"""Demographic counts per window: only (age_band, gender) counts are kept next to the group
counts, and a closed window goes out exact to the aggregator, which protects camera-hours."""
from collections import Counter

import pytest

from pipeline.privacy import PrivacyParams
from pipeline.processor.app import demographic_records
from pipeline.processor.windows import WindowAggregator

W = 60_000


def test_window_keeps_demographic_counts_next_to_group_counts():
    agg = WindowAggregator(60, 0, idle_flush_seconds=1e9)
    agg.add("s", "c", 1_000, [4, 5], now=0, demographics=Counter({("28-37", "male"): 1, ("unknown", "unknown"): 1}))
    agg.add("s", "c", 2_000, [4], now=0, demographics=[("28-37", "male")])
    agg.add("s", "c", 3_000, [], now=0)                       # a frame with nobody
    agg.add("s", "d", 3_000, [9], now=0, demographics={("18-27", "female"): 1})
    agg.add("s", "c", W, [], now=0)
    agg.add("s", "d", W, [], now=0)
    closed = {w.camera_id: w for w in agg.flush_ready(now=0)}
    assert dict(closed["c"].counts) == {4: 2, 5: 1}
    assert dict(closed["c"].demographics) == {("28-37", "male"): 2, ("unknown", "unknown"): 1}
    assert dict(closed["d"].demographics) == {("18-27", "female"): 1}
    # nothing per person: the window holds counters and a frame count only
    assert set(vars(closed["c"])) == {"site_id", "camera_id", "window_start_ms", "window_seconds", "counts",
                                      "frames", "demographics"}


def test_closed_window_goes_out_exact_for_the_aggregator_to_protect():
    """The per-window counts are restricted input: exact, no suppression (a suppressed cell would
    break the contribution bound the aggregator's noise is calibrated to)."""
    agg = WindowAggregator(60, 0, idle_flush_seconds=1e9)
    agg.add("s", "c", 1_000, [1] * 9, now=0, demographics=Counter({("28-37", "male"): 4, ("18-27", "female"): 2,
                                                                   ("unknown", "unknown"): 2, ("38-47", "unknown"): 1}))
    (w,) = agg.flush_all()
    params = PrivacyParams.default()
    recs = demographic_records(w, params)
    got = {(r["age_band"], r["gender"]): r["persons"] for r in recs}
    assert got == {("28-37", "male"): 4, ("18-27", "female"): 2, ("unknown", "unknown"): 2, ("38-47", "unknown"): 1}
    for r in recs:
        assert set(r) == {"site_id", "camera_id", "window_start", "window_seconds", "age_band", "gender", "persons",
                          "params_version"}
        assert r["window_start"] == 0 and r["window_seconds"] == 60 and r["params_version"] == params.version


def test_a_window_with_unknown_cells_is_refused():
    agg = WindowAggregator(60, 0, idle_flush_seconds=1e9)
    agg.add("s", "c", 1_000, [1, 2], now=0, demographics=Counter({("9-12", "male"): 1}))
    (w,) = agg.flush_all()
    with pytest.raises(ValueError, match="age band"):
        demographic_records(w, PrivacyParams.default())
