"""Pass counting: one occurrence per person pass from the pass's mean descriptor, demographics
once per pass, bounded memory."""
import time
from collections import Counter

import numpy as np
import pytest

from pipeline.processor.passes import UNKNOWN_CELL, PassCounter
from pipeline.vision.tracker import TrackerConfig

F = ("28-37", "female")


def walk(x0: float, step: float, n: int, y: float = 100.0) -> list[tuple[float, float, float, float]]:
    return [(x0 + i * step, y, 40.0, 100.0) for i in range(n)]


def vec(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


def run(pc: PassCounter, frames, cam=("s", "c"), t0=0, dt=500):
    """frames: per frame a list of (box, descriptor, label)."""
    out = []
    for i, dets in enumerate(frames):
        boxes = [d[0] for d in dets]
        desc = np.stack([d[1] for d in dets]) if dets else np.zeros((0, 2), dtype=np.float32)
        out += pc.update(*cam, t0 + i * dt, boxes, desc, [d[2] for d in dets])
    return out


def ended(out) -> list[np.ndarray]:
    return [d for c in out for d in c.descriptors]


def test_a_person_walking_through_ten_frames_is_one_pass_with_the_mean_descriptor():
    a = walk(0, 45, 10)  # faster than their own width per frame: IoU would lose them
    pc = PassCounter(appearance=False)
    out = run(pc, [[(a[i], vec(i, 1), UNKNOWN_CELL)] for i in range(10)])
    assert ended(out) == []  # still open: grouped only when it ends
    (site, cam, c), = pc.flush()
    (mean,) = c.descriptors
    np.testing.assert_allclose(mean, [4.5, 1.0])
    assert c.ts_ms == 9 * 500 and c.demographics == Counter({UNKNOWN_CELL: 1})


def test_two_people_side_by_side_are_two_passes_and_keep_their_own_descriptors():
    a, b = walk(0, 30, 8, y=100), walk(400, -30, 8, y=300)
    pc = PassCounter()
    run(pc, [[(a[i], vec(1, 0), UNKNOWN_CELL), (b[i], vec(0, 1), UNKNOWN_CELL)] for i in range(8)])
    means = sorted(tuple(d) for _, _, c in pc.flush() for d in c.descriptors)
    assert means == [(0.0, 1.0), (1.0, 0.0)]


def test_a_pass_ends_after_the_gap_and_a_return_is_a_new_pass():
    a = walk(0, 30, 3)
    pc = PassCounter(TrackerConfig(max_gap_s=1.6), appearance=False)
    out = run(pc, [[(a[0], vec(1), UNKNOWN_CELL)], [(a[1], vec(3), UNKNOWN_CELL)], [], [], [],
                   [(a[1], vec(9), UNKNOWN_CELL)], [(a[1], vec(9), UNKNOWN_CELL)]])
    (first,) = ended(out)
    assert first.tolist() == [2.0]
    assert sum(c.demographics[UNKNOWN_CELL] for c in out) == 1  # counted unknown when it ended
    assert next(c.ts_ms for c in out if c.descriptors) == 500  # the window of the last sighting
    assert pc.open_passes == 1


def test_a_single_glimpse_is_not_a_pass():
    pc = PassCounter(TrackerConfig(min_hits=2))
    out = run(pc, [[((100, 100, 40, 100), vec(1), UNKNOWN_CELL)], [], [], [], [], [], []])
    out += [c for _, _, c in pc.flush()]
    assert out == [] and pc.open_passes == 0


def test_demographics_are_counted_once_per_pass_at_the_first_known_label():
    a = walk(0, 30, 5)
    labels = [UNKNOWN_CELL, F, F, UNKNOWN_CELL, F]
    pc = PassCounter()
    out = run(pc, [[(a[i], vec(0, 1), labels[i])] for i in range(5)])
    out += [c for _, _, c in pc.flush()]
    assert sum((c.demographics for c in out), Counter()) == Counter({F: 1})
    assert len(ended(out)) == 1


def test_crops_cut_or_overlapped_do_not_shape_the_mean_unless_nothing_else_exists():
    a = walk(0, 30, 4)
    pc = PassCounter(appearance=False)
    for i in range(4):
        pc.update("s", "c", i * 500, [a[i]], vec(float(i), 1.0)[None], None, quality=[0.0 if i < 2 else 1.0])
    (_, _, c), = pc.flush()
    np.testing.assert_allclose(c.descriptors[0], [2.5, 1.0])  # mean of the two clean crops only
    pc = PassCounter(appearance=False)
    for i in range(2):
        pc.update("s", "c", i * 500, [a[i]], vec(float(i), 1.0)[None], None, quality=[0.0])
    (_, _, c), = pc.flush()
    np.testing.assert_allclose(c.descriptors[0], [0.5, 1.0])


def test_someone_standing_in_view_is_grouped_once_after_the_cap_and_not_again():
    box = (100, 100, 40, 100)
    pc = PassCounter(max_pass_seconds=2.0)
    out = run(pc, [[(box, vec(1), UNKNOWN_CELL)] for _ in range(10)])  # 4.5 s in view
    assert len(ended(out)) == 1 and out[0].ts_ms == 2000
    assert [c.descriptors for _, _, c in pc.flush()] == [[]]  # only its pending demographics remain


def test_cameras_are_independent_and_state_is_forgotten():
    pc = PassCounter(TrackerConfig(max_gap_s=1.0, min_hits=1))
    box = (10, 10, 40, 100)
    pc.update("s", "a", 0, [box], vec(1)[None], [UNKNOWN_CELL])
    pc.update("s", "b", 0, [box], vec(2)[None], [UNKNOWN_CELL])
    assert pc.open_passes == 2
    out = pc.update("s", "a", 5000, [], np.zeros((0, 1)), [])
    assert ended(out)[0].tolist() == [1.0] and pc.open_passes == 1  # a's pass ended; b's is open


def test_out_of_order_frame_is_counted_alone_and_bad_input_refused():
    pc = PassCounter()
    box = (10, 10, 40, 100)
    pc.update("s", "a", 1000, [box], vec(1)[None], [UNKNOWN_CELL])
    out = pc.update("s", "a", 500, [box], vec(7)[None], [F])
    assert ended(out)[0].tolist() == [7.0] and out[0].demographics == Counter({F: 1})
    assert pc.open_passes == 1
    with pytest.raises(ValueError):
        pc.update("s", "a", 2000, [box], vec(1)[None], [F, F])
    with pytest.raises(ValueError):
        pc.update("s", "a", 2000, [box], vec(1)[None], [F], quality=[1.0, 1.0])


def test_crossings_of_a_cameras_counting_line_are_counted_once_per_crossing_by_direction():
    from pipeline.layout import CountLine

    line = CountLine(name="door", a=(0.0, 0.5), b=(1.0, 0.5))
    pc = PassCounter(lines={("s", "c"): line})
    up = [(300, 400 - 60 * i, 40, 100) for i in range(8)]       # feet from y=500 to 80 of 600: walks up
    out = []
    for i, b in enumerate(up):
        out += pc.update("s", "c", i * 500, [b], vec(0, 1)[None], None, frame_size=(800, 600))
    out += [c for _, _, c in pc.flush()]
    assert sum((c.crossings for c in out), Counter()) == Counter({("door", "in"): 1})
    other = PassCounter(lines={("s", "c"): line})  # another camera has no line; no frame size: nothing
    assert all(not c.crossings for c in other.update("s", "x", 0, [up[0]], vec(0, 1)[None], None, frame_size=(800, 600)))


def test_handing_a_camera_over_counts_its_open_passes_and_leaves_the_others_alone():
    a, b = walk(0, 30, 4), walk(0, 30, 4)
    pc = PassCounter(appearance=False)
    run(pc, [[(a[i], vec(1, 0), UNKNOWN_CELL)] for i in range(4)], cam=("s", "moved"))
    run(pc, [[(b[i], vec(0, 1), UNKNOWN_CELL)] for i in range(4)], cam=("s", "kept"))
    handed = pc.flush([("s", "moved"), ("s", "never-seen")])
    assert [(site, cam) for site, cam, _ in handed] == [("s", "moved")]
    assert [tuple(d) for _, _, c in handed for d in c.descriptors] == [(1.0, 0.0)]
    assert pc.open_passes == 1                      # the kept camera's pass is still open
    # The moved camera comes back (or another worker gives it back): a fresh tracker, a new pass.
    out = run(pc, [[(a[i], vec(1, 0), UNKNOWN_CELL)] for i in range(4)], cam=("s", "moved"), t0=10_000)
    assert ended(out) == [] and pc.open_passes == 2
    assert sorted(cam for _, cam, _ in pc.flush()) == ["kept", "moved"] and pc.open_passes == 0


def test_a_camera_without_frames_for_a_while_is_idle_and_only_it():
    pc = PassCounter(appearance=False)
    run(pc, [[(walk(0, 30, 1)[0], vec(1), UNKNOWN_CELL)]], cam=("s", "quiet"))
    now = time.monotonic()
    assert pc.idle_cameras(30.0, now=now) == []
    run(pc, [[(walk(0, 30, 1)[0], vec(1), UNKNOWN_CELL)]], cam=("s", "busy"))
    assert pc.idle_cameras(30.0, now=now + 31) == [("s", "quiet"), ("s", "busy")]
    pc.flush([("s", "quiet")])
    assert pc.idle_cameras(30.0, now=now + 31) == [("s", "busy")]   # handed over: no longer tracked


def test_a_camera_moved_to_another_worker_drops_its_open_passes_uncounted():
    a = walk(0, 30, 4)
    pc = PassCounter(appearance=False)
    run(pc, [[(a[i], vec(1, 0), UNKNOWN_CELL)] for i in range(4)], cam=("s", "moved"))
    run(pc, [[(a[i], vec(0, 1), UNKNOWN_CELL)] for i in range(4)], cam=("s", "kept"))
    assert pc.drop([("s", "moved"), ("s", "never-seen")]) == 1   # one confirmed pass left to the new owner
    assert pc.open_passes == 1 and pc.idle_cameras(0.0) == [("s", "kept")]
    assert [cam for _, cam, _ in pc.flush()] == ["kept"]


def test_a_person_in_view_at_a_hand_over_is_counted_once_in_demographics_as_in_occurrences():
    """The old owner drops the camera's open passes when its partition moves; the new owner's
    fresh tracker counts the person when their pass ends. Demographics follow the pass, so the
    person is one occurrence and one demographic count across both workers (counted at
    confirmation, they were two in demographics)."""
    a = walk(0, 30, 10)
    old, new = PassCounter(appearance=False), PassCounter(appearance=False)
    out_old = run(old, [[(a[i], vec(0, 1), F)] for i in range(5)])                 # confirmed, labelled
    assert old.drop([("s", "c")]) == 1
    out_new = run(new, [[(a[i], vec(0, 1), F)] for i in range(5, 10)], t0=2500)
    out_new += [c for _, _, c in new.flush()]
    both = out_old + out_new
    assert sum((c.demographics for c in both), Counter()) == Counter({F: 1})
    assert len(ended(both)) == 1


def test_demographics_wait_for_the_end_of_the_pass():
    a = walk(0, 30, 6)
    pc = PassCounter(appearance=False)
    out = run(pc, [[(a[i], vec(0, 1), F)] for i in range(6)])
    assert sum((c.demographics for c in out), Counter()) == Counter()   # confirmed, still in view
    (_, _, c), = pc.flush()
    assert c.demographics == Counter({F: 1}) and len(c.descriptors) == 1
