"""One occurrence per person *pass* in front of a camera, not one per frame.

Why: a camera samples a walking person in every frame they are in view (at 2 fps, ten frames
for five seconds). The flow estimator multiplies occurrences at A by occurrences at B, so
per-frame occurrences would inflate every flow by the product of the frames in view at both
cameras, and footfall by the frames per pass; the simulator, the seed ("each time a person's
image is captured - when entering a store or passing other cameras") and the analysts all
mean passes.

How: detections of consecutive frames of one camera are linked when their boxes are close
(centre distance below ``max_step`` box heights, heights within a factor ``max_scale``),
greedily, nearest first. Centre distance and not IoU, because at the edge's 2 fps a walking
person moves more than their own width between frames. A detection with no partner starts a
pass: its group (the first capture's) is counted at once in its frame's window. The pass's
(age band, gender) is counted once, at the first detection with a known label, or as
unknown/unknown when the pass ends (no detection for ``max_gap_seconds``) without one.

What is kept, in memory only and for at most ``max_gap_seconds`` after a person was last seen:
the last box of each open pass, its capture time and whether its demographics were counted.
No image, descriptor or identifier; the group id is not kept (it is counted immediately).
Frames of one camera must arrive in capture order (they do: one Kafka partition per camera
key, processed in order by one agent); an older frame than the camera's last is counted on
its own, without linking, rather than corrupting the open passes.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from pipeline.privacy import UNKNOWN

UNKNOWN_CELL = (UNKNOWN, UNKNOWN)


@dataclass
class _Pass:
    box: tuple[float, float, float, float]
    last_ms: int
    demo_counted: bool


@dataclass
class Contribution:
    """What one camera adds to one moment: new passes' groups and (age_band, gender) counts."""

    ts_ms: int
    groups: list[int] = field(default_factory=list)
    demographics: Counter = field(default_factory=Counter)


def _xywh(b: Any) -> tuple[float, float, float, float]:
    if hasattr(b, "x"):
        return float(b.x), float(b.y), float(b.w), float(b.h)
    x, y, w, h = b[:4]
    return float(x), float(y), float(w), float(h)


class PassCounter:
    def __init__(self, max_step: float = 0.8, max_scale: float = 1.5, max_gap_seconds: float = 1.6) -> None:
        if max_step <= 0 or max_scale < 1 or max_gap_seconds <= 0:
            raise ValueError("max_step > 0, max_scale >= 1 and max_gap_seconds > 0 are required")
        self.max_step = max_step
        self.max_scale = max_scale
        self.max_gap_ms = int(max_gap_seconds * 1000)
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

    def _expire(self, cam: tuple[str, str], ts_ms: int, out: list[Contribution]) -> None:
        keep = []
        for p in self._open.get(cam, []):
            if ts_ms - p.last_ms > self.max_gap_ms:
                if not p.demo_counted:
                    out.append(Contribution(p.last_ms, [], Counter({UNKNOWN_CELL: 1})))
            else:
                keep.append(p)
        self._open[cam] = keep

    def update(self, site_id: str, camera_id: str, ts_ms: int, boxes: Sequence[Any], groups: Sequence[int],
               labels: Sequence[tuple[str, str]] | None = None) -> list[Contribution]:
        """One frame's detections (with their groups and labels) in; what to count out."""
        if len(groups) != len(boxes) or (labels is not None and len(labels) != len(boxes)):
            raise ValueError("boxes, groups and labels must be aligned")
        labels = list(labels) if labels is not None else [UNKNOWN_CELL] * len(boxes)
        cam = (site_id, camera_id)
        out: list[Contribution] = []
        if ts_ms < self._last_ms.get(cam, ts_ms):
            # Out of order: count its persons as passes of their own, leave the open ones alone.
            known = Counter(l for l in labels)
            out.append(Contribution(ts_ms, [int(g) for g in groups], known))
            return out
        self._last_ms[cam] = ts_ms
        self._expire(cam, ts_ms, out)
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
            label = tuple(labels[j])
            known = label != UNKNOWN_CELL
            if j in matched:
                p = open_[matched[j]]
                p.box, p.last_ms = r, ts_ms
                if known and not p.demo_counted:
                    now.demographics[label] += 1
                    p.demo_counted = True
            else:
                now.groups.append(int(groups[j]))
                open_.append(_Pass(r, ts_ms, known))
                if known:
                    now.demographics[label] += 1
        if now.groups or now.demographics:
            out.append(now)
        return out

    def flush(self) -> list[tuple[str, str, Contribution]]:
        """End every open pass (end of a bounded run): their pending unknown demographics."""
        out = []
        for cam, passes in self._open.items():
            for p in passes:
                if not p.demo_counted:
                    out.append((cam[0], cam[1], Contribution(p.last_ms, [], Counter({UNKNOWN_CELL: 1}))))
        self._open.clear()
        return out
