"""Calibration from a site's own footage: passes found with the processor's perception, and
`flowctl privacy calibrate --footage ... --walkthrough ...` end to end on vtest.avi cut into two
"cameras"."""
import json
import re

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.edge.sources import open_source
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.vision import evaluation as ev
from pipeline.vision.factory import descriptor_for, detector_for
from pipeline.vision.footage import collect_passes
from tests.sample_data import footage_path

LABELS = REPO_ROOT / "bench" / "data" / "vtest-gt" / "annotations.csv"


@pytest.fixture(scope="module")
def two_cameras(tmp_path_factory):
    """vtest.avi's two halves as two camera recordings."""
    d = tmp_path_factory.mktemp("footage")
    cap = cv2.VideoCapture(str(footage_path()))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    half = len(frames) // 2
    paths = {}
    for cam, chunk in (("a", frames[:half]), ("b", frames[half:])):
        paths[cam] = d / f"{cam}.avi"
        w = cv2.VideoWriter(str(paths[cam]), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
        for f in chunk:
            w.write(f)
        w.release()
    return paths, half


def test_passes_of_a_recording_are_about_one_per_visit_and_carry_unit_embeddings(two_cameras):
    paths, half = two_cameras
    ps = load_settings().processor
    frames = [(f.offset_seconds, f.image) for f in open_source(str(paths["b"]), 2.0, 640, 480)]
    passes = collect_passes(frames, "b", detector_for(ps).detect, descriptor_for(ps.descriptor)[0])
    labels = {fr - half: ls for fr, ls in ev.load_labels(LABELS).items() if fr >= half}
    visits = sum(ev.visits(labels, 20, frames=[int(round(t * 10)) for t, _ in frames]).values())
    assert 0.8 * visits <= len(passes) <= 1.3 * visits, (len(passes), visits)
    assert all(abs(np.linalg.norm(p.mean) - 1) < 1e-4 and p.end_s >= p.start_s for p in passes)
    with_halves = [p for p in passes if p.halves is not None]
    assert with_halves
    # two halves of one pass look more alike than passes of different people do on average
    same = np.mean([float(a @ b) for a, b in (p.halves for p in with_halves)])
    M = np.stack([p.mean for p in passes])
    other = (M @ M.T)[~np.eye(len(passes), dtype=bool)].mean()
    assert same > other + 0.2, (same, other)


def test_calibrate_from_footage_writes_a_parameter_set_and_reports_only_figures(two_cameras, tmp_path, monkeypatch):
    from pipeline.cli import cli

    paths, _ = two_cameras
    walk = tmp_path / "walk.yaml"
    # vtest's people stay in view for the whole clip, so these sightings cannot be told apart:
    # the walk-through must say so rather than guess.
    walk.write_text("walkers:\n  - name: staff-a\n    sightings:\n      - {camera: a, from: 0, to: 39}\n"
                    "      - {camera: b, from: 0, to: 39}\n")
    out = tmp_path / "p.json"
    monkeypatch.setenv("FLOW_KEYS__DIR", str(tmp_path / "keys"))
    r = CliRunner().invoke(cli, ["privacy", "calibrate", "--footage", f"a={paths['a']}", "--footage",
                                 f"b={paths['b']}", "--walkthrough", str(walk), "--version", "pp-test-footage",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "passes in a.avi" in r.output and "ambiguous" in r.output and "within cameras (pass halves)" in r.output
    params = json.loads(out.read_text())
    assert params["version"] == "pp-test-footage" and params["reference"]["input_dim"] == 256
    # figures, never vectors: no output line carries more than a handful of decimals
    assert max(len(re.findall(r"-?\d+\.\d{3,}", line)) for line in r.output.splitlines()) <= 4
    bad = CliRunner().invoke(cli, ["privacy", "calibrate", "--footage", "nocamera", "--version", "v", "--out",
                                   str(tmp_path / "x.json")])
    assert bad.exit_code != 0 and "CAMERA=PATH" in bad.output
