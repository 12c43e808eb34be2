"""Hourly protected counts: demographics and line crossings per camera-hour (pure; no Kafka).

Why these go through the aggregator too: a per-window count of (age band, gender) or of line
crossings describes the one or two people who passed in that minute. Suppressing cells below 3
(what the processor did until now) hides the smallest cells, but an analyst who differences
overlapping cells, or who knows all but one person in a quiet minute, still learns about that
person, and suppression gives no bound on what is learned. Here the processor's per-window
counts are restricted input; this core sums them per camera-hour and publishes each hour's
cells once with discrete Laplace noise (``pipeline.privacy.release.KeyedNoise``), a stated
differential-privacy mechanism:

* **Contribution bound.** A person contributes at most ``per_person_day`` counts to one
  published table in a day (passes for demographics, line crossings for crossings; an assumption
  about the site stated in docs/PRIVACY.md, not something the pipeline can enforce without
  linking a person's passes). Changing one person-day changes the table's cells by at most that
  much in L1, so noise of scale ``per_person_day / epsilon`` on every cell gives epsilon-DP per
  person-day for the table (budget across tables: docs/PRIVACY.md).
* **Every cell of every hour.** Each seen camera publishes every hour its full grid of cells
  (for demographics every (band, gender), for crossings every (line, direction) it has ever
  had), zeros included and noised alike. A cell that appeared only when someone passed would
  reveal them without any count. A camera unseen for ``retire_ms`` stops being published.
* **Keyed noise.** The noise of a cell is a function of the release key and the cell's identity,
  so an hour re-emitted after a restart carries the same noise and replaces its rows
  (ReplacingMergeTree) instead of offering a second draw to average.

Time is event time, as in the group-partition core: the clock is the latest window start seen
(or given to :meth:`advance`); an hour closes once the clock passes its end plus ``lateness``;
records for a closed hour are dropped and counted (``stats.late_cells``), never merged, so the
output depends only on the partition's record order. The input is keyed by camera, so a
camera-hour lives in one partition and no combiner is needed.

State: open camera-hours (at most lateness / hour + 2 per camera), the camera list, and the
cell keys seen per camera: aggregates of a camera-hour, restricted until published.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal

from pipeline.aggregator.model import HOUR_MS, CoreStats, SpecError

Kind = Literal["demographics", "crossings"]
KINDS: tuple[str, ...] = ("demographics", "crossings")
CamKey = tuple[str, str]            # (site_id, camera_id)
CellKey = tuple[str, str]           # (age_band, gender) or (line, direction)
DEFAULT_RETIRE_MS = 7 * 24 * HOUR_MS


@dataclass(frozen=True)
class CountsSpec:
    """What a counts core publishes and how it protects it. Part of every snapshot (fingerprint),
    so a changed configuration never continues another one's sums."""

    kind: Kind
    window_seconds: int = 60
    lateness_seconds: int = 300
    epsilon: float = 1.0              # per person-day, this table
    per_person_day: int = 8           # contribution bound (passes or crossings per person-day)
    grid: tuple[CellKey, ...] = ()    # cells every camera-hour publishes (crossings: learned per camera)
    retire_ms: int = DEFAULT_RETIRE_MS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.window_seconds <= 0 or 3600 % self.window_seconds:
            raise SpecError("window_seconds must divide an hour")
        if self.lateness_seconds < 0:
            raise SpecError("lateness_seconds must be >= 0")
        if not self.epsilon > 0 or self.per_person_day < 1:
            raise SpecError("epsilon must be > 0 and per_person_day >= 1")

    @property
    def noise_scale(self) -> float:
        return self.per_person_day / self.epsilon

    def fingerprint(self) -> str:
        doc = json.dumps([self.kind, self.window_seconds, self.lateness_seconds, self.epsilon, self.per_person_day,
                          [list(k) for k in self.grid], self.retire_ms])
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CountCell:
    """One processor record: a camera-window's count of one cell (restricted input)."""

    params_version: str
    site_id: str
    camera_id: str
    window_start_ms: int
    window_seconds: int
    key: CellKey
    count: int

    @property
    def cam(self) -> CamKey:
        return (self.site_id, self.camera_id)

    @classmethod
    def from_record(cls, kind: str, r: dict[str, Any]) -> "CountCell":
        """From a decoded processor record: ``DemographicCount`` or ``LineCrossingCount``."""
        if kind == "demographics":
            key, n = (str(r["age_band"]), str(r["gender"])), r["persons"]
        else:
            key, n = (str(r["line"]), str(r["direction"])), r["crossings"]
        return cls(str(r["params_version"]), str(r["site_id"]), str(r["camera_id"]), _ms(r["window_start"]),
                   int(r["window_seconds"]), key, int(n))


@dataclass(frozen=True)
class CountComponent:
    """One published cell: a camera-hour's noised count. ``version`` orders re-emissions for
    ReplacingMergeTree (the hour's closing time: a replay reproduces the row exactly)."""

    kind: str
    params_version: str
    site_id: str
    camera_id: str
    hour_ms: int
    key1: str
    key2: str
    count: int                        # exact count + noise: may be negative (unbiased sums)
    noise_var_milli: int
    version: int

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.params_version, self.site_id, self.camera_id, self.hour_ms, self.key1, self.key2)

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "params_version": self.params_version, "site_id": self.site_id,
                "camera_id": self.camera_id, "hour_start": self.hour_ms, "key1": self.key1, "key2": self.key2,
                "count": self.count, "noise_var_milli": self.noise_var_milli, "version": self.version}

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "CountComponent":
        return cls(str(r["kind"]), str(r["params_version"]), str(r["site_id"]), str(r["camera_id"]),
                   _ms(r["hour_start"]), str(r["key1"]), str(r["key2"]), int(r["count"]), int(r["noise_var_milli"]),
                   int(r["version"]))


def _ms(t: Any) -> int:
    """Epoch milliseconds of a decoded Avro timestamp (datetime) or of an int."""
    return int(round(t.timestamp() * 1000)) if hasattr(t, "timestamp") else int(t)


@dataclass
class _Cam:
    first_hour: int                   # published from this hour on
    last_ms: int
    version: str
    keys: set[CellKey] = field(default_factory=set)


class HourlyCounts:
    """One input partition's counts core: feed :class:`CountCell`, collect :class:`CountComponent`.

    ``noise_key`` is required whenever the spec's noise scale is positive (always, since epsilon
    is finite); pass ``noise_key=None`` together with ``exact=True`` for tests and for the
    restricted-tier comparison in the attack suite only.
    """

    def __init__(self, spec: CountsSpec, *, noise_key: bytes | None = None, exact: bool = False,
                 cold_start: bool = False) -> None:
        self.spec = spec
        self._fp = spec.fingerprint()
        self._w = spec.window_seconds * 1000
        self._late = spec.lateness_seconds * 1000
        self._noise = None
        if not exact:
            if noise_key is None:
                raise SpecError("published counts carry noise and need the release-noise key "
                                "(`flowctl keys init` creates it)")
            from pipeline.privacy.release import KeyedNoise

            self._noise = KeyedNoise(noise_key, spec.noise_scale)
        self._clock: int | None = None
        self._next_hour: int | None = None   # every hour before it has been published
        # cold_start: the worker started without a snapshot on a topic whose oldest records may
        # have expired, so the first hour seen may be incomplete and is not published.
        self._cold = cold_start
        self._publish_from: int | None = None
        self._offset: int | None = None
        self._open: dict[int, dict[CamKey, dict[CellKey, int]]] = {}   # hour -> cam -> cell -> count
        self._cams: dict[CamKey, _Cam] = {}
        self.stats = CoreStats()

    # ---- input -------------------------------------------------------------------------------------
    def add(self, cell: CountCell, offset: int | None = None) -> list[CountComponent]:
        if offset is not None:
            if self._offset is not None and offset <= self._offset:
                self.stats.duplicates += 1
                return []
            self._offset = offset
        reason = self._invalid(cell)
        if reason:
            self.stats.reject(reason)
            return []
        self.stats.cells += 1
        self.stats.occurrences += cell.count
        h = cell.window_start_ms - cell.window_start_ms % HOUR_MS
        if self._next_hour is not None and h < self._next_hour:
            self.stats.late_cells += 1
            self.stats.late_occurrences += cell.count
            return []
        if self._next_hour is None:
            self._next_hour = h
            self._publish_from = h + HOUR_MS if self._cold else h
        cells = self._open.setdefault(h, {}).setdefault(cell.cam, {})
        cells[cell.key] = cells.get(cell.key, 0) + cell.count
        cam = self._cams.get(cell.cam)
        if cam is None:
            cam = self._cams[cell.cam] = _Cam(h, cell.window_start_ms, cell.params_version)
        cam.last_ms = max(cam.last_ms, cell.window_start_ms)
        cam.version = cell.params_version
        cam.keys.add(cell.key)
        return self.advance(cell.window_start_ms)

    def add_many(self, cells: Iterable[CountCell]) -> list[CountComponent]:
        out: list[CountComponent] = []
        for c in cells:
            out += self.add(c)
        return out

    def _invalid(self, c: CountCell) -> str:
        if c.window_seconds != self.spec.window_seconds:
            return "window_seconds"
        if c.window_start_ms % self._w:
            return "unaligned_window"
        if isinstance(c.count, bool) or c.count < 0:
            return "negative_count"
        if self.spec.grid and c.key not in self.spec.grid:
            return "unknown_cell"
        return ""

    # ---- the clock ---------------------------------------------------------------------------------
    def advance(self, event_time_ms: int) -> list[CountComponent]:
        """Move the clock (a record, or wall time when input stops); close due hours."""
        self._clock = event_time_ms if self._clock is None else max(self._clock, event_time_ms)
        out: list[CountComponent] = []
        if self._next_hour is None:
            return out
        while self._next_hour + HOUR_MS + self._late <= self._clock:
            out += self._close(self._next_hour)
            self._next_hour += HOUR_MS
        self.stats.rows_out += len(out)
        return out

    def flush(self) -> list[CountComponent]:
        """End of a bounded input: close every hour that holds counts."""
        if not self._open:
            return []
        return self.advance(max(self._open) + HOUR_MS + self._late)

    @property
    def final_through(self) -> int | None:
        """Hours before this are published (what a snapshot's progress marker compares)."""
        return self._next_hour

    def _close(self, h: int) -> list[CountComponent]:
        counts = self._open.pop(h, {})
        if self._publish_from is not None and h < self._publish_from:
            self.stats.reject("incomplete_hour")
            return []
        for c in [c for c, st in self._cams.items() if st.last_ms < h - self.spec.retire_ms]:
            del self._cams[c]
        out = []
        version = h + HOUR_MS + self._late
        for cam in sorted(self._cams):
            st = self._cams[cam]
            if h < st.first_hour:
                continue
            have = counts.get(cam, {})
            for key in sorted(self.spec.grid or st.keys):
                n = have.get(key, 0)
                row = CountComponent(self.spec.kind, st.version, cam[0], cam[1], h, key[0], key[1], n, 0, version)
                if self._noise is not None:
                    label = "counts|" + "|".join(map(str, row.key))
                    # Not clamped at 0: most cells of a camera-hour hold a few people or none, and
                    # a clamp would bias every sum over them upwards (by ~scale/2 per empty cell).
                    # Signed cells keep sums unbiased; a display may clamp what it shows.
                    row = replace(row, count=n + self._noise.draw(label),
                                  noise_var_milli=round(self._noise.variance * 1000))
                out.append(row)
        return out

    # ---- observability and restart -----------------------------------------------------------------
    def state_size(self) -> dict[str, Any]:
        return {"open_hours": len(self._open), "cameras": len(self._cams),
                "oldest_window_ms": min(self._open, default=None), "clock_ms": self._clock}

    def snapshot(self) -> dict[str, Any]:
        return {"spec": self._fp, "clock": self._clock, "next_hour": self._next_hour, "offset": self._offset,
                "publish_from": self._publish_from,
                # "windows" rows start with a time, for the restricted-state age audit
                "windows": [[h, list(cam), list(k), n] for h in sorted(self._open)
                            for cam in sorted(self._open[h]) for k, n in sorted(self._open[h][cam].items())],
                "cams": [[list(cam), st.first_hour, st.last_ms, st.version, sorted(list(k) for k in st.keys)]
                         for cam, st in sorted(self._cams.items())],
                "stats": {**self.stats.__dict__, "rejected": dict(self.stats.rejected)}}

    @classmethod
    def restore(cls, spec: CountsSpec, snap: dict[str, Any], *, noise_key: bytes | None = None,
                exact: bool = False) -> "HourlyCounts":
        if snap["spec"] != spec.fingerprint():
            raise SpecError(f"snapshot was taken with spec {snap['spec']!r}, not {spec.fingerprint()!r}")
        c = cls(spec, noise_key=noise_key, exact=exact)
        c._clock, c._next_hour, c._offset = snap["clock"], snap["next_hour"], snap["offset"]
        c._publish_from = snap.get("publish_from", c._next_hour)
        for h, cam, k, n in snap["windows"]:
            c._open.setdefault(int(h), {}).setdefault(tuple(cam), {})[tuple(k)] = int(n)
        for cam, first, last, version, keys in snap["cams"]:
            c._cams[tuple(cam)] = _Cam(int(first), int(last), version, {tuple(k) for k in keys})
        c.stats = CoreStats(**snap["stats"])
        return c


def demographic_grid() -> tuple[CellKey, ...]:
    """Every (age band, gender) cell, published for every camera-hour whatever its count."""
    from pipeline.privacy.demographics import AGE_BANDS, GENDERS, UNKNOWN

    return tuple((b, g) for b in (*AGE_BANDS, UNKNOWN) for g in GENDERS)


def publish_hourly_counts(cells: Iterable[CountCell], spec: CountsSpec, *, noise_key: bytes | None = None,
                          exact: bool = False) -> list[CountComponent]:
    """Batch form (simulator, attack suite, tests): every cell through one core, then flushed."""
    core = HourlyCounts(spec, noise_key=noise_key, exact=exact)
    ordered = sorted(cells, key=lambda c: c.window_start_ms)
    return core.add_many(ordered) + core.flush()
