"""Frame sources for the edge: a video file, a folder of images, or a camera URL.

Each yields (offset_seconds, BGR image) at the configured sample rate, downscaled to the
configured maximum size. Downscaling here is a privacy measure as much as a bandwidth one
(CNIL: reduce image quality to what the purpose needs), so it happens before anything leaves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class SampledFrame:
    offset_seconds: float  # media time since the start of the source
    image: np.ndarray


def downscale(img: np.ndarray, max_w: int, max_h: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(max_w / w, max_h / h, 1.0)
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def open_source(spec: str, sample_fps: float, max_w: int, max_h: int) -> Iterator[SampledFrame]:
    if "://" in spec:
        return _video(spec, sample_fps, max_w, max_h, live=True)
    p = Path(spec)
    if p.is_dir():
        return _folder(p, sample_fps, max_w, max_h)
    if p.is_file():
        return _video(str(p), sample_fps, max_w, max_h, live=False)
    raise SourceError(f"source {spec!r} is neither a file, a directory nor a URL")


def _video(spec: str, sample_fps: float, max_w: int, max_h: int, live: bool) -> Iterator[SampledFrame]:
    cap = cv2.VideoCapture(spec)
    if not cap.isOpened():
        raise SourceError(f"cannot open video {spec!r} (unsupported codec, bad path or unreachable camera)")

    def gen() -> Iterator[SampledFrame]:
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            if not live and fps <= 0:
                raise SourceError(f"video {spec!r} reports no frame rate")
            t0, idx, next_t = time.monotonic(), 0, 0.0
            while True:
                ok, img = cap.read()
                if not ok:
                    return
                t = (time.monotonic() - t0) if live else idx / fps
                idx += 1
                if t + 1e-9 < next_t:
                    continue
                next_t += 1.0 / sample_fps
                yield SampledFrame(t, downscale(img, max_w, max_h))
        finally:
            cap.release()

    return gen()


def _folder(p: Path, sample_fps: float, max_w: int, max_h: int) -> Iterator[SampledFrame]:
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise SourceError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_EXTS))})")

    def gen() -> Iterator[SampledFrame]:
        for i, f in enumerate(files):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise SourceError(f"cannot decode image {f}")
            yield SampledFrame(i / sample_fps, downscale(img, max_w, max_h))

    return gen()
