"""Person passes of recorded footage with their appearance, for calibrating a deployment.

Why: the same-group rate p, the noise and the quantizer must be fitted on the deployment's own
cameras (lighting, angles, clientele). This runs the processor's perception (detector, re-id
embedding, low-frame-rate tracker, clean-crop rule) over a camera's footage and keeps, per
confirmed pass, its time span, its quality-weighted mean embedding and, when it has at least
four clean crops, the means of the first and second half of them: two views of one person
from one camera, the within-camera same-person pair that calibration measures p on.

Everything returned is personal data (appearance of identifiable people): callers keep it in
memory, fit and measure, and write only the parameter set (aggregate statistics and a codebook
whose every centroid averages many passes). Nothing here writes to disk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline.vision.crops import appearance_features, crop_weights
from pipeline.vision.tracker import Tracker, TrackerConfig

__all__ = ["FootagePass", "collect_passes"]


@dataclass
class FootagePass:
    camera: str
    start_s: float
    end_s: float
    mean: np.ndarray                                   # unit mean embedding of the pass
    halves: tuple[np.ndarray, np.ndarray] | None      # unit means of its first and second clean halves
    detections: int


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def collect_passes(frames: Iterable[tuple[float, np.ndarray]], camera: str, detect: Callable[[np.ndarray], list],
                   embed: Callable[[np.ndarray, Sequence], np.ndarray], config: TrackerConfig | None = None,
                   on_frame: Callable[[int], None] | None = None) -> list[FootagePass]:
    """``frames``: (seconds into the footage, BGR image) in time order."""
    cfg = config or TrackerConfig()
    tracker = Tracker(cfg)
    crops: dict[int, list[tuple[float, np.ndarray, float]]] = {}
    out: list[FootagePass] = []

    def close(track_ids: Iterable[int]) -> None:
        for tid in track_ids:
            seen = crops.pop(tid, [])
            if len(seen) < cfg.min_hits:
                continue
            clean = [e for _, e, w in seen if w > 0]
            use = clean or [e for _, e, _ in seen]
            halves = None
            if len(clean) >= 4:
                k = len(clean) // 2
                halves = (_unit(np.mean(clean[:k], axis=0)), _unit(np.mean(clean[k:], axis=0)))
            out.append(FootagePass(camera, seen[0][0], seen[-1][0], _unit(np.mean(use, axis=0)), halves, len(seen)))

    for n, (t, image) in enumerate(frames):
        boxes = detect(image)
        emb = embed(image, boxes) if boxes else np.zeros((0, 0), np.float32)
        weights = crop_weights(boxes, image.shape[1], image.shape[0])
        feats = appearance_features(emb, weights)
        a = tracker.update(t, [(b.x, b.y, b.w, b.h) for b in boxes], [b.score for b in boxes], feats)
        close(tr.track_id for tr in a.ended)
        for j, tid in enumerate(a.track_of):
            if tid is not None:
                crops.setdefault(tid, []).append((t, emb[j], weights[j]))
        if on_frame:
            on_frame(n + 1)
    close(tr.track_id for tr in tracker.flush())
    return sorted(out, key=lambda p: p.start_s)
