"""Person detection. First detector: OpenCV's HOG + linear SVM people detector (Dalal-Triggs),
which ships inside opencv-python-headless 4.x, so it needs no downloaded weights. The model
issue replaces it with an ONNX detector behind the same interface.
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
    x, y = max(0, b.x), max(0, b.y)
    return Box(x, y, max(1, min(b.w, w - x)), max(1, min(b.h, h - y)), b.score)


def make_detector(name: str) -> Detector:
    if name == "hog":
        return HogPeopleDetector()
    raise ValueError(f"unknown detector {name!r} (available: hog)")
