"""Tumbling-window aggregation of group occurrences per (site, camera).

Counts are held in memory only until the window closes, and only as counts: no per-person
timestamps survive. Next to the group counts, each window keeps a Counter of (age_band, gender)
for the demographic counts; the two are never linked per person. A window closes when the
camera's frames have moved past its end plus a grace period (so a slightly late frame still counts), or when the camera has been quiet for a
while (so the last window of a stream is not held forever). A frame arriving after its window
was emitted opens a new fragment of that window; downstream sums fragments.

Trade-off, stated: open windows are not checkpointed. A hard crash loses at most the open
windows' counts; replaying the frames is impossible by design because their blobs are gone.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping


@dataclass
class ClosedWindow:
    site_id: str
    camera_id: str
    window_start_ms: int
    window_seconds: int
    counts: Counter = field(default_factory=Counter)
    frames: int = 0
    demographics: Counter = field(default_factory=Counter)  # (age_band, gender) -> persons


@dataclass
class _Open:
    window: ClosedWindow
    last_update: float


class WindowAggregator:
    def __init__(self, window_seconds: int, grace_seconds: int, idle_flush_seconds: float) -> None:
        self.window_ms = window_seconds * 1000
        self.window_seconds = window_seconds
        self.grace_ms = grace_seconds * 1000
        self.idle = idle_flush_seconds
        self._open: dict[tuple[str, str, int], _Open] = {}
        self._watermark: dict[tuple[str, str], int] = {}

    def window_start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.window_ms

    def add(self, site_id: str, camera_id: str, captured_at_ms: int, groups: Iterable[int], now: float | None = None,
            demographics: Mapping[tuple[str, str], int] | Iterable[tuple[str, str]] = ()) -> None:
        """``demographics``: the frame's (age_band, gender) counts (a Counter/mapping), or keys."""
        now = time.monotonic() if now is None else now
        ws = self.window_start(captured_at_ms)
        key = (site_id, camera_id, ws)
        o = self._open.get(key)
        if o is None:
            o = self._open[key] = _Open(ClosedWindow(site_id, camera_id, ws, self.window_seconds), now)
        o.window.counts.update(groups)
        o.window.demographics.update(demographics)
        o.window.frames += 1
        o.last_update = now
        cam = (site_id, camera_id)
        self._watermark[cam] = max(self._watermark.get(cam, captured_at_ms), captured_at_ms)

    def flush_ready(self, now: float | None = None) -> list[ClosedWindow]:
        now = time.monotonic() if now is None else now
        out = []
        for key, o in list(self._open.items()):
            site, cam, ws = key
            wm = self._watermark.get((site, cam), 0)
            if wm >= ws + self.window_ms + self.grace_ms or now - o.last_update >= self.idle:
                out.append(self._open.pop(key).window)
        return out

    def flush_cameras(self, cameras: Iterable[tuple[str, str]]) -> list[ClosedWindow]:
        """Close every open window of ``cameras`` now (a camera handed to another worker). The
        other worker opens new fragments of the same windows; downstream sums fragments."""
        cams = set(cameras)
        out = [self._open.pop(k).window for k in [k for k in self._open if k[:2] in cams]]
        for cam in cams:
            self._watermark.pop(cam, None)
        return out

    def flush_all(self) -> list[ClosedWindow]:
        out = [o.window for o in self._open.values()]
        self._open.clear()
        return out

    @property
    def open_windows(self) -> int:
        return len(self._open)
