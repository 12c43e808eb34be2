"""Person re-identification embeddings: Intel Open Model Zoo person-reidentification-retail-0288
(default) and -0286, converted from OpenVINO IR to ONNX (infra/models/convert_omz.sh,
models/manifest.yaml) and run by onnxruntime.

``ReidEmbedder.embed(image_bgr, boxes)`` crops every box, resizes it to the models' 128x256
(width x height; aspect not kept, as the models were trained), passes BGR 0..255 float32 NCHW and
returns one L2-normalised 256-d vector per box; a frame's crops go through in batches of
``batch_size``. Which crops are clean enough to shape a pass's appearance is decided by
``pipeline.vision.crops.crop_weights``.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.vision.detector import box_xywh

REID_MODELS = ("person-reidentification-retail-0288", "person-reidentification-retail-0286")
DEFAULT_REID_MODEL = REID_MODELS[0]
EMBEDDING_DIM = 256
INPUT_H, INPUT_W = 256, 128


def _pixel_rect(b: Any, fw: int, fh: int) -> tuple[int, int, int, int]:
    """The box's pixels inside the frame (x1, y1, x2, y2); ValueError when none are."""
    if not hasattr(b, "x") and len(b) != 4:
        raise ValueError(f"a box is (x, y, w, h), got {b!r}")
    x, y, w, h = box_xywh(b)
    if not all(np.isfinite((x, y, w, h))) or w <= 0 or h <= 0:
        raise ValueError(f"box {b!r} has no area")
    x1, y1 = max(0, int(round(x))), max(0, int(round(y)))
    x2, y2 = min(fw, int(round(x + w))), min(fh, int(round(y + h)))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ValueError(f"box {b!r} lies outside the {fw}x{fh} frame")
    return x1, y1, x2, y2


def crop_blob(crop: np.ndarray, in_h: int = INPUT_H, in_w: int = INPUT_W) -> np.ndarray:
    """One crop as the re-id models take it: [1, 3, in_h, in_w] float32, BGR, 0..255."""
    x = cv2.resize(crop, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


class ReidEmbedder:
    """Re-identification embeddings for person boxes of a frame (onnxruntime, hash-checked model)."""

    def __init__(self, model_name: str = DEFAULT_REID_MODEL, *, batch_size: int = 16, threads: int = 1,
                 model=None) -> None:
        if model is None and model_name not in REID_MODELS:
            raise ValueError(f"unknown re-id model {model_name!r} (available: {', '.join(REID_MODELS)})")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if model is None:
            from pipeline.vision.models import shared_onnx_model
            model = shared_onnx_model(model_name, threads=threads)
        self.model = model
        self.model_name = model_name
        self.batch_size = batch_size
        _, c, self.in_h, self.in_w = model.input_shape  # NCHW
        if c != 3:
            raise ValueError(f"{model_name}: expected a 3-channel NCHW input, got {model.input_shape}")
        self.runs = 0  # model runs so far (batches)

    def blobs(self, image: np.ndarray, boxes: Sequence[Any]) -> np.ndarray:
        """The model inputs for the boxes: [n, 3, H, W] float32."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 image")
        fh, fw = image.shape[:2]
        out = np.empty((len(boxes), 3, self.in_h, self.in_w), np.float32)
        for i, b in enumerate(boxes):
            x1, y1, x2, y2 = _pixel_rect(b, fw, fh)
            out[i] = crop_blob(image[y1:y2, x1:x2], self.in_h, self.in_w)[0]
        return out

    def embed(self, image: np.ndarray, boxes: Sequence[Any]) -> np.ndarray:
        """[n, 256] float32, one L2-normalised embedding per box (rows in the boxes' order)."""
        x = self.blobs(image, boxes)
        if not len(x):
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        parts = []
        for i in range(0, len(x), self.batch_size):
            parts.append(np.asarray(self.model.run(x[i:i + self.batch_size])[0], np.float32).reshape(
                min(self.batch_size, len(x) - i), -1))
            self.runs += 1
        e = np.concatenate(parts)
        return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32)


__all__ = ["REID_MODELS", "DEFAULT_REID_MODEL", "EMBEDDING_DIM", "ReidEmbedder", "crop_blob"]
