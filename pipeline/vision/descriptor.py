"""Appearance descriptor per person crop: HSV colour histograms over three horizontal body
parts (head/shoulders, torso, legs), the classic hand-crafted re-identification feature.
Clothing colour survives the low resolution and short time spans the flow estimate needs,
and the descriptor is not biometric (no face geometry). A CNN embedding may join it later.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.vision.detector import Box

PARTS = ((0.0, 0.2), (0.2, 0.55), (0.55, 1.0))
H_BINS, S_BINS, V_BINS = 8, 4, 4
DIM = len(PARTS) * H_BINS * S_BINS * V_BINS  # 384


def describe(image: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """(n, DIM) float32; each part's histogram L1-normalised, the whole vector L2-normalised."""
    out = np.zeros((len(boxes), DIM), dtype=np.float32)
    if not boxes:
        return out
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    for i, b in enumerate(boxes):
        # Trim the box sides: HOG boxes carry background padding.
        x0 = b.x + b.w // 8
        x1 = max(x0 + 1, b.x + b.w - b.w // 8)
        crop = hsv[b.y:b.y + b.h, x0:x1]
        feats = []
        for top, bottom in PARTS:
            part = crop[int(top * crop.shape[0]):max(int(top * crop.shape[0]) + 1, int(bottom * crop.shape[0]))]
            hist = cv2.calcHist([part], [0, 1, 2], None, [H_BINS, S_BINS, V_BINS], [0, 180, 0, 256, 0, 256]).reshape(-1)
            feats.append(hist / max(hist.sum(), 1.0))
        v = np.concatenate(feats)
        out[i] = v / max(float(np.linalg.norm(v)), 1e-9)
        del crop
    return out
