"""Real footage for the vision tests: vtest.avi (Debian opencv-doc; a plaza seen from a raised
camera, 768x576, 795 frames at 10 fps, up to ~8 pedestrians), obtained by the project's own
infra/local/footage.sh and downscaled to 640x480 as the edge sends it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.edge.sources import downscale
from tests.sample_data import footage_path

SAMPLE_EVERY = 40      # 20 frames spread over the 80 s clip
BACKGROUND_EVERY = 8   # 100 frames for the temporal median


@dataclass(frozen=True)
class Footage:
    path: Path
    frames: list[tuple[int, np.ndarray]]  # (frame index, 640x480 BGR)
    background: np.ndarray                # 640x480 BGR: per-pixel temporal median = the empty plaza


def load_footage() -> Footage:
    path = footage_path()
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    frames, bg = [], []
    idx = 0
    try:
        while True:
            if idx % SAMPLE_EVERY and idx % BACKGROUND_EVERY:
                if not cap.grab():
                    break
                idx += 1
                continue
            ok, img = cap.read()
            if not ok:
                break
            small = downscale(img, 640, 480)
            if idx % SAMPLE_EVERY == 0:
                frames.append((idx, small))
            if idx % BACKGROUND_EVERY == 0:
                bg.append(small)
            idx += 1
    finally:
        cap.release()
    assert idx > 700 and len(frames) >= 18, f"footage {path} too short ({idx} frames)"
    background = np.median(np.stack(bg), axis=0).astype(np.uint8)
    return Footage(path, frames, background)


@pytest.fixture(scope="session")
def footage() -> Footage:
    return load_footage()
