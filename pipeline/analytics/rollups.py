"""Site roll-ups of the published flow components: built once per closed day, read by site-level
and chain-level flow questions (schemas/clickhouse/0011_site_rollups.sql, docs/SCALING.md).

Why: the site-level estimator (``component_sums(level_of=site)``) sums, per site pair, every
active hour of every camera pair, and measures the roll-up's design effect on their far-band
residuals. Over a month of a 50-site chain that is 233 million component rows and 6.8 million
camera pair-hours pulled into Python. Every term is a sum over camera pairs and hours, and the
residuals are taken around each camera pair's level *of its UTC day*
(:func:`pipeline.aggregator.estimate.design_effect`), so a closed day can be summed once per site
pair and hour, inside ClickHouse, and a question reads the sums: the same numbers as the camera
path (tests/analytics/test_rollups.py checks it), from about 50 x 360 rows a month.

The roll-ups are built for one lag range, the aggregator's published SE range ([0, max_lag] by
default): the hours a question counts as active depend on its lag range, so a question with
another range reads the camera rows. A build records which (origin site, day) it covered in
``flow_rollup_days``; a question uses roll-ups only when every origin site of it is covered for
every day it spans (otherwise the camera path, which is always right but slower).

The build runs as the sink role (it reads the published tier and inserts sums of it; no DDL).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Mapping, Sequence

from pipeline.aggregator.estimate import EstimatorOptions, PairSums, hour_range_filter, split_far_bands
from pipeline.aggregator.model import NN2_SHIFT
from pipeline.sink.clickhouse import Warehouse


class RollupError(ValueError):
    """A roll-up build or read that cannot be done as asked."""


@dataclass(frozen=True)
class BuildReport:
    sites: int
    days: int
    camera_pair_hours: int
    rows_written: int
    seconds: float


def _epoch_day(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def _terms(cond: str, suffix: str) -> str:
    """The six summed terms of the rows matching ``cond``, with nn2 kept as its two integer halves."""
    return ", ".join(f"sumIf({c}, {cond}) AS {a}_{suffix}" for c, a in (
        ("s", "s"), ("nn", "nn"), ("qq", "qq"), ("qn", "qn"), ("nn2_hi", "nh"), ("nn2_lo", "nl"),
        ("noise_var_milli", "nv")))


def _pair_hours_sql(db: str) -> str:
    """Per camera pair-hour of one origin site and period: the range's lag rows, its range row, the
    two far bands; whether the pair-hour is active; the camera pair's far level over the active
    hours of its day; and the residual e = s_far - k nn_far of an active pair-hour."""
    lag = "kind = 'lag' AND lag_lo >= %(lo)s AND lag_lo <= %(hi)s"
    rng = "kind = 'range' AND lag_lo = %(lo)s AND lag_hi = %(hi)s"
    fi, fo = "kind = 'far' AND lag_lo < %(split)s", "kind = 'far' AND lag_lo >= %(split)s"
    far = lambda c, x: f"sumIf(s, {c}) AS s_{x}, sumIf(nn, {c}) AS nn_{x}, sumIf(noise_var_milli, {c}) AS nv_{x}"  # noqa: E731
    per_hour = (f"SELECT origin_site AS site_a, dest_site AS site_b, origin_camera AS ca, dest_camera AS cb, "
                f"hour AS h, intDiv(toUInt32(hour), 86400) AS d, {_terms(lag, 'l')}, {_terms(rng, 'r')}, countIf({rng}) AS n_r, "
                f"{far(fi, 'fi')}, {far(fo, 'fo')} "
                f"FROM {db}.flow_components FINAL WHERE params_version = %(v)s AND window_seconds = %(w)s "
                f"AND origin_site = %(site)s AND {hour_range_filter('t0', 't1')} "
                f"GROUP BY site_a, site_b, ca, cb, h, d")
    flagged = (f"SELECT *, nn_l > %(floor)s AS active, s_fi + s_fo AS sf, nn_fi + nn_fo AS nf FROM ({per_hour})")
    levels = (f"SELECT site_a, site_b, ca, cb, d, if(sumIf(nf, active) = 0, 0, "
              f"sumIf(sf, active) / sumIf(nf, active)) AS k FROM ({flagged}) GROUP BY site_a, site_b, ca, cb, d")
    return (f"SELECT *, if(active, sf - k * nf, 0) AS e FROM ({flagged}) AS x "
            f"ANY LEFT JOIN ({levels}) AS y USING (site_a, site_b, ca, cb, d)")


def _range_insert_sql(db: str) -> str:
    a = "active"
    return (f"INSERT INTO {db}.flow_site_rollups (params_version, window_seconds, hour, origin_site, dest_site, "
            f"kind, lag_lo, lag_hi, s, nn, qq, qn, nn2_hi, nn2_lo, noise_var_milli, exact, s_far_in, nn_far_in, "
            f"noise_var_far_in_milli, s_far_out, nn_far_out, noise_var_far_out_milli, pairs_active, pairs_seen, "
            f"resid_micro, resid_sq_micro, version) "
            f"SELECT %(v)s, %(w)s, h, site_a, site_b, 'range', %(lo)s, %(hi)s, sumIf(s_r, {a}), sumIf(nn_l, {a}), "
            f"sumIf(qq_r, {a}), sumIf(qn_r, {a}), sumIf(nh_r, {a}), sumIf(nl_r, {a}), sumIf(nv_r, {a}), "
            f"toUInt8(countIf({a} AND n_r = 0) = 0), sumIf(s_fi, {a}), sumIf(nn_fi, {a}), sumIf(nv_fi, {a}), "
            f"sumIf(s_fo, {a}), sumIf(nn_fo, {a}), sumIf(nv_fo, {a}), toUInt32(countIf({a})), toUInt32(count()), "
            f"toInt64(round(sum(e) * 1000000)), toUInt64(round(sum(e * e) * 1000000)), %(version)s "
            f"FROM ({_pair_hours_sql(db)}) GROUP BY site_a, site_b, h")


def _lag_insert_sql(db: str) -> str:
    lags = (f"SELECT origin_site AS site_a, dest_site AS site_b, origin_camera AS ca, dest_camera AS cb, hour AS h, "
            f"lag_lo AS lag, s, nn, qq, qn, nn2_hi, nn2_lo, noise_var_milli FROM {db}.flow_components FINAL "
            f"WHERE params_version = %(v)s AND window_seconds = %(w)s AND origin_site = %(site)s "
            f"AND {hour_range_filter('t0', 't1')} "
            f"AND kind = 'lag' AND lag_lo >= %(lo)s AND lag_lo <= %(hi)s")
    # active pair-hours: the range's NN above the floor (a second read of the same lag rows; the far
    # levels of _pair_hours_sql are not needed here)
    active = (f"SELECT origin_site AS site_a, dest_site AS site_b, origin_camera AS ca, dest_camera AS cb, "
              f"hour AS h FROM {db}.flow_components FINAL WHERE params_version = %(v)s AND window_seconds = %(w)s "
              f"AND origin_site = %(site)s AND {hour_range_filter('t0', 't1')} "
              f"AND kind = 'lag' AND lag_lo >= %(lo)s AND lag_lo <= %(hi)s "
              f"GROUP BY site_a, site_b, ca, cb, h HAVING sum(nn) > %(floor)s")
    return (f"INSERT INTO {db}.flow_site_rollups (params_version, window_seconds, hour, origin_site, dest_site, "
            f"kind, lag_lo, lag_hi, s, nn, qq, qn, nn2_hi, nn2_lo, noise_var_milli, exact, pairs_active, "
            f"pairs_seen, version) "
            f"SELECT %(v)s, %(w)s, h, site_a, site_b, 'lag', lag, lag, sum(s), sum(nn), sum(qq), sum(qn), "
            f"sum(nn2_hi), sum(nn2_lo), sum(noise_var_milli), toUInt8(1), toUInt32(count()), toUInt32(count()), "
            f"%(version)s FROM ({lags}) AS x ALL INNER JOIN ({active}) AS y USING (site_a, site_b, ca, cb, h) "
            f"GROUP BY site_a, site_b, h, lag")


def _far_split(wh: Warehouse, version: str, window_seconds: int) -> int:
    rows = wh.rows(f"SELECT DISTINCT lag_lo, lag_hi FROM {wh.database}.flow_components "
                   f"WHERE params_version = %(v)s AND window_seconds = %(w)s AND kind = 'far'",
                   {"v": version, "w": window_seconds})
    return split_far_bands((int(lo), int(hi)) for lo, hi in rows) or -1


def origin_sites(wh: Warehouse, version: str, window_seconds: int, first: date, end: date) -> list[str]:
    rows = wh.rows(f"SELECT DISTINCT site_id FROM {wh.database}.footfall_components WHERE params_version = %(v)s "
                   f"AND window_seconds = %(w)s AND hour >= toDateTime(%(t0)s) AND hour < toDateTime(%(t1)s) "
                   f"ORDER BY site_id", {"v": version, "w": window_seconds, "t0": _epoch_day(first),
                                        "t1": _epoch_day(end)})
    return [str(r[0]) for r in rows]


def build_site_rollups(wh: Warehouse, version: str, first: date, end: date, *, window_seconds: int = 60,
                       lag_range: tuple[int, int] = (0, 30), options: EstimatorOptions,
                       sites: Sequence[str] = (), progress: Callable[[str], None] | None = None) -> BuildReport:
    """Sum the camera-pair components of the days [first, end) into site pair-hours, per origin
    site (a site at a time: within a day its camera pairs lead the sort key, so ClickHouse reads
    only that site's granules of those days, and memory stays that of one site), then record the covered days.

    ``options`` carry the parameter set's fictitious rate, which decides the active hours.
    Rebuilding a day replaces its rows (ReplacingMergeTree); a day that is still open will be
    incomplete, so the caller builds closed days only (``flowctl rollups build`` does).
    """
    if end <= first:
        raise RollupError(f"no days to build: {first} to {end}")
    lo, hi = lag_range
    if not 0 <= lo <= hi:
        raise RollupError(f"lag range [{lo}, {hi}] is invalid")
    db = wh.database
    if not wh.rows(f"SELECT 1 FROM {db}.flow_components WHERE params_version = %(v)s AND window_seconds = %(w)s "
                   f"AND kind = 'range' AND lag_lo = %(lo)s AND lag_hi = %(hi)s LIMIT 1",
                   {"v": version, "w": window_seconds, "lo": lo, "hi": hi}):
        raise RollupError(f"the aggregator publishes no SE range [{lo}, {hi}] for parameter set {version!r} and "
                          f"{window_seconds}-s windows: roll-ups are built for a published range (aggregator.ranges)")
    todo = list(sites) or origin_sites(wh, version, window_seconds, first, end)
    version_ms = time.time_ns() // 1_000_000
    params: dict[str, object] = {"v": version, "w": window_seconds, "lo": lo, "hi": hi,
                                 "split": _far_split(wh, version, window_seconds),
                                 "floor": options.nn_floor(hi - lo + 1), "version": version_ms}
    t_start = time.monotonic()
    pair_hours = rows = 0
    days = (end - first).days
    for site in todo:
        # a month at most per statement: one partition, bounded memory
        day = first
        while day < end:
            stop = min(end, date(day.year + (day.month == 12), day.month % 12 + 1, 1))
            p = {**params, "site": site, "t0": _epoch_day(day), "t1": _epoch_day(stop)}
            wh.execute(_range_insert_sql(db), p)
            wh.execute(_lag_insert_sql(db), p)
            day = stop
        got = wh.rows(f"SELECT toDate(hour) AS d, sum(pairs_seen), count() FROM {db}.flow_site_rollups "
                      f"WHERE params_version = %(v)s AND window_seconds = %(w)s AND origin_site = %(site)s "
                      f"AND lag_lo = %(lo)s AND hour >= toDateTime(%(t0)s) AND hour < toDateTime(%(t1)s) "
                      f"AND version = %(version)s AND kind = 'range' GROUP BY d",
                      {**params, "site": site, "t0": _epoch_day(first), "t1": _epoch_day(end)})
        seen = {r[0]: int(r[1]) for r in got}
        rows += sum(int(r[2]) for r in got)
        pair_hours += sum(seen.values())
        covered = [first + timedelta(days=i) for i in range(days)]
        wh.insert("flow_rollup_days", ["params_version", "window_seconds", "lag_lo", "lag_hi", "origin_site", "day",
                                       "camera_pair_hours", "built_at", "version"],
                  [[version] * days, [window_seconds] * days, [lo] * days, [hi] * days, [site] * days, covered,
                   [seen.get(d, 0) for d in covered], [datetime.now(timezone.utc).replace(tzinfo=None)] * days,
                   [version_ms] * days])
        if progress:
            progress(site)
    return BuildReport(len(todo), days, pair_hours, rows, time.monotonic() - t_start)


def next_day_to_build(wh: Warehouse, version: str, window_seconds: int, lag_range: tuple[int, int]) -> date | None:
    """The day after the last one built for this version and range, else the first day with data."""
    p = {"v": version, "w": window_seconds, "lo": lag_range[0], "hi": lag_range[1]}
    built = wh.rows(f"SELECT count(), max(day) FROM {wh.database}.flow_rollup_days WHERE params_version = %(v)s "
                    f"AND window_seconds = %(w)s AND lag_lo = %(lo)s AND lag_hi = %(hi)s", p)
    if built and int(built[0][0]):
        return built[0][1] + timedelta(days=1)
    first = wh.rows(f"SELECT count(), min(hour) FROM {wh.database}.footfall_components WHERE params_version = %(v)s "
                    f"AND window_seconds = %(w)s", p)
    if not first or not int(first[0][0]):
        return None
    t = first[0][1]
    return t.date() if isinstance(t, datetime) else datetime.fromtimestamp(int(t), timezone.utc).date()


def covered(wh: Warehouse, version: str, window_seconds: int, lag_range: tuple[int, int], sites: Sequence[str],
            first: date, end: date) -> bool:
    """Whether every (origin site, day) of the question has been built."""
    if not sites or end <= first:
        return False
    names = {f"s{i}": s for i, s in enumerate(sites)}
    rows = wh.rows(f"SELECT count() FROM (SELECT DISTINCT origin_site, day FROM {wh.database}.flow_rollup_days "
                   f"WHERE params_version = %(v)s AND window_seconds = %(w)s AND lag_lo = %(lo)s AND lag_hi = %(hi)s "
                   f"AND origin_site IN ({', '.join(f'%({k})s' for k in names)}) AND day >= %(d0)s AND day < %(d1)s)",
                   {"v": version, "w": window_seconds, "lo": lag_range[0], "hi": lag_range[1], "d0": first,
                    "d1": end, **names})
    return int(rows[0][0]) == len(sites) * (end - first).days


def rollup_sums(wh: Warehouse, version: str, sites: Sequence[str], t0: int, t1: int, *, window_seconds: int,
                lag_range: tuple[int, int], by_lag: bool = False,
                level_of_site: Mapping[str, str] | None = None) -> dict[tuple, PairSums]:
    """PairSums per ordered site pair (and lag) over the hours [t0, t1) (epoch seconds) from the
    roll-ups: what ``component_sums(level_of=site)`` returns from the camera rows.
    ``level_of_site`` maps sites to coarser labels (the whole chain: every site to one label).

    Summed inside ClickHouse, label pair by label pair: the design effect's numerator is the sum
    over hours of the square of the hour's summed residuals, so the hours are summed first (per
    label pair and hour), then squared and summed. A year of the chain's roll-ups is 220,000
    site pair-hours; moving them to Python took most of the question's time."""
    names = {f"s{i}": s for i, s in enumerate(sites)}
    listed = ", ".join(f"%({k})s" for k in names)
    lv = dict(level_of_site or {})
    labels = {f"l{i}": lv.get(s, s) for i, s in enumerate(sites)}
    params = {"v": version, "w": window_seconds, "lo": lag_range[0], "hi": lag_range[1], "t0": t0, "t1": t1,
              **names, **labels}
    # Each (origin site, day)'s rows of its latest build, named by flow_rollup_days, instead of
    # FINAL: the same rows (a rebuild writes every hour of its day again, with its own version),
    # without merging in the read (FINAL made a year's question 8 times slower). Days are compared
    # as day numbers since the epoch, so the server's time zone plays no part.
    latest = (f"SELECT origin_site, toUInt32(day), max(version) FROM {wh.database}.flow_rollup_days "
              f"WHERE params_version = %(v)s AND window_seconds = %(w)s AND lag_lo = %(lo)s AND lag_hi = %(hi)s "
              f"AND origin_site IN ({listed}) GROUP BY origin_site, day")
    where = (f"params_version = %(v)s AND window_seconds = %(w)s AND origin_site IN ({listed}) "
             f"AND dest_site IN ({listed}) AND hour >= toDateTime(%(t0)s) AND hour < toDateTime(%(t1)s) "
             f"AND (origin_site, intDiv(toUInt32(hour), 86400), version) IN ({latest})")
    if all(lv.get(s, s) == s for s in sites):
        la, lb = "origin_site", "dest_site"
    else:
        to = ", ".join(f"%({k})s" for k in labels)
        la, lb = (f"transform({c}, [{listed}], [{to}], '')" for c in ("origin_site", "dest_site"))
    db = wh.database
    ints = ("s", "nn", "qq", "qn", "nn2_hi", "nn2_lo", "noise_var_milli", "s_far_in", "nn_far_in",
            "noise_var_far_in_milli", "s_far_out", "nn_far_out", "noise_var_far_out_milli", "pairs_active", "pairs_seen",
            "resid_sq_micro")
    hourly = (f"SELECT {la} AS la, {lb} AS lb, hour, " + ", ".join(f"sum({c}) AS {c}_h" for c in ints) +
              f", minIf(exact, pairs_active > 0) AS exact_h, countIf(pairs_active > 0) AS on_h, "
              f"sum(resid_micro) / 1000000 AS e_h FROM {db}.flow_site_rollups "
              f"WHERE {where} AND kind = 'range' AND lag_lo = %(lo)s AND lag_hi = %(hi)s GROUP BY la, lb, hour")
    rows = wh.rows("SELECT la, lb, " + ", ".join(f"sum({c}_h)" for c in ints) +
                   f", minIf(exact_h, on_h > 0), sum(e_h * e_h) FROM ({hourly}) GROUP BY la, lb", params)
    lag_terms: dict[tuple, list[int]] = {}
    if by_lag or any(int(r[18]) == 0 for r in rows if int(r[15])):   # an inexact pair sums its lag rows
        for a, b, lag, *v in wh.rows(
                f"SELECT {la} AS la, {lb} AS lb, lag_lo, sum(s), sum(nn), sum(qq), sum(qn), sum(nn2_hi), sum(nn2_lo), "
                f"sum(noise_var_milli) FROM {db}.flow_site_rollups WHERE {where} AND kind = 'lag' "
                f"AND lag_lo >= %(lo)s AND lag_lo <= %(hi)s GROUP BY la, lb, lag_lo", params):
            s, nn, qq, qn, nh, nl, nv = (int(x) for x in v)   # chdb returns 64-bit integers as text
            lag_terms[(str(a), str(b), int(lag))] = [s, nn, qq, qn, (nh << NN2_SHIFT) + nl, nv]
    out: dict[tuple, PairSums] = {}
    for r in rows:
        a, b = str(r[0]), str(r[1])
        (s, nn, qq, qn, nh, nl, nv, sfi, nfi, vfi, sfo, nfo, vfo, used, seen, own_micro,
         exact) = (int(x) for x in r[2:19])
        tot = float(r[19])
        if not used:
            continue
        own = own_micro / 1e6
        deff = max(1.0, tot / own) if own > 0 else 1.0

        def sums(t: Sequence[int], exact_: bool, nn_: int) -> PairSums:
            return PairSums(int(t[0]), int(nn_), int(t[2]), int(t[3]), int(t[4]), sfo, nfo, exact_, t[5] / 1000,
                            vfo / 1000, sfi, nfi, vfi / 1000, used, seen, deff)

        if by_lag:
            for (x, y, lag), t in lag_terms.items():
                if (x, y) == (a, b):
                    out[(a, b, lag)] = sums(t, True, t[1])
        elif exact:
            out[(a, b)] = sums((s, nn, qq, qn, (nh << NN2_SHIFT) + nl, nv), True, nn)
        else:
            per_lag = [t for (x, y, _), t in lag_terms.items() if (x, y) == (a, b)]
            out[(a, b)] = sums([sum(t[i] for t in per_lag) for i in range(6)], False, nn)
    return out
