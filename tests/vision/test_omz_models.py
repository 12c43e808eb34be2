"""The Open Model Zoo models converted to ONNX (infra/models/convert_omz.sh): person-detection-0200
and -0201 with the SSD decoding in numpy, person-reidentification-retail-0288 and -0286 embeddings.

Manifest and hashes first, the decoder on synthetic priors, then the real models on real footage
(vtest.avi at the edge's 640x480): people found where the hand counts say they are, inside the
frame, nothing on an empty or black frame; embeddings unit-norm, the same in batches as one by
one, and the same person closer to itself in the next frame than to anyone else."""
from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.settings import REPO_ROOT
from pipeline.vision.detector import (DETECTORS, Box, HogPeopleDetector, OmzPersonDetector, SsdLitePersonDetector,
                                      decode_ssd, make_detector, nms_indices)
from pipeline.vision.models import load_manifest, sha256_of, shared_onnx_model, verify
from pipeline.vision.reid import REID_MODELS, ReidEmbedder
from tests.sample_data import footage_path

HAND_COUNTS = yaml.safe_load((Path(__file__).parent / "vtest_person_counts.yaml").read_text())["counts"]
DETECTOR_MODELS = ("person-detection-0200", "person-detection-0201")
OMZ_MODELS = DETECTOR_MODELS + REID_MODELS
IR_DIR = REPO_ROOT.parent / "shared" / "models" / "openvino"


def _script_ir_hashes() -> dict[str, str]:
    """The IR sha256 values hard-coded in infra/models/convert_omz.py (from PROVENANCE.md)."""
    text = (REPO_ROOT / "infra/models/convert_omz.py").read_text()
    return dict(re.findall(r'"([\w.-]+\.(?:xml|bin))": "([0-9a-f]{64})"', text))


# ---- manifest ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OMZ_MODELS)
def test_manifest_entry_and_hash(name):
    spec = load_manifest()[name]
    assert verify(spec).is_file()  # the committed file has the manifest's sha256
    assert spec.licence.startswith("Apache-2.0")
    assert spec.conversion["script"] == "infra/models/convert_omz.sh"
    # the IR hashes recorded as the source are the ones the conversion script checks
    files = spec.source["files"]
    assert set(files) == {f"{name}.xml", f"{name}.bin"}
    ir_sha = _script_ir_hashes()
    assert len(ir_sha) == 10
    assert all(files[f] == ir_sha[f] for f in files)
    assert spec.source["verified"] is False or spec.source["verified"] == "no"


def test_shared_ir_files_match_the_manifest():
    if not IR_DIR.is_dir():
        pytest.skip(f"{IR_DIR} not present")
    specs = load_manifest()
    for name in OMZ_MODELS:
        for f, sha in specs[name].source["files"].items():
            assert sha256_of(IR_DIR / f) == sha, f


def test_decoder_defaults_are_the_manifests_detection_output():
    raw = {m["name"]: m for m in yaml.safe_load((REPO_ROOT / "models/manifest.yaml").read_text())["models"]}
    det = OmzPersonDetector.__init__.__defaults__  # (model_name, score_threshold, iou_threshold)
    kw = OmzPersonDetector.__init__.__kwdefaults__
    for name in DETECTOR_MODELS:
        d = raw[name]["decoding"]
        assert d["code_type"] == "CENTER_SIZE" and d["share_location"] and not d["variance_encoded_in_target"]
        assert d["num_classes"] == 2 and 1 - d["background_label_id"] == OmzPersonDetector.PERSON_LABEL
        assert det[2] == pytest.approx(d["nms_threshold"])
        assert (kw["top_k"], kw["keep_top_k"]) == (d["top_k"], d["keep_top_k"])


@pytest.mark.parametrize("name,size", [("person-detection-0200", 256), ("person-detection-0201", 384)])
def test_detector_onnx_interface(name, size):
    m = shared_onnx_model(name)
    assert m.input_shape == (1, 3, size, size)
    assert m.output_names == ["box_deltas", "class_probs", "priors"]
    x = np.zeros((2, 3, size, size), np.float32)  # batch is dynamic
    deltas, probs, priors = m.run(x)
    p = priors.shape[1]
    assert deltas.shape == (2, p, 4) and probs.shape == (2, p, 2) and priors.shape == (2, p, 4)
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(priors[1], [0.1, 0.1, 0.2, 0.2])
    # priors tile the input: centres inside it, all four sizes on the 16-px grid, five on the 32-px one
    centres = (priors[0, :, :2] + priors[0, :, 2:]) / 2
    assert centres.min() > 0 and centres.max() < 1
    assert p == (size // 16) ** 2 * 4 + (size // 32) ** 2 * 5


# ---- decoding ----------------------------------------------------------------------------------

def _priors(boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    b = np.asarray(boxes, np.float32)
    return np.stack([b, np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (len(b), 1))])


def test_decode_zero_deltas_gives_the_priors_and_thresholds_and_nms_apply():
    priors = _priors([(0.1, 0.1, 0.3, 0.5), (0.11, 0.1, 0.31, 0.5), (0.6, 0.2, 0.7, 0.6), (0.0, 0.0, 0.1, 0.1)])
    probs = np.float32([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    boxes, scores = decode_ssd(np.zeros((4, 4), np.float32), probs, priors, score_threshold=0.5, iou_threshold=0.45)
    # prior 1 overlaps prior 0 (IoU 0.9): suppressed; prior 3 is below the threshold
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    assert np.allclose(boxes, priors[0, [0, 2]], atol=1e-6)
    # without NMS both overlapping boxes stay
    _, s = decode_ssd(np.zeros((4, 4), np.float32), probs, priors, score_threshold=0.5, iou_threshold=1.0)
    assert len(s) == 3


def test_decode_applies_center_size_deltas_with_variances():
    priors = _priors([(0.2, 0.2, 0.4, 0.6)])  # centre (0.3, 0.4), size 0.2 x 0.4
    d = np.float32([[1.0, -1.0, math.log(2) / 0.2, 0.0]])  # shift by 0.1 * size, double the width
    boxes, _ = decode_ssd(d, np.float32([[0.9, 0.1]]), priors, score_threshold=0.5, iou_threshold=0.45)
    cx, cy, w, h = 0.3 + 0.1 * 0.2, 0.4 - 0.1 * 0.4, 0.4, 0.4
    assert np.allclose(boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)


def test_nms_keeps_the_best_of_overlapping_boxes():
    b = np.float32([[0, 0, 10, 20], [1, 0, 11, 20], [30, 0, 40, 20]])
    assert nms_indices(b, np.float32([0.5, 0.9, 0.7]), 0.45).tolist() == [1, 2]
    assert nms_indices(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.45).tolist() == []


# ---- detectors on real footage ------------------------------------------------------------------

def _foreground_confirmed(boxes: list[Box], frame: np.ndarray, background: np.ndarray) -> int:
    """Boxes of which at least 15% of pixels differ from the empty plaza: something is there."""
    diff = np.abs(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(int)
                  - cv2.cvtColor(background, cv2.COLOR_BGR2GRAY).astype(int)) > 25
    return sum(diff[b.y:b.y + b.h, b.x:b.x + b.w].mean() >= 0.15 for b in boxes)


MIN_RECALL = {"omz-0200": 0.7, "omz-0201": 0.8}  # found / hand-counted at the default threshold 0.5


def _people_check(per_frame: list[list[Box]], footage, min_recall: float) -> list[str]:
    """What is wrong with a detector's boxes on the sampled frames (empty when nothing is)."""
    problems = []
    counts = [len(b) for b in per_frame]
    confirmed = [_foreground_confirmed(b, f, footage.background) for b, (_, f) in zip(per_frame, footage.frames)]
    hand = [HAND_COUNTS[i] for i, _ in footage.frames]
    if sum(confirmed) < min_recall * sum(hand):
        problems.append(f"found {sum(confirmed)} people on the foreground, hand counts {sum(hand)}")
    if sum(confirmed) < 0.95 * sum(counts):
        problems.append(f"{sum(counts) - sum(confirmed)} of {sum(counts)} boxes on the empty plaza")
    if any(c > n + 1 for c, n in zip(counts, hand)):
        problems.append(f"more boxes than people: {counts} vs {hand}")
    boxes = [b for bs in per_frame for b in bs]
    if sum(b.h > b.w for b in boxes) < 0.95 * len(boxes):
        problems.append("boxes are not upright people")
    return problems


@pytest.fixture(scope="module")
def detections(footage):
    return {name: [make_detector(name).detect(f) for _, f in footage.frames] for name in ("omz-0200", "omz-0201")}


@pytest.mark.parametrize("name", ["omz-0200", "omz-0201"])
def test_people_are_found_where_the_hand_counts_say(detections, footage, name):
    assert [i for i, _ in footage.frames] == sorted(HAND_COUNTS)
    assert _people_check(detections[name], footage, MIN_RECALL[name]) == []
    assert min(len(b) for b in detections[name]) >= 1  # every sampled frame has people


@pytest.mark.parametrize("name", ["omz-0200", "omz-0201"])
def test_boxes_lie_inside_the_frame_sorted_by_score(detections, footage, name):
    for boxes, (_, frame) in zip(detections[name], footage.frames):
        h, w = frame.shape[:2]
        for b in boxes:
            assert 0 <= b.x and 0 <= b.y and b.w >= 2 and b.h >= 8 and b.x + b.w <= w and b.y + b.h <= h
            assert 0.5 <= b.score <= 1.0
        assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)


class _BrokenPriors:
    """Wraps a detector model and hands out priors with x and y swapped: a broken decode."""

    def __init__(self, model):
        self.model, self.input_shape, self.output_names = model, model.input_shape, model.output_names

    def run(self, x):
        deltas, probs, priors = self.model.run(x)
        return [deltas, probs, priors[:, :, [1, 0, 3, 2]]]


def test_the_people_check_fails_a_broken_decode(footage):
    det = OmzPersonDetector("person-detection-0200", model=_BrokenPriors(shared_onnx_model("person-detection-0200")))
    per_frame = [det.detect(f) for _, f in footage.frames]
    assert _people_check(per_frame, footage, MIN_RECALL["omz-0200"]) != []


@pytest.mark.parametrize("name", ["omz-0200", "omz-0201"])
def test_no_people_no_boxes(footage, name):
    det = make_detector(name)
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert det.detect(np.full((480, 640, 3), 255, np.uint8)) == []
    assert det.detect(footage.background) == []  # the empty plaza
    assert det.detect(cv2.GaussianBlur(footage.frames[5][1], (0, 0), 12)) == []


def test_a_lower_threshold_adds_low_confidence_boxes(detections, footage):
    low = OmzPersonDetector("person-detection-0200", score_threshold=0.2)
    for (_, frame), high in list(zip(footage.frames, detections["omz-0200"]))[:6]:
        boxes = low.detect(frame)
        assert len(boxes) >= len(high)
        assert all(b.score > 0.2 for b in boxes)
        assert [b for b in boxes if b.score >= 0.5] == high  # the same boxes above 0.5


def test_bad_input_and_factory():
    det = make_detector("omz-0200")
    for bad in (np.zeros((480, 640), np.uint8), np.zeros((480, 640, 4), np.uint8),
                np.zeros((480, 640, 3), np.float32), np.zeros((1, 1, 3), np.uint8)):
        with pytest.raises(ValueError):
            det.detect(bad)
    with pytest.raises(ValueError):
        OmzPersonDetector("person-detection-0202")
    with pytest.raises(ValueError):
        OmzPersonDetector(score_threshold=1.5)
    assert {"omz-0200", "omz-0201", "ssdlite", "ssdlite-split", "hog"} <= set(DETECTORS)
    assert make_detector("omz-0201").name == "person-detection-0201"
    assert make_detector("omz-0200", score_threshold=0.3).score_threshold == 0.3
    assert isinstance(make_detector("ssdlite"), SsdLitePersonDetector)
    assert isinstance(make_detector("hog"), HogPeopleDetector)


def test_smaller_and_larger_frames_still_work(footage):
    det = make_detector("omz-0200")
    frame = footage.frames[8][1]
    for w, h in ((320, 240), (1280, 960)):
        boxes = det.detect(cv2.resize(frame, (w, h)))
        assert len(boxes) >= 3
        assert all(b.x + b.w <= w and b.y + b.h <= h for b in boxes)


# ---- re-identification ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def consecutive_frames():
    """Frames 200/201 and 300/301 of vtest.avi (10 fps), at 640x480 as the edge sends them."""
    from pipeline.edge.sources import downscale
    cap = cv2.VideoCapture(str(footage_path()))
    out = {}
    for i in range(302):
        ok, img = cap.read()
        assert ok
        if i in (200, 201, 300, 301):
            out[i] = downscale(img, 640, 480)
    cap.release()
    return out


@pytest.mark.parametrize("model_name", REID_MODELS)
def test_embeddings_are_unit_norm_and_batching_changes_nothing(footage, model_name):
    frame = footage.frames[6][1]
    boxes = make_detector("omz-0200").detect(frame)
    assert len(boxes) >= 4
    emb = ReidEmbedder(model_name, batch_size=3)
    e = emb.embed(frame, boxes)
    assert e.shape == (len(boxes), 256) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert emb.runs == math.ceil(len(boxes) / 3)
    one_by_one = np.concatenate([emb.embed(frame, [b]) for b in boxes])
    assert np.abs(e - one_by_one).max() < 1e-4
    assert np.abs(ReidEmbedder(model_name, batch_size=16).embed(frame, boxes) - e).max() < 1e-4
    # boxes may also be plain (x, y, w, h) tuples
    assert np.allclose(emb.embed(frame, [(b.x, b.y, b.w, b.h) for b in boxes[:2]]), e[:2], atol=1e-5)
    assert emb.embed(frame, []).shape == (0, 256)


def _matched_pairs(a: list[Box], b: list[Box]) -> list[tuple[int, int]]:
    """Nearest-box matches between two consecutive frames (centre distance), kept when IoU >= 0.5."""
    pairs = []
    for i, p in enumerate(a):
        cx, cy = p.x + p.w / 2, p.y + p.h / 2
        j = min(range(len(b)), key=lambda k: (b[k].x + b[k].w / 2 - cx) ** 2 + (b[k].y + b[k].h / 2 - cy) ** 2)
        q = b[j]
        iw = max(0, min(p.x + p.w, q.x + q.w) - max(p.x, q.x))
        ih = max(0, min(p.y + p.h, q.y + q.h) - max(p.y, q.y))
        inter = iw * ih
        if inter / (p.w * p.h + q.w * q.h - inter) >= 0.5:
            pairs.append((i, j))
    return pairs


@pytest.mark.parametrize("model_name", REID_MODELS)
def test_the_same_person_is_closer_than_anyone_else(consecutive_frames, model_name):
    det, emb = make_detector("omz-0200"), ReidEmbedder(model_name)
    matched = 0
    for k in (200, 300):
        fa, fb = consecutive_frames[k], consecutive_frames[k + 1]
        ba, bb = det.detect(fa), det.detect(fb)
        sim = emb.embed(fa, ba) @ emb.embed(fb, bb).T
        pairs = _matched_pairs(ba, bb)
        assert len(pairs) >= 3
        for i, j in pairs:
            others = np.delete(sim[i], j)
            assert sim[i, j] > others.max(), (k, i, sim[i].round(3))
            assert sim[i, j] > 0.6
        matched += len(pairs)
    assert matched >= 8


def test_reid_bad_input():
    emb = ReidEmbedder()
    frame = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ValueError):
        emb.embed(frame, [(700, 10, 20, 40)])  # outside the frame
    with pytest.raises(ValueError):
        emb.embed(frame, [(10, 10, 0, 40)])    # no area
    with pytest.raises(ValueError):
        emb.embed(frame[:, :, 0], [(10, 10, 20, 40)])
    with pytest.raises(ValueError):
        ReidEmbedder("person-reidentification-retail-0277")
    with pytest.raises(ValueError):
        ReidEmbedder(batch_size=0)
