"""A small, pure IoU tracker: links the same person's detections across consecutive frames.

At 10 fps a walking pedestrian's box moves a few pixels between frames, so the box of
frame t+1 overlaps the box of frame t far more than any other person's box. Matching is
greedy by IoU (highest pairs first, each track and detection used at most once, IoU at least
``iou_threshold``); an unmatched detection starts a track; a track unmatched for more than
``max_missed`` frames ends. Tracks shorter than ``min_length`` detections are dropped when
they end (spurious detections).

Identity switches happen when two people cross: the greedy match may then hand one person's
track to the other. ``strict=True`` trades fragmentation for purity: when a track has two
candidate detections above the threshold, or a detection two candidate tracks, the tracks
involved end there and the detections start new ones. Purity matters more than length when
tracks are used to build same-person pairs (bench/vision/reid_pairs.py).

No image, model or I/O here: boxes in, tracks out, so the logic is unit-tested on synthetic
boxes (tests/vision/test_tracking.py). Boxes are anything with ``x, y, w, h`` attributes
(``pipeline.vision.detector.Box``) or ``(x, y, w, h)`` sequences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["Track", "IouTracker", "iou", "track_boxes"]

Rect = tuple[float, float, float, float]


def _rect(b: Any) -> Rect:
    if hasattr(b, "x"):
        return float(b.x), float(b.y), float(b.w), float(b.h)
    x, y, w, h = b[:4]
    return float(x), float(y), float(w), float(h)


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0 for empty boxes."""
    ax, ay, aw, ah = _rect(a)
    bx, by, bw, bh = _rect(b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One tracked person: parallel lists of frame index, detection index in that frame, and box."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    det_indices: list[int] = field(default_factory=list)
    boxes: list[Any] = field(default_factory=list)
    missed: int = 0
    end_reason: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def first_frame(self) -> int:
        return self.frames[0]

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    @property
    def last_box(self) -> Any:
        return self.boxes[-1]

    def _add(self, frame: int, det: int, box: Any) -> None:
        self.frames.append(frame)
        self.det_indices.append(det)
        self.boxes.append(box)
        self.missed = 0


class IouTracker:
    """Feed one frame's detections at a time with :meth:`update`; collect tracks with :meth:`finish`."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 2, min_length: int = 5,
                 strict: bool = False) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError("iou_threshold must be in (0, 1]")
        if max_missed < 0 or min_length < 1:
            raise ValueError("max_missed must be >= 0 and min_length >= 1")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.min_length = min_length
        self.strict = strict
        self._active: list[Track] = []
        self._done: list[Track] = []
        self._next_id = 0
        self._frame = -1

    @property
    def active(self) -> list[Track]:
        return list(self._active)

    def _new_track(self, frame: int, det: int, box: Any) -> Track:
        t = Track(self._next_id)
        self._next_id += 1
        t._add(frame, det, box)
        return t

    def _end(self, track: Track, reason: str) -> None:
        track.end_reason = reason
        if len(track) >= self.min_length:
            self._done.append(track)

    def update(self, frame: int, boxes: Sequence[Any]) -> list[int]:
        """Match this frame's boxes to tracks; return the track id given to each box (continued or new).

        ``frame`` must increase between calls; a gap of k frames counts as k - 1 missed frames.
        """
        if frame <= self._frame:
            raise ValueError(f"frame {frame} not after previous frame {self._frame}")
        gap = frame - self._frame - 1 if self._frame >= 0 else 0
        self._frame = frame
        # Age tracks across skipped frames first.
        still: list[Track] = []
        for t in self._active:
            t.missed += gap
            if t.missed > self.max_missed:
                self._end(t, "lost")
            else:
                still.append(t)
        self._active = still

        cands = [(iou(t.last_box, b), ti, di) for ti, t in enumerate(self._active) for di, b in enumerate(boxes)]
        cands = [c for c in cands if c[0] >= self.iou_threshold]
        ambiguous_tracks: set[int] = set()
        ambiguous_dets: set[int] = set()
        if self.strict:
            per_track: dict[int, int] = {}
            per_det: dict[int, int] = {}
            for _, ti, di in cands:
                per_track[ti] = per_track.get(ti, 0) + 1
                per_det[di] = per_det.get(di, 0) + 1
            for _, ti, di in cands:
                if per_track[ti] > 1 or per_det[di] > 1:
                    ambiguous_tracks.add(ti)
                    ambiguous_dets.add(di)
        cands.sort(key=lambda c: -c[0])
        assigned: dict[int, int] = {}  # det -> track index
        used_tracks: set[int] = set()
        for _, ti, di in cands:
            if ti in used_tracks or di in assigned or ti in ambiguous_tracks or di in ambiguous_dets:
                continue
            assigned[di] = ti
            used_tracks.add(ti)

        ids: list[int] = [-1] * len(boxes)
        next_active: list[Track] = []
        for ti, t in enumerate(self._active):
            if ti in ambiguous_tracks:
                self._end(t, "ambiguous")
            elif ti not in used_tracks:
                t.missed += 1
                if t.missed > self.max_missed:
                    self._end(t, "lost")
                else:
                    next_active.append(t)
            else:
                next_active.append(t)
        for di, b in enumerate(boxes):
            if di in assigned:
                t = self._active[assigned[di]]
                t._add(frame, di, b)
            else:
                t = self._new_track(frame, di, b)
                next_active.append(t)
            ids[di] = t.track_id
        self._active = next_active
        return ids

    def finish(self) -> list[Track]:
        """End all active tracks; return every kept track (length >= min_length), by track id."""
        for t in self._active:
            self._end(t, "end")
        self._active = []
        return sorted(self._done, key=lambda t: t.track_id)


def track_boxes(frames: Sequence[tuple[int, Sequence[Any]]], **kwargs: Any) -> list[Track]:
    """Convenience: run an :class:`IouTracker` over ``[(frame_index, boxes), ...]``; return kept tracks."""
    tr = IouTracker(**kwargs)
    for f, boxes in frames:
        tr.update(f, boxes)
    return tr.finish()
