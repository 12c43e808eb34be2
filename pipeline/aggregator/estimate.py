"""The flow estimator on published components: sums of rows, then the same formulas as
pipeline/analytics/flows.py.

This is the reference for the next step (analytics reading components instead of cells) and
what the aggregator's tests use to show that summed components reproduce the SQL estimator.
Per ordered camera pair over whole hours and a lag range [lo, hi]:

    S      = sum of lag rows d in [lo, hi]                 (s)
    NN     = sum of lag rows d in [lo, hi]                 (nn)
    kappa  = sum of far rows' s / sum of far rows' nn
    chance = kappa * NN
    var0   = kappa * qq - kappa^2 * qn + kappa^3 * nn2     (qq, qn, nn2 of the range row [lo, hi])
    flow   = (S - chance) / (p - kappa)
    se     = sqrt(max(var0, 0) * (1 + NN / NN_far) / (p - kappa)^2 + max(flow, 0) * (1 - p) / p)

The factor (1 + NN / NN_far) is the one change to the SQL estimator's SE: kappa's own sampling
error, which the far band (bounded by the 2 h state) makes too large to ignore; see
:func:`flow_from_sums`.

When [lo, hi] is not a published SE range, var0 falls back to the sum of the per-lag var0 (the
lags' residuals treated as independent, see docs/AGGREGATOR.md) and the estimate says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from pipeline.aggregator.model import FAR, LAG, NN2_SHIFT, RANGE, FlowComponent

# Any object with the Warehouse protocol of pipeline.sink.clickhouse (rows(sql, params)); not
# imported, so the aggregator does not depend on a later stage of the data path.
Warehouse = Any


@dataclass(frozen=True)
class PairSums:
    """Summed components of one ordered pair (and lag range or single lag)."""

    s: int
    nn: int
    qq: int
    qn: int
    nn2: int
    s_far: int
    nn_far: int
    se_exact: bool = True
    # Variance of the published noise in s and in s_far (sum of the rows' noise_var_milli / 1000).
    noise_var: float = 0.0
    noise_var_far: float = 0.0

    @property
    def kappa(self) -> float:
        return self.s_far / self.nn_far if self.nn_far else float("nan")


@dataclass(frozen=True)
class ComponentEstimate:
    origin: str
    destination: str
    lag: int | None
    co_occurrences: float
    chance: float
    kappa: float
    same_group_rate: float
    flow: float
    se: float
    se_exact: bool


def flow_from_sums(x: PairSums, p: float, kappa: float | None = None) -> tuple[float, float, float, float]:
    """(kappa, chance, flow, se) from summed components.

    With the far-band kappa (the default) the SE includes kappa's own sampling error:
    chance = kappa * NN inherits Var(kappa) * NN^2, and Var(kappa) = Var(S_far) / NN_far^2 with
    Var(S_far) ~ var0 * NN_far / NN (the same per-product spread as the flow lags), so the
    no-flow variance becomes var0 * (1 + NN / NN_far). The SQL estimator's whole-period kappa
    rests on ~20x more window products than the flow lags and leaves this term out; the far band
    within the 2 h bound has only ~2.4x more, so here it matters (bench/flows/components_eval.py:
    95% coverage 0.89 without it, 0.93 with it; the SQL estimator 0.93-0.94; docs/AGGREGATOR.md).

    ``kappa`` overrides the far-band kappa and drops that term: with the SQL estimator's kappa
    the result is exactly what pipeline/analytics/flows.py computes (the tests' comparison).
    """
    k = x.kappa if kappa is None else kappa
    chance = k * x.nn
    var0 = k * x.qq - k * k * x.qn + k ** 3 * x.nn2
    inflate = 1.0 + (x.nn / x.nn_far if x.nn_far else 0.0) if kappa is None else 1.0
    flow = (x.s - chance) / (p - k)
    # Published-tier noise: independent of everything else, it adds its variance to S and, through
    # kappa = S_far / NN_far, (NN / NN_far)^2 times the far band's to the chance term.
    noise = x.noise_var + ((x.nn / x.nn_far) ** 2 * x.noise_var_far if kappa is None and x.nn_far else 0.0)
    se = math.sqrt((max(var0, 0.0) * inflate + noise) / (p - k) ** 2 + max(flow, 0.0) * (1 - p) / p)
    return k, chance, flow, se


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def component_sums(wh: Warehouse, version: str, cameras: Sequence[str], start: datetime, end: datetime,
                   window_seconds: int = 60, min_lag: int = 0, max_lag: int = 30, *,
                   by_lag: bool = False) -> dict[tuple, PairSums]:
    """Summed components per ordered pair (``(origin, destination)``, or with ``by_lag``
    ``(origin, destination, lag)``) over the hours in [start, end) (whole hours: a partial hour
    is rounded out to the hours it touches, as footfall_hourly does).

    Reads ``flow_components FINAL`` so that a replayed hour's rows count once.
    """
    t0, t1 = _epoch(start) // 3600 * 3600, -(-_epoch(end) // 3600) * 3600
    names = {f"c{i}": c for i, c in enumerate(cameras)}
    cams = ", ".join(f"%({k})s" for k in names)
    params = {"v": version, "w": window_seconds, "t0": t0, "t1": t1, "lo": min_lag, "hi": max_lag, **names}
    where = (f"params_version = %(v)s AND window_seconds = %(w)s AND hour >= toDateTime(%(t0)s) "
             f"AND hour < toDateTime(%(t1)s) AND concat(origin_site, '/', origin_camera) IN ({cams}) "
             f"AND concat(dest_site, '/', dest_camera) IN ({cams})")
    pair = "concat(origin_site, '/', origin_camera) AS a, concat(dest_site, '/', dest_camera) AS b"
    db = wh.database
    far_rows = wh.rows(f"SELECT {pair}, sum(s), sum(nn), sum(noise_var_milli) FROM {db}.flow_components FINAL "
                       f"WHERE {where} AND kind = 'far' GROUP BY a, b", params)
    far = {tuple(r[:2]): (int(r[2]), int(r[3])) for r in far_rows}
    far_noise = {tuple(r[:2]): int(r[4]) / 1000 for r in far_rows}
    terms = "sum(s), sum(nn), sum(qq), sum(qn), sum(nn2_hi), sum(nn2_lo), sum(noise_var_milli)"
    lag_rows = wh.rows(f"SELECT {pair}, lag_lo, {terms} FROM {db}.flow_components FINAL WHERE {where} "
                       f"AND kind = 'lag' AND lag_lo >= %(lo)s AND lag_lo <= %(hi)s GROUP BY a, b, lag_lo", params)
    out: dict[tuple, PairSums] = {}

    def sums(s, nn, qq, qn, hi, lo, noise, exact=True, key=None) -> PairSums:
        sf, nf = far.get(key, (0, 0))
        return PairSums(int(s), int(nn), int(qq), int(qn), (int(hi) << NN2_SHIFT) + int(lo), sf, nf, exact,
                        int(noise) / 1000, far_noise.get(key, 0.0))

    if by_lag:
        for a, b, lag, s, nn, qq, qn, hi, lo, noise in lag_rows:
            out[(a, b, int(lag))] = sums(s, nn, qq, qn, hi, lo, noise, key=(a, b))
        return out
    rng = {tuple(r[:2]): r[2:] for r in wh.rows(
        f"SELECT {pair}, {terms} FROM {db}.flow_components FINAL WHERE {where} AND kind = 'range' "
        f"AND lag_lo = %(lo)s AND lag_hi = %(hi)s GROUP BY a, b", params)}
    per_pair: dict[tuple, list] = {}
    for a, b, lag, s, nn, qq, qn, hi, lo, noise in lag_rows:
        per_pair.setdefault((a, b), []).append((int(s), int(nn), int(qq), int(qn), (int(hi) << NN2_SHIFT) + int(lo),
                                                int(noise)))
    for key, lags in per_pair.items():
        s, nn = sum(x[0] for x in lags), sum(x[1] for x in lags)
        if key in rng:
            # A published range's own s carries one noise draw per hour, not one per lag.
            rs, _, qq, qn, hi, lo, noise = rng[key]
            out[key] = sums(rs, nn, qq, qn, hi, lo, noise, key=key)
        else:  # not a published SE range: per-lag terms, lags treated as independent
            out[key] = PairSums(s, nn, sum(x[2] for x in lags), sum(x[3] for x in lags), sum(x[4] for x in lags),
                                *far.get(key, (0, 0)), se_exact=False, noise_var=sum(x[5] for x in lags) / 1000,
                                noise_var_far=far_noise.get(key, 0.0))
    return out


def estimate_from_components(wh: Warehouse, version: str, cameras: Sequence[str], start: datetime, end: datetime,
                             same_group_rate: float, window_seconds: int = 60, min_lag: int = 0, max_lag: int = 30,
                             *, by_lag: bool = False) -> list[ComponentEstimate]:
    out = []
    sums = component_sums(wh, version, cameras, start, end, window_seconds, min_lag, max_lag, by_lag=by_lag)
    for key in sorted(sums):
        x = sums[key]
        if by_lag:
            a, b, lag = key
            # a single lag's SE: its own per-lag terms are exact (the SQL estimator's by_lag)
        else:
            (a, b), lag = key, None
        k, chance, flow, se = flow_from_sums(x, same_group_rate)
        out.append(ComponentEstimate(a, b, lag, float(x.s), chance, k, same_group_rate, flow, se, x.se_exact))
    return out


def latest_rows(rows: Iterable[Any]) -> list[Any]:
    """One row per key (flow or footfall components), the highest version: what ``FINAL`` reads,
    for in-memory use."""
    best: dict[tuple, Any] = {}
    for r in rows:
        k = (type(r).__name__, r.key)
        cur = best.get(k)
        if cur is None or r.version >= cur.version:
            best[k] = r
    return list(best.values())


def sum_rows(rows: Iterable[FlowComponent], min_lag: int = 0, max_lag: int = 30, *,
             hours: tuple[int, int] | None = None) -> dict[tuple[str, str], PairSums]:
    """:func:`component_sums` over in-memory rows (deduplicated first), per ordered pair
    ``("site/camera", "site/camera")``; ``hours`` = [first, end) in epoch milliseconds."""
    acc: dict[tuple[str, str], dict[str, list[int]]] = {}
    for r in latest_rows(rows):
        if not isinstance(r, FlowComponent) or (hours and not hours[0] <= r.hour_ms < hours[1]):
            continue
        key = (f"{r.origin_site}/{r.origin_camera}", f"{r.dest_site}/{r.dest_camera}")
        a = acc.setdefault(key, {"lag": [0] * 6, "range": [0] * 6, "far": [0, 0, 0], "has_range": [0]})
        terms = (r.s, r.nn, r.qq, r.qn, r.nn2, r.noise_var_milli)
        if r.kind == LAG and min_lag <= r.lag_lo <= max_lag:
            a["lag"] = [x + y for x, y in zip(a["lag"], terms)]
        elif r.kind == RANGE and (r.lag_lo, r.lag_hi) == (min_lag, max_lag):
            a["range"] = [x + y for x, y in zip(a["range"], terms)]
            a["has_range"][0] = 1
        elif r.kind == FAR:
            a["far"] = [a["far"][0] + r.s, a["far"][1] + r.nn, a["far"][2] + r.noise_var_milli]
    out = {}
    for key, a in acc.items():
        src = a["range"] if a["has_range"][0] else a["lag"]
        # s from the range row when there is one (one noise draw per hour, not one per lag); its
        # noise-free value equals the lag rows' sum.
        out[key] = PairSums(src[0], a["lag"][1], *src[2:5], a["far"][0], a["far"][1], bool(a["has_range"][0]),
                            src[5] / 1000, a["far"][2] / 1000)
    return out
