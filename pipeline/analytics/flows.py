"""Camera-to-camera flows estimated from the published flow components (``flow_components FINAL``).

Why components: the per-window group cells flows used to be computed from are linkable,
restricted data (issue 11). Analysts read only what the streaming aggregator publishes
(docs/AGGREGATOR.md): per ordered camera pair and hour, integer sums over all groups and windows,
one row per lag (``lag``), per configured SE range (``range``) and for the far band (``far``)
where chance is measured. Every row is additive over hours and camera pairs, so a period of
hours, a lag range or a roll-up to zones, stores and sites is a sum of rows:

    S      = the range row [min_lag, max_lag]'s s, else the sum of the lag rows' s over those lags
    NN     = sum of the lag rows' nn over the same lags
    kappa  = sum of the far rows' s / sum of the far rows' nn
    chance = kappa * NN
    var0   = kappa * qq - kappa^2 * qn + kappa^3 * nn2   (the range row [min_lag, max_lag], else per-lag rows)
    noise  = noise variance of S + (NN / NN_far)^2 * noise variance of the far rows  (noise_var_milli / 1000)
    flow   = (S - chance) / (p - kappa)
    se     = sqrt((max(var0, 0) * (1 + NN / NN_far) + noise) / (p - kappa)^2 + max(flow, 0) * (1 - p) / p)

kappa is the probability that two unrelated occurrences share a group, measured on window pairs
too far apart to hold one person's journey; a person who really goes from A to B adds the
same-group rate p to S and kappa to chance, hence the divisor. The factor (1 + NN / NN_far) is
kappa's own sampling error; ``noise`` is the published tier's protective noise (issue 11 item 3),
whose variance each row carries. The sums and formulas are those of
:mod:`pipeline.aggregator.estimate` (``component_sums``, ``flow_from_sums``), which this module
calls, so the CLI, the report and the aggregator's tests share one estimator; :func:`flow_sql`
is the same computation as one SELECT, for ``--show-sql``, Grafana and docs/ANALYST_SQL.md
(tests check the two agree).

When [min_lag, max_lag] is not a range the aggregator publishes exactly, the SE falls back to
the per-lag terms (the lags' residuals treated as independent) and the estimate says so
(``se_exact`` False). Roll-ups add the components of every camera pair of a zone (store, site)
pair before estimating, so they pool kappa; their variance terms add as if the pairs were
independent, which slightly understates the error when pairs share a camera. Estimates never
mix parameter versions: every sum is filtered on one ``params_version``.

A flow here counts pairs of captures: a person seen at A and then at B within the lag range
counts once per such pair (twice if seen twice at B). The simulator's ground truth uses the
same definition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Iterable, Mapping, Sequence

from pipeline.aggregator.estimate import PairSums, component_sums, flow_from_sums
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
    far: tuple[int, int] | None

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
    cams, params = _in_list("cam", q.camera_keys)
    h_from, h_to = q.hours
    params.update({"version": q.params_version, "w": q.window_seconds, "h_from": h_from, "h_to": h_to,
                   "lag_lo": q.min_lag, "lag_hi": q.max_lag})
    sql = (f"FROM {db}.flow_components{' FINAL' if final else ''} WHERE params_version = %(version)s "
           f"AND window_seconds = %(w)s AND hour >= toDateTime(%(h_from)s) AND hour < toDateTime(%(h_to)s) "
           f"AND concat(origin_site, '/', origin_camera) IN ({cams}) "
           f"AND concat(dest_site, '/', dest_camera) IN ({cams})")
    return sql, params


_PAIR = "concat(origin_site, '/', origin_camera) AS cam_a, concat(dest_site, '/', dest_camera) AS cam_b"
_NN2 = "toFloat64(sum(nn2_hi)) * 4294967296 + sum(nn2_lo)"   # nn2 = nn2_hi * 2^32 + nn2_lo


def _terms_sql(base: str, by_lag: bool) -> str:
    """Per pair (and lag): S (``s_t``), NN, the variance terms qq_t, qn_t, nn2_t and the published
    noise's variance in S (``nv_t``), with ``exact`` = 1 when the variance terms are exact: a
    single lag's own row, or the range row when [lo, hi] is a published SE range (whose ``s``
    carries one noise draw per hour, not one per lag); otherwise the per-lag rows summed (lags
    treated as independent)."""
    lag, keys = (", lag_lo AS lag", "cam_a, cam_b, lag") if by_lag else ("", "cam_a, cam_b")
    lags = (f"SELECT {_PAIR}{lag}, sum(s) AS s_lag, sum(nn) AS nn_sum, toFloat64(sum(qq)) AS qq_lag, "
            f"toFloat64(sum(qn)) AS qn_lag, {_NN2} AS nn2_lag, sum(noise_var_milli) / 1000 AS nv_lag {base} "
            f"AND kind = 'lag' AND lag_lo >= %(lag_lo)s AND lag_lo <= %(lag_hi)s GROUP BY {keys}")
    if by_lag:
        return (f"SELECT {keys}, s_lag AS s_t, nn_sum, qq_lag AS qq_t, qn_lag AS qn_t, nn2_lag AS nn2_t, "
                f"nv_lag AS nv_t, 1 AS exact FROM ({lags})")
    rng = (f"SELECT {_PAIR}, sum(s) AS s_r, toFloat64(sum(qq)) AS qq_r, toFloat64(sum(qn)) AS qn_r, "
           f"{_NN2} AS nn2_r, sum(noise_var_milli) / 1000 AS nv_r, count() AS n_range {base} AND kind = 'range' "
           f"AND lag_lo = %(lag_lo)s AND lag_hi = %(lag_hi)s GROUP BY cam_a, cam_b")
    picked = ", ".join(f"if(n_range > 0, {x}_r, {x}_lag) AS {x}_t" for x in ("s", "qq", "qn", "nn2", "nv"))
    return (f"SELECT {keys}, nn_sum, {picked}, n_range > 0 AS exact "
            f"FROM ({lags}) AS l ANY LEFT JOIN ({rng}) AS r USING (cam_a, cam_b)")


def flow_sql(db: str, q: FlowQuery, *, by_lag: bool = False) -> tuple[str, dict[str, object]]:
    """One SELECT estimating every ordered camera pair of ``q`` (and, with ``by_lag``, every lag)
    from ``flow_components FINAL``: the computation of :func:`estimate_flows` at camera level.

    Returns SQL with %(name)s placeholders plus the values; `flowctl flows --show-sql` prints it
    with the values filled in, for analysts who run it from clickhouse-client or a BI tool.
    Columns: cam_a, cam_b[, lag], s, chance, kappa, p, flow, se, se_exact. Aliases never reuse
    a column name (ClickHouse aliases are global to a SELECT; 18.16 would nest the aggregates).
    The SE adds the published noise's variance: S's own, and the far band's through kappa
    (times (NN / NN_far)^2).
    """
    base, params = _component_filter(db, q)
    keys = "cam_a, cam_b, lag" if by_lag else "cam_a, cam_b"
    far = (f"SELECT {_PAIR}, sum(s) AS s_far, sum(nn) AS nn_far, sum(noise_var_milli) / 1000 AS nv_far {base} "
           f"AND kind = 'far' GROUP BY cam_a, cam_b")
    p = (f"(SELECT argMax(same_group_rate, registered_at) FROM {db}.privacy_params "
         f"WHERE params_version = %(version)s)")
    with_kappa = (f"SELECT {keys}, s_t, nn_sum, qq_t, qn_t, nn2_t, nv_t, exact, nn_far, nv_far, "
                  f"s_far / nn_far AS kappa, {p} AS p "
                  f"FROM ({_terms_sql(base, by_lag)}) AS t ANY LEFT JOIN ({far}) AS f USING (cam_a, cam_b)")
    estimate = (f"SELECT {keys}, s_t, kappa * nn_sum AS chance, kappa, p, "
                f"(s_t - kappa * nn_sum) / (p - kappa) AS fl, "
                f"kappa * qq_t - pow(kappa, 2) * qn_t + pow(kappa, 3) * nn2_t AS var0, "
                f"1 + nn_sum / nn_far AS kappa_term, "
                f"nv_t + if(nn_far > 0, pow(nn_sum / nn_far, 2) * nv_far, 0) AS noise, exact FROM ({with_kappa})")
    sql = (f"SELECT {keys}, s_t AS s, chance, kappa, p, fl AS flow, "
           f"sqrt((greatest(var0, 0) * kappa_term + noise) / pow(p - kappa, 2) + greatest(fl, 0) * (1 - p) / p) AS se, "
           f"exact AS se_exact FROM ({estimate}) ORDER BY {keys}")
    return sql, params


def render_sql(sql: str, params: dict[str, object]) -> str:
    """The statement with values filled in (for printing; execution keeps them as parameters)."""
    from pipeline.sink.clickhouse import substitute

    return substitute(sql, params)


def registered_rate(wh: Warehouse, version: str) -> float:
    rows = wh.rows(f"SELECT argMax(same_group_rate, registered_at) FROM {wh.database}.privacy_params "
                   f"WHERE params_version = %(v)s GROUP BY params_version", {"v": version})
    if not rows:
        raise FlowQueryError(f"privacy parameter set {version!r} is not registered in {wh.database}.privacy_params; "
                             f"run `flowctl params register --params FILE` (or the simulator) first")
    return float(rows[0][0])


def published_lags(wh: Warehouse, q: FlowQuery) -> PublishedLags:
    """The lags, SE ranges and far band the aggregator published for ``q``'s version, window
    length, hours and cameras (distinct row identities: no FINAL needed)."""
    base, params = _component_filter(wh.database, q, final=False)
    rows = wh.rows(f"SELECT kind, lag_lo, lag_hi {base} GROUP BY kind, lag_lo, lag_hi", params)
    lags = frozenset(int(lo) for kind, lo, _ in rows if kind == "lag")
    ranges = frozenset((int(lo), int(hi)) for kind, lo, hi in rows if kind == "range")
    far = sorted((int(lo), int(hi)) for kind, lo, hi in rows if kind == "far")
    return PublishedLags(lags, ranges, far[0] if far else None)


def _check_lags(q: FlowQuery, pub: PublishedLags) -> None:
    if pub.max_lag is not None and q.max_lag > pub.max_lag:
        raise FlowQueryError(f"the aggregator publishes lags 0 to {pub.max_lag} windows for parameter set "
                             f"{q.params_version!r}; --max-lag {q.max_lag} would silently drop the longer transits "
                             f"(raise aggregator.max_lag_windows to publish them)")


def pool(xs: Iterable[PairSums]) -> PairSums:
    """The components of several camera pairs as one: every term (noise variances included) is a
    sum, so pairs add up, and kappa = sum s_far / sum nn_far is pooled over them; the SE is exact
    only if it is for every pair."""
    xs = list(xs)
    terms = {f.name: sum(getattr(x, f.name) for x in xs) for f in fields(PairSums) if f.name != "se_exact"}
    return PairSums(**terms, se_exact=all(x.se_exact for x in xs))


def roll_up(sums: Mapping[tuple, PairSums], level_of: Mapping[str, str]) -> dict[tuple, PairSums]:
    """Per (origin label, destination label[, lag]): the pooled components of its camera pairs
    (``level_of``: camera key -> zone, store or site label; cameras not in it stay on their own)."""
    groups: dict[tuple, list[PairSums]] = {}
    for (a, b, *lag), x in sums.items():
        groups.setdefault((level_of.get(a, a), level_of.get(b, b), *lag), []).append(x)
    return {k: pool(v) for k, v in groups.items()}


def _estimate(key: tuple, x: PairSums, p: float) -> FlowEstimate:
    a, b, *lag = key
    kappa, chance, flow, se = flow_from_sums(x, p)
    return FlowEstimate(a, b, lag[0] if lag else None, float(x.s), finite(chance), finite(kappa), p, finite(flow),
                        finite(se), x.se_exact)


def estimate_flows(wh: Warehouse, q: FlowQuery, *, by_lag: bool = False,
                   level_of: Mapping[str, str] | None = None) -> list[FlowEstimate]:
    """Every ordered pair of ``q.cameras`` (or, with ``level_of``, of their zones, stores or
    sites) that has published components in the period; with ``by_lag`` one estimate per lag."""
    p = registered_rate(wh, q.params_version)
    _check_lags(q, published_lags(wh, q))
    sums = component_sums(wh, q.params_version, q.camera_keys, q.start, q.end, q.window_seconds, q.min_lag,
                          q.max_lag, by_lag=by_lag)
    if level_of:
        sums = roll_up(sums, level_of)
    return [_estimate(k, sums[k], p) for k in sorted(sums)]


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
