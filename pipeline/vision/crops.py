"""Which person crops are clean enough to shape a pass's appearance.

A pass's embedding is the mean over its crops; a crop cut by the frame border shows part of a
person, and a crop overlapped by someone nearer the camera shows part of *another* person, so
either pulls the mean towards a different appearance (and towards a different group at the
next camera). Such crops get weight 0; the pass counter falls back to them only when a pass has
no clean crop at all. Who is in front is judged by the lower box edge: in a raised CCTV view,
the person whose feet are lower in the image is nearer the camera.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.vision.detector import box_xywh

BORDER_PX = 2
MAX_COVERED = 0.25


def crop_weights(boxes: Sequence[Any], frame_w: int, frame_h: int, border_px: int = BORDER_PX,
                 max_covered: float = MAX_COVERED) -> list[float]:
    """Per box: 1.0 for a clean crop, 0.0 when cut by the border or covered by a nearer box."""
    if not len(boxes):
        return []
    b = np.asarray([box_xywh(x) for x in boxes], dtype=np.float64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    cut = (x1 <= border_px) | (y1 <= border_px) | (x2 >= frame_w - border_px) | (y2 >= frame_h - border_px)
    iw = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    ih = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    covered = iw * ih / np.maximum((b[:, 2] * b[:, 3])[:, None], 1e-12)   # share of i covered by j
    nearer = y2[None, :] > y2[:, None]                                    # j's feet lower: j in front
    np.fill_diagonal(covered, 0.0)
    occluded = ((covered > max_covered) & nearer).any(axis=1)
    return [0.0 if (c or o) else 1.0 for c, o in zip(cut, occluded)]


def appearance_features(descriptors: np.ndarray, weights: Sequence[float]) -> np.ndarray | None:
    """The tracker's appearance input: unit rows, NaN where the crop is not clean (a cut or
    occluded crop describes part of someone, or someone else, so that detection is associated on
    motion alone and leaves the track's appearance alone). None when there are no detections or
    a descriptor is empty, which says nothing about appearance."""
    d = np.asarray(descriptors, dtype=np.float64)
    if d.ndim != 2 or not len(d) or not d.shape[1]:
        return None
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    if not (norms > 1e-6).all():
        return None
    feats = d / norms
    feats[np.asarray(weights) <= 0] = np.nan
    return feats


__all__ = ["crop_weights", "appearance_features"]
