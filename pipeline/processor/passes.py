"""One occurrence per person *pass* in front of a camera, from the pass's averaged descriptor.

Why passes: a camera samples a walking person in every frame they are in view (at 2 fps, ten
frames for five seconds). The flow estimator multiplies occurrences at A by occurrences at B,
so per-frame occurrences would inflate every flow by the product of the frames in view at both
cameras, and footfall by the frames per pass; the simulator, the seed ("each time a person's
image is captured - when entering a store or passing other cameras") and analysts mean passes.

Why averaging: one crop's descriptor moves with pose and background; the mean over a pass's
crops is steadier, so the same person more often lands in the same group at the next camera.
Measured on vtest.avi (HSV, 1,000 groups): each crop averaged with its track's crops within
+-0.5 s, 0.051 -> 0.140 (bench/vision/evaluate.py); two-pass pairs cut from tracks, pass mean vs
first crop, 1.0x-3.0x over four settings (bench/vision/pass_averaging.py; only 3-9 matching
pairs each, one camera: direction, not size). The group is assigned when the pass ends.

How: detections of consecutive frames of one camera are linked when their boxes are close
(centre distance below ``max_step`` box heights, heights within a factor ``max_scale``),
greedily, nearest first; centre distance and not IoU, because at the edge's 2 fps a walking
person moves more than their own width between frames. A detection with no partner starts a
pass. A pass ends when unseen for ``max_gap_seconds``, or ``max_pass_seconds`` after it began
(someone standing in view is then counted and followed without counting again). Its (age
band, gender) is counted once: at the first detection with a known label, or as unknown when
it ends without one.

What is kept, in memory only, while a pass is open (at most ``max_pass_seconds``): the last
box, times, the running sum of its descriptors and whether its demographics were counted. No
image or identifier; the sum is dropped when the pass is handed out for grouping. Frames of
one camera arrive in capture order (one Kafka partition per camera key, one agent); an older
frame is counted on its own rather than corrupting the open passes.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from pipeline.privacy import UNKNOWN

UNKNOWN_CELL = (UNKNOWN, UNKNOWN)


@dataclass
class _Pass:
    box: tuple[float, float, float, float]
    first_ms: int
    last_ms: int
    total: np.ndarray | None   # running sum of descriptors; None once handed out
    n: int
    demo_counted: bool


@dataclass
class Contribution:
    """What one camera adds at one moment: ended passes' mean descriptors and demographics."""

    ts_ms: int
    descriptors: list[np.ndarray] = field(default_factory=list)
    demographics: Counter = field(default_factory=Counter)


def _xywh(b: Any) -> tuple[float, float, float, float]:
    if hasattr(b, "x"):
        return float(b.x), float(b.y), float(b.w), float(b.h)
    x, y, w, h = b[:4]
    return float(x), float(y), float(w), float(h)


class PassCounter:
    def __init__(self, max_step: float = 0.8, max_scale: float = 1.5, max_gap_seconds: float = 1.6,
                 max_pass_seconds: float = 30.0) -> None:
        if max_step <= 0 or max_scale < 1 or max_gap_seconds <= 0 or max_pass_seconds <= 0:
            raise ValueError("max_step > 0, max_scale >= 1, max_gap_seconds > 0 and max_pass_seconds > 0 are required")
        self.max_step = max_step
        self.max_scale = max_scale
        self.max_gap_ms = int(max_gap_seconds * 1000)
        self.max_pass_ms = int(max_pass_seconds * 1000)
        self._open: dict[tuple[str, str], list[_Pass]] = {}
        self._last_ms: dict[tuple[str, str], int] = {}

    @property
    def open_passes(self) -> int:
        return sum(len(v) for v in self._open.values())

    def _distance(self, a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
        """Centre distance in box heights, or infinity when the sizes are too different."""
        ah, bh = max(a[3], 1.0), max(b[3], 1.0)
        if max(ah, bh) / min(ah, bh) > self.max_scale:
            return math.inf
        dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
        dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
        return math.hypot(dx, dy) / ((ah + bh) / 2)

    @staticmethod
    def _hand_out(p: _Pass, out: Contribution) -> None:
        if p.total is not None:
            out.descriptors.append((p.total / p.n).astype(np.float32))
            p.total = None
        if not p.demo_counted:
            out.demographics[UNKNOWN_CELL] += 1
            p.demo_counted = True

    def _expire(self, cam: tuple[str, str], ts_ms: int) -> list[Contribution]:
        out, keep = [], []
        for p in self._open.get(cam, []):
            if ts_ms - p.last_ms > self.max_gap_ms:
                c = Contribution(p.last_ms)
                self._hand_out(p, c)
                if c.descriptors or c.demographics:
                    out.append(c)
            else:
                keep.append(p)
        self._open[cam] = keep
        return out

    def update(self, site_id: str, camera_id: str, ts_ms: int, boxes: Sequence[Any], descriptors: np.ndarray,
               labels: Sequence[tuple[str, str]] | None = None) -> list[Contribution]:
        """One frame's detections (descriptor rows and labels aligned with boxes) in; what to count out."""
        descriptors = np.asarray(descriptors, dtype=np.float32).reshape(len(boxes), -1) if len(boxes) else \
            np.zeros((0, 0), dtype=np.float32)
        if labels is not None and len(labels) != len(boxes):
            raise ValueError("boxes, descriptors and labels must be aligned")
        labels = [tuple(l) for l in labels] if labels is not None else [UNKNOWN_CELL] * len(boxes)
        cam = (site_id, camera_id)
        if ts_ms < self._last_ms.get(cam, ts_ms):
            # Out of order: its persons are passes of their own; the open passes are left alone.
            return [Contribution(ts_ms, [d.copy() for d in descriptors], Counter(labels))] if len(boxes) else []
        self._last_ms[cam] = ts_ms
        out = self._expire(cam, ts_ms)
        open_ = self._open.setdefault(cam, [])
        rects = [_xywh(b) for b in boxes]
        cand = sorted((self._distance(p.box, r), i, j) for i, p in enumerate(open_) for j, r in enumerate(rects))
        used_p: set[int] = set()
        matched: dict[int, int] = {}
        for d, i, j in cand:
            if d > self.max_step:
                break
            if i in used_p or j in matched:
                continue
            used_p.add(i)
            matched[j] = i
        now = Contribution(ts_ms)
        for j, r in enumerate(rects):
            label = labels[j]
            known = label != UNKNOWN_CELL
            if j in matched:
                p = open_[matched[j]]
                p.box, p.last_ms = r, ts_ms
                if p.total is not None:
                    p.total += descriptors[j]
                    p.n += 1
                    if ts_ms - p.first_ms >= self.max_pass_ms:
                        out.append(Contribution(ts_ms, [(p.total / p.n).astype(np.float32)]))
                        p.total = None
            else:
                p = _Pass(r, ts_ms, ts_ms, descriptors[j].astype(np.float64), 1, False)
                open_.append(p)
            if known and not p.demo_counted:
                now.demographics[label] += 1
                p.demo_counted = True
        if now.demographics:
            out.append(now)
        return out

    def flush(self) -> list[tuple[str, str, Contribution]]:
        """End every open pass (end of a bounded run or shutdown)."""
        out = []
        for cam, passes in self._open.items():
            for p in passes:
                c = Contribution(p.last_ms)
                self._hand_out(p, c)
                if c.descriptors or c.demographics:
                    out.append((cam[0], cam[1], c))
        self._open.clear()
        return out
