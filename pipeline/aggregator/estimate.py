"""The flow estimator on published components: sums of rows over the hours a flow can happen
in, a chance level measured on the far bands, and the SE. pipeline/analytics/flows.py runs the
same computation in SQL.

Per ordered camera pair over whole hours and a lag range [lo, hi]:

    hours  = the pair's active hours: NN_h > active_factor x the fictitious-only NN_h (below)
    S, NN  = sums over those hours of the lag rows d in [lo, hi] (s from the range row if published)
    k_in, k_out = s / nn of the inner and the outer far band over the same hours
    kappa  = (1 + lam) k_out - lam k_in                  (lam = 2p - 0.5 within [-0.5, 0.5] by default)
    chance = kappa * NN
    var0   = kappa * qq - kappa^2 * qn + kappa^3 * nn2          (qq, qn, nn2 of the range row [lo, hi])
    flow   = (S - chance) / (p - kappa)
    se^2   = (var0 * (1 + NN c_k) + noise) / (p - kappa)^2 + max(flow, 0) (1 - p) / p
             c_k   = (1 + lam)^2 / NN_out + lam^2 / NN_in       (kappa's sampling error)
             noise = noise var of S + NN^2 ((1 + lam)^2 v_out / NN_out^2 + lam^2 v_in / NN_in^2)

docs/AGGREGATOR.md sections 7a and 7b derive and measure each step; in short:

* **Active hours.** A pair-hour whose window products are no larger than fictitious persons alone
  would give (the store is closed at one end) holds no flow worth the name, but its published
  rows still carry noise of the full scale. Leaving such hours out lowered the SE of big flows by
  15% at p = 0.1 with no measurable bias (bench/flows/realism_eval.py). The test uses only NN,
  which is a product of the (noised) window totals: it does not look at S, so it cannot select on
  the co-occurrences it estimates.
* **Two far bands.** One person's captures further apart than the flow lags (visitors going on
  to another site, long stays, staff) also fall in the far band and look like chance: with one
  band the chance level came out about 1% high in the realistic world, and big flows 0.6 SE low.
  Those pairs thin out with the lag; chance does not. With the band split in two, kappa is a
  weighted level of the two bands, (1 + lam) k_out - lam k_in: lam = -0.5 weighs them equally
  (about the single band of before), 0 takes the outer band alone, 0.5 extrapolates outwards (the
  level at which a same-person share falling by a factor 3 from band to band would vanish). The
  further out, the more variance (half the window products, then a difference), while the bias
  it removes is p times the far same-person pairs and the SE hardly depends on p: so lam follows
  p, 2p - 0.5 clipped to [-0.5, 0.5] (pooled at p <= 0, outer band at 0.25, extrapolated at
  0.5). bench/flows/realism_eval.py (docs/AGGREGATOR.md section 7b) has the measurements. Data
  with a single far band (before 2026-11) gets that band's level.

When [lo, hi] is not a published SE range, var0 falls back to the sum of the per-lag var0 (the
lags' residuals treated as independent, see docs/AGGREGATOR.md) and the estimate says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from pipeline.aggregator.model import FAR, LAG, NN2_SHIFT, RANGE, FlowComponent

# Any object with the Warehouse protocol of pipeline.sink.clickhouse (rows(sql, params)); not
# imported, so the aggregator does not depend on a later stage of the data path.
Warehouse = Any

FAR_EXTRAPOLATION_MAX = 0.5
ACTIVE_FACTOR = 2.0


def far_extrapolation_for(p: float) -> float:
    """The default lam: 2p - 0.5 within [-0.5, 0.5] (module docstring)."""
    return min(max(2.0 * p - 0.5, -FAR_EXTRAPOLATION_MAX), FAR_EXTRAPOLATION_MAX)


@dataclass(frozen=True)
class EstimatorOptions:
    """Choices of the estimator that are not in the published rows.

    ``fictitious_per_window``: expected fictitious occurrences per camera-window of the parameter
    set (``PrivacyParams.fictitious_per_window``); with ``windows_per_hour`` it gives the NN an
    hour would have from fictitious persons alone. ``active_factor`` 0 keeps every hour.
    ``far_extrapolation`` None: :func:`far_extrapolation_for` the same-group rate.
    """

    fictitious_per_window: float = 0.0
    windows_per_hour: int = 60
    active_factor: float = ACTIVE_FACTOR
    far_extrapolation: float | None = None

    def __post_init__(self) -> None:
        lam = 0.0 if self.far_extrapolation is None else self.far_extrapolation
        if not (self.fictitious_per_window >= 0 and self.windows_per_hour >= 1 and self.active_factor >= 0
                and -1 <= lam <= 2):
            raise ValueError("estimator options: fictitious_per_window >= 0, windows_per_hour >= 1, "
                             "active_factor >= 0 and far_extrapolation in [-1, 2]")

    def nn_floor(self, lags: int) -> float:
        """A pair-hour over ``lags`` lags counts as active when its NN exceeds this."""
        f = self.fictitious_per_window
        return self.active_factor * self.windows_per_hour * lags * f * f


@dataclass(frozen=True)
class PairSums:
    """Summed components of one ordered pair (and lag range or single lag) over its active hours.

    ``s_far``/``nn_far``/``noise_var_far`` are the outer far band (or the only one);
    ``*_far_in`` the inner band, zero when only one band was published."""

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
    s_far_in: int = 0
    nn_far_in: int = 0
    noise_var_far_in: float = 0.0
    hours: int = 0          # active pair-hours summed
    hours_seen: int = 0     # pair-hours with rows in the period
    # A roll-up's chance variance over the sum of its camera pairs' (>= 1): pairs that share a
    # camera share its chance co-occurrences. 1 for one camera pair. See design_effect().
    design_effect: float = 1.0

    def kappa(self, p: float) -> float:
        """The chance level with the default extrapolation at same-group rate ``p``."""
        return _kappa(self, far_extrapolation_for(p))[0]


def _kappa(x: PairSums, lam: float) -> tuple[float, float, float]:
    """(kappa, c_k, far noise variance of kappa * NN / NN): the far-band chance level, the factor
    of var0 that is kappa's sampling error, and the published far noise carried into chance."""
    if not x.nn_far:
        return float("nan"), 0.0, 0.0
    k_out = x.s_far / x.nn_far
    if not x.nn_far_in:   # one band
        return k_out, 1.0 / x.nn_far, x.noise_var_far / x.nn_far ** 2
    k_in = x.s_far_in / x.nn_far_in
    a, b = 1.0 + lam, lam
    return (a * k_out - b * k_in, a * a / x.nn_far + b * b / x.nn_far_in,
            a * a * x.noise_var_far / x.nn_far ** 2 + b * b * x.noise_var_far_in / x.nn_far_in ** 2)


def flow_from_sums(x: PairSums, p: float, kappa: float | None = None,
                   far_extrapolation: float | None = None) -> tuple[float, float, float, float]:
    """(kappa, chance, flow, se) from summed components.

    With the far-band kappa (the default) the SE includes kappa's own sampling error: chance =
    kappa * NN inherits Var(kappa) * NN^2, and a band's Var(s/nn) = var0 / (NN * nn_band) (its
    window products spread like the flow lags'), so the no-flow variance becomes var0 * (1 + NN
    c_k) with c_k = (1 + lam)^2 / NN_out + lam^2 / NN_in (1 / NN_far for one band). The SQL
    estimator's whole-period kappa rested on ~20x more window products than the flow lags and
    left this term out; the far bands within the 2 h bound have only ~1.4x (each) more, so here it
    matters (bench/flows/components_eval.py: 95% coverage 0.89 without it, 0.93 with it).

    ``kappa`` overrides the far-band kappa and drops that term: with the SQL estimator's kappa
    the result is exactly what the cell-based reference estimator computes (the tests' comparison).
    """
    if kappa is None:
        lam = far_extrapolation_for(p) if far_extrapolation is None else far_extrapolation
        k, c_k, far_noise = _kappa(x, lam)
    else:
        k, c_k, far_noise = kappa, 0.0, 0.0
    chance = k * x.nn
    var0 = k * x.qq - k * k * x.qn + k ** 3 * x.nn2
    flow = (x.s - chance) / (p - k)
    # Published-tier noise: independent of everything else; it adds its variance to S and, through
    # kappa, NN^2 times the far bands' (weighted as kappa weighs them) to the chance term.
    noise = x.noise_var + x.nn * x.nn * far_noise
    chance_var = max(var0, 0.0) * (1.0 + x.nn * c_k) * x.design_effect
    se = math.sqrt((chance_var + noise) / (p - k) ** 2 + max(flow, 0.0) * (1 - p) / p)
    return k, chance, flow, se


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


@dataclass
class HourTerms:
    """The rows of one pair-hour (or pair-hour-lag) a flow question reads, already summed:
    ``lag`` = (s, nn, qq, qn, nn2, noise_var_milli) over the lag rows in [lo, hi]; ``rng`` the
    same for the range row [lo, hi] (None if not published); ``far_in``/``far_out`` = (s, nn,
    noise_var_milli) of the inner and outer far bands (everything in ``far_out`` when only one
    band was published). ``nn_active`` is the NN of the whole question's lag range in that hour:
    what decides whether the hour is active (for a by-lag question too)."""

    lag: list[int]
    rng: list[int] | None
    far_in: list[int]
    far_out: list[int]
    nn_active: int
    pair: tuple[str, str] = ("", "")   # the camera pair and hour, for a roll-up's design effect
    hour: int = 0


def sum_hours(hours: Iterable[HourTerms], lags: int, options: EstimatorOptions) -> PairSums:
    """PairSums over the active hours (see the module docstring)."""
    floor = options.nn_floor(lags)
    lag, rng, fi, fo = [0] * 6, [0] * 6, [0, 0, 0], [0, 0, 0]
    used = seen = 0
    exact = True
    for h in hours:
        seen += 1
        if h.nn_active <= floor:
            continue
        used += 1
        lag = [x + y for x, y in zip(lag, h.lag)]
        if h.rng is None:
            exact = False
        else:
            rng = [x + y for x, y in zip(rng, h.rng)]
        fi = [x + y for x, y in zip(fi, h.far_in)]
        fo = [x + y for x, y in zip(fo, h.far_out)]
    # s from the range row when every hour has one (one noise draw per hour, not one per lag; its
    # noise-free value equals the lag rows' sum); otherwise the per-lag terms, lags as independent.
    src = rng if exact and used else lag
    return PairSums(src[0], lag[1], src[2], src[3], src[4], fo[0], fo[1], exact and used > 0, src[5] / 1000,
                    fo[2] / 1000, fi[0], fi[1], fi[2] / 1000, used, seen)


def design_effect(hours: Iterable[HourTerms], floor: float) -> float:
    """How much a roll-up's chance variance exceeds the sum of its camera pairs', measured on the
    far bands (pure chance but for the far same-person pairs): with e_ih = s_far - kappa_i nn_far
    of camera pair i in active hour h (kappa_i its own level), sum_h (sum_i e_ih)^2 over
    sum_ih e_ih^2. Pairs that share a camera share its chance co-occurrences, so their residuals
    covary and the ratio exceeds 1; at least 1 (the chance model has no negative covariance), and 1
    for a single pair. Applied to the flow lags' chance variance, whose pairs share the same
    cameras' windows (docs/AGGREGATOR.md section 7a, item 5).

    kappa_i is the pair's level over its active hours *of the same UTC day* (``hour`` is epoch
    seconds): so every term is a sum over closed days, and the site roll-ups
    (pipeline/analytics/rollups.py) can hold them per site pair-hour; it also keeps a level that
    drifts from day to day out of the residuals. Before 2026-11-29 the level was the pair's over
    the whole question."""
    act = [h for h in hours if h.nn_active > floor]
    per_pair: dict[tuple, list[int]] = {}
    for h in act:
        t = per_pair.setdefault((h.pair, h.hour // 86400), [0, 0])
        t[0] += h.far_in[0] + h.far_out[0]
        t[1] += h.far_in[1] + h.far_out[1]
    if len({pair for pair, _ in per_pair}) < 2:
        return 1.0
    kappa = {k: (s / n if n else 0.0) for k, (s, n) in per_pair.items()}
    by_hour: dict[int, float] = {}
    own = 0.0
    for h in act:
        e = (h.far_in[0] + h.far_out[0]) - kappa[(h.pair, h.hour // 86400)] * (h.far_in[1] + h.far_out[1])
        by_hour[h.hour] = by_hour.get(h.hour, 0.0) + e
        own += e * e
    return max(1.0, sum(e * e for e in by_hour.values()) / own) if own > 0 else 1.0


def _active(groups: dict[tuple, list[HourTerms]], lags: int, options: EstimatorOptions) -> dict[tuple, PairSums]:
    """PairSums per key, leaving out keys without a single active hour (nothing to estimate); a
    key that gathers several camera pairs (a roll-up) gets its design effect."""
    out = {}
    for k, v in groups.items():
        x = sum_hours(v, lags, options)
        if x.hours:
            d = design_effect(v, options.nn_floor(lags))
            out[k] = x if d == 1.0 else replace(x, design_effect=d)
    return out


def split_far_bands(bands: Iterable[tuple[int, int]]) -> int | None:
    """The first lag of the outer far band when the rows hold exactly two adjacent bands (inner,
    outer); None when they hold one band (or a mix of layouts after a configuration change), which
    is then estimated as one band."""
    b = sorted(set(bands))
    return b[1][0] if len(b) == 2 and b[0][1] + 1 == b[1][0] else None


def hour_range_filter(lo: str, hi: str) -> str:
    """WHERE terms for flow_components hours in [lo, hi), the names of parameters holding epoch
    seconds, with the days of those hours spelled out too.

    Why the day: flow_components leads its sort key with toDate(hour) (migration 0012), so that a
    site-day is one range of the key, and ClickHouse 18.16 derives no toDate(hour) range from a
    condition on hour: on a month of a 50-site chain, one site-day read 4.9 million rows by the
    hour alone and 188,000 with the day (bench/flows/chain_queries.py). The day terms select a
    superset of the hours (both sides in the server's time zone), so they change no result."""
    return (f"hour >= toDateTime(%({lo})s) AND hour < toDateTime(%({hi})s) "
            f"AND toDate(hour) >= toDate(toDateTime(%({lo})s)) AND toDate(hour) <= toDate(toDateTime(%({hi})s))")


def camera_pair_filter(cameras: Sequence[str], prefix: str = "c") -> tuple[str, dict[str, object]]:
    """WHERE terms selecting the ordered pairs of ``cameras`` ("site/camera" keys), and their
    parameters (names never enter SQL).

    Why the site and camera columns are filtered on their own as well as on the joined key: only
    conditions on the sort key's columns (``toDate(hour), origin_site, origin_camera, dest_site,
    dest_camera, hour``) let ClickHouse skip granules. With the joined key alone every question read the whole
    of every month partition it touched: one site-day of a 50-site chain took 6 s, and more as
    the month filled (bench/flows/chain_queries.py). The hours need :func:`hour_range_filter`."""
    keys = {f"{prefix}{i}": c for i, c in enumerate(cameras)}
    sites = {f"{prefix}s{i}": s for i, s in enumerate(sorted({c.partition("/")[0] for c in cameras}))}
    names = {f"{prefix}n{i}": n for i, n in enumerate(sorted({c.partition("/")[2] for c in cameras}))}

    def listed(d: dict[str, str]) -> str:
        return ", ".join(f"%({k})s" for k in d)

    sql = (f"origin_site IN ({listed(sites)}) AND dest_site IN ({listed(sites)}) "
           f"AND origin_camera IN ({listed(names)}) AND dest_camera IN ({listed(names)}) "
           f"AND concat(origin_site, '/', origin_camera) IN ({listed(keys)}) "
           f"AND concat(dest_site, '/', dest_camera) IN ({listed(keys)})")
    return sql, {**keys, **sites, **names}


def component_sums(wh: Warehouse, version: str, cameras: Sequence[str], start: datetime, end: datetime,
                   window_seconds: int = 60, min_lag: int = 0, max_lag: int = 30, *,
                   by_lag: bool = False, options: EstimatorOptions | None = None,
                   level_of: Mapping[str, str] | None = None) -> dict[tuple, PairSums]:
    """Summed components per ordered pair (``(origin, destination)``, or with ``by_lag``
    ``(origin, destination, lag)``) over the active hours in [start, end) (whole hours: a partial
    hour is rounded out to the hours it touches, as footfall_hourly does).

    ClickHouse sums the rows per pair-hour (``flow_components FINAL``, so that a replayed hour's
    rows count once); the choice of hours and the sums over them are :func:`sum_hours`, the same
    code :func:`sum_rows` runs on in-memory rows. ``level_of`` (camera key -> zone, store or site
    label) rolls camera pairs up: every active hour of every camera pair of a label pair summed,
    kappa pooled, with the roll-up's :func:`design_effect`.
    """
    options = options or EstimatorOptions(windows_per_hour=3600 // window_seconds)
    t0, t1 = _epoch(start) // 3600 * 3600, -(-_epoch(end) // 3600) * 3600
    pairs, names = camera_pair_filter(cameras)
    params: dict[str, object] = {"v": version, "w": window_seconds, "t0": t0, "t1": t1, "lo": min_lag,
                                 "hi": max_lag, **names}
    where = f"params_version = %(v)s AND window_seconds = %(w)s AND {hour_range_filter('t0', 't1')} AND {pairs}"
    pair = "concat(origin_site, '/', origin_camera) AS a, concat(dest_site, '/', dest_camera) AS b"
    db = wh.database
    bands = wh.rows(f"SELECT DISTINCT lag_lo, lag_hi FROM {db}.flow_components WHERE {where} AND kind = 'far'", params)
    params["split"] = split_far_bands((int(lo), int(hi)) for lo, hi in bands) or -1
    in_lags = "kind = 'lag' AND lag_lo >= %(lo)s AND lag_lo <= %(hi)s"
    is_rng = "kind = 'range' AND lag_lo = %(lo)s AND lag_hi = %(hi)s"
    far_in, far_out = "kind = 'far' AND lag_lo < %(split)s", "kind = 'far' AND lag_lo >= %(split)s"

    def terms(cond: str) -> str:
        return ", ".join(f"sumIf({c}, {cond})" for c in ("s", "nn", "qq", "qn", "nn2_hi", "nn2_lo", "noise_var_milli"))

    def far(cond: str) -> str:
        return ", ".join(f"sumIf({c}, {cond})" for c in ("s", "nn", "noise_var_milli"))

    per_hour = wh.rows(f"SELECT {pair}, toUInt32(hour) AS h, {terms(in_lags)}, {terms(is_rng)}, countIf({is_rng}), "
                       f"{far(far_in)}, {far(far_out)} FROM {db}.flow_components FINAL WHERE {where} "
                       f"GROUP BY a, b, h", params)

    def six(v: Sequence[Any]) -> list[int]:
        s, nn, qq, qn, hi, lo, noise = (int(x) for x in v)
        return [s, nn, qq, qn, (hi << NN2_SHIFT) + lo, noise]

    hours: dict[tuple, HourTerms] = {}
    for r in per_hour:
        hours[(r[0], r[1], int(r[2]))] = HourTerms(six(r[3:10]), six(r[10:17]) if int(r[17]) else None,
                                                   [int(x) for x in r[18:21]], [int(x) for x in r[21:24]],
                                                   int(r[4]), (r[0], r[1]), int(r[2]))
    lags = max_lag - min_lag + 1
    lv = level_of or {}
    if not by_lag:
        per_pair: dict[tuple, list[HourTerms]] = {}
        for (a, b, _), x in hours.items():
            per_pair.setdefault((lv.get(a, a), lv.get(b, b)), []).append(x)
        return _active(per_pair, lags, options)
    lag_rows = wh.rows(f"SELECT {pair}, toUInt32(hour) AS h, lag_lo, sum(s), sum(nn), sum(qq), sum(qn), sum(nn2_hi), "
                       f"sum(nn2_lo), sum(noise_var_milli) FROM {db}.flow_components FINAL WHERE {where} "
                       f"AND {in_lags} GROUP BY a, b, h, lag_lo", params)
    per_lag: dict[tuple, list[HourTerms]] = {}
    for a, b, h, lag, *v in lag_rows:
        x = hours[(a, b, int(h))]
        t = six(v)
        # a single lag's own row is its exact range
        per_lag.setdefault((lv.get(a, a), lv.get(b, b), int(lag)), []).append(
            HourTerms(t, t, x.far_in, x.far_out, x.nn_active, x.pair, x.hour))
    return _active(per_lag, lags, options)


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
             hours: tuple[int, int] | None = None, options: EstimatorOptions | None = None,
             by_lag: bool = False, level_of: Mapping[str, str] | None = None) -> dict[tuple, PairSums]:
    """:func:`component_sums` over in-memory rows (deduplicated first), per ordered pair
    ``("site/camera", "site/camera")`` (and lag), or per label pair with ``level_of``; ``hours`` =
    [first, end) in epoch milliseconds."""
    rows = [r for r in latest_rows(rows) if isinstance(r, FlowComponent)
            and (not hours or hours[0] <= r.hour_ms < hours[1])]
    if not rows:
        return {}
    options = options or EstimatorOptions(windows_per_hour=3600 // rows[0].window_seconds)
    split = split_far_bands((r.lag_lo, r.lag_hi) for r in rows if r.kind == FAR) or -1
    acc: dict[tuple, HourTerms] = {}
    per_lag: dict[tuple, list[int]] = {}
    for r in rows:
        key = (f"{r.origin_site}/{r.origin_camera}", f"{r.dest_site}/{r.dest_camera}", r.hour_ms)
        x = acc.get(key)
        if x is None:
            x = acc[key] = HourTerms([0] * 6, None, [0, 0, 0], [0, 0, 0], 0, key[:2], r.hour_ms // 1000)
        terms = [r.s, r.nn, r.qq, r.qn, r.nn2, r.noise_var_milli]
        if r.kind == LAG and min_lag <= r.lag_lo <= max_lag:
            x.lag = [a + b for a, b in zip(x.lag, terms)]
            x.nn_active += r.nn
            per_lag[(*key, r.lag_lo)] = terms
        elif r.kind == RANGE and (r.lag_lo, r.lag_hi) == (min_lag, max_lag):
            x.rng = terms
        elif r.kind == FAR:
            band = x.far_in if r.lag_lo < split else x.far_out
            band[:] = [band[0] + r.s, band[1] + r.nn, band[2] + r.noise_var_milli]
    lags = max_lag - min_lag + 1
    lv = level_of or {}
    groups: dict[tuple, list[HourTerms]] = {}
    if by_lag:
        for (a, b, h, lag), t in per_lag.items():
            x = acc[(a, b, h)]
            groups.setdefault((lv.get(a, a), lv.get(b, b), lag), []).append(
                HourTerms(t, t, x.far_in, x.far_out, x.nn_active, x.pair, x.hour))
    else:
        for (a, b, _), x in acc.items():
            groups.setdefault((lv.get(a, a), lv.get(b, b)), []).append(x)
    return _active(groups, lags, options)
