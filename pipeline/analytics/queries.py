"""Footfall, demographics and line crossings per camera and hour, from the published tier.

Footfall reads ``footfall_components FINAL`` (per camera-hour occurrences and the camera's live
windows, published by the flow aggregator; FINAL so that a replayed hour counts once) and
subtracts the expected fictitious persons of every live window. A window the processor closed
sends at least a window marker, so an empty window at night counts (before 2026-11 only windows
with cells did, and quiet hours read about 22 persons an hour high). Demographics and crossings read
``demographic_components FINAL`` / ``crossing_components FINAL``: the aggregator's counts stages
publish every cell of every seen camera-hour, zeros included, with discrete Laplace noise whose
variance each row carries (``noise_var_milli``, thousandths; additive over the cells a query
sums), so every figure comes with a noise variance for its interval. None of them touches the
restricted per-window cells or counts, and an hour of a camera is one row per cell whatever the
window length.
The SQL is plain %(name)s-parameterised text that ClickHouse 18.16 and current engines (chdb)
accept; ``*_sql`` return it with its parameters so the report and docs/ANALYST_SQL.md can show
the exact statement (``pipeline.analytics.flows.render_sql`` fills the values in).

Hours are selected when they overlap the period: ``hour >= start of start's hour`` and
``hour < end``. Hours are returned as timezone-aware UTC datetimes (the SQL selects
``toUInt32(hour)``, so the server's or chdb's time zone never changes how a row is read).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from pipeline.sink.clickhouse import Warehouse


@dataclass(frozen=True)
class FootfallRow:
    site_id: str
    camera_id: str
    hour: datetime            # start of the hour, UTC
    occurrences: int          # real + fictitious occurrences published, plus noise
    windows: int              # live windows of the camera in the hour (cells or a marker), plus noise
    estimated_persons: float  # occurrences - windows * fictitious_per_group * n_groups
    noise_var: float = 0.0    # variance the published noise adds to estimated_persons

    @property
    def ci95(self) -> tuple[float, float]:
        return noise_ci95(self.estimated_persons, self.noise_var)

    @property
    def camera(self) -> str:
        return f"{self.site_id}/{self.camera_id}"


Z95 = 1.959963984540054


def noise_ci95(value: float, noise_var: float) -> tuple[float, float]:
    """value ± 1.96 x the published noise's standard deviation: the interval of a noised count
    (or of a sum of them, with their variances added). Only the noise: the counts themselves are
    exact. The noise is not clamped, so a sum over many near-empty cells stays unbiased."""
    half = Z95 * noise_var ** 0.5
    return value - half, value + half


@dataclass(frozen=True)
class DemographicRow:
    site_id: str
    camera_id: str
    hour: datetime            # start of the hour, UTC
    age_band: str
    gender: str
    persons: int              # persons who passed, plus the published noise (signed)
    noise_var: float = 0.0    # variance of that noise (sum over the rows behind this one)

    @property
    def camera(self) -> str:
        return f"{self.site_id}/{self.camera_id}"

    @property
    def ci95(self) -> tuple[float, float]:
        return noise_ci95(self.persons, self.noise_var)


@dataclass(frozen=True)
class CrossingRow:
    site_id: str
    camera_id: str
    hour: datetime            # start of the hour, UTC
    line: str
    direction: str
    crossings: int            # crossings of the line in that direction, plus the published noise (signed)
    noise_var: float = 0.0

    @property
    def camera(self) -> str:
        return f"{self.site_id}/{self.camera_id}"

    @property
    def ci95(self) -> tuple[float, float]:
        return noise_ci95(self.crossings, self.noise_var)


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def _hour(epoch: object) -> datetime:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc)


def _where(version: str, start: datetime, end: datetime, sites: Sequence[str]) -> tuple[str, dict[str, object]]:
    t_from, t_to = _epoch(start), _epoch(end)
    if t_to <= t_from:
        raise ValueError(f"period end {end} is not after its start {start}")
    params: dict[str, object] = {"version": version, "t_from": t_from - t_from % 3600, "t_to": t_to}
    where = ["params_version = %(version)s", "hour >= toDateTime(%(t_from)s)", "hour < toDateTime(%(t_to)s)"]
    if sites:
        where.append("site_id IN (" + ", ".join(f"%(site{i})s" for i in range(len(sites))) + ")")
        params.update({f"site{i}": s for i, s in enumerate(sites)})
    return " AND ".join(where), params


def footfall_sql(db: str, version: str, start: datetime, end: datetime,
                 sites: Sequence[str] = ()) -> tuple[str, dict[str, object]]:
    """Per camera-hour: occurrences, windows and estimated persons = occurrences - windows x the
    expected fictitious persons per camera-window (0 for an unregistered version). The estimate is
    formed per row inside, because an outer ``sum(windows) AS windows`` alias would be substituted
    into any later expression using ``windows``."""
    where, params = _where(version, start, end, sites)
    fictitious = (f"SELECT params_version, argMax(n_groups, registered_at) * argMax(fictitious_per_group, registered_at) "
                  f"AS fictitious_per_window FROM {db}.privacy_params GROUP BY params_version")
    # occurrences and windows carry independent noise of variance noise_var_milli / 1000 each:
    # the estimate's noise variance is that times (1 + fictitious_per_window^2).
    rows = (f"SELECT site_id, camera_id, hour, occurrences, windows, "
            f"occurrences - windows * fictitious_per_window AS persons_est, "
            f"noise_var_milli / 1000 * (1 + fictitious_per_window * fictitious_per_window) AS est_var "
            f"FROM (SELECT params_version, site_id, camera_id, hour, occurrences, windows, noise_var_milli "
            f"FROM {db}.footfall_components FINAL WHERE {where}) AS f "
            f"ANY LEFT JOIN ({fictitious}) AS p USING (params_version)")
    sql = (f"SELECT site_id, camera_id, toUInt32(hour) AS hour_epoch, sum(occurrences) AS occurrences, "
           f"sum(windows) AS windows, sum(persons_est) AS estimated_persons, sum(est_var) AS noise_var "
           f"FROM ({rows}) GROUP BY site_id, camera_id, hour_epoch ORDER BY site_id, camera_id, hour_epoch")
    return sql, params


def _cells_sql(db: str, table: str, value: str, k1: str, k2: str, version: str, start: datetime, end: datetime,
               sites: Sequence[str]) -> tuple[str, dict[str, object]]:
    where, params = _where(version, start, end, sites)
    sql = (f"SELECT site_id, camera_id, toUInt32(hour) AS hour_epoch, {k1}, {k2}, sum({value}) AS {value}, "
           f"sum(noise_var_milli) / 1000 AS noise_var "
           f"FROM {db}.{table} FINAL WHERE {where} "
           f"GROUP BY site_id, camera_id, hour_epoch, {k1}, {k2} "
           f"ORDER BY site_id, camera_id, hour_epoch, {k1}, {k2}")
    return sql, params


def demographics_sql(db: str, version: str, start: datetime, end: datetime,
                     sites: Sequence[str] = ()) -> tuple[str, dict[str, object]]:
    """Per camera-hour and (age band, gender): published persons and the variance of their noise."""
    return _cells_sql(db, "demographic_components", "persons", "age_band", "gender", version, start, end, sites)


def crossings_sql(db: str, version: str, start: datetime, end: datetime,
                  sites: Sequence[str] = ()) -> tuple[str, dict[str, object]]:
    """Per camera-hour, line and direction: published crossings and the variance of their noise."""
    return _cells_sql(db, "crossing_components", "crossings", "line", "direction", version, start, end, sites)


def footfall_hourly(wh: Warehouse, version: str, start: datetime, end: datetime,
                    sites: Sequence[str] = ()) -> list[FootfallRow]:
    """Estimated persons per camera and hour (fictitious persons' expectation subtracted).

    For an unregistered version the join yields 0 for the fictitious figures, so the estimate
    equals the raw occurrences (register the parameter set first).
    """
    sql, params = footfall_sql(wh.database, version, start, end, sites)
    return [FootfallRow(str(s), str(c), _hour(h), int(o), int(w), float(e), float(v))
            for s, c, h, o, w, e, v in wh.rows(sql, params)]


def demographics_hourly(wh: Warehouse, version: str, start: datetime, end: datetime,
                        sites: Sequence[str] = ()) -> list[DemographicRow]:
    """Persons per camera, hour, age band and gender: every published cell (zeros included), with
    its noise variance."""
    sql, params = demographics_sql(wh.database, version, start, end, sites)
    return [DemographicRow(str(s), str(c), _hour(h), str(a), str(g), int(p), float(v))
            for s, c, h, a, g, p, v in wh.rows(sql, params)]


def crossings_hourly(wh: Warehouse, version: str, start: datetime, end: datetime,
                     sites: Sequence[str] = ()) -> list[CrossingRow]:
    """Line crossings per camera, hour, line and direction: every published cell (zeros
    included), with its noise variance."""
    sql, params = crossings_sql(wh.database, version, start, end, sites)
    return [CrossingRow(str(s), str(c), _hour(h), str(a), str(d), int(n), float(v))
            for s, c, h, a, d, n, v in wh.rows(sql, params)]
