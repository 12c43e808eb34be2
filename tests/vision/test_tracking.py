"""The IoU tracker on synthetic boxes: pure logic, no footage or model."""
from __future__ import annotations

import pytest

from pipeline.vision.detector import Box
from pipeline.vision.tracking import IouTracker, iou, track_boxes


def walker(x0: float, y0: float, dx: float, dy: float, w: int = 30, h: int = 80):
    return lambda f: (round(x0 + dx * f), round(y0 + dy * f), w, h)


def test_iou_basic_cases():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0
    assert iou(Box(0, 0, 10, 10, 0.9), (0, 0, 10, 5)) == pytest.approx(0.5)  # Box or tuple


def test_two_walkers_keep_their_identity():
    a, b = walker(10, 100, 3, 0), walker(400, 120, -2, 1)
    tracks = track_boxes([(f, [a(f), b(f)]) for f in range(30)], min_length=5)
    assert len(tracks) == 2
    for t in tracks:
        assert len(t) == 30 and t.frames == list(range(30))
    # Each track follows one walker: its first box decides which one, all later boxes agree.
    for t in tracks:
        gen = a if t.boxes[0] == a(0) else b
        assert all(box == gen(f) for f, box in zip(t.frames, t.boxes))


def test_detection_order_does_not_matter_and_det_indices_map_back():
    a, b = walker(10, 100, 3, 0), walker(400, 120, -2, 1)
    frames = [(f, [a(f), b(f)] if f % 2 else [b(f), a(f)]) for f in range(20)]
    tracks = track_boxes(frames, min_length=5)
    assert len(tracks) == 2
    for t in tracks:
        for f, di, box in zip(t.frames, t.det_indices, t.boxes):
            assert frames[f][1][di] == box


def test_birth_death_and_min_length():
    a = walker(10, 100, 3, 0)
    frames = [(f, [a(f)] if f < 10 else []) for f in range(20)]
    frames[3] = (3, [a(3), (500, 10, 20, 40)])  # one-frame spurious detection
    tr = IouTracker(max_missed=2, min_length=5)
    for f, boxes in frames:
        tr.update(f, boxes)
        if f == 12:  # missed frames 10, 11, 12 > max_missed -> ended
            assert tr.active == []
    tracks = tr.finish()
    assert len(tracks) == 1 and tracks[0].frames == list(range(10)) and tracks[0].end_reason == "lost"


def test_short_gap_is_bridged_long_gap_is_not():
    a = walker(10, 100, 2, 0)
    present = [f for f in range(30) if f not in (10, 11)]  # 2 missed frames
    tracks = track_boxes([(f, [a(f)] if f in present else []) for f in range(30)], max_missed=2, min_length=3)
    assert len(tracks) == 1 and len(tracks[0]) == 28
    present = [f for f in range(30) if f not in (10, 11, 12)]  # 3 missed frames
    tracks = track_boxes([(f, [a(f)] if f in present else []) for f in range(30)], max_missed=2, min_length=3)
    assert [len(t) for t in tracks] == [10, 17]


def test_skipped_frame_numbers_count_as_missed():
    a = walker(10, 100, 1, 0)
    tr = IouTracker(max_missed=2, min_length=1)
    tr.update(0, [a(0)])
    tr.update(5, [a(5)])  # 4 frames skipped -> the first track is lost, a new one starts
    tracks = tr.finish()
    assert [t.frames for t in tracks] == [[0], [5]]


def test_fast_mover_without_overlap_starts_a_new_track():
    a = walker(0, 100, 50, 0)  # 50 px per frame for a 30 px wide box: no overlap
    tracks = track_boxes([(f, [a(f)]) for f in range(6)], min_length=1)
    assert len(tracks) == 6


def test_greedy_prefers_highest_iou():
    tr = IouTracker(iou_threshold=0.1, min_length=1)
    tr.update(0, [(0, 0, 20, 40)])
    ids = tr.update(1, [(12, 0, 20, 40), (2, 0, 20, 40)])  # second box overlaps more
    assert ids[1] == 0 and ids[0] != 0


def crossing_frames():
    # Two people walking towards each other on the same line: their boxes overlap around f = 10.
    a, b = walker(100, 100, 5, 0), walker(200, 100, -5, 0)
    return [(f, [a(f), b(f)]) for f in range(21)]


def test_strict_ends_tracks_when_people_cross():
    loose = track_boxes(crossing_frames(), min_length=1)
    strict = track_boxes(crossing_frames(), min_length=1, strict=True)
    assert any(t.end_reason == "ambiguous" for t in strict)
    assert len(strict) > len(loose)
    # In strict mode no track holds boxes of both walkers.
    a, b = walker(100, 100, 5, 0), walker(200, 100, -5, 0)
    for t in strict:
        owners = {("a" if box == a(f) else "b") for f, box in zip(t.frames, t.boxes)}
        assert len(owners) == 1, (t.frames, owners)


def test_frames_must_increase_and_parameters_are_checked():
    tr = IouTracker()
    tr.update(3, [])
    with pytest.raises(ValueError):
        tr.update(3, [])
    with pytest.raises(ValueError):
        IouTracker(iou_threshold=0)
    with pytest.raises(ValueError):
        IouTracker(min_length=0)


def test_empty_input():
    assert track_boxes([]) == []
    assert track_boxes([(f, []) for f in range(5)]) == []
