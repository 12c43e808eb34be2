"""Pass counting on real footage: vtest.avi at the edge's 2 frames/s, SSDLite detections.

There is no per-person ground truth for vtest, so the test asserts the two bounds that must
hold: at least as many passes as the most people in any one frame, and far fewer passes than
detections (each pedestrian is in view for many seconds)."""
import cv2
import numpy as np
import pytest

from pipeline.edge.sources import downscale
from pipeline.processor.passes import PassCounter
from pipeline.vision.detector import make_detector
from tests.sample_data import footage_path


@pytest.fixture(scope="module")
def detections():
    det = make_detector("ssdlite")
    cap = cv2.VideoCapture(str(footage_path()))
    out, idx = [], 0
    try:
        while idx < 400:  # 40 s of footage at 10 fps, sampled at 2 fps
            ok, img = cap.read()
            if not ok:
                break
            if idx % 5 == 0:
                out.append((idx * 100, det.detect(downscale(img, 640, 480))))
            idx += 1
    finally:
        cap.release()
    assert len(out) == 80
    return out


def test_passes_are_bounded_by_crowd_size_and_far_below_detections(detections):
    pc = PassCounter()
    passes = 0
    for ts, boxes in detections:
        for c in pc.update("s", "c", ts, boxes, np.zeros((len(boxes), 4), dtype=np.float32), None):
            passes += len(c.descriptors)
    passes += sum(len(c.descriptors) for _, _, c in pc.flush())
    n_det = sum(len(b) for _, b in detections)
    most = max(len(b) for _, b in detections)
    assert n_det > 150
    assert most <= passes <= n_det / 3, (most, passes, n_det)
