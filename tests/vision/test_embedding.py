"""The CNN appearance embedding (pipeline/vision/embedding.py) on real footage: vtest.avi frames,
people found by the SSDLite detector and linked by the IoU tracker."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.edge.sources import downscale
from pipeline.vision import embedding
from pipeline.vision.detector import Box, make_detector
from pipeline.vision.models import load_manifest, verify
from pipeline.vision.tracking import IouTracker

START, N_FRAMES = 200, 80  # 8 s of consecutive 10 fps frames with several people walking


@pytest.fixture(scope="module")
def tracked(footage):
    """Consecutive frames, their detections, embeddings and strict IoU tracks (track id per detection)."""
    cap = cv2.VideoCapture(str(footage.path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, START)
    det = make_detector("ssdlite")
    tr = IouTracker(iou_threshold=0.3, max_missed=2, min_length=10, strict=True)
    rows = []  # (frame, box, embedding)
    for f in range(N_FRAMES):
        ok, img = cap.read()
        assert ok
        small = downscale(img, 640, 480)
        boxes = det.detect(small)
        emb = embedding.embed(small, boxes)
        tr.update(f, [Box(b.x, b.y, b.w, b.h, score=float(len(rows) + i)) for i, b in enumerate(boxes)])
        rows += [(f, b, e) for b, e in zip(boxes, emb)]
    cap.release()
    tracks = tr.finish()
    return rows, tracks


def test_model_is_in_the_manifest_and_verified():
    spec = load_manifest()[embedding.MODEL_NAME]
    assert spec.licence.startswith("BSD-2-Clause")
    assert verify(spec).stat().st_size < 25_000_000


def test_shape_dtype_normalisation_and_determinism(footage):
    _, frame = footage.frames[4]
    boxes = make_detector("ssdlite").detect(frame)
    assert boxes
    a = embedding.embed(frame, boxes)
    b = embedding.embed(frame, boxes)
    assert a.shape == (len(boxes), embedding.DIM) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    # Batched == one crop at a time (the batch does not leak between crops).
    one = np.stack([embedding.embed(frame, [bx])[0] for bx in boxes])
    np.testing.assert_allclose(a, one, atol=1e-4)


def test_empty_box_list():
    img = np.zeros((480, 640, 3), np.uint8)
    out = embedding.embed(img, [])
    assert out.shape == (0, embedding.DIM) and out.dtype == np.float32


def test_boxes_at_the_border_and_tiny_boxes_are_clipped(footage):
    _, frame = footage.frames[0]
    out = embedding.embed(frame, [Box(-20, -10, 60, 120, 1.0), Box(630, 470, 40, 40, 1.0), Box(5, 5, 1, 1, 1.0)])
    assert out.shape == (3, embedding.DIM) and np.isfinite(out).all()


def test_same_tracked_person_is_more_similar_than_different_people(tracked):
    rows, tracks = tracked
    emb = np.stack([e for _, _, e in rows])
    frame = np.array([f for f, _, _ in rows])
    det_of = {t.track_id: np.array([int(b.score) for b in t.boxes]) for t in tracks}
    same, diff = [], []
    for tid, idx in det_of.items():
        for i in idx:
            for j in idx:
                if frame[j] - frame[i] >= 10:  # the same person at least 1 s later
                    same.append(float(emb[i] @ emb[j]))
    spans = {tid: set(frame[idx].tolist()) for tid, idx in det_of.items()}
    ids = sorted(det_of)
    for ai, a in enumerate(ids):
        for b in ids[ai + 1:]:
            if spans[a] & spans[b]:  # visible at the same time: certainly two people
                diff += [float(emb[i] @ emb[j]) for i in det_of[a][::3] for j in det_of[b][::3]]
    assert len({t for t in det_of}) >= 3 and len(same) >= 50 and len(diff) >= 50, (len(same), len(diff))
    same, diff = np.array(same), np.array(diff)
    auc = float(np.mean(same[:, None] > diff[None, :]))
    assert np.median(same) > np.median(diff)
    assert auc >= 0.7, auc
