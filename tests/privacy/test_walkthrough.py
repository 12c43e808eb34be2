"""Walk-through matching: staff sightings by time window -> cross-camera same-person pairs."""
import pytest

from pipeline.privacy.walkthrough import Schedule, load_schedule, match_walkthrough

PASSES = [("entrance", 10.0, 18.0),   # 0: the walker at the entrance
          ("entrance", 0.0, 60.0),    # 1: someone loitering the whole time
          ("plaza", 40.0, 47.0),      # 2: the walker at the plaza
          ("plaza", 90.0, 95.0),      # 3: someone later
          ("store", 70.0, 75.0),      # 4: two people together at the store
          ("store", 70.5, 75.5)]      # 5


def schedule(*sightings):
    return Schedule.model_validate({"walkers": [{"name": "staff-a", "sightings": [
        {"camera": c, "from": a, "to": b} for c, a, b in sightings]}]})


def test_the_walkers_own_passes_are_paired_across_cameras_and_a_loiterer_does_not_win():
    m = match_walkthrough(schedule(("entrance", 9, 19), ("plaza", 39, 48)), PASSES)
    assert m.pairs == [(0, 2)] and m.matched == 2 and m.unmatched == []


def test_ambiguous_and_empty_windows_are_skipped_and_reported_not_guessed():
    m = match_walkthrough(schedule(("entrance", 9, 19), ("store", 69, 76), ("plaza", 60, 65), ("roof", 1, 2)), PASSES)
    assert m.pairs == [] and m.matched == 1
    reasons = " | ".join(m.unmatched)
    assert "store" in reasons and "ambiguous" in reasons
    assert "plaza[60-65]: no pass overlaps" in reasons and "no footage for camera 'roof'" in reasons


def test_every_pair_of_different_cameras_of_one_walker_counts_once():
    m = match_walkthrough(schedule(("entrance", 9, 19), ("plaza", 39, 48), ("plaza", 89, 96)), PASSES)
    assert sorted(m.pairs) == [(0, 2), (0, 3)]  # plaza with plaza is not a cross-camera pair


def test_schedule_files_are_validated_with_their_path(tmp_path):
    p = tmp_path / "walk.yaml"
    p.write_text("walkers:\n  - name: a\n    sightings:\n      - {camera: x, from: 5, to: 3}\n      - {camera: y, from: 1, to: 2}\n")
    with pytest.raises(ValueError, match="must be after"):
        load_schedule(p)
    p.write_text("walkers:\n  - name: a\n    sightings:\n      - {camera: x, from: 1, to: 3}\n")
    with pytest.raises(ValueError, match="sightings"):
        load_schedule(p)
    p.write_text("walkers: [{name: a, sightings: [{camera: x, from: 1, to: 3}, {camera: y, from: 4, to: 6}]}]\n")
    assert len(load_schedule(p).walkers[0].sightings) == 2
