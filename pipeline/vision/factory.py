"""The detector and appearance descriptor a processor's settings name, built once.

Why a module of its own: the processor, the calibration from footage and the benches must run
exactly the same perception for the same settings; building it in one place keeps them from
drifting (a calibration on other boxes or another embedding would measure another p).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pipeline.vision.detector import make_detector

__all__ = ["detector_for", "descriptor_for"]


def detector_for(ps: Any):
    """``ps``: pipeline.settings.ProcessorSettings. OMZ detectors return boxes down to the
    tracker's low score, which may continue (never start) a pass."""
    if ps.detector.startswith("omz-"):
        return make_detector(ps.detector, score_threshold=min(ps.track_low_score, ps.track_high_score))
    return make_detector(ps.detector)


def descriptor_for(name: str) -> tuple[Callable[[np.ndarray, list], np.ndarray], int]:
    """The appearance descriptor function and its dimension (settings.processor.descriptor)."""
    if name.startswith("reid-"):
        from pipeline.vision import reid

        model = {"reid-0288": "person-reidentification-retail-0288",
                 "reid-0286": "person-reidentification-retail-0286"}[name]
        return reid.ReidEmbedder(model).embed, reid.EMBEDDING_DIM
    if name == "hsv-cnn":
        from pipeline.vision import embedding

        return embedding.embed, embedding.DIM
    from pipeline.vision import descriptor as hsv

    return hsv.describe, hsv.DIM
