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

How: each camera has its own :class:`pipeline.vision.tracker.Tracker` (Kalman motion
prediction, two-stage association, re-identification appearance as a cue: why, in its
docstring). A pass is one confirmed track: it starts with the track and ends when the track
dies (unseen for ``max_gap_s``), or is grouped ``max_pass_seconds`` after it began (someone
standing in view is then followed without counting again). A track that never reaches
``min_hits`` detections is a false alarm or a glimpse and counts nothing. The pass's
descriptor is the quality-weighted mean of its crops: crops cut by the frame border or
overlapped by another person get weight 0 and only count when a pass has no clean crop. Its
(age band, gender) is the first known label any of its detections had (unknown if none), counted
once, when the pass ends: like its occurrence, so a pass a worker drops when its camera moves to
another worker (``drop``) counts in neither, and the new owner counts the person once. (Counted
at confirmation, a person in view at a hand-over was counted in demographics on both sides.)

What is kept, in memory only, while a pass is open (at most ``max_pass_seconds`` for the
descriptor sum; the track itself lives while the person is in view): the Kalman state, a
running mean appearance embedding, the running descriptor sum, and the pass's (age band,
gender) label until it is counted. No image or identifier leaves; the sums are dropped when the
pass is handed out for grouping. Frames of one camera arrive in capture order (one Kafka partition per camera key,
one agent); an older frame is counted on its own rather than corrupting the open passes.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from pipeline.privacy import UNKNOWN
from pipeline.layout import CountLine
from pipeline.vision.crops import appearance_features
from pipeline.vision.detector import box_xywh
from pipeline.vision.lines import LineCounter
from pipeline.vision.tracker import Tracker, TrackerConfig

UNKNOWN_CELL = (UNKNOWN, UNKNOWN)


@dataclass
class _Pass:
    first_ms: int
    last_ms: int
    total: np.ndarray | None   # quality-weighted running sum of descriptors; None once handed out
    weight: float
    total_any: np.ndarray | None  # unweighted sum, for a pass with no clean crop
    n: int
    label: tuple[str, str]     # first known (age band, gender), counted once confirmed
    demo_counted: bool = False
    confirmed: bool = False


@dataclass
class Contribution:
    """What one camera adds at one moment: ended passes' mean descriptors and demographics."""

    ts_ms: int
    descriptors: list[np.ndarray] = field(default_factory=list)
    demographics: Counter = field(default_factory=Counter)
    crossings: Counter = field(default_factory=Counter)   # (line name, 'in'|'out') -> crossings


def _score(b: Any) -> float:
    """A detection's score: ``Box.score``, a fifth item, or 1 for a box given without one."""
    if hasattr(b, "score"):
        return float(b.score)
    return float(b[4]) if len(b) > 4 else 1.0


class PassCounter:
    def __init__(self, tracker: TrackerConfig | None = None, max_pass_seconds: float = 30.0,
                 appearance: bool = True, lines: dict[tuple[str, str], CountLine] | None = None) -> None:
        """``appearance``: use the descriptors as the tracker's appearance cue (re-id embeddings);
        off for descriptors whose distances the gate was not chosen for. ``lines``: a counting
        line per (site, camera) (pipeline/layout.py), whose crossings are counted by direction."""
        if max_pass_seconds <= 0:
            raise ValueError("max_pass_seconds > 0 is required")
        self._lines = {cam: LineCounter(line) for cam, line in (lines or {}).items()}
        self.cfg = tracker or TrackerConfig()
        self.max_pass_ms = int(max_pass_seconds * 1000)
        self.appearance = appearance
        self._trackers: dict[tuple[str, str], Tracker] = {}
        self._passes: dict[tuple[str, str], dict[int, _Pass]] = {}
        self._last_ms: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], float] = {}   # monotonic time of the camera's last frame

    @property
    def open_passes(self) -> int:
        return sum(len(v) for v in self._passes.values())

    @staticmethod
    def _mean(p: _Pass) -> np.ndarray:
        if p.weight > 0:
            return (p.total / p.weight).astype(np.float32)
        return (p.total_any / p.n).astype(np.float32)

    def _hand_out(self, p: _Pass, out: Contribution) -> None:
        if not p.confirmed:
            return
        if p.total is not None:
            out.descriptors.append(self._mean(p))
            p.total = p.total_any = None
        if not p.demo_counted:
            out.demographics[p.label] += 1
            p.demo_counted = True

    def _end(self, cam: tuple[str, str], ended: list[Any]) -> list[Contribution]:
        out = []
        passes = self._passes.get(cam, {})
        counter = self._lines.get(cam)
        for tr in ended:
            if counter is not None:
                counter.forget(tr.track_id)
            p = passes.pop(tr.track_id, None)
            if p is None:
                continue
            c = Contribution(p.last_ms)
            self._hand_out(p, c)
            if c.descriptors or c.demographics:
                out.append(c)
        return out

    def update(self, site_id: str, camera_id: str, ts_ms: int, boxes: Sequence[Any], descriptors: np.ndarray,
               labels: Sequence[tuple[str, str]] | None = None,
               quality: Sequence[float] | None = None,
               frame_size: tuple[int, int] | None = None) -> list[Contribution]:
        """One frame's detections (descriptor rows, labels and crop quality weights aligned with
        boxes) in; what to count out. Boxes carry detector scores (``Box.score`` or a fifth item)."""
        n = len(boxes)
        descriptors = np.asarray(descriptors, dtype=np.float32).reshape(n, -1) if n else \
            np.zeros((0, 0), dtype=np.float32)
        if labels is not None and len(labels) != n:
            raise ValueError("boxes, descriptors and labels must be aligned")
        if quality is not None and len(quality) != n:
            raise ValueError("boxes and quality must be aligned")
        labels = [tuple(l) for l in labels] if labels is not None else [UNKNOWN_CELL] * n
        weights = [1.0] * n if quality is None else [max(0.0, float(q)) for q in quality]
        cam = (site_id, camera_id)
        if ts_ms < self._last_ms.get(cam, ts_ms):
            # Out of order: its persons are passes of their own; the open passes are left alone.
            return [Contribution(ts_ms, [d.copy() for d in descriptors], Counter(labels))] if n else []
        self._last_ms[cam] = ts_ms
        self._seen[cam] = time.monotonic()
        tracker = self._trackers.setdefault(cam, Tracker(self.cfg))
        passes = self._passes.setdefault(cam, {})
        rows = [(*box_xywh(b), _score(b)) for b in boxes]
        feats = appearance_features(descriptors, weights) if self.appearance else None
        assoc = tracker.update(ts_ms / 1000.0, [r[:4] for r in rows], [r[4] for r in rows], feats)
        out = self._end(cam, assoc.ended)
        now = Contribution(ts_ms)
        line = self._lines.get(cam) if frame_size else None
        for j, tid in enumerate(assoc.track_of):
            if tid is None:
                continue  # a low-confidence detection that continued no track
            if line is not None:
                x, y, w, h = rows[j][:4]
                d = line.update(tid, (x + w / 2) / frame_size[0], (y + h) / frame_size[1])  # foot point
                if d:
                    now.crossings[(line.line.name, d)] += 1
            d = descriptors[j].astype(np.float64)
            p = passes.get(tid)
            if p is None:
                p = passes[tid] = _Pass(ts_ms, ts_ms, d * weights[j], weights[j], d.copy(), 1, UNKNOWN_CELL)
            else:
                p.last_ms = ts_ms
                if p.total is not None:
                    p.total += d * weights[j]
                    p.weight += weights[j]
                    p.total_any += d
                    p.n += 1
            if p.label == UNKNOWN_CELL and labels[j] != UNKNOWN_CELL:
                p.label = labels[j]
            if not p.confirmed and p.n >= self.cfg.min_hits:
                p.confirmed = True
            if p.confirmed and p.total is not None and ts_ms - p.first_ms >= self.max_pass_ms:
                out.append(Contribution(ts_ms, [self._mean(p)]))
                p.total = p.total_any = None
        if now.demographics or now.crossings:
            out.append(now)
        return out

    def flush(self, cameras: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, str, Contribution]]:
        """End every open pass of ``cameras`` (all by default: the end of a bounded run or a
        shutdown) and forget their trackers, so a camera that comes back starts afresh.

        Per camera because a worker hands a camera over when its partition moves to another
        worker (pipeline/processor/app.py): the open passes are counted where they were seen,
        and the descriptor sums go with the tracker instead of waiting for frames that now
        reach another worker."""
        cams = list(self._trackers) if cameras is None else [c for c in cameras if c in self._trackers]
        return [(cam[0], cam[1], c) for cam in cams for c in self._retire(cam)]

    def drop(self, cameras: Iterable[tuple[str, str]]) -> int:
        """Forget ``cameras``' trackers and open passes without counting them (occurrences and
        demographics); returns how many confirmed passes were dropped. For a camera whose frames
        now go to another worker: that worker's fresh tracker finds the persons still in view and
        counts their passes when they end, so counting them here too would count each of them
        twice."""
        dropped = 0
        for cam in [c for c in cameras if c in self._trackers]:
            dropped += sum(1 for p in self._passes.get(cam, {}).values() if p.confirmed and p.total is not None)
            self._retire(cam)   # its contributions are discarded, never counted
        return dropped

    def _retire(self, cam: tuple[str, str]) -> list[Contribution]:
        """End every track of ``cam`` and forget the camera; what its passes would count."""
        out = self._end(cam, self._trackers.pop(cam).flush())
        for d in (self._passes, self._last_ms, self._seen):
            d.pop(cam, None)
        return out

    def idle_cameras(self, idle_seconds: float, now: float | None = None) -> list[tuple[str, str]]:
        """Cameras with open state and no frame for ``idle_seconds`` of wall time: an edge that
        stopped, or a camera now owned by another worker. Their passes would otherwise hold
        descriptor sums until the process ends."""
        now = time.monotonic() if now is None else now
        return [cam for cam, t in self._seen.items() if now - t >= idle_seconds]
