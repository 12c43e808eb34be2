"""Data contract of the streaming flow aggregator: its configuration, its input cell, the
restricted partials its two stages exchange, and the published component rows.

Why integers everywhere: every component is a sum of products of occurrence counts, so it is an
integer. Keeping it an integer end to end (Python ints in the cores, Avro ``long``, ClickHouse
``Int64``/``UInt64``) makes summation order irrelevant, so a replayed hour reproduces its rows
bit for bit (idempotence can be tested by equality), and keeps the warehouse's privacy-by-schema
rule (no stored floats outside the parameter table, ``tests/integration/test_migrations.py``).
The one term that can outgrow 64 bits, ``nn2`` (a sum of squared products of window totals:
about 5e18 per hour for the strict profile's 3,000 occurrences per camera-minute over a 31-lag
range), travels as two 64-bit halves, ``nn2 = nn2_hi * 2**32 + nn2_lo``.

See docs/AGGREGATOR.md for the algebra that ties these rows to the SQL estimator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

HOUR_MS = 3_600_000
NN2_SHIFT = 32
NN2_LOW_MASK = (1 << NN2_SHIFT) - 1
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

# Kinds of published flow component rows (the ``kind`` column).
LAG = "lag"        # one lag d: lag_lo = lag_hi = d, 0 <= d <= max_lag
RANGE = "range"    # a configured SE range [lag_lo, lag_hi]: exact variance terms for that range
FAR = "far"        # a far band lag_lo <= |d| <= lag_hi, both directions: what kappa needs (inner and outer)

# Kinds of restricted partials (stage 1 -> stage 2).
WINDOW = "WINDOW"
RANGE_SQUARES = "RANGE"
COOCCURRENCE = "COOCCURRENCE"
PROGRESS = "PROGRESS"
PARTIAL_KINDS = (WINDOW, RANGE_SQUARES, COOCCURRENCE, PROGRESS)


CAMERA_PAIRS, SITE_PAIRS = "camera", "site"
# The camera id of a site's pseudo-camera (cross_site "site"): empty, which no real camera id can
# be (ids start with a letter or digit, pipeline.serde.valid_identifier). Its occurrences are the
# site's, summed over its cameras; products are bilinear, so a site pair's S and NN are exactly
# the sums over its camera pairs, and its Q terms give the pooled variance directly.
SITE_CAMERA = ""


def site_camera(cam: "Cam") -> "Cam":
    return (cam[0], cam[1], SITE_CAMERA)


def default_far_min(max_lag: int, far_max: int) -> int:
    """Start of the far band when not configured: a guard of max_lag windows beyond the flow lags
    (2 L + 1), keeping at least 20 lags where possible, never inside the flow lags.

    Why a guard: the far band must hold no pair of one person's captures, but multi-hop trips
    and returns (A, then elsewhere, then B 40 minutes later) do land just beyond L. Measured on
    the reference scenario (bench/flows/components_eval.py, 12 one-day replicates): mean error
    of flows >= 100/day -13.0 with the band starting at L + 1 = 31, -0.8 at 61 (the SQL
    estimator's whole-period kappa: -7.2), at a small cost in noise (median relative error
    0.085 -> 0.090).
    """
    return max(max_lag + 1, min(2 * max_lag + 1, far_max - 19))


class SpecError(ValueError):
    """An aggregator configuration that cannot keep its promises (lags, bound, alignment)."""


class ComponentOverflow(ArithmeticError):
    """A component outgrew its 64-bit column. Raised instead of wrapping silently."""


Cam = tuple[str, str, str]  # (params_version, site_id, camera_id)


@dataclass(frozen=True)
class AggregatorSpec:
    """What the aggregator computes and how long it may hold restricted data.

    Lags are in windows. ``max_lag`` (L) bounds the flow lags 0..L an analyst can query;
    ``ranges`` are the lag ranges whose standard error is published exactly (the SE of a range
    is not a sum of per-lag terms, see docs/AGGREGATOR.md); the far band
    ``far_min <= |d| <= far_max`` (both directions) is where kappa is measured, so it must lie
    beyond L. ``far_max`` is also the state horizon H: a window's counts are kept until the
    window H later is final. ``lateness_seconds`` is how long after a window's end records for
    it are still accepted (camera/processor skew). ``processor_delay_seconds`` is how long after
    a window's end the processor emits it (its grace plus idle flush). Together they bound the
    age of any restricted count the aggregator holds in memory (``state_age_seconds``).
    ``changelog_seconds`` is how long a state snapshot can stay on its changelog topic after it
    was written (retention.ms + segment.ms + the broker's retention check); a snapshot holds
    counts up to ``state_age_seconds`` old, so the oldest copy of a count anywhere is
    ``restricted_age_seconds`` = state age + changelog time, which must stay within
    ``bound_seconds`` (the issue's 2 h).
    """

    window_seconds: int = 60
    max_lag: int = 30
    ranges: tuple[tuple[int, int], ...] = ()
    far_min: int = 0   # 0: default_far_min(max_lag, far_max)
    far_max: int = 0   # 0: the largest that keeps restricted_age_seconds within bound_seconds
    # 2: the far band is published as an inner and an outer half (see far_bands), so the estimator
    # can tell chance from same-person pairs that thin out with the lag; 1: one band (before 2026-11).
    far_split: int = 2
    lateness_seconds: int = 300
    # Flows between sites: "camera" (every cross-site camera pair: right for a handful of sites),
    # "site" (one pseudo-camera per site, the site's occurrences summed: a chain's 50 x 49 site
    # pairs instead of a million camera pairs; camera pairs within a site as always), "off".
    # True / False are "camera" / "off" (before 2026-11-29 it was a bool).
    cross_site: bool | str = True
    bound_seconds: int = 7200
    processor_delay_seconds: int = 15
    changelog_seconds: int = 600
    # Published-tier protection (docs/PRIVACY.md): discrete Laplace scales of the noise the
    # combiner adds to each flow row's s and each footfall count. 0 = none (tests of the algebra).
    flow_noise_scale: float = 0.0
    footfall_noise_scale: float = 0.0
    total_noise_scale: float = 0.0   # window totals N (Q, Q*: 3x, 9x) before the published products

    def __post_init__(self) -> None:
        mode = {True: CAMERA_PAIRS, False: "off"}.get(self.cross_site, self.cross_site) \
            if isinstance(self.cross_site, bool) else self.cross_site
        if mode not in (CAMERA_PAIRS, SITE_PAIRS, "off"):
            raise SpecError(f"cross_site={self.cross_site!r}: 'camera', 'site' or 'off'")
        object.__setattr__(self, "cross_site", mode)
        # Defaults that depend on max_lag: the full range [0, L] and a far band starting at L + 1.
        if not self.ranges:
            object.__setattr__(self, "ranges", ((0, self.max_lag),))
        else:
            object.__setattr__(self, "ranges", tuple(sorted({(int(a), int(b)) for a, b in self.ranges})))
        w = self.window_seconds
        if not self.far_max and w > 0:
            budget = (self.bound_seconds - self.lateness_seconds - self.processor_delay_seconds
                      - self.changelog_seconds)
            object.__setattr__(self, "far_max", budget // w - 2)
        if not self.far_min:
            object.__setattr__(self, "far_min", default_far_min(self.max_lag, self.far_max))
        if not 1 <= w <= 3600 or 3600 % w:
            raise SpecError(f"window_seconds={w} must divide an hour, so windows never straddle the hourly components")
        if not 0 <= self.max_lag:
            raise SpecError("max_lag must be >= 0")
        for lo, hi in self.ranges:
            if not 0 <= lo <= hi <= self.max_lag:
                raise SpecError(f"SE range [{lo}, {hi}] must lie within the flow lags [0, {self.max_lag}]")
        if self.far_split not in (1, 2):
            raise SpecError(f"far_split={self.far_split}: the far band is published whole (1) or as two halves (2)")
        if self.far_split == 2 and self.far_max == self.far_min:
            raise SpecError("a far band split in two needs at least two lags (far_max > far_min)")
        if not self.max_lag < self.far_min <= self.far_max:
            raise SpecError(f"far band [{self.far_min}, {self.far_max}] must lie beyond max_lag={self.max_lag}: "
                            "kappa is measured on window pairs too far apart to hold one person's journey, and "
                            f"the state horizon far_max is limited by bound_seconds={self.bound_seconds}; lower "
                            "max_lag (or raise the bound, which keeps restricted counts longer)")
        if not all(0 <= x <= 1e6 for x in (self.flow_noise_scale, self.footfall_noise_scale, self.total_noise_scale)):
            raise SpecError("noise scales must be between 0 and 1e6")
        if min(self.lateness_seconds, self.processor_delay_seconds, self.changelog_seconds) < 0:
            raise SpecError("lateness_seconds, processor_delay_seconds and changelog_seconds must be >= 0")
        if self.restricted_age_seconds > self.bound_seconds:
            raise SpecError(
                f"restricted counts would live up to {self.restricted_age_seconds} s, over the bound of "
                f"{self.bound_seconds} s: (far_max + 2) * window_seconds + lateness_seconds + "
                f"processor_delay_seconds + changelog_seconds = ({self.far_max} + 2) * {w} + "
                f"{self.lateness_seconds} + {self.processor_delay_seconds} + {self.changelog_seconds}; "
                "lower far_max, lateness_seconds or the changelog's retention")

    @property
    def horizon(self) -> int:
        """H, in windows: the largest lag either stage multiplies."""
        return self.far_max

    @property
    def far_bands(self) -> tuple[tuple[int, int], ...]:
        """The published far bands, inner first: [far_min, far_max] whole, or its two halves (the
        outer one the larger when the lag count is odd).

        Why two: pairs of one person's captures further apart than any flow lag (visitors who go
        on to another site, long stays, staff) also land in the far band and make it look like
        more chance than there is. They thin out with the lag; chance does not. The estimator
        (pipeline/aggregator/estimate.py) uses the two halves to take most of them out.
        """
        if self.far_split == 1:
            return ((self.far_min, self.far_max),)
        mid = self.far_min + (self.far_max - self.far_min + 1) // 2
        return ((self.far_min, mid - 1), (mid, self.far_max))

    def far_band_of(self, d: int) -> int:
        """Index in :attr:`far_bands` of the far lag |d| (which must lie in [far_min, far_max])."""
        return 0 if self.far_split == 1 or d < self.far_bands[1][0] else 1

    @property
    def range_reach(self) -> int:
        """R: a window's range squares need the R windows after it."""
        return max(hi for _, hi in self.ranges)

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    @property
    def lateness_ms(self) -> int:
        return self.lateness_seconds * 1000

    @property
    def state_age_seconds(self) -> int:
        """Worst age (from the first capture it counts) of a window's counts when they are dropped.

        A window [t, t + w) reaches the aggregator about w + processor delay after t; it is
        dropped once the window H later is final, i.e. once a record of a window starting
        (H + 1) w + lateness after t has been seen, which itself arrives w + processor delay
        after its start. Hence (H + 2) w + lateness + processor delay.
        """
        return (self.far_max + 2) * self.window_seconds + self.lateness_seconds + self.processor_delay_seconds

    @property
    def restricted_age_seconds(self) -> int:
        """Worst age of any copy of a count: in memory, or in a snapshot on the changelog topic."""
        return self.state_age_seconds + self.changelog_seconds

    def fingerprint(self) -> str:
        """What both stages must agree on; carried by every partial and checked by the combiner."""
        r = ",".join(f"{a}-{b}" for a, b in self.ranges)
        noise = f";n{self.flow_noise_scale:g}-{self.footfall_noise_scale:g}-{self.total_noise_scale:g}" if (
            self.flow_noise_scale or self.footfall_noise_scale or self.total_noise_scale) else ""
        split = "" if self.far_split == 1 else f"/{self.far_bands[1][0]}"
        x = {CAMERA_PAIRS: "1", "off": "0", SITE_PAIRS: "s"}[self.cross_site]
        return (f"w{self.window_seconds};L{self.max_lag};r{r};f{self.far_min}-{self.far_max}{split};"
                f"x{x}{noise}")

    @property
    def site_pairs(self) -> bool:
        return self.cross_site == SITE_PAIRS

    def allows(self, a: Cam, b: Cam) -> bool:
        """Whether the ordered pair (a, b) gets components: distinct cameras of one parameter
        version (groups of different versions are unrelated); across sites camera pairs with
        ``cross_site`` "camera", site pseudo-cameras of two different sites with "site"."""
        if a == b or a[0] != b[0]:
            return False
        pa, pb = a[2] == SITE_CAMERA, b[2] == SITE_CAMERA
        if pa or pb:
            return pa and pb and a[1] != b[1] and self.cross_site == SITE_PAIRS
        return a[1] == b[1] or self.cross_site == CAMERA_PAIRS

    def hour_of(self, t_ms: int) -> int:
        return t_ms - t_ms % HOUR_MS

    def hour_closes_at(self, hour_ms: int) -> int:
        """Windows before this must be final before hour ``hour_ms``'s flow components are complete:
        the hour's last window plus H lags."""
        return hour_ms + HOUR_MS + self.horizon * self.window_ms


def complete_from(spec: AggregatorSpec, first_window_ms: int) -> tuple[int, int]:
    """After a cold start at ``first_window_ms``: the first hour whose flow components, and the
    first hour whose footfall, can be complete (an hour's flows pair its windows with the H
    windows before it; its footfall needs all of its own windows)."""
    def ceil_hour(t: int) -> int:
        return -(-t // HOUR_MS) * HOUR_MS

    return ceil_hour(first_window_ms + spec.horizon * spec.window_ms), ceil_hour(first_window_ms)


@dataclass(frozen=True)
class OccurrenceCell:
    """One restricted input record: occurrences of one group at one camera in one window
    (a ``GroupOccurrence`` from the processor, fragments of a window arriving as several)."""

    params_version: str
    site_id: str
    camera_id: str
    window_start_ms: int
    window_seconds: int
    group_id: int
    occurrences: int

    @property
    def cam(self) -> Cam:
        return (self.params_version, self.site_id, self.camera_id)

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> "OccurrenceCell":
        """From a decoded ``GroupOccurrence`` (``window_start`` as datetime or epoch millis)."""
        ws = r["window_start"]
        ws_ms = int(round(ws.timestamp() * 1000)) if hasattr(ws, "timestamp") else int(ws)
        return cls(str(r["params_version"]), str(r["site_id"]), str(r["camera_id"]), ws_ms,
                   int(r["window_seconds"]), int(r["group_id"]), int(r["occurrences"]))


@dataclass(frozen=True)
class Partial:
    """A restricted record from a group partition (stage 1) to the combiner (stage 2).

    * ``WINDOW``: the partition's share of one camera-window: ``occurrences`` = N^P(t), the
      occurrences of its groups, ``squares`` = Q^P(t) = sum over its groups of count^2.
    * ``RANGE``: for reference window ``time`` = t and each configured SE range r (in spec
      order), ``values[r]`` = Q*^P_r(t) = sum over its groups g of (sum_{d in r} X_g(t + d))^2.
    * ``COOCCURRENCE``: for the hour ``time`` and the ordered pair (camera -> dest), ``values`` =
      [S^P_0, ..., S^P_L, S^P_far...]: the co-occurrences of its groups per lag and in each far
      band (``spec.far_bands``, inner first).
    * ``PROGRESS``: every window before ``time`` is final in this partition, and every partial
      it implies was sent before this record. ``values`` = (first hour whose flow shares are
      complete, first hour whose footfall shares are complete): (0, 0) unless the partition
      started cold (see :class:`~pipeline.aggregator.components.GroupPartitionAggregator`).

    Restricted: per-camera-window totals are finer than anything analysts see. They live on a
    topic with the same age bound as the occurrences.
    """

    kind: str
    spec: str
    partition: int
    partitions: int
    params_version: str
    time_ms: int
    site_id: str = ""
    camera_id: str = ""
    dest_site_id: str = ""
    dest_camera_id: str = ""
    occurrences: int = 0
    squares: int = 0
    values: tuple[int, ...] = ()

    @property
    def cam(self) -> Cam:
        return (self.params_version, self.site_id, self.camera_id)

    @property
    def dest(self) -> Cam:
        return (self.params_version, self.dest_site_id, self.dest_camera_id)

    def to_record(self) -> dict[str, Any]:
        """The Avro ``AggregatorPartial`` record (schemas/avro/AggregatorPartial.avsc)."""
        for v in (self.occurrences, self.squares, *self.values):
            _check(v, INT64_MAX, "partial")
        return {"kind": self.kind, "spec": self.spec, "partition": self.partition, "partitions": self.partitions,
                "params_version": self.params_version, "time": self.time_ms, "site_id": self.site_id,
                "camera_id": self.camera_id, "dest_site_id": self.dest_site_id, "dest_camera_id": self.dest_camera_id,
                "occurrences": self.occurrences, "squares": self.squares, "values": list(self.values)}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> "Partial":
        t = r["time"]
        t_ms = int(round(t.timestamp() * 1000)) if hasattr(t, "timestamp") else int(t)
        return cls(str(r["kind"]), str(r["spec"]), int(r["partition"]), int(r["partitions"]),
                   str(r["params_version"]), t_ms, str(r["site_id"]), str(r["camera_id"]),
                   str(r["dest_site_id"]), str(r["dest_camera_id"]), int(r["occurrences"]), int(r["squares"]),
                   tuple(int(v) for v in r["values"]))


@dataclass(frozen=True)
class FlowComponent:
    """One published flow component: additive over hours, camera pairs and (before publication)
    group partitions. See docs/AGGREGATOR.md for each term.

    For ``kind`` = lag (d = lag_lo = lag_hi) and range ([lag_lo, lag_hi]), with t over the A
    windows of the hour and B*(t) = B's counts summed over the lags of the row:
    ``s`` = sum_t sum_g A_g(t) B*_g(t); ``nn`` = sum_t N_A(t) N_B*(t); ``qq`` = sum_t Q_A(t) Q_B*(t);
    ``qn`` = sum_t Q_A(t) N_B*(t)^2 + N_A(t)^2 Q_B*(t); ``nn2`` = sum_t (N_A(t) N_B*(t))^2.
    For ``kind`` = far: ``s`` and ``nn`` over the lags lag_lo <= |d| <= lag_hi, both signs; the
    variance terms are 0.
    """

    params_version: str
    window_seconds: int
    hour_ms: int
    origin_site: str
    origin_camera: str
    dest_site: str
    dest_camera: str
    kind: str
    lag_lo: int
    lag_hi: int
    s: int
    nn: int
    qq: int
    qn: int
    nn2: int
    version: int
    # Variance of the noise added to ``s`` (docs/PRIVACY.md, published tier), in thousandths:
    # additive like the components, so the estimator sums it with ``s`` for any roll-up.
    noise_var_milli: int = 0

    @property
    def key(self) -> tuple:
        """The identity a replay replaces (the ClickHouse sort key without ``version``)."""
        return (self.params_version, self.window_seconds, self.origin_site, self.origin_camera, self.dest_site,
                self.dest_camera, self.hour_ms, self.kind, self.lag_lo, self.lag_hi)

    @property
    def nn2_hi(self) -> int:
        return self.nn2 >> NN2_SHIFT

    @property
    def nn2_lo(self) -> int:
        return self.nn2 & NN2_LOW_MASK

    def checked(self) -> "FlowComponent":
        _check(self.s, INT64_MAX, "s")
        for name in ("nn", "qq", "qn"):
            _check(getattr(self, name), INT64_MAX, name)  # Avro long is signed
        _check(self.nn2_hi, INT64_MAX, "nn2")
        return self

    def to_record(self) -> dict[str, Any]:
        """The Avro ``FlowComponent`` record (schemas/avro/FlowComponent.avsc)."""
        self.checked()
        return {"params_version": self.params_version, "window_seconds": self.window_seconds, "hour": self.hour_ms,
                "origin_site": self.origin_site, "origin_camera": self.origin_camera, "dest_site": self.dest_site,
                "dest_camera": self.dest_camera, "kind": self.kind, "lag_lo": self.lag_lo, "lag_hi": self.lag_hi,
                "s": self.s, "nn": self.nn, "qq": self.qq, "qn": self.qn, "nn2_hi": self.nn2_hi,
                "nn2_lo": self.nn2_lo, "version": self.version, "noise_var_milli": self.noise_var_milli}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> "FlowComponent":
        h = r["hour"]
        h_ms = int(round(h.timestamp() * 1000)) if hasattr(h, "timestamp") else int(h)
        return cls(str(r["params_version"]), int(r["window_seconds"]), h_ms, str(r["origin_site"]),
                   str(r["origin_camera"]), str(r["dest_site"]), str(r["dest_camera"]), str(r["kind"]),
                   int(r["lag_lo"]), int(r["lag_hi"]), int(r["s"]), int(r["nn"]), int(r["qq"]), int(r["qn"]),
                   (int(r["nn2_hi"]) << NN2_SHIFT) + int(r["nn2_lo"]), int(r["version"]),
                   int(r.get("noise_var_milli", 0)))


@dataclass(frozen=True)
class FootfallComponent:
    """Occurrences (real + fictitious) of one camera-hour and how many of its windows had any;
    what ``footfall_hourly`` computes today from per-window cells."""

    params_version: str
    window_seconds: int
    hour_ms: int
    site_id: str
    camera_id: str
    occurrences: int
    windows: int
    version: int
    noise_var_milli: int = 0   # variance of the noise in ``occurrences``, in thousandths

    @property
    def key(self) -> tuple:
        return (self.params_version, self.window_seconds, self.site_id, self.camera_id, self.hour_ms)

    def to_record(self) -> dict[str, Any]:
        _check(self.occurrences, INT64_MAX, "occurrences")
        return {"params_version": self.params_version, "window_seconds": self.window_seconds, "hour": self.hour_ms,
                "site_id": self.site_id, "camera_id": self.camera_id, "occurrences": self.occurrences,
                "windows": self.windows, "version": self.version, "noise_var_milli": self.noise_var_milli}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> "FootfallComponent":
        h = r["hour"]
        h_ms = int(round(h.timestamp() * 1000)) if hasattr(h, "timestamp") else int(h)
        return cls(str(r["params_version"]), int(r["window_seconds"]), h_ms, str(r["site_id"]), str(r["camera_id"]),
                   int(r["occurrences"]), int(r["windows"]), int(r["version"]), int(r.get("noise_var_milli", 0)))


FLOW_COMPONENT_COLUMNS = ("params_version", "window_seconds", "hour", "origin_site", "origin_camera", "dest_site",
                          "dest_camera", "kind", "lag_lo", "lag_hi", "s", "nn", "qq", "qn", "nn2_hi", "nn2_lo",
                          "version", "noise_var_milli")
FOOTFALL_COMPONENT_COLUMNS = ("params_version", "window_seconds", "hour", "site_id", "camera_id", "occurrences",
                              "windows", "version", "noise_var_milli")


def flow_component_columns(rows: Iterable[FlowComponent]) -> list[list[Any]]:
    """Columnar data for ``flow_components`` (in FLOW_COMPONENT_COLUMNS order), for the
    Warehouse protocol's ``insert``; hours as UTC datetimes."""
    from datetime import datetime, timezone

    out: list[list[Any]] = [[] for _ in FLOW_COMPONENT_COLUMNS]
    for r in rows:
        r.checked()
        vals = (r.params_version, r.window_seconds, datetime.fromtimestamp(r.hour_ms / 1000, tz=timezone.utc),
                r.origin_site, r.origin_camera, r.dest_site, r.dest_camera, r.kind, r.lag_lo, r.lag_hi, r.s, r.nn,
                r.qq, r.qn, r.nn2_hi, r.nn2_lo, r.version, r.noise_var_milli)
        for col, v in zip(out, vals):
            col.append(v)
    return out


def footfall_component_columns(rows: Iterable[FootfallComponent]) -> list[list[Any]]:
    from datetime import datetime, timezone

    out: list[list[Any]] = [[] for _ in FOOTFALL_COMPONENT_COLUMNS]
    for r in rows:
        vals = (r.params_version, r.window_seconds, datetime.fromtimestamp(r.hour_ms / 1000, tz=timezone.utc),
                r.site_id, r.camera_id, r.occurrences, r.windows, r.version, r.noise_var_milli)
        for col, v in zip(out, vals):
            col.append(v)
    return out


@dataclass
class CoreStats:
    """Counters of one core (exported as metrics by the app; nothing per person)."""

    cells: int = 0
    occurrences: int = 0
    late_cells: int = 0
    late_occurrences: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    partials_out: int = 0
    rows_out: int = 0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def _check(v: int, limit: int, name: str) -> None:
    if not -limit - 1 <= v <= limit:
        raise ComponentOverflow(f"{name}={v} does not fit a signed 64-bit column; see docs/AGGREGATOR.md (limits)")
