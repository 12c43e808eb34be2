import numpy as np

from pipeline.processor.windows import WindowAggregator

W = 60_000


def test_window_closes_after_watermark_passes_end_plus_grace():
    agg = WindowAggregator(60, 5, idle_flush_seconds=1e9)
    agg.add("s", "c", 10_000, [1, 2, 2], now=0)
    agg.add("s", "c", 50_000, [2], now=0)
    assert agg.flush_ready(now=0) == []
    agg.add("s", "c", W + 4_000, [7], now=0)          # within grace: first window stays open
    assert agg.flush_ready(now=0) == []
    agg.add("s", "c", W + 5_000, [], now=0)
    closed = agg.flush_ready(now=0)
    assert len(closed) == 1 and closed[0].window_start_ms == 0
    assert dict(closed[0].counts) == {1: 1, 2: 3} and closed[0].frames == 2


def test_cameras_are_independent_and_idle_flush():
    agg = WindowAggregator(60, 0, idle_flush_seconds=10)
    agg.add("s", "a", 1_000, [1], now=0)
    agg.add("s", "b", 5 * W, [2], now=5)
    assert agg.flush_ready(now=6) == []                 # b's watermark does not close a's window
    closed = agg.flush_ready(now=10)
    assert [(w.camera_id, dict(w.counts)) for w in closed] == [("a", {1: 1})]
    assert [w.camera_id for w in agg.flush_all()] == ["b"]
    assert agg.open_windows == 0


def test_late_frame_opens_a_new_fragment():
    agg = WindowAggregator(60, 0, idle_flush_seconds=1e9)
    agg.add("s", "c", 1_000, [1], now=0)
    agg.add("s", "c", W, [], now=0)
    assert len(agg.flush_ready(now=0)) == 1
    agg.add("s", "c", 2_000, [3], now=0)                # late
    frag = [w for w in agg.flush_all() if w.window_start_ms == 0]
    assert len(frag) == 1 and dict(frag[0].counts) == {3: 1}


def test_a_camera_handed_over_closes_its_windows_as_fragments_and_the_new_owner_adds_to_them():
    old, new = WindowAggregator(60, 5, idle_flush_seconds=1e9), WindowAggregator(60, 5, idle_flush_seconds=1e9)
    old.add("s", "moved", 1_000, [1, 2], now=0)
    old.add("s", "moved", W + 1_000, [3], now=0)        # two windows open (the first within grace)
    old.add("s", "kept", 1_000, [4], now=0)
    handed = old.flush_cameras([("s", "moved")])
    assert sorted((w.window_start_ms, dict(w.counts)) for w in handed) == [(0, {1: 1, 2: 1}), (W, {3: 1})]
    assert old.open_windows == 1                        # the kept camera's window stays open
    new.add("s", "moved", W + 2_000, [3], now=0)        # the new owner: a fragment of the same window
    frags = handed + new.flush_all()
    total = {}
    for w in frags:
        for g, c in w.counts.items():
            total[(w.window_start_ms, g)] = total.get((w.window_start_ms, g), 0) + c
    assert total == {(0, 1): 1, (0, 2): 1, (W, 3): 2}   # summed downstream: nothing lost or doubled


def test_processor_sends_a_marker_for_a_window_without_cells():
    from pipeline.privacy import PrivacyParams
    from pipeline.privacy import WINDOW_MARKER_GROUP
    from pipeline.processor.app import occurrence_records
    from pipeline.processor.windows import ClosedWindow

    params = PrivacyParams.profile("flow").with_changes(fictitious_ratio=0.0)
    w = ClosedWindow(site_id="s", camera_id="c", window_start_ms=1_793_610_000_000, window_seconds=60, counts={})
    (rec,) = occurrence_records(w, params, np.random.default_rng(0))
    assert (rec["group_id"], rec["occurrences"]) == (WINDOW_MARKER_GROUP, 0)
    busy = ClosedWindow(site_id="s", camera_id="c", window_start_ms=1_793_610_000_000, window_seconds=60, counts={7: 2})
    assert [(r["group_id"], r["occurrences"]) for r in occurrence_records(busy, params, np.random.default_rng(0))] == [(7, 2)]
