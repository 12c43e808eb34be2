"""Demographic counts per window: only (age_band, gender) counts are kept next to the group
counts, and a closed window is published through the small-cell protection."""
from collections import Counter

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


def test_closed_window_is_protected_before_it_is_emitted():
    agg = WindowAggregator(60, 0, idle_flush_seconds=1e9)
    agg.add("s", "c", 1_000, [1] * 9, now=0, demographics=Counter({("28-37", "male"): 4, ("18-27", "female"): 2,
                                                                   ("unknown", "unknown"): 2, ("38-47", "unknown"): 1}))
    (w,) = agg.flush_all()
    params = PrivacyParams.default()
    assert params.demographic_min_count == 3
    recs = demographic_records(w, params, None)
    got = {(r["age_band"], r["gender"]): r["persons"] for r in recs}
    # 4 kept; the 2 + 1 small cells are pooled with the 2 unknown into one unknown cell of 5
    assert got == {("28-37", "male"): 4, ("unknown", "unknown"): 5}
    for r in recs:
        assert set(r) == {"site_id", "camera_id", "window_start", "window_seconds", "age_band", "gender", "persons",
                          "params_version"}
        assert r["window_start"] == 0 and r["window_seconds"] == 60 and r["params_version"] == params.version


def test_small_windows_publish_nothing():
    agg = WindowAggregator(60, 0, idle_flush_seconds=1e9)
    agg.add("s", "c", 1_000, [1, 2], now=0, demographics=Counter({("28-37", "male"): 1, ("unknown", "unknown"): 1}))
    (w,) = agg.flush_all()
    assert demographic_records(w, PrivacyParams.default(), None) == []
