"""Camera-to-camera flows estimated from the published flow components (``flow_components FINAL``).

Why components: the per-window group cells flows used to be computed from are linkable,
restricted data (issue 11). Analysts read only what the streaming aggregator publishes
(docs/AGGREGATOR.md): per ordered camera pair and hour, integer sums over all groups and windows,
one row per lag (``lag``), per configured SE range (``range``) and for the inner and outer far
bands (``far``) where chance is measured. Every row is additive over hours and camera pairs, so
a period of hours, a lag range or a roll-up to zones, stores and sites is a sum of rows.

The estimator is :mod:`pipeline.aggregator.estimate` (its docstring has the formulas,
docs/AGGREGATOR.md sections 7a and 7b the derivation and figures): sums over the pair's *active* hours (window
products above what fictitious persons alone give), kappa from the outer far band extrapolated
with the inner one, and an SE that carries kappa's sampling error and the published noise.
:func:`estimate_flows` reads per pair-hour sums from ClickHouse and runs that module's code;
:func:`flow_sql` is the same computation as one SELECT, for ``--show-sql``, Grafana and
docs/ANALYST_SQL.md (tests check the two agree, on the Debian server and on chdb).

When [min_lag, max_lag] is not a range the aggregator publishes exactly, the SE falls back to
the per-lag terms (the lags' residuals treated as independent) and the estimate says so
(``se_exact`` False). Roll-ups add the components of every active camera pair-hour of a zone
(store, site) pair before estimating, so they pool kappa; pairs that share a camera share its
chance co-occurrences, so the chance variance is scaled by the roll-up's design effect, measured
on the far bands (``pipeline.aggregator.estimate.design_effect``). Estimates never mix parameter
versions: every sum is filtered on one ``params_version``.

A flow here counts pairs of captures: a person seen at A and then at B within the lag range
counts once per such pair (twice if seen twice at B). The simulator's ground truth uses the
same definition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping, Sequence

from pipeline.aggregator.estimate import (FAR_EXTRAPOLATION_MAX, EstimatorOptions, PairSums, camera_pair_filter,
                                          hour_range_filter,
                                          component_sums, flow_from_sums)
from pipeline.sink.clickhouse import Warehouse

Z95 = 1.959963984540054
HOUR = 3600


class FlowQueryError(ValueError):
    """Bad flow query input (periods, lags, cameras) or missing warehouse data."""


@dataclass(frozen=True)
class CameraRef:
    site_id: str
    camera_id: str

    @property
    def key(self) -> str:
        return f"{self.site_id}/{self.camera_id}"

    @classmethod
    def parse(cls, text: str) -> "CameraRef":
        site, sep, cam = text.partition("/")
        if not sep or not site or not cam:
            raise FlowQueryError(f"camera {text!r} must be written SITE/CAMERA, e.g. site-a/entrance")
        return cls(site, cam)


@dataclass(frozen=True)
class FlowQuery:
    params_version: str
    cameras: tuple[CameraRef, ...]
    start: datetime
    end: datetime
    window_seconds: int = 60
    min_lag: int = 0
    max_lag: int = 30

    def __post_init__(self) -> None:
        if len(self.cameras) < 2:
            raise FlowQueryError("a flow needs at least two cameras")
        if len({c.key for c in self.cameras}) != len(self.cameras):
            raise FlowQueryError("cameras are listed twice")
        if self.end <= self.start:
            raise FlowQueryError(f"period end {self.end} is not after its start {self.start}")
        if not 1 <= self.window_seconds <= 86400:
            raise FlowQueryError("window_seconds must be between 1 and 86400")
        if not 0 <= self.min_lag <= self.max_lag <= 10_000:
            raise FlowQueryError(f"lag range [{self.min_lag}, {self.max_lag}] windows is invalid: "
                                 "need 0 <= min_lag <= max_lag <= 10000")

    @property
    def t_from(self) -> int:
        return _epoch(self.start)

    @property
    def t_to(self) -> int:
        return _epoch(self.end)

    @property
    def hours(self) -> tuple[int, int]:
        """[first hour, end hour) in epoch seconds: components are hourly, so a period is rounded
        out to the whole hours it touches (as component_sums and the footfall queries do)."""
        return self.t_from // HOUR * HOUR, -(-self.t_to // HOUR) * HOUR

    @property
    def camera_keys(self) -> list[str]:
        return [c.key for c in self.cameras]


@dataclass(frozen=True)
class FlowEstimate:
    origin: str
    destination: str
    lag: int | None          # None: summed over the lag range
    co_occurrences: float    # S
    chance: float
    kappa: float
    same_group_rate: float
    flow: float
    se: float
    se_exact: bool = True    # False: the lag range has no published SE range; per-lag terms summed
    hours: int = 0           # active pair-hours the estimate sums (of ``hours_seen`` with rows)
    hours_seen: int = 0

    @property
    def ci95(self) -> tuple[float, float]:
        return self.flow - Z95 * self.se, self.flow + Z95 * self.se


@dataclass(frozen=True)
class PublishedLags:
    """What the aggregator published for a version, window length and period: the flow lags,
    the exact-SE ranges and the far band (kappa). Read so that a question the components cannot
    answer is refused, not answered with a silently shorter lag range."""

    lags: frozenset[int]
    ranges: frozenset[tuple[int, int]]
    far: tuple[int, int] | None                      # the whole far band
    far_bands: tuple[tuple[int, int], ...] = ()      # as published: inner and outer, or one band

    @property
    def max_lag(self) -> int | None:
        return max(self.lags) if self.lags else None


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def _in_list(prefix: str, values: Sequence[str]) -> tuple[str, dict[str, object]]:
    """An IN-list of placeholders (one per value) and their parameters: names never enter SQL."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f"%({k})s" for k in params), params


def _component_filter(db: str, q: FlowQuery, final: bool = True) -> tuple[str, dict[str, object]]:
    """FROM ... FINAL WHERE ... of one question: version, window length, hours, camera pairs.

    FINAL because flow_components is a ReplacingMergeTree: a replayed hour's rows count once
    (``final=False`` only for questions about which row identities exist)."""
    pairs, params = camera_pair_filter(q.camera_keys, "cam")
    h_from, h_to = q.hours
    params.update({"version": q.params_version, "w": q.window_seconds, "h_from": h_from, "h_to": h_to,
                   "lag_lo": q.min_lag, "lag_hi": q.max_lag})
    sql = (f"FROM {db}.flow_components{' FINAL' if final else ''} WHERE params_version = %(version)s "
           f"AND window_seconds = %(w)s AND {hour_range_filter('h_from', 'h_to')} AND {pairs}")
    return sql, params


_PAIR = "concat(origin_site, '/', origin_camera) AS cam_a, concat(dest_site, '/', dest_camera) AS cam_b"
_NN2 = "toFloat64(sum(nn2_hi)) * 4294967296 + sum(nn2_lo)"   # nn2 = nn2_hi * 2^32 + nn2_lo


def _six(cond: str, suffix: str) -> str:
    """s, nn, qq, qn, nn2 and noise variance summed over the rows matching ``cond`` (aliases never
    reuse a column name: ClickHouse aliases are global to a SELECT, and 18.16 would nest the
    aggregates)."""
    return (f"sumIf(s, {cond}) AS s_{suffix}, sumIf(nn, {cond}) AS nn_{suffix}, "
            f"toFloat64(sumIf(qq, {cond})) AS qq_{suffix}, toFloat64(sumIf(qn, {cond})) AS qn_{suffix}, "
            f"toFloat64(sumIf(nn2_hi, {cond})) * 4294967296 + sumIf(nn2_lo, {cond}) AS nn2_{suffix}, "
            f"sumIf(noise_var_milli, {cond}) / 1000 AS nv_{suffix}")


def _far3(cond: str, suffix: str) -> str:
    return (f"sumIf(s, {cond}) AS s_{suffix}, sumIf(nn, {cond}) AS nn_{suffix}, "
            f"sumIf(noise_var_milli, {cond}) / 1000 AS nv_{suffix}")


_IN_LAGS = "kind = 'lag' AND lag_lo >= %(lag_lo)s AND lag_lo <= %(lag_hi)s"
_IS_RANGE = "kind = 'range' AND lag_lo = %(lag_lo)s AND lag_hi = %(lag_hi)s"
_FAR_IN, _FAR_OUT = "kind = 'far' AND lag_lo < split", "kind = 'far' AND lag_lo >= split"
_TERMS = ("s", "nn", "qq", "qn", "nn2", "nv")


_SITES = "origin_site AS site_a, dest_site AS site_b"


def _per_hour_sql(base: str) -> str:
    """Per camera pair-hour: the lag rows over [lo, hi], the range row [lo, hi] (``n_r`` = whether
    it was published), the inner and outer far bands. ``nn_l`` is what makes an hour active."""
    return (f"SELECT {_PAIR}, {_SITES}, hour AS h, {_six(_IN_LAGS, 'l')}, {_six(_IS_RANGE, 'r')}, "
            f"countIf({_IS_RANGE}) AS n_r, {_far3(_FAR_IN, 'fi')}, {_far3(_FAR_OUT, 'fo')} "
            f"{base} GROUP BY cam_a, cam_b, site_a, site_b, h")


def flow_sql(db: str, q: FlowQuery, *, by_lag: bool = False, sites: bool = False) -> tuple[str, dict[str, object]]:
    """One SELECT estimating every ordered camera pair of ``q`` (and, with ``by_lag``, every lag)
    from ``flow_components FINAL``: the computation of :func:`estimate_flows` at camera level,
    with the default options (:class:`EstimatorOptions`).

    Self-contained: the same-group rate and the fictitious persons per window (for the
    active-hour floor) come from ``privacy_params``, the split between the far bands from the
    published rows, so Grafana can run it with only the period, cameras and lags as variables.
    Returns SQL with %(name)s placeholders plus the values; `flowctl flows --show-sql` prints it
    with the values filled in, for analysts who run it from clickhouse-client or a BI tool.
    Columns: cam_a, cam_b[, lag], s, chance, kappa, p, flow, se, se_exact, hours, hours_seen;
    with ``sites`` the roll-up to site pairs (site_a, site_b, ...: the camera pairs' active hours
    summed, kappa pooled, as ``estimate_flows(level_of=...)`` does).
    """
    opts = EstimatorOptions()
    base, params = _component_filter(db, q)
    pair_keys = "site_a, site_b" if sites else "cam_a, cam_b"
    keys = f"{pair_keys}, lag" if by_lag else pair_keys
    split = (f"(SELECT if(count() = 2 AND min(lag_hi) + 1 = max(lag_lo), max(lag_lo), -1) FROM "
             f"(SELECT DISTINCT lag_lo, lag_hi {base.replace(' FINAL', '')} AND kind = 'far'))")
    fict = (f"(SELECT argMax(n_groups, registered_at) * argMax(fictitious_per_group, registered_at) "
            f"FROM {db}.privacy_params WHERE params_version = %(version)s)")
    floor = (f"{opts.active_factor:g} * (3600 / %(w)s) * (%(lag_hi)s - %(lag_lo)s + 1) * pow({fict}, 2)")
    per_hour = f"WITH {split} AS split " + _per_hour_sql(base)
    if by_lag:
        # one lag's own row is its exact range; activity and far bands come from its pair-hour
        per_lag = (f"SELECT {_PAIR}, hour AS h, lag_lo AS lag, {_six('1', 'g')} {base} AND {_IN_LAGS} "
                   f"GROUP BY cam_a, cam_b, h, lag")
        joined = (f"SELECT cam_a, cam_b, site_a, site_b, lag, h, " + ", ".join(f"{t}_g AS {t}_x" for t in _TERMS) +
                  ", 1 AS has_r, nn_l, s_fi, nn_fi, nv_fi, s_fo, nn_fo, nv_fo "
                  f"FROM ({per_lag}) AS g ANY LEFT JOIN ({per_hour}) AS ph USING (cam_a, cam_b, h)")
    else:
        joined = (f"SELECT cam_a, cam_b, site_a, site_b, h, " + ", ".join("nn_l AS nn_x" if t == "nn" else
                                                           f"if(n_r > 0, {t}_r, {t}_l) AS {t}_x" for t in _TERMS) +
                  ", n_r > 0 AS has_r, nn_l, s_fi, nn_fi, nv_fi, s_fo, nn_fo, nv_fo FROM (" + per_hour + ")")
    # Sums over the active hours. nn is always the lag rows' (equal to the range row's); s, qq, qn,
    # nn2 and the noise come from the range row when every active hour has one (min(has_r)).
    summed = (f"SELECT {keys}, sum(nn_x) AS nn_t, "
              + ", ".join(f"sum({t}_x) AS {t}_t" for t in ("s", "qq", "qn", "nn2", "nv")) +
              ", min(has_r) AS exact, count() AS hours_used, sum(s_fi) AS sfi, sum(nn_fi) AS nfi, sum(nv_fi) AS vfi, "
              f"sum(s_fo) AS sfo, sum(nn_fo) AS nfo, sum(nv_fo) AS vfo FROM ({joined}) "
              f"WHERE nn_l > {floor} GROUP BY {keys}")
    seen = (f"SELECT {keys}, count() AS hours_all FROM ({joined}) GROUP BY {keys}")
    if sites:
        # The roll-up's design effect (pipeline.aggregator.estimate.design_effect): far-band
        # residuals of every active camera pair-hour around the pair's own level, summed per site
        # pair and hour, squared, over the same residuals squared one by one.
        # each pair's level is its level of the day (UTC), as in design_effect
        act = (f"SELECT cam_a, cam_b, site_a, site_b, h, intDiv(toUInt32(h), 86400) AS d, s_fi + s_fo AS sf, "
               f"nn_fi + nn_fo AS nf FROM ({per_hour}) WHERE nn_l > {floor}")
        own_k = (f"SELECT cam_a, cam_b, d, if(sum(nf) = 0, 0, sum(sf) / sum(nf)) AS k_i FROM ({act}) "
                 f"GROUP BY cam_a, cam_b, d")
        res = (f"SELECT site_a, site_b, h, sum(e) AS e_h, sum(e * e) AS e_sq FROM (SELECT site_a, site_b, h, "
               f"sf - k_i * nf AS e FROM ({act}) AS x ANY LEFT JOIN ({own_k}) AS y USING (cam_a, cam_b, d)) "
               f"GROUP BY site_a, site_b, h")
        n_pairs = f"SELECT site_a, site_b, uniqExact(cam_a, cam_b) AS n_pairs FROM ({act}) GROUP BY site_a, site_b"
        deff = (f"SELECT site_a, site_b, if(n_pairs < 2 OR own = 0, 1, greatest(1, tot / own)) AS deff FROM "
                f"(SELECT site_a, site_b, sum(e_h * e_h) AS tot, sum(e_sq) AS own FROM ({res}) GROUP BY site_a, site_b) "
                f"AS r ANY LEFT JOIN ({n_pairs}) AS n USING (site_a, site_b)")
        summed = f"SELECT * FROM ({summed}) AS t ANY LEFT JOIN ({deff}) AS d USING (site_a, site_b)"
    else:
        summed = f"SELECT *, 1 AS deff FROM ({summed})"
    p = (f"(SELECT argMax(same_group_rate, registered_at) FROM {db}.privacy_params "
         f"WHERE params_version = %(version)s)")
    lam = f"greatest(-{FAR_EXTRAPOLATION_MAX:g}, least({FAR_EXTRAPOLATION_MAX:g}, 2 * p - 0.5))"
    two = "nfi > 0"
    with_kappa = (f"SELECT {keys}, s_t, nn_t, qq_t, qn_t, nn2_t, nv_t, exact, hours_used, deff, {p} AS p, {lam} AS lam, "
                  f"if({two}, (1 + lam) * sfo / nfo - lam * sfi / nfi, sfo / nfo) AS kappa, "
                  f"if({two}, pow(1 + lam, 2) / nfo + pow(lam, 2) / nfi, 1 / nfo) AS c_k, "
                  f"if({two}, pow(1 + lam, 2) * vfo / pow(nfo, 2) + pow(lam, 2) * vfi / pow(nfi, 2), "
                  f"vfo / pow(nfo, 2)) AS far_noise FROM ({summed})")
    estimate = (f"SELECT {keys}, s_t, kappa * nn_t AS chance, kappa, p, "
                f"(s_t - kappa * nn_t) / (p - kappa) AS fl, "
                f"kappa * qq_t - pow(kappa, 2) * qn_t + pow(kappa, 3) * nn2_t AS var0, "
                f"(1 + nn_t * c_k) * deff AS kappa_term, nv_t + nn_t * nn_t * far_noise AS noise, exact, hours_used "
                f"FROM ({with_kappa})")
    sql = (f"SELECT {keys}, s_t AS s, chance, kappa, p, fl AS flow, "
           f"sqrt((greatest(var0, 0) * kappa_term + noise) / pow(p - kappa, 2) + greatest(fl, 0) * (1 - p) / p) AS se, "
           f"exact AS se_exact, hours_used AS hours, hours_all AS hours_seen "
           f"FROM ({estimate}) AS e ANY LEFT JOIN ({seen}) AS n USING ({keys}) ORDER BY {keys}")
    return sql, params


def render_sql(sql: str, params: dict[str, object]) -> str:
    """The statement with values filled in (for printing; execution keeps them as parameters)."""
    from pipeline.sink.clickhouse import substitute

    return substitute(sql, params)


def registered_params(wh: Warehouse, version: str) -> tuple[float, float]:
    """(same-group rate p, expected fictitious occurrences per camera-window) of a registered
    parameter set."""
    rows = wh.rows(f"SELECT argMax(same_group_rate, registered_at), "
                   f"argMax(n_groups, registered_at) * argMax(fictitious_per_group, registered_at) "
                   f"FROM {wh.database}.privacy_params WHERE params_version = %(v)s GROUP BY params_version",
                   {"v": version})
    if not rows:
        raise FlowQueryError(f"privacy parameter set {version!r} is not registered in {wh.database}.privacy_params; "
                             f"run `flowctl params register --params FILE` (or the simulator) first")
    return float(rows[0][0]), float(rows[0][1])


def registered_rate(wh: Warehouse, version: str) -> float:
    return registered_params(wh, version)[0]


def published_lags(wh: Warehouse, q: FlowQuery) -> PublishedLags:
    """The lags, SE ranges and far band the aggregator published for ``q``'s version, window
    length, hours and cameras (distinct row identities: no FINAL needed)."""
    base, params = _component_filter(wh.database, q, final=False)
    rows = wh.rows(f"SELECT kind, lag_lo, lag_hi {base} GROUP BY kind, lag_lo, lag_hi", params)
    lags = frozenset(int(lo) for kind, lo, _ in rows if kind == "lag")
    ranges = frozenset((int(lo), int(hi)) for kind, lo, hi in rows if kind == "range")
    far = sorted((int(lo), int(hi)) for kind, lo, hi in rows if kind == "far")
    whole = (min(lo for lo, _ in far), max(hi for _, hi in far)) if far else None
    return PublishedLags(lags, ranges, whole, tuple(far))


def _check_lags(q: FlowQuery, pub: PublishedLags) -> None:
    if pub.max_lag is not None and q.max_lag > pub.max_lag:
        raise FlowQueryError(f"the aggregator publishes lags 0 to {pub.max_lag} windows for parameter set "
                             f"{q.params_version!r}; --max-lag {q.max_lag} would silently drop the longer transits "
                             f"(raise aggregator.max_lag_windows to publish them)")


def pool(xs: Iterable[PairSums]) -> PairSums:
    """The components of several camera pairs as one: every term (noise variances included) is a
    sum, so pairs add up, and kappa = sum s_far / sum nn_far is pooled over them; the SE is exact
    only if it is for every pair. Without the roll-up's design effect, which needs the pairs' hours
    (``component_sums(level_of=...)`` / ``sum_rows(level_of=...)`` compute roll-ups with it)."""
    xs = list(xs)
    terms = {f.name: sum(getattr(x, f.name) for x in xs) for f in fields(PairSums)
             if f.name not in ("se_exact", "design_effect")}
    return PairSums(**terms, se_exact=all(x.se_exact for x in xs))


def _estimate(key: tuple, x: PairSums, p: float, lam: float | None) -> FlowEstimate:
    a, b, *lag = key
    kappa, chance, flow, se = flow_from_sums(x, p, far_extrapolation=lam)
    return FlowEstimate(a, b, lag[0] if lag else None, float(x.s), finite(chance), finite(kappa), p, finite(flow),
                        finite(se), x.se_exact, x.hours, x.hours_seen)


def site_granular(level_of: Mapping[str, str], cameras: Sequence[str]) -> dict[str, str] | None:
    """site -> label when ``level_of`` gives every camera of a site the same label (the site level,
    or the whole chain), else None (zones and stores cut through sites)."""
    out: dict[str, str] = {}
    for c in cameras:
        site = c.partition("/")[0]
        label = level_of.get(c, c)
        if out.setdefault(site, label) != label:
            return None
    return out


def estimate_flows(wh: Warehouse, q: FlowQuery, *, by_lag: bool = False,
                   level_of: Mapping[str, str] | None = None,
                   options: EstimatorOptions | None = None, whole_sites: bool = False) -> list[FlowEstimate]:
    """Every ordered pair of ``q.cameras`` (or, with ``level_of``, of their zones, stores or
    sites) that has published components in the period; with ``by_lag`` one estimate per lag.
    ``options`` default to the parameter set's fictitious rate and the estimator's defaults.

    ``whole_sites``: the caller says ``q.cameras`` are every camera of their sites with data (a
    question asked of sites, not of chosen cameras). A site- or chain-level question (``level_of``
    constant within each site) whose lag range is a published SE range then reads the site
    roll-ups (pipeline/analytics/rollups.py) when they cover every site and day of the period:
    the same numbers from ~1/400 of the rows."""
    p, fictitious = registered_params(wh, q.params_version)
    # the roll-ups were built with the parameter set's own activity floor: not for other options
    use_rollups = whole_sites and level_of is not None and options is None
    options = options or EstimatorOptions(fictitious_per_window=fictitious, windows_per_hour=3600 // q.window_seconds)
    sums = _rollup_sums(wh, q, by_lag, level_of) if use_rollups else None
    if sums is None:
        _check_lags(q, published_lags(wh, q))
        keys = q.camera_keys
        by_site = site_granular(level_of, keys) if whole_sites and level_of is not None else None
        if by_site is not None:
            # whole sites: their cross-site flows published per site pair (aggregator.cross_site
            # "site", camera id empty) belong to the question too
            whole = {f"{s}/": label for s, label in by_site.items()}
            keys, level_of = keys + list(whole), {**level_of, **whole}
        sums = component_sums(wh, q.params_version, keys, q.start, q.end, q.window_seconds, q.min_lag,
                              q.max_lag, by_lag=by_lag, options=options, level_of=level_of)
    return [_estimate(k, sums[k], p, options.far_extrapolation) for k in sorted(sums)]


def _rollup_sums(wh: Warehouse, q: FlowQuery, by_lag: bool,
                 level_of: Mapping[str, str]) -> dict[tuple, PairSums] | None:
    """The question's sums from the site roll-ups, or None when they cannot answer it exactly
    (roll-ups are built only for a lag range the aggregator publishes as an SE range)."""
    from pipeline.analytics import rollups

    by_site = site_granular(level_of, q.camera_keys)
    h0, h1 = q.hours
    # whole UTC days only: the design effect's residuals are taken around each camera pair's level
    # of the day, which for part of a day the camera path measures on that part alone
    if by_site is None or h0 % 86400 or h1 % 86400:
        return None
    first = datetime.fromtimestamp(h0, timezone.utc).date()
    end = datetime.fromtimestamp(h1 - 1, timezone.utc).date() + timedelta(days=1)
    sites = sorted(by_site)
    if not rollups.covered(wh, q.params_version, q.window_seconds, (q.min_lag, q.max_lag), sites, first, end):
        return None
    return rollups.rollup_sums(wh, q.params_version, sites, h0, h1, window_seconds=q.window_seconds,
                               lag_range=(q.min_lag, q.max_lag), by_lag=by_lag, level_of_site=by_site)


def finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else float("nan")


def cameras_with_data(wh: Warehouse, version: str, start: datetime, end: datetime,
                      sites: Sequence[str] = ()) -> list[CameraRef]:
    """Cameras with published footfall for ``version`` in the hours of the period (optionally of
    some sites). DISTINCT over the sort key, so replayed rows need no FINAL."""
    t0 = _epoch(start)
    where = ["params_version = %(v)s", "hour >= toDateTime(%(a)s)", "hour < toDateTime(%(b)s)"]
    params: dict[str, object] = {"v": version, "a": t0 - t0 % HOUR, "b": _epoch(end)}
    if sites:
        names, values = _in_list("s", sites)
        where.append(f"site_id IN ({names})")
        params.update(values)
    rows = wh.rows(f"SELECT DISTINCT site_id, camera_id FROM {wh.database}.footfall_components "
                   f"WHERE {' AND '.join(where)} ORDER BY site_id, camera_id", params)
    return [CameraRef(str(s), str(c)) for s, c in rows]
