"""The perception scoring that decides defaults and is quoted to users (pipeline/vision/evaluation.py),
and the clean-crop rule (pipeline/vision/crops.py)."""
import pytest

from pipeline.vision import evaluation as ev
from pipeline.vision.crops import crop_weights


def L(fr, pid, box, ignore=False):
    return ev.Label(fr, pid, box, ignore)


def test_one_to_one_matching_counts_duplicates_as_false_and_misses_as_missed():
    labels = [L(0, 1, (0, 0, 40, 100)), L(0, 2, (200, 0, 40, 100))]
    dets = [(2, 2, 40, 100), (0, 0, 40, 98), (500, 0, 40, 100)]  # two on person 1, one on nobody
    m = ev.match_frame(dets, labels)
    assert sorted(p for p in m.person_of if p is not None) == [1]
    assert sum(m.false_positive) == 2 and [l.person for l in m.missed] == [2]
    s = ev.DetectionScore()
    s.add(m)
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(0.5)


def test_ignored_people_are_neither_missed_nor_false():
    labels = [L(0, 1, (0, 0, 40, 100)), L(0, 9, (300, 0, 40, 60), ignore=True)]
    m = ev.match_frame([(0, 0, 40, 100), (305, 5, 30, 40)], labels)
    assert m.false_positive == [False, False] and m.missed == []
    m2 = ev.match_frame([(0, 0, 40, 100)], labels)  # the ignored one undetected: not missed
    assert m2.missed == []


def test_recall_by_size_bins_by_box_height():
    s = ev.DetectionScore()
    s.add(ev.match_frame([(0, 0, 20, 50)], [L(0, 1, (0, 0, 20, 50)), L(0, 2, (100, 0, 40, 120))]))
    rs = s.recall_by_size()
    assert rs["0-55px"] == (1.0, 1) and rs["100-px"] == (0.0, 1) and rs["55-100px"] == (0.0, 0)


def test_pass_scoring_counts_jumps_false_passes_and_people_without_a_pass():
    tracks = {1: [(0, 1), (5, 1), (10, 2), (15, None), (20, 2)],  # jumps 1 -> 2 once: 3 links, 1 jump
              2: [(0, None), (5, None)],                          # matches nobody: false pass
              3: [(0, 3), (5, 3)]}
    s = ev.score_passes(tracks, people={1, 2, 3, 4})
    assert (s.passes, s.false_passes, s.links, s.jumps) == (3, 1, 4, 1)
    assert s.per_person == pytest.approx(0.75) and s.people_without_pass == 2  # 2 (lost to 1's pass) and 4
    assert s.passes_per_person == {1: 1, 3: 1}  # a tie goes to the person seen first


def test_labels_file_is_validated(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("frame,person_id,x,y,w,h,flag\n0,1,10,20,30,40,ok\n1,1,10,20,30,40,ignore\n")
    labels = ev.load_labels(p, scale=0.5)
    assert labels[0][0].box == (5.0, 10.0, 15.0, 20.0) and labels[1][0].ignore
    p.write_text("frame,person_id,x,y,w,h,flag\n0,1,10,20,30,40,maybe\n")
    with pytest.raises(ValueError, match="flag"):
        ev.load_labels(p)


def test_clean_crops_exclude_border_cuts_and_people_behind_someone_nearer():
    boxes = [(0, 100, 40, 100),      # touches the left border
             (200, 100, 40, 100),    # behind the next one (its feet are higher)
             (210, 120, 40, 100),    # in front
             (400, 100, 40, 100)]    # alone
    assert crop_weights(boxes, 640, 480) == [0.0, 0.0, 1.0, 1.0]
    assert crop_weights([], 640, 480) == []


def test_visits_split_on_absence_not_on_occlusion_and_count_only_what_the_samples_show():
    labels = {}
    for fr in list(range(0, 30)) + list(range(60, 80)):          # person 1: leaves for 30 frames, comes back
        labels.setdefault(fr, []).append(L(fr, 1, (0, 0, 10, 20), ignore=10 <= fr < 20))  # hidden 10..19: same visit
    for fr in range(0, 3):                                       # person 2: a glimpse
        labels.setdefault(fr, []).append(L(fr, 2, (50, 0, 10, 20)))
    assert ev.visits(labels, max_gap_frames=20) == {1: 2, 2: 1}
    assert ev.visits(labels, max_gap_frames=40) == {1: 1, 2: 1}
    assert ev.visits(labels, max_gap_frames=20, frames=range(5, 80, 5)) == {1: 2}  # 2's glimpse is never sampled


def test_appearance_features_are_unit_rows_with_unclean_crops_blanked_and_nothing_for_empty_input():
    import numpy as np

    from pipeline.vision.crops import appearance_features

    f = appearance_features(np.array([[3.0, 4.0], [1.0, 0.0]]), [1.0, 0.0])
    np.testing.assert_allclose(f[0], [0.6, 0.8])
    assert np.isnan(f[1]).all()
    assert appearance_features(np.zeros((0, 4)), []) is None
    assert appearance_features(np.zeros((2, 4)), [1, 1]) is None  # an empty descriptor says nothing
