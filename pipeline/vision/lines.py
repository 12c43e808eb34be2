"""Counting line crossings by direction, from tracked people's foot points.

Why: every retail people counter counts entries and exits across a line (a door, a mall
corridor); it is the number store managers know, and it cross-checks footfall from passes.
A person's foot point (bottom centre of their box) is followed along their track; a crossing
is counted when it moves from one side of the line to the other *past a margin* on both
sides (so someone standing on the line, or a box that jitters, is not counted again and
again), and only where the crossing point lies on the drawn segment (walking around its end
is not a crossing). Coordinates are fractions of the image, so a line survives a change of
resolution. Nothing is kept per person beyond the side each open track was last seen on.
"""
from __future__ import annotations

from pipeline.layout import CountLine

__all__ = ["LineCounter"]


class LineCounter:
    def __init__(self, line: CountLine, margin: float = 0.02) -> None:
        self.line = line
        self.margin = margin
        ax, ay = line.a
        bx, by = line.b
        self._d = (bx - ax, by - ay)
        self._len = (self._d[0] ** 2 + self._d[1] ** 2) ** 0.5
        self._last: dict[int, tuple[int, float, float]] = {}   # track -> (side, x, y) when last off the line

    def _side(self, x: float, y: float) -> tuple[float, float]:
        """(signed distance from the line's infinite extension, position along the segment 0..1)."""
        ax, ay = self.line.a
        dx, dy = self._d
        dist = (dx * (y - ay) - dy * (x - ax)) / self._len
        along = ((x - ax) * dx + (y - ay) * dy) / (self._len ** 2)
        return dist, along

    def update(self, track_id: int, x: float, y: float) -> str | None:
        """The track's foot point (fractions of width and height); 'in', 'out' or None."""
        dist, _ = self._side(x, y)
        if abs(dist) < self.margin:
            return None
        side = 1 if dist > 0 else -1
        prev = self._last.get(track_id)
        self._last[track_id] = (side, x, y)
        if prev is None or prev[0] == side:
            return None
        # where the step from the previous off-line point crosses the line: on the segment?
        d0, a0 = self._side(prev[1], prev[2])
        t = d0 / (d0 - dist)
        along = a0 + t * (self._side(x, y)[1] - a0)
        if not 0.0 <= along <= 1.0:
            return None
        return "in" if side < 0 else "out"

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)
