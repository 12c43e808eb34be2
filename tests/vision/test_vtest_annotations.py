"""The project's own vtest.avi ground truth (bench/data/vtest-gt/) is well-formed, and the annotation
tool's `apply` step does merges, splits and interpolation as documented."""
from __future__ import annotations

import csv
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GT = ROOT / "bench" / "data" / "vtest-gt"


def _tool():
    if "vtest_annotate" not in sys.modules:      # registered first: the module defines dataclasses
        spec = importlib.util.spec_from_file_location("vtest_annotate", ROOT / "bench" / "vision" / "annotate.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["vtest_annotate"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["vtest_annotate"]


@pytest.fixture(scope="module")
def rows():
    with (GT / "annotations.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["frame", "person_id", "x", "y", "w", "h", "flag", "source"]
        return list(reader)


def test_annotation_file_is_well_formed(rows):
    assert len(rows) > 3000
    seen = set()
    per_person = defaultdict(list)
    for r in rows:
        f, p = int(r["frame"]), int(r["person_id"])
        x, y, w, h = (float(r[k]) for k in "xywh")
        assert 0 <= f < 795
        assert w >= 1 and h >= 1
        assert x >= 0 and y >= 0 and x + w <= 768.05 and y + h <= 576.05, r
        assert r["flag"] in {"ok", "ignore"}
        assert r["source"] in {"det", "interp", "manual"}
        assert (f, p) not in seen, f"two boxes for person {p} in frame {f}"
        seen.add((f, p))
        per_person[p].append(f)
    ids = sorted(per_person)
    assert ids == list(range(1, len(ids) + 1)), "person ids are 1..N"
    # every frame of the clip is annotated (so 2, 4, 5 fps samplings are subsets)
    assert {int(r["frame"]) for r in rows} == set(range(795))
    for p, frames in per_person.items():
        frames.sort()
        # a person's track is made of contiguous runs (exits and re-entries), none shorter than 3 frames
        runs, start = [], frames[0]
        for a, b in zip(frames, frames[1:]):
            if b != a + 1:
                runs.append((start, a))
                start = b
        runs.append((start, frames[-1]))
        assert all(b - a + 1 >= 3 for a, b in runs), (p, runs)
    # ids numbered by first appearance
    firsts = [min(per_person[p]) for p in ids]
    assert firsts == sorted(firsts)


def test_corrections_file_parses_and_every_entry_has_a_note():
    tool = _tool()
    corr = tool.load_corrections(GT / "corrections.yaml")
    assert corr
    for c in corr:
        assert c.get("op") and c.get("note"), c


def _box(x, y=100.0, score=0.9):
    return (x, y, 20.0, 50.0, score)


def _synthetic_tracks(tool):
    B = tool.Box
    return {
        "T1": {f: B(10.0 + f, 100.0, 20.0, 50.0, 0.9) for f in range(0, 10)},          # person a, then gap
        "T2": {f: B(200.0 - f, 100.0, 20.0, 50.0, 0.9) for f in range(0, 20)},         # switches at 12
        "T3": {f: B(40.0 + f, 100.0, 20.0, 50.0, 0.9) for f in range(14, 20)},         # a again after gap
        "T4": {f: B(300.0, 300.0, 20.0, 20.0, 0.3) for f in range(0, 20)},             # false positive
    }


def test_apply_merge_split_delete_and_bridge():
    tool = _tool()
    corr = [
        {"op": "delete", "tracklets": ["T4"], "note": "fp"},
        {"op": "split", "tracklet": "T2", "frame": 12, "note": "switch"},
        {"op": "merge", "tracklets": ["T1", "T3"], "bridge": 5, "bridge_flag": "ignore", "note": "same"},
        {"op": "ignore", "tracklet": "T2@12", "frames": [18, 19], "note": "occluded"},
    ]
    final, counts = tool.apply_corrections(_synthetic_tracks(tool), corr)
    assert counts == {"delete": 1, "split": 1, "merge": 1, "ignore": 1}
    assert set(final) == {"T1", "T2", "T2@12"}
    assert sorted(final["T1"]) == list(range(0, 20))                     # gap 10-13 bridged
    assert [final["T1"][f].flag for f in (9, 10, 13, 14)] == ["ok", "ignore", "ignore", "ok"]
    assert final["T1"][10].source == "interp"
    # linear between (9: x=19) and (14: x=54)
    assert final["T1"][10].x == pytest.approx(19 + (54 - 19) / 5)
    assert sorted(final["T2"]) == list(range(0, 12)) and sorted(final["T2@12"]) == list(range(12, 20))
    assert final["T2@12"][18].flag == "ignore" and final["T2@12"][17].flag == "ok"
    rows = tool.to_annotations(final)
    assert {r[1] for r in rows} == {1, 2, 3}
    assert len({(r[0], r[1]) for r in rows}) == len(rows)


def test_apply_add_interpolates_between_keyframes_and_merge_refuses_overlap():
    tool = _tool()
    corr = [{"op": "add", "tracklet": "N1", "keys": [[2, 0, 0, 10, 20], [6, 40, 0, 10, 40]], "note": "missed"}]
    final, _ = tool.apply_corrections({}, corr)
    assert sorted(final["N1"]) == [2, 3, 4, 5, 6]
    assert final["N1"][4].x == pytest.approx(20) and final["N1"][4].h == pytest.approx(30)
    assert final["N1"][2].source == "manual" and final["N1"][3].source == "interp"
    with pytest.raises(tool.CorrectionError, match="share frames"):
        tool.apply_corrections(_synthetic_tracks(tool), [{"op": "merge", "tracklets": ["T1", "T2"], "note": "x"}])
    with pytest.raises(tool.CorrectionError, match="unknown tracklet"):
        tool.apply_corrections(_synthetic_tracks(tool), [{"op": "delete", "tracklets": ["T9"], "note": "x"}])


def test_link_follows_two_crossing_walkers():
    tool = _tool()
    props = []
    for f in range(30):
        props.append((f, 100.0 + 8 * f, 100.0, 20.0, 50.0, 0.9))     # walking right
        props.append((f, 340.0 - 8 * f, 104.0, 20.0, 50.0, 0.9))     # walking left, crossing at f=15
    tracks = tool.link(props, n_frames=30)
    assert len(tracks) == 2
    for boxes in tracks.values():
        xs = [boxes[f].x for f in sorted(boxes)]
        steps = {round(b - a) for a, b in zip(xs, xs[1:])}
        assert steps in ({8}, {-8}), "each tracklet keeps one walker through the crossing"
