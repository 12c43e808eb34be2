"""The ONNX person detector: box mapping, threshold, NMS and clipping on a stub model, then the
real model on real footage (vtest.avi at the edge's 640x480): people are found where there are
people, clearly more than HOG finds, and nobody in the empty plaza."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.vision.detector import Box, HogPeopleDetector, SsdLitePersonDetector, make_detector

HAND_COUNTS = yaml.safe_load((Path(__file__).parent / "vtest_person_counts.yaml").read_text())["counts"]


class StubModel:
    """Stands in for OnnxModel: returns fixed detections (normalised ymin, xmin, ymax, xmax)."""

    input_shape = (1, 300, 300, 3)

    def __init__(self, dets: list[tuple[tuple[float, float, float, float], float]]) -> None:
        self.dets = sorted(dets, key=lambda d: -d[1])
        self.inputs: list[np.ndarray] = []

    def run(self, x: np.ndarray):
        self.inputs.append(x)
        boxes = np.zeros((1, 100, 4), np.float32)
        scores = np.zeros((1, 100), np.float32)
        for i, (b, s) in enumerate(self.dets):
            boxes[0, i], scores[0, i] = b, s
        return [np.array([100.0], np.float32), boxes, scores, np.ones((1, 100), np.float32)]


def test_boxes_are_mapped_back_to_frame_pixels_and_thresholded():
    m = StubModel([((0.25, 0.5, 0.75, 0.6), 0.9), ((0.1, 0.1, 0.2, 0.15), 0.2)])
    det = SsdLitePersonDetector(score_threshold=0.4, model=m)
    img = np.zeros((480, 640, 3), np.uint8)
    img[..., 0] = 255  # pure blue in BGR
    assert det.detect(img) == [Box(320, 120, 64, 240, pytest.approx(0.9))]
    x = m.inputs[0]
    assert x.shape == (1, 300, 300, 3) and x.dtype == np.uint8
    assert x[0, 0, 0].tolist() == [0, 0, 255]  # handed to the model as RGB


def test_nms_and_clipping():
    m = StubModel([((0.1, 0.1, 0.5, 0.2), 0.9), ((0.11, 0.105, 0.51, 0.2), 0.8),  # same person twice
                   ((0.8, 0.9, 1.2, 1.1), 0.7)])                                    # past the corner
    boxes = SsdLitePersonDetector(model=m).detect(np.zeros((240, 320, 3), np.uint8))
    assert len(boxes) == 2
    assert boxes[0].score == pytest.approx(0.9)
    corner = boxes[1]
    assert corner.x + corner.w <= 320 and corner.y + corner.h <= 240
    assert (corner.x, corner.y) == (288, 192)


def test_split_views_map_offsets_and_drop_people_cut_by_a_view_edge():
    # In every view the stub reports one person in the middle and one cut by the view's right edge.
    m = StubModel([((0.2, 0.4, 0.6, 0.5), 0.9), ((0.2, 0.95, 0.6, 1.0), 0.8)])
    det = SsdLitePersonDetector(model=m, views="split", split_width=0.6)
    boxes = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert len(m.inputs) == 3
    xs = sorted(b.x for b in boxes)
    # full frame: 256 and 608 (at the frame edge: kept); left half (384 wide): 154 (its edge one is
    # dropped); right half (from x=256): 256+154=410 and 256+365=621, one person with 608 for NMS.
    assert xs[:3] == [154, 256, 410] and xs[3] in (608, 621) and len(xs) == 4


def test_bad_input_and_factory():
    det = SsdLitePersonDetector(model=StubModel([]))
    with pytest.raises(ValueError):
        det.detect(np.zeros((480, 640), np.uint8))
    assert isinstance(make_detector("hog"), HogPeopleDetector)
    assert isinstance(make_detector("ssdlite"), SsdLitePersonDetector)
    assert make_detector("ssdlite-split").views == "split"
    with pytest.raises(ValueError, match="ssdlite"):
        make_detector("yolo")


# ---- real model, real footage ------------------------------------------------------------------

def _foreground_confirmed(boxes: list[Box], frame: np.ndarray, background: np.ndarray) -> int:
    """Boxes of which at least 15% of pixels differ from the empty plaza: something is there."""
    diff = np.abs(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(int)
                  - cv2.cvtColor(background, cv2.COLOR_BGR2GRAY).astype(int)) > 25
    return sum(diff[b.y:b.y + b.h, b.x:b.x + b.w].mean() >= 0.15 for b in boxes)


@pytest.fixture(scope="module")
def results(footage):
    out = {}
    for name in ("ssdlite", "ssdlite-split", "hog"):
        det = make_detector(name)
        per_frame = [(i, det.detect(f)) for i, f in footage.frames]
        out[name] = {
            "counts": [len(b) for _, b in per_frame],
            "confirmed": [_foreground_confirmed(b, f, footage.background)
                          for (_, b), (_, f) in zip(per_frame, footage.frames)],
            "boxes": per_frame,
        }
    return out


def test_sample_matches_hand_counts(footage):
    assert [i for i, _ in footage.frames] == sorted(HAND_COUNTS)


@pytest.mark.parametrize("name,min_recall", [("ssdlite", 0.55), ("ssdlite-split", 0.7)])
def test_people_are_found_where_there_are_people(results, footage, name, min_recall):
    r = results[name]
    assert np.median(r["counts"]) >= 3, r["counts"]
    assert min(r["counts"]) >= 1, r["counts"]  # every sampled frame has people (3 at least)
    # every detection lies on something that is not the empty plaza
    assert r["confirmed"] == r["counts"]
    # and together they account for most of the people counted by hand
    assert sum(r["confirmed"]) >= min_recall * sum(HAND_COUNTS.values()), (r["confirmed"], HAND_COUNTS)
    # no frame has more detections than people in it (plus one for counting uncertainty)
    assert all(c <= HAND_COUNTS[i] + 1 for (i, _), c in zip(footage.frames, r["counts"]))
    for (_, boxes), (_, frame) in zip(r["boxes"], footage.frames):
        h, w = frame.shape[:2]
        for b in boxes:
            assert 0 <= b.x and 0 <= b.y and b.x + b.w <= w and b.y + b.h <= h
            assert b.h > b.w  # upright people


def test_onnx_detector_finds_clearly_more_than_hog(results):
    onnx, hog = results["ssdlite"], results["hog"]
    assert sum(onnx["confirmed"]) >= 2 * sum(hog["confirmed"]), (onnx["confirmed"], hog["confirmed"])
    assert np.median(onnx["counts"]) > np.median(hog["counts"])
    assert sum(results["ssdlite-split"]["confirmed"]) >= sum(onnx["confirmed"])


@pytest.mark.parametrize("name", ["ssdlite", "ssdlite-split"])
def test_empty_plaza_yields_no_detections(footage, name):
    det = make_detector(name)
    assert det.detect(footage.background) == []
    # nor does a real frame with everything blurred away
    assert det.detect(cv2.GaussianBlur(footage.frames[5][1], (0, 0), 12)) == []
    # even at a lower threshold the empty plaza holds at most one doubtful box
    low = SsdLitePersonDetector(score_threshold=0.25, views=det.views)
    assert len(low.detect(footage.background)) <= 1


def test_smaller_frames_still_work(footage):
    small = cv2.resize(footage.frames[8][1], (320, 240), interpolation=cv2.INTER_AREA)
    boxes = make_detector("ssdlite").detect(small)
    assert len(boxes) >= 2
    assert all(b.x + b.w <= 320 and b.y + b.h <= 240 for b in boxes)
