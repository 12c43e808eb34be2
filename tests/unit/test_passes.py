"""Pass counting: one occurrence per person pass, demographics once per pass, bounded memory."""
from collections import Counter

import pytest

from pipeline.processor.passes import UNKNOWN_CELL, PassCounter

F = ("28-37", "female")


def walk(x0: float, step: float, n: int, y: float = 100.0) -> list[tuple[float, float, float, float]]:
    return [(x0 + i * step, y, 40.0, 100.0) for i in range(n)]


def run(pc: PassCounter, frames, cam=("s", "c"), t0=0, dt=500):
    out = []
    for i, dets in enumerate(frames):
        boxes = [d[0] for d in dets]
        groups = [d[1] for d in dets]
        labels = [d[2] for d in dets]
        out += pc.update(*cam, t0 + i * dt, boxes, groups, labels)
    return out


def test_a_person_walking_through_ten_frames_is_one_occurrence():
    a = walk(0, 45, 10)  # faster than their own width per frame: IoU would lose them
    out = run(PassCounter(), [[(a[i], 7, UNKNOWN_CELL)] for i in range(10)])
    assert sum(len(c.groups) for c in out) == 1 and out[0].groups == [7]


def test_two_people_side_by_side_are_two_passes_and_keep_their_tracks():
    a, b = walk(0, 30, 8, y=100), walk(400, -30, 8, y=300)
    out = run(PassCounter(), [[(a[i], 1, UNKNOWN_CELL), (b[i], 2, UNKNOWN_CELL)] for i in range(8)])
    assert sorted(g for c in out for g in c.groups) == [1, 2]


def test_someone_who_leaves_and_comes_back_later_is_a_new_pass():
    a = walk(0, 30, 3)
    pc = PassCounter(max_gap_seconds=1.6)
    out = run(pc, [[(a[0], 1, UNKNOWN_CELL)], [(a[1], 1, UNKNOWN_CELL)], [], [], [], [(a[1], 1, UNKNOWN_CELL)]])
    assert sum(len(c.groups) for c in out) == 2
    # the first pass ended without a known label: counted once as unknown when it expired;
    # the second is still open
    assert sum(c.demographics[UNKNOWN_CELL] for c in out) == 1
    assert pc.open_passes == 1


def test_demographics_are_counted_once_per_pass_at_the_first_known_label():
    a = walk(0, 30, 5)
    labels = [UNKNOWN_CELL, F, F, UNKNOWN_CELL, F]
    pc = PassCounter()
    out = run(pc, [[(a[i], 3, labels[i])] for i in range(5)])
    total = sum((c.demographics for c in out), Counter())
    assert total == Counter({F: 1})
    assert pc.flush() == []  # nothing pending: the pass was counted with its label


def test_a_pass_never_seen_with_a_face_counts_as_unknown_when_it_ends():
    a = walk(0, 30, 3)
    pc = PassCounter()
    out = run(pc, [[(a[i], 3, UNKNOWN_CELL)] for i in range(3)])
    assert sum((c.demographics for c in out), Counter()) == Counter()
    (site, cam, c), = pc.flush()
    assert (site, cam, c.demographics) == ("s", "c", Counter({UNKNOWN_CELL: 1}))
    assert pc.open_passes == 0


def test_cameras_are_independent_and_state_is_forgotten():
    pc = PassCounter(max_gap_seconds=1.0)
    box = (10, 10, 40, 100)
    pc.update("s", "a", 0, [box], [1], [UNKNOWN_CELL])
    out = pc.update("s", "b", 0, [box], [1], [UNKNOWN_CELL])
    assert out[0].groups == [1]  # same box on another camera: another pass
    pc.update("s", "a", 5000, [], [], [])
    assert pc.open_passes == 1  # camera a's pass expired; b's is still open


def test_out_of_order_frame_is_counted_alone_and_bad_input_refused():
    pc = PassCounter()
    box = (10, 10, 40, 100)
    pc.update("s", "a", 1000, [box], [1], [UNKNOWN_CELL])
    out = pc.update("s", "a", 500, [box], [2], [F])
    assert out[0].groups == [2] and out[0].demographics == Counter({F: 1})
    with pytest.raises(ValueError):
        pc.update("s", "a", 2000, [box], [1, 2], None)
