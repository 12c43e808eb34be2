"""Camera-to-camera flows estimated from anonymous group co-occurrences, in ClickHouse SQL.

Why statistics and not matching: the warehouse holds, per camera and window, how many
occurrences each of the n_groups anonymity groups had (real persons plus fictitious ones). A
person who walks from camera A to camera B shows up in the same group at both with the
measured same-group rate p, and in an unrelated group otherwise. Nothing links the two
occurrences, so flows are estimated from how much more often groups co-occur at A and, a lag
later, at B than chance predicts:

    S      = sum over windows t, lags d in [min_lag, max_lag], groups g of A_g(t) * B_g(t + d)
    kappa  = (sum_g a_g b_g - S_near) / (sum_g a_g * sum_g b_g - NN_near)
             (a_g, b_g: group totals of the period, minus the window pairs within max_lag either way)
    chance = kappa * sum_t N_A(t) * N_B*(t)                  (N_B*(t) = B's total over t's lag range)
    flow   = (S - chance) / (p - kappa)

kappa is the probability that two unrelated occurrences share a group (1/n_groups for balanced
groups), computed from the observed group distributions; a flow person contributes p to S and
kappa to chance, hence the divisor. Fictitious persons are independent of everything, so they
only enter chance and the variance, never the expectation.

Standard error, from the same aggregates: under "no flow" a window's residual
sum_g A_g B*_g - kappa N_A N_B* is sum_g (A_g - mean)(B*_g - mean) over groups, whose variance
is kappa * (Q_A - kappa N_A^2)(Q_B* - kappa N_B*^2), Q being a window's sum of squared group
counts (so overdispersed counts, such as strict-profile padding, widen the interval as they
should, and a dense constant floor does not); residuals are independent across windows. A
flow of F adds the binomial variance F(1 - p)/p. Both are computed in the same SQL statement; see ``docs/ANALYST_SQL.md`` for the derivation and
bench/flows/evaluate.py for how well it matches the empirical error.

A flow here counts pairs of captures: a person seen at A and then at B within the lag range
counts once per such pair (twice if seen twice at B). The simulator's ground truth uses the
same definition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Sequence

from pipeline.sink.clickhouse import Warehouse

Z95 = 1.959963984540054


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

    @property
    def ci95(self) -> tuple[float, float]:
        return self.flow - Z95 * self.se, self.flow + Z95 * self.se


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def _params(q: FlowQuery) -> tuple[dict[str, object], str]:
    """Query parameters and the camera IN-list (one placeholder per camera)."""
    p: dict[str, object] = {"version": q.params_version, "w": q.window_seconds, "t_from": q.t_from,
                            "t_to": q.t_to, "lag_lo": q.min_lag, "lags": q.max_lag - q.min_lag + 1,
                            "near_lo": -q.max_lag, "near_n": 2 * q.max_lag + 1}
    names = []
    for i, c in enumerate(q.cameras):
        p[f"cam{i}"] = c.key
        names.append(f"%(cam{i})s")
    return p, ", ".join(names)


def flow_sql(db: str, q: FlowQuery, *, by_lag: bool = False) -> tuple[str, dict[str, object]]:
    """One SELECT estimating every ordered camera pair of ``q`` (and, with ``by_lag``, every lag).

    Returns SQL with %(name)s placeholders plus the values; `flowctl flows --show-sql` prints it
    with the values filled in, for analysts who run it from clickhouse-client or a BI tool.
    """
    params, cams = _params(q)
    base = (f"FROM {db}.occurrences_by_window WHERE params_version = %(version)s AND window_seconds = %(w)s "
            f"AND concat(site_id, '/', camera_id) IN ({cams})")
    period = "window_start >= toDateTime(%(t_from)s) AND window_start < toDateTime(%(t_to)s)"
    a_side = (f"SELECT concat(site_id, '/', camera_id) AS cam_a, group_id, toInt64(toUInt32(window_start)) AS ws, "
              f"sum(occurrences) AS na {base} AND {period} GROUP BY cam_a, group_id, ws")
    # B shifted back by each lag, so that B's window t + d lines up with A's window t.
    def b_shift(lo: str, n: str) -> str:
        return (f"SELECT concat(site_id, '/', camera_id) AS cam_b, group_id, "
                f"toInt64(toUInt32(window_start)) - toInt64(lag) * %(w)s AS ws, occurrences AS nb, lag "
                + base.replace(" WHERE ", f" ARRAY JOIN arrayMap(i -> i + %({lo})s, range(%({n})s)) AS lag WHERE ", 1)
                + f" AND window_start >= toDateTime(%(t_from)s + %({lo})s * %(w)s) "
                f"AND window_start < toDateTime(%(t_to)s + (%({lo})s + %({n})s) * %(w)s)")

    def products(lag_col: str, lo: str = "lag_lo", n: str = "lags") -> tuple[str, str, str]:
        """(pair columns, co-occurrence sums s, window products nn/qq/nn2), per lag or summed over lags."""
        b_side = (f"SELECT cam_b, group_id, ws{lag_col}, sum(nb) AS nstar FROM ({b_shift(lo, n)}) "
                  f"WHERE ws >= %(t_from)s AND ws < %(t_to)s GROUP BY cam_b, group_id, ws{lag_col}")
        pair = "cam_a, cam_b" + lag_col
        s = (f"SELECT {pair}, sum(na * nstar) AS s FROM ({a_side}) AS a ALL INNER JOIN ({b_side}) AS b "
             f"USING (group_id, ws) WHERE cam_a != cam_b GROUP BY {pair}")
        wa = f"SELECT cam_a, ws, sum(na) AS n_a, sum(na * na) AS q_a FROM ({a_side}) GROUP BY cam_a, ws"
        wb = (f"SELECT cam_b, ws{lag_col}, sum(nstar) AS n_b, sum(nstar * nstar) AS q_b FROM ({b_side}) "
              f"GROUP BY cam_b, ws{lag_col}")
        # Float64 products: with dense (strict-profile) counts n_a^2 n_b^2 summed over a day
        # exceeds UInt64 and would wrap silently.
        windows = (f"SELECT {pair}, sum(toFloat64(n_a) * n_b) AS nn, sum(toFloat64(q_a) * q_b) AS qq, "
                   f"sum(pow(toFloat64(n_a) * n_b, 2)) AS nn2, "
                   f"sum(toFloat64(q_a) * n_b * n_b + toFloat64(n_a) * n_a * q_b) AS qn "
                   f"FROM ({wa}) AS wa ALL INNER JOIN ({wb}) AS wb USING ws WHERE cam_a != cam_b GROUP BY {pair}")
        return pair, s, windows

    pair, s, windows = products(", lag" if by_lag else "")
    # Near window pairs, both directions: lags -max_lag..max_lag (for kappa, below).
    _, s_near, windows_near = products("", "near_lo", "near_n")
    ga = (f"SELECT concat(site_id, '/', camera_id) AS cam_a, group_id, sum(occurrences) AS ga {base} AND {period} "
          f"GROUP BY cam_a, group_id")
    gb = ga.replace("AS cam_a", "AS cam_b").replace("AS ga", "AS gb").replace("GROUP BY cam_a", "GROUP BY cam_b")
    # kappa from the *far* part of the period. The same person's occurrences at A and B (either
    # order, within max_lag) share a group with rate p and would inflate a kappa taken over the
    # whole period, biasing every flow low by about its share of near window pairs (measured:
    # -5% on one-day periods). So from the period's group products (gg = sum_g a_g b_g,
    # tt = sum a * sum b) the near window pairs (|lag| <= max_lag) are removed, leaving pairs of
    # windows too far apart to hold one person twice.
    dist = (f"SELECT cam_a, cam_b, sum(toFloat64(ga) * gb) AS gg, toFloat64(any(ta)) * any(tb) AS tt FROM "
            f"(SELECT cam_a, group_id, ga, ta FROM ({ga}) AS ga1 ANY LEFT JOIN "
            f"(SELECT cam_a, sum(ga) AS ta FROM ({ga}) AS ga2 GROUP BY cam_a) AS ta USING cam_a) AS ka "
            f"ALL INNER JOIN "
            f"(SELECT cam_b, group_id, gb, tb FROM ({gb}) AS gb1 ANY LEFT JOIN "
            f"(SELECT cam_b, sum(gb) AS tb FROM ({gb}) AS gb2 GROUP BY cam_b) AS tb USING cam_b) AS kb "
            f"USING group_id WHERE cam_a != cam_b GROUP BY cam_a, cam_b")
    kappa = (f"SELECT cam_a, cam_b, (gg - s_near) / (tt - nn_near) AS kappa FROM "
             f"(SELECT cam_a, cam_b, s AS s_near, nn AS nn_near FROM ({windows_near}) AS w0 ANY LEFT JOIN "
             f"({s_near}) AS s0 USING (cam_a, cam_b)) AS t0 ANY LEFT JOIN ({dist}) AS d0 USING (cam_a, cam_b)")
    p = (f"(SELECT argMax(same_group_rate, registered_at) FROM {db}.privacy_params "
         f"WHERE params_version = %(version)s)")
    joined = (f"SELECT {pair}, s, nn, qq, nn2, qn, kappa FROM "
              f"(SELECT {pair}, s, nn, qq, nn2, qn FROM ({windows}) AS w ANY LEFT JOIN ({s}) AS sq USING ({pair})) AS wj "
              f"ANY LEFT JOIN ({kappa}) AS k USING (cam_a, cam_b)")
    sql = (f"SELECT {pair}, s, chance, kappa, p, (s - chance) / (p - kappa) AS flow, "
           f"sqrt(greatest(var0, 0) / pow(p - kappa, 2) + greatest((s - chance) / (p - kappa), 0) * (1 - p) / p) AS se "
           f"FROM (SELECT {pair}, s, kappa * nn AS chance, kappa, {p} AS p, "
           f"kappa * qq - pow(kappa, 2) * qn + pow(kappa, 3) * nn2 AS var0 FROM ({joined})) "
           f"ORDER BY {pair}")
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


def estimate_flows(wh: Warehouse, q: FlowQuery, *, by_lag: bool = False) -> list[FlowEstimate]:
    """Every ordered pair of ``q.cameras`` whose windows overlap in the period."""
    registered_rate(wh, q.params_version)
    sql, params = flow_sql(wh.database, q, by_lag=by_lag)
    out = []
    for row in wh.rows(sql, params):
        if by_lag:
            a, b, lag, s, chance, kappa, p, flow, se = row
        else:
            (a, b, s, chance, kappa, p, flow, se), lag = row, None
        out.append(FlowEstimate(str(a), str(b), None if lag is None else int(lag), float(s), float(chance),
                                float(kappa), float(p), _finite(flow), _finite(se)))
    return out


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else float("nan")


def cameras_with_data(wh: Warehouse, version: str, start: datetime, end: datetime,
                      sites: Sequence[str] = ()) -> list[CameraRef]:
    """Cameras that published anything for ``version`` in the period (optionally of some sites)."""
    where = ["params_version = %(v)s", "window_start >= toDateTime(%(a)s)", "window_start < toDateTime(%(b)s)"]
    params: dict[str, object] = {"v": version, "a": _epoch(start), "b": _epoch(end)}
    if sites:
        where.append("site_id IN (" + ", ".join(f"%(s{i})s" for i in range(len(sites))) + ")")
        params.update({f"s{i}": s for i, s in enumerate(sites)})
    rows = wh.rows(f"SELECT DISTINCT site_id, camera_id FROM {wh.database}.camera_window_totals "
                   f"WHERE {' AND '.join(where)} ORDER BY site_id, camera_id", params)
    return [CameraRef(str(s), str(c)) for s, c in rows]


def aggregate(estimates: Iterable[FlowEstimate], level_of: dict[str, str]) -> list[FlowEstimate]:
    """Roll camera-pair flows up to zones, stores or sites (``level_of``: camera key -> label).

    Flows add up; their variances are added as if independent, which slightly understates
    the error when pairs share a camera (their chance terms are correlated).
    """
    acc: dict[tuple[str, str, int | None], list[float]] = {}
    meta: dict[tuple[str, str, int | None], tuple[float, float]] = {}
    for e in estimates:
        key = (level_of.get(e.origin, e.origin), level_of.get(e.destination, e.destination), e.lag)
        v = acc.setdefault(key, [0.0, 0.0, 0.0, 0.0])
        v[0] += e.co_occurrences
        v[1] += e.chance
        v[2] += e.flow
        v[3] += e.se ** 2
        meta[key] = (e.kappa, e.same_group_rate)
    return [FlowEstimate(a, b, lag, s, c, meta[(a, b, lag)][0], meta[(a, b, lag)][1], f, math.sqrt(var))
            for (a, b, lag), (s, c, f, var) in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0))]
