"""Stage 1 of the flow aggregator: one group partition's state machine (pure; no Kafka).

The restricted occurrences topic is keyed by group id, so every occurrence of group g, from
every camera, lands in one partition. The co-occurrence sums S = sum_g A_g(t) B_g(t + d) are
therefore complete, for this partition's groups, inside this partition; what needs all groups
(the window totals N(t), Q(t) behind chance and the SE) is sent on as per-window partials to
the combiner (:mod:`pipeline.aggregator.combiner`), which also sums the partitions' S before
anything is published.

Time is event time: the clock is the latest window start seen (or given to :meth:`advance`).
A window t is *final* once the clock reaches t + window + lateness; records for it that arrive
later are dropped and counted (``stats.late_cells``), never merged, so every output is a
function of the partition's record order alone (deterministic; a replay of the same input gives
the same partials). Fragments of a window (a late frame re-opened it at the processor) that
arrive before it is final are summed.

State, and why it is bounded: ``_pending`` holds windows not yet final (at most
lateness / window + 2 windows per camera); ``_ring`` holds final windows until the window H
(= far_max) later is final, so its windows span at most H + 1 window starts, and nothing in it is
older than ``spec.state_age_seconds`` (plus changelog time: <= the 2 h bound, checked by the
spec). Per camera and
window only this partition's groups with a non-zero count are stored: at most
cameras x min(groups in partition, occurrences per window) x (H + 1 + pending windows) counts.
``_acc`` holds per-hour sums per camera pair (aggregates, not cells) until the hour closes.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from pipeline.aggregator.model import (COOCCURRENCE, PROGRESS, RANGE_SQUARES, SITE_CAMERA, WINDOW, AggregatorSpec, Cam,
                                       CoreStats, OccurrenceCell, Partial, SpecError, complete_from, site_camera)


class GroupPartitionAggregator:
    """The per-partition core: feed cells (and heartbeats), collect :class:`Partial` records.

    ``partition``/``partitions`` only label the partials; the combiner waits for progress from
    every one of ``partitions`` before it completes a window.

    ``cold_start``: set when a worker starts without a snapshot although the topic may have held
    earlier records that have since expired (a restart after an outage longer than the changelog
    retention). Windows before the first one seen then may have existed, so hours that pair with
    them are incomplete: every progress record says from which hour on this partition's shares
    are complete (``values`` = (flows from, footfall from)), and the combiner publishes nothing
    earlier, so an incomplete re-computation never replaces a complete published hour. A
    deployment's very first start can leave it unset.
    """

    def __init__(self, spec: AggregatorSpec, partition: int = 0, partitions: int = 1, *,
                 cold_start: bool = False) -> None:
        if not 0 <= partition < partitions:
            raise SpecError(f"partition {partition} is not in [0, {partitions})")
        self.spec = spec
        self.partition = partition
        self.partitions = partitions
        self._fp = spec.fingerprint()
        self._w = spec.window_ms
        self._clock: int | None = None      # latest window start seen (event time, ms)
        self._final: int | None = None      # F: every window starting before F is final and processed
        self._offset: int | None = None     # last input offset applied (replays after a restore skip)
        self._pending: dict[int, dict[Cam, dict[int, int]]] = {}        # t -> cam -> group -> count
        self._ring: dict[int, dict[Cam, dict[int, int]]] = {}           # final windows within H
        self._by_group: dict[int, dict[Cam, dict[int, int]]] = {}       # group -> cam -> t -> count
        self._acc: dict[int, dict[tuple[Cam, Cam], list[int]]] = {}     # hour -> (A, B) -> [S_0..S_L, S_far per band]
        # Sliding B*_g sums per SE range (derived from the ring; rebuilt on restore).
        self._bstar: list[dict[Cam, dict[int, int]]] = [{} for _ in spec.ranges]
        self._qstar: list[dict[Cam, int]] = [{} for _ in spec.ranges]
        self._cold = cold_start
        self._complete_from = (0, 0)        # hours from which flow / footfall shares are complete
        self.stats = CoreStats()

    # ---- input -----------------------------------------------------------------------------
    def add(self, cell: OccurrenceCell, offset: int | None = None) -> list[Partial]:
        """Count one cell; returns the partials that became due (possibly none).

        ``offset``: the record's offset in this partition. With it, a record at or below the last
        applied offset (a replay after restoring a snapshot) is skipped, so a restart neither loses
        nor double counts.
        """
        if offset is not None:
            if self._offset is not None and offset <= self._offset:
                self.stats.duplicates += 1
                return []
            self._offset = offset
        reason = self._invalid(cell)
        if reason:
            self.stats.reject(reason)
            return []
        t = cell.window_start_ms
        self.stats.cells += 1
        self.stats.occurrences += cell.occurrences
        if self._final is not None and t < self._final:
            self.stats.late_cells += 1
            self.stats.late_occurrences += cell.occurrences
            return []
        window = self._pending.setdefault(t, {})
        # with cross-site flows per site, the site's pseudo-camera counts every camera's occurrences
        for cam in ((cell.cam, site_camera(cell.cam)) if self.spec.site_pairs else (cell.cam,)):
            groups = window.setdefault(cam, {})
            if cell.occurrences:   # a window marker (0) only says the camera-window exists
                groups[cell.group_id] = groups.get(cell.group_id, 0) + cell.occurrences
        return self._advance(t)

    def add_many(self, cells: Iterable[OccurrenceCell]) -> list[Partial]:
        out: list[Partial] = []
        for c in cells:
            out += self.add(c)
        return out

    def advance(self, event_time_ms: int) -> list[Partial]:
        """Move the clock without a record: a processor window-close marker, or, when input
        stops, wall-clock time minus the expected skew (so that state still expires and the last
        hours close). Never moves the clock back."""
        return self._advance(event_time_ms)

    def flush(self, last_window_ms: int | None = None) -> list[Partial]:
        """End of a bounded input (tests, backfills): make everything final and close every hour
        up to that of ``last_window_ms`` (default: the latest window this partition saw; pass the
        input's overall last window so that all partitions close the same hours, as the combiner
        needs every partition's progress)."""
        ends = [*self._acc] + ([self.spec.hour_of(self._clock)] if self._clock is not None else [])
        if last_window_ms is not None:
            ends.append(self.spec.hour_of(last_window_ms))
        if not ends:
            return []
        return self._advance(self.spec.hour_closes_at(max(ends)) + self._w + self.spec.lateness_ms)

    def _invalid(self, c: OccurrenceCell) -> str:
        if c.window_seconds != self.spec.window_seconds:
            return "window_seconds"
        if c.window_start_ms % self._w:
            return "unaligned_window"
        if c.occurrences < 0:
            return "negative_count"  # 0 is a window marker: the camera was live, nobody to count
        if c.group_id < 0:
            return "negative_group"
        if c.camera_id == SITE_CAMERA:
            return "empty_camera"   # the site pseudo-camera's id: no real camera may take it
        return ""

    # ---- the clock ---------------------------------------------------------------------------
    def _advance(self, ts: int) -> list[Partial]:
        self._clock = ts if self._clock is None else max(self._clock, ts)
        w = self._w
        target = (self._clock - w - self.spec.lateness_ms) // w * w + w  # windows < target are final
        out: list[Partial] = []
        if self._final is None:
            if not self._pending:
                # A partition none of whose groups has occurred yet (few people, many partitions):
                # every window before the target is final and empty. It must say so, or the
                # combiner, which waits for every partition, would never complete a window.
                self._final = target
                if self._cold:
                    self._complete_from = complete_from(self.spec, self._final)
                out.append(self._partial(PROGRESS, ("", "", ""), self._final, values=self._complete_from))
                self.stats.partials_out += len(out)
                return out
            # Nothing final yet: F starts at the earliest window seen once the first one is due
            # (not before, so an earlier window arriving out of order is still on time).
            if target <= min(self._pending):
                return out
            self._final = min(self._pending)
            if self._cold:
                self._complete_from = complete_from(self.spec, self._final)
        if target <= self._final:
            return out
        t = self._final
        while t < target:
            if not self._ring:
                # Nothing final is still within reach: skip empty windows (an overnight gap).
                nxt = min((p for p in self._pending if p >= t), default=target)
                if nxt > t:
                    t = min(nxt, target)
                    self._final = t
                    self._close_hours(out)
                    continue
            self._step(t, out)
            t += w
            self._final = t
            self._close_hours(out)
        out.append(self._partial(PROGRESS, ("", "", ""), self._final, values=self._complete_from))
        self.stats.partials_out += len(out)
        return out

    # ---- one window becomes final --------------------------------------------------------------
    def _step(self, t: int, out: list[Partial]) -> None:
        spec, w = self.spec, self._w
        L, H, far_lo = spec.max_lag, spec.horizon, spec.far_min
        cells = self._pending.pop(t, {})
        if cells:
            self._ring[t] = cells
            for cam, groups in cells.items():
                for g, c in groups.items():
                    self._by_group.setdefault(g, {}).setdefault(cam, {})[t] = c
        hour_t = spec.hour_of(t)
        for x in sorted(cells):
            groups = cells[x]
            out.append(self._partial(WINDOW, x, t, occurrences=sum(groups.values()),
                                     squares=sum(c * c for c in groups.values())))
            for g, c in groups.items():
                for y, times in self._by_group[g].items():
                    if not spec.allows(x, y):
                        continue
                    for t2, c2 in times.items():
                        v = c * c2
                        if t2 == t:
                            # lag 0, A = x, B = y (the loop visits (y, x) from y's side)
                            self._acc_for(hour_t, x, y)[0] += v
                            continue
                        d = (t - t2) // w  # 1..H: y's window came d windows earlier
                        # A = y at t2, B = x at t: lag +d, booked to the hour of A's window
                        if d <= L:
                            self._acc_for(spec.hour_of(t2), y, x)[d] += v
                        if d >= far_lo:
                            band = L + 1 + spec.far_band_of(d)
                            self._acc_for(spec.hour_of(t2), y, x)[band] += v
                            # A = x at t, B = y at t2: lag -d, only the far bands use negative lags
                            self._acc_for(hour_t, x, y)[band] += v
        self._slide_ranges(t, out)
        self._evict(t - H * w)

    def _acc_for(self, hour: int, a: Cam, b: Cam) -> list[int]:
        pairs = self._acc.setdefault(hour, {})
        acc = pairs.get((a, b))
        if acc is None:
            acc = pairs[(a, b)] = [0] * (self.spec.max_lag + 1 + len(self.spec.far_bands))
        return acc

    def _slide_ranges(self, t: int, out: list[Partial]) -> None:
        """Window t is final: every SE range's B* sums slide to reference window t - R, and that
        reference window's Q*_r = sum_g B*_g^2 is sent for every camera where it is non-zero."""
        w, reach = self._w, self.spec.range_reach
        ref = t - reach * w
        for i, (lo, hi) in enumerate(self.spec.ranges):
            enter = ref + hi * w          # newest window of the range for this reference
            leave = ref + (lo - 1) * w    # the window that just dropped out of it
            for win, sign in ((enter, 1), (leave, -1)):
                for cam, groups in self._ring.get(win, {}).items():
                    b = self._bstar[i].setdefault(cam, {})
                    q = self._qstar[i].get(cam, 0)
                    for g, c in groups.items():
                        old = b.get(g, 0)
                        new = old + sign * c
                        q += new * new - old * old
                        if new:
                            b[g] = new
                        else:
                            del b[g]
                    if q:
                        self._qstar[i][cam] = q
                    else:
                        self._qstar[i].pop(cam, None)
                    if not b:
                        del self._bstar[i][cam]
        for cam in sorted(set().union(*(q.keys() for q in self._qstar))):
            vals = tuple(self._qstar[i].get(cam, 0) for i in range(len(self.spec.ranges)))
            if any(vals):
                out.append(self._partial(RANGE_SQUARES, cam, ref, values=vals))

    def _evict(self, before_or_at: int) -> None:
        """Drop windows at or before ``before_or_at``: no later window can pair with them."""
        for t in [t for t in self._ring if t <= before_or_at]:
            for cam, groups in self._ring.pop(t).items():
                for g in groups:
                    times = self._by_group[g][cam]
                    del times[t]
                    if not times:
                        del self._by_group[g][cam]
                        if not self._by_group[g]:
                            del self._by_group[g]

    def _close_hours(self, out: list[Partial]) -> None:
        """Send the co-occurrence sums of every hour whose last pairing window is now final."""
        for h in sorted(h for h in self._acc if self.spec.hour_closes_at(h) <= self._final):
            for (a, b), vals in sorted(self._acc.pop(h).items()):
                out.append(self._partial(COOCCURRENCE, a, h, dest=b, values=tuple(vals)))

    def _partial(self, kind: str, cam: Cam, time_ms: int, *, dest: Cam | None = None, occurrences: int = 0,
                 squares: int = 0, values: tuple[int, ...] = ()) -> Partial:
        return Partial(kind, self._fp, self.partition, self.partitions, cam[0], time_ms, cam[1], cam[2],
                       dest[1] if dest else "", dest[2] if dest else "", occurrences, squares, values)

    # ---- observability and restart ------------------------------------------------------------
    @property
    def final_through(self) -> int | None:
        return self._final

    def state_size(self) -> dict[str, Any]:
        """What the partition holds: restricted counts (pending + ring) and their time span."""
        ring_cells = sum(len(g) for cams in self._ring.values() for g in cams.values())
        pending_cells = sum(len(g) for cams in self._pending.values() for g in cams.values())
        return {"ring_windows": len(self._ring), "ring_cells": ring_cells, "pending_windows": len(self._pending),
                "pending_cells": pending_cells, "oldest_window_ms": min(list(self._ring) + list(self._pending),
                                                                      default=None),
                "open_pair_hours": sum(len(p) for p in self._acc.values()), "clock_ms": self._clock,
                "final_through_ms": self._final}

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume, JSON-serialisable, with the last applied input offset.

        Written as one changelog record, so state and offset can never disagree: on restart the
        consumer seeks to ``offset + 1`` and replays; anything it re-emits is identical (same
        keys, same values), which the combiner and ClickHouse replace rather than add.
        """
        def cells(d: dict[int, dict[Cam, dict[int, int]]]) -> list[list[Any]]:
            return [[t, list(cam), g, c] for t in sorted(d) for cam in sorted(d[t]) for g, c in sorted(d[t][cam].items())]

        return {"spec": self._fp, "partition": self.partition, "partitions": self.partitions,
                "clock": self._clock, "final": self._final, "offset": self._offset,
                "complete_from": list(self._complete_from),
                "pending": cells(self._pending), "ring": cells(self._ring),
                "acc": [[h, list(a), list(b), v] for h in sorted(self._acc) for (a, b), v in sorted(self._acc[h].items())],
                "stats": {**self.stats.__dict__, "rejected": dict(self.stats.rejected)}}

    @classmethod
    def restore(cls, spec: AggregatorSpec, snap: dict[str, Any]) -> "GroupPartitionAggregator":
        if snap["spec"] != spec.fingerprint():
            raise SpecError(f"snapshot was taken with spec {snap['spec']!r}, not {spec.fingerprint()!r}")
        core = cls(spec, snap["partition"], snap["partitions"])
        core._clock, core._final, core._offset = snap["clock"], snap["final"], snap["offset"]
        core._complete_from = tuple(snap["complete_from"])
        for t, cam, g, c in snap["pending"]:
            core._pending.setdefault(t, {}).setdefault(tuple(cam), {})[g] = c
        for t, cam, g, c in snap["ring"]:
            core._ring.setdefault(t, {}).setdefault(tuple(cam), {})[g] = c
            core._by_group.setdefault(g, {}).setdefault(tuple(cam), {})[t] = c
        for h, a, b, v in snap["acc"]:
            core._acc.setdefault(h, {})[(tuple(a), tuple(b))] = list(v)
        core.stats = CoreStats(**snap["stats"])
        core._rebuild_ranges()
        return core

    def _rebuild_ranges(self) -> None:
        """The sliding B* sums after the last processed window F - w, recomputed from the ring."""
        if self._final is None:
            return
        w, reach = self._w, self.spec.range_reach
        ref = self._final - w - reach * w
        for i, (lo, hi) in enumerate(self.spec.ranges):
            b_all: dict[Cam, dict[int, int]] = defaultdict(dict)
            for d in range(lo, hi + 1):
                for cam, groups in self._ring.get(ref + d * w, {}).items():
                    b = b_all[cam]
                    for g, c in groups.items():
                        b[g] = b.get(g, 0) + c
            self._bstar[i] = {cam: b for cam, b in b_all.items() if b}
            self._qstar[i] = {cam: sum(v * v for v in b.values()) for cam, b in self._bstar[i].items()}
