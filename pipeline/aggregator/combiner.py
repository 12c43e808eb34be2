"""Stage 2 of the flow aggregator: combine the group partitions into published components.

Why a second stage at all: chance and the SE multiply *window totals* of two cameras,
N_A(t) N_B(t + d) and Q_A(t) Q_B*(t), and a total is a sum over all groups, i.e. over all
partitions. A product of sums is not a sum of per-partition products, so no group partition can
form these terms alone. The partitions send their additive shares (N^P, Q^P, Q*^P, S^P); this
stage adds the shares up per camera-window, forms the products, and adds the partitions' S.

Why the partitions' S are summed here and not in ClickHouse: a per-partition row is a
co-occurrence sum over a subset of the groups, finer than anything analysts should see (with as
many partitions as groups it would be a per-group histogram), and the protection of step 3
(noise, thresholds) must be applied once, to the published value. So exactly one row per
component is published, already summed over partitions; ClickHouse then sums rows across hours,
lags, camera pairs and zones.

Completeness: a window t is complete once every one of the ``partitions`` has reported progress
past t (a partition sends all its partials for a window before that progress). Windows are
processed in time order, so the output depends only on the partials, not on how the partitions'
records interleave. A partial repeated by a restarted partition replaces its earlier copy
(keyed by partition), and one for a window already processed is ignored (counted): identical
inputs, identical output, never double counted.

Row existence: once a camera has been seen, every hour gets its rows (footfall per camera, flow
components per allowed camera pair), whether or not anyone passed, zeros carrying the same noise
as any value. A row that existed only when somebody was captured (a closed store at 3 am) would
itself say that someone was there; the price is noised zeros in the sums over closed hours. A
camera unseen for ``CAMERA_RETIRE_MS`` stops being published.

State: the complete window totals of the last H + 1 windows (two integers per camera-window),
pending partials of windows not yet complete (at most the partitions' skew), and per-hour pair
sums until the hour closes.
"""
from __future__ import annotations

from dataclasses import replace

from typing import Any, Callable

from pipeline.aggregator.model import (COOCCURRENCE, FAR, HOUR_MS, LAG, PROGRESS, RANGE, RANGE_SQUARES, SITE_CAMERA,
                                       WINDOW, AggregatorSpec, Cam, CoreStats, FlowComponent, FootfallComponent,
                                       Partial, SpecError, complete_from)

Row = FlowComponent | FootfallComponent

CAMERA_RETIRE_MS = 7 * 24 * HOUR_MS


class _PairHour:
    """Per (hour, A, B): the window-product sums, per lag, per SE range, and over each far band."""

    __slots__ = ("lag", "rng", "nn_far")

    def __init__(self, lags: int, ranges: int, far_bands: int) -> None:
        self.lag = [[0, 0, 0, 0] for _ in range(lags)]    # per lag: nn, qq, qn, nn2
        self.rng = [[0, 0, 0, 0] for _ in range(ranges)]  # per SE range: nn, qq, qn, nn2
        self.nn_far = [0] * far_bands                     # per far band (inner first): nn

    def dump(self) -> list[Any]:
        return [self.lag, self.rng, self.nn_far]


def _add_products(acc: list[int], na: int, qa: int, nb: int, qb: int) -> None:
    acc[0] += na * nb
    acc[1] += qa * qb
    acc[2] += qa * nb * nb + na * na * qb
    acc[3] += (na * nb) ** 2


class Combiner:
    """Feed it every partition's partials (any interleaving); collect published rows.

    ``version_clock``: the ``version`` stamped on emitted rows, for ClickHouse's
    ReplacingMergeTree (the highest version of a key wins). By default the hour's closing time,
    a deterministic value, so a replay reproduces rows exactly; an app may pass wall-clock
    milliseconds so that a re-emission with different content (e.g. after a configuration
    change) supersedes the old rows.
    """

    def __init__(self, spec: AggregatorSpec, partitions: int,
                 version_clock: Callable[[int], int] | None = None, *, cold_start: bool = False,
                 noise_key: bytes | None = None) -> None:
        if partitions < 1:
            raise SpecError("partitions must be >= 1")
        self.spec = spec
        self.partitions = partitions
        self._fp = spec.fingerprint()
        self._w = spec.window_ms
        self._version = version_clock or (lambda closes_at: closes_at)
        # Published-tier protection: keyed discrete Laplace noise on every flow row's s and every
        # footfall count (pipeline/privacy/release.py); the key makes replays carry the same noise.
        self._flow_noise = self._foot_noise = self._n_noise = self._q_noise = self._qstar_noise = None
        if spec.flow_noise_scale or spec.footfall_noise_scale or spec.total_noise_scale:
            if noise_key is None:
                raise SpecError("the aggregator adds noise to published values and needs the release-noise key "
                                "(`flowctl keys init` creates it)")
            from pipeline.privacy.release import KeyedNoise

            self._flow_noise = KeyedNoise(noise_key, spec.flow_noise_scale)
            self._foot_noise = KeyedNoise(noise_key, spec.footfall_noise_scale)
            # Window totals enter every published product (nn, qq, qn, nn2): noised once per
            # camera-window before any product is formed, so everything derived from them is
            # post-processing of one noisy draw. One pass changes N by 1, Q by 2 A_g + 1 (3 when
            # the pass's group has one other occurrence in the window) and a range's Q* by
            # 2 B*_g + 1 (scaled for up to 4 others over the range).
            if spec.total_noise_scale:
                self._n_noise = KeyedNoise(noise_key, spec.total_noise_scale)
                self._q_noise = KeyedNoise(noise_key, 3 * spec.total_noise_scale)
                self._qstar_noise = KeyedNoise(noise_key, 9 * spec.total_noise_scale)
        self._progress: dict[int, int] = {}
        # Hours before these are not published (flows, footfall): a partition or this combiner
        # started cold and cannot have their complete data (see GroupPartitionAggregator).
        self._cold = cold_start
        self._complete_from: dict[int, tuple[int, int]] = {}   # partition -> (flows, footfall)
        self._own_from = (0, 0)
        self._done: int | None = None                                   # windows < done are processed
        self._offset: int | None = None
        self._windows: dict[int, dict[Cam, dict[int, tuple[int, int]]]] = {}   # t -> cam -> partition -> (n, q)
        self._ranges: dict[int, dict[Cam, dict[int, tuple[int, ...]]]] = {}   # ref t -> cam -> partition -> Q*
        self._cooc: dict[int, dict[tuple[Cam, Cam], dict[int, tuple[int, ...]]]] = {}  # hour -> pair -> p -> S
        self._ring: dict[int, dict[Cam, tuple[int, int]]] = {}          # complete totals, last H + 1 windows
        self._acc: dict[int, dict[tuple[Cam, Cam], _PairHour]] = {}     # hour -> pair -> sums
        self._foot: dict[int, dict[Cam, list[int]]] = {}                # hour -> cam -> [occurrences, windows]
        self._cams: dict[Cam, int] = {}                                 # camera -> last window seen
        self._foot_next: int | None = None                              # next hour whose footfall closes
        self._flow_next: int | None = None                              # next hour whose flows close
        self.stats = CoreStats()

    # ---- input ---------------------------------------------------------------------------------
    def add(self, p: Partial, offset: int | None = None) -> list[Row]:
        if offset is not None:
            if self._offset is not None and offset <= self._offset:
                self.stats.duplicates += 1
                return []
            self._offset = offset
        if p.spec != self._fp:
            self.stats.reject("spec_mismatch")
            return []
        if p.partitions != self.partitions or not 0 <= p.partition < self.partitions:
            self.stats.reject("partition_mismatch")
            return []
        if p.kind not in (WINDOW, RANGE_SQUARES, COOCCURRENCE, PROGRESS):
            self.stats.reject("unknown_kind")
            return []
        self.stats.cells += 1
        done = self._done
        if p.kind == PROGRESS:
            if len(p.values) == 2:
                old = self._complete_from.get(p.partition, (0, 0))
                self._complete_from[p.partition] = (max(old[0], p.values[0]), max(old[1], p.values[1]))
            if p.time_ms > self._progress.get(p.partition, -1 << 62):
                self._progress[p.partition] = p.time_ms
                return self._advance()
            return []
        if p.kind == WINDOW:
            if done is not None and p.time_ms < done:
                return self._stale()
            self._windows.setdefault(p.time_ms, {}).setdefault(p.cam, {})[p.partition] = (p.occurrences, p.squares)
        elif p.kind == RANGE_SQUARES:
            if len(p.values) != len(self.spec.ranges):
                self.stats.reject("range_count")
                return []
            if done is not None and p.time_ms + self.spec.range_reach * self._w < done:
                return self._stale()
            self._ranges.setdefault(p.time_ms, {}).setdefault(p.cam, {})[p.partition] = p.values
        else:
            if len(p.values) != self.spec.max_lag + 1 + len(self.spec.far_bands):
                self.stats.reject("lag_count")
                return []
            if done is not None and self.spec.hour_closes_at(p.time_ms) <= done:
                return self._stale()
            self._cooc.setdefault(p.time_ms, {}).setdefault((p.cam, p.dest), {})[p.partition] = p.values
        return []

    def add_many(self, partials: list[Partial]) -> list[Row]:
        out: list[Row] = []
        for p in partials:
            out += self.add(p)
        return out

    def _stale(self) -> list[Row]:
        self.stats.late_cells += 1
        return []

    # ---- completeness ------------------------------------------------------------------------------
    @property
    def complete_through(self) -> int | None:
        """Every partition is final before this time (None until all have reported)."""
        if len(self._progress) < self.partitions:
            return None
        return min(self._progress.values())

    def _advance(self) -> list[Row]:
        target = self.complete_through
        out: list[Row] = []
        if target is None:
            return out
        w = self._w
        if self._done is None:
            starts = [*self._windows, *self._ranges, *self._cooc]
            if not starts:
                return out
            self._done = min(starts) // w * w
            self._foot_next = self._flow_next = self.spec.hour_of(self._done)
            if self._cold:
                self._own_from = complete_from(self.spec, self._done)
        t = self._done
        while t < target:
            if not self._ring:
                nxt = min((x for x in self._windows if x >= t), default=target)
                if nxt > t:  # nothing within reach: skip empty windows
                    t = min(nxt, target)
                    self._drop_ranges_before(t)
                    self._done = t
                    self._close(out)
                    continue
            self._step(t)
            t += w
            self._done = t
            self._close(out)
        self.stats.rows_out += len(out)
        return out

    def _drop_ranges_before(self, t: int) -> None:
        """Range squares whose reference window was skipped: no A window exists for them."""
        for ref in [r for r in self._ranges if r + self.spec.range_reach * self._w < t]:
            del self._ranges[ref]

    # ---- one complete window -----------------------------------------------------------------------
    def _step(self, t: int) -> None:
        spec, w = self.spec, self._w
        L, H, far_lo = spec.max_lag, spec.horizon, spec.far_min
        raw = {cam: (sum(n for n, _ in parts.values()), sum(q for _, q in parts.values()))
               for cam, parts in self._windows.pop(t, {}).items()}
        totals = raw if self._n_noise is None else {
            cam: (n + self._n_noise.draw(f"n|{cam}|{t}"), q + self._q_noise.draw(f"q|{cam}|{t}"))
            for cam, (n, q) in raw.items()}
        hour_t = spec.hour_of(t)
        if totals:
            self._ring[t] = totals
            foot = self._foot.setdefault(hour_t, {})   # footfall: exact sums, noised per camera-hour
            for cam, (n, _) in raw.items():
                self._cams[cam] = t
                if cam[2] == SITE_CAMERA:
                    continue   # a site pseudo-camera has flows only: its cameras publish the footfall
                f = foot.setdefault(cam, [0, 0])
                f[0] += n
                f[1] += 1
        if totals:
            # Near lags: every (earlier window within L, camera) times every camera of window t.
            for t2 in range(t - L * w, t + w, w):
                cams = self._ring.get(t2)
                if not cams:
                    continue
                d = (t - t2) // w
                hour2 = spec.hour_of(t2)
                for y, (ny, qy) in cams.items():
                    for x, (nx, qx) in totals.items():
                        if spec.allows(y, x):  # A = y at t2, B = x at t (d = 0: both orders visited)
                            _add_products(self._pair(hour2, y, x).lag[d], ny, qy, nx, qx)
            # Far bands: only N products, so sum each camera's far-band totals per hour first.
            far: dict[tuple[int, int, Cam], int] = {}
            for t2 in range(t - H * w, t - far_lo * w + w, w):
                band = spec.far_band_of((t - t2) // w)
                for y, (ny, _) in self._ring.get(t2, {}).items():
                    k = (band, spec.hour_of(t2), y)
                    far[k] = far.get(k, 0) + ny
            far_by_cam: dict[tuple[int, Cam], int] = {}
            for (band, hour2, y), ny in far.items():
                far_by_cam[(band, y)] = far_by_cam.get((band, y), 0) + ny
                for x, (nx, _) in totals.items():
                    if spec.allows(y, x):  # A = y earlier, B = x at t: lag +d
                        self._pair(hour2, y, x).nn_far[band] += ny * nx
            for x, (nx, _) in totals.items():
                for (band, y), ny in far_by_cam.items():
                    if spec.allows(x, y):  # A = x at t, B = y earlier: lag -d
                        self._pair(hour_t, x, y).nn_far[band] += nx * ny
        self._range_terms(t - spec.range_reach * w)
        for old in [x for x in self._ring if x <= t - H * w]:
            del self._ring[old]

    def _range_terms(self, ref: int) -> None:
        """Reference window ``ref`` now has all of its ranges' windows: for every A window at
        ref, add Q_A Q_B*, Q_A N_B*^2 + N_A^2 Q_B* and (N_A N_B*)^2 per SE range."""
        spec, w = self.spec, self._w
        parts = self._ranges.pop(ref, {})
        a_side = self._ring.get(ref, {})
        if not a_side:
            return
        qstar = {cam: [sum(v[i] for v in by_p.values()) for i in range(len(spec.ranges))]
                 for cam, by_p in parts.items()}
        if self._qstar_noise is not None:
            qstar = {cam: [v + self._qstar_noise.draw(f"qstar|{i}|{cam}|{ref}") for i, v in enumerate(vs)]
                     for cam, vs in qstar.items()}
        hour = spec.hour_of(ref)
        for i, (lo, hi) in enumerate(spec.ranges):
            nstar: dict[Cam, int] = {}
            for d in range(lo, hi + 1):
                for cam, (n, _) in self._ring.get(ref + d * w, {}).items():
                    nstar[cam] = nstar.get(cam, 0) + n
            for b in nstar.keys() | qstar.keys():
                nb, qb = nstar.get(b, 0), (qstar[b][i] if b in qstar else 0)
                for a, (na, qa) in a_side.items():
                    if spec.allows(a, b):
                        _add_products(self._pair(hour, a, b).rng[i], na, qa, nb, qb)

    def _pair(self, hour: int, a: Cam, b: Cam) -> _PairHour:
        pairs = self._acc.setdefault(hour, {})
        acc = pairs.get((a, b))
        if acc is None:
            acc = pairs[(a, b)] = _PairHour(self.spec.max_lag + 1, len(self.spec.ranges), len(self.spec.far_bands))
        return acc

    # ---- closing hours -------------------------------------------------------------------------
    def _close(self, out: list[Row]) -> None:
        spec, done = self.spec, self._done
        flows_from = max([self._own_from[0], *(f for f, _ in self._complete_from.values())])
        foot_from = max([self._own_from[1], *(f for _, f in self._complete_from.values())])
        if self._foot_next is None or self._flow_next is None or done is None:
            return
        while self._foot_next + HOUR_MS <= done:
            h = self._foot_next
            self._foot_next += HOUR_MS
            foot = self._foot.pop(h, {})
            if h < foot_from:
                if foot:
                    self.stats.reject("incomplete_hour")
                continue
            v = self._version(h + HOUR_MS)
            for cam in self._published_cams(h):
                if cam[2] == SITE_CAMERA:
                    continue
                n, windows = foot.get(cam, (0, 0))
                row = FootfallComponent(cam[0], spec.window_seconds, h, cam[1], cam[2], n, windows, v)
                if self._foot_noise is not None and self._foot_noise.scale:
                    # Both values move when one person passes (a pass can be the only occurrence of
                    # a window), so both carry noise of the footfall scale, independently drawn;
                    # noise_var_milli is the variance of each. Not clamped at 0: hours nobody
                    # passed are published too, and a clamp would bias sums over them upwards.
                    label = "|".join(map(str, row.key))
                    row = replace(row, occurrences=n + self._foot_noise.draw("footfall|" + label),
                                  windows=windows + self._foot_noise.draw("footfall-windows|" + label),
                                  noise_var_milli=round(self._foot_noise.variance * 1000))
                out.append(row)
        while spec.hour_closes_at(self._flow_next) <= done:
            h = self._flow_next
            self._flow_next += HOUR_MS
            sums = self._acc.pop(h, {})
            cooc = self._cooc.pop(h, {})
            if h < flows_from:
                if sums or cooc:
                    self.stats.reject("incomplete_hour")
                continue
            v = self._version(spec.hour_closes_at(h))
            cams = self._published_cams(h)
            pairs = {(a, b) for a in cams for b in cams if spec.allows(a, b)}
            for a, b in sorted(pairs | sums.keys() | cooc.keys()):
                out += self._rows(h, a, b, sums.get((a, b)), cooc.get((a, b), {}), v)
        # Partials for an hour already closed were refused as late on arrival; nothing else can
        # leave an hour before the close pointers, but never let state outlive them silently.
        for stale in [h for h in self._foot if h < self._foot_next]:
            del self._foot[stale]
            self.stats.reject("incomplete_hour")
        for d in (self._acc, self._cooc):
            for stale in [h for h in d if h < self._flow_next]:
                del d[stale]
                self.stats.reject("incomplete_hour")

    def _published_cams(self, h: int) -> list[Cam]:
        """Cameras that get rows for hour ``h``: every camera seen before the hour ends and not
        retired by then (see the module docstring on row existence)."""
        for cam in [c for c, last in self._cams.items() if last < h - CAMERA_RETIRE_MS]:
            del self._cams[cam]
        return sorted(c for c in self._cams)

    def _rows(self, h: int, a: Cam, b: Cam, acc: _PairHour | None, cooc: dict[int, tuple[int, ...]],
              version: int) -> list[FlowComponent]:
        spec = self.spec
        L = spec.max_lag
        bands = spec.far_bands
        s = [sum(v[i] for v in cooc.values()) for i in range(L + 1 + len(bands))]
        acc = acc or _PairHour(L + 1, len(spec.ranges), len(bands))

        def row(kind: str, lo: int, hi: int, s_: int, terms: list[int]) -> FlowComponent:
            r = FlowComponent(a[0], spec.window_seconds, h, a[1], a[2], b[1], b[2], kind, lo, hi, s_, *terms, version)
            if self._flow_noise is not None and self._flow_noise.scale:
                r = replace(r, s=r.s + self._flow_noise.draw("flow|" + "|".join(map(str, r.key))),
                            noise_var_milli=round(self._flow_noise.variance * 1000))
            return r.checked()

        rows = [row(LAG, d, d, s[d], acc.lag[d]) for d in range(L + 1)]
        rows += [row(RANGE, lo, hi, sum(s[lo:hi + 1]), acc.rng[i]) for i, (lo, hi) in enumerate(spec.ranges)]
        rows += [row(FAR, lo, hi, s[L + 1 + i], [acc.nn_far[i], 0, 0, 0]) for i, (lo, hi) in enumerate(bands)]
        return rows

    def flush(self) -> list[Row]:
        """End of a bounded input: treat every partition as complete (tests, backfills). Only
        valid once every partition has flushed its own core."""
        return self._advance()

    # ---- observability and restart ------------------------------------------------------------
    def state_size(self) -> dict[str, Any]:
        return {"ring_windows": len(self._ring), "pending_windows": len(self._windows),
                "pending_ranges": len(self._ranges), "open_hours": len(self._acc) + len(self._cooc),
                "oldest_window_ms": min(list(self._ring) + list(self._windows), default=None),
                "complete_through_ms": self.complete_through, "done_ms": self._done}

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state with the last applied input offset (see the stage-1 core)."""
        def nested(d: dict) -> list:
            return [[k1, list(cam), p, list(v) if isinstance(v, tuple) else v]
                    for k1 in sorted(d) for cam in sorted(d[k1]) for p, v in sorted(d[k1][cam].items())]

        return {"spec": self._fp, "partitions": self.partitions, "progress": sorted(self._progress.items()),
                "complete_from": sorted([p, list(v)] for p, v in self._complete_from.items()),
                "own_from": list(self._own_from),
                "done": self._done, "offset": self._offset, "windows": nested(self._windows),
                "ranges": nested(self._ranges),
                "cooc": [[h, list(a), list(b), p, list(v)] for h in sorted(self._cooc)
                         for (a, b) in sorted(self._cooc[h]) for p, v in sorted(self._cooc[h][(a, b)].items())],
                "ring": [[t, list(cam), n, q] for t in sorted(self._ring) for cam, (n, q) in sorted(self._ring[t].items())],
                "acc": [[h, list(a), list(b), x.dump()] for h in sorted(self._acc) for (a, b), x in sorted(self._acc[h].items())],
                "foot": [[h, list(cam), v] for h in sorted(self._foot) for cam, v in sorted(self._foot[h].items())],
                "cams": [[list(cam), t] for cam, t in sorted(self._cams.items())],
                "foot_next": self._foot_next, "flow_next": self._flow_next,
                "stats": {**self.stats.__dict__, "rejected": dict(self.stats.rejected)}}

    @classmethod
    def restore(cls, spec: AggregatorSpec, snap: dict[str, Any],
                version_clock: Callable[[int], int] | None = None, *, noise_key: bytes | None = None) -> "Combiner":
        if snap["spec"] != spec.fingerprint():
            raise SpecError(f"snapshot was taken with spec {snap['spec']!r}, not {spec.fingerprint()!r}")
        c = cls(spec, snap["partitions"], version_clock, noise_key=noise_key)
        c._progress = {int(p): int(t) for p, t in snap["progress"]}
        c._complete_from = {int(p): tuple(v) for p, v in snap["complete_from"]}
        c._own_from = tuple(snap["own_from"])
        c._done, c._offset = snap["done"], snap["offset"]
        for t, cam, p, v in snap["windows"]:
            c._windows.setdefault(t, {}).setdefault(tuple(cam), {})[p] = tuple(v)
        for t, cam, p, v in snap["ranges"]:
            c._ranges.setdefault(t, {}).setdefault(tuple(cam), {})[p] = tuple(v)
        for h, a, b, p, v in snap["cooc"]:
            c._cooc.setdefault(h, {}).setdefault((tuple(a), tuple(b)), {})[p] = tuple(v)
        for t, cam, n, q in snap["ring"]:
            c._ring.setdefault(t, {})[tuple(cam)] = (n, q)
        for h, a, b, (lag, rng, nn_far) in snap["acc"]:
            x = c._pair(h, tuple(a), tuple(b))
            x.lag, x.rng, x.nn_far = [list(r) for r in lag], [list(r) for r in rng], list(nn_far)
        for h, cam, v in snap["foot"]:
            c._foot.setdefault(h, {})[tuple(cam)] = list(v)
        c._cams = {tuple(cam): int(t) for cam, t in snap.get("cams", [])}
        start = None if c._done is None else spec.hour_of(min([c._done, *c._foot, *c._acc, *c._cooc]))
        c._foot_next = snap.get("foot_next", start)
        c._flow_next = snap.get("flow_next", start)
        c.stats = CoreStats(**snap["stats"])
        return c
