"""Footfall and demographics per camera and hour, from the published tier.

Footfall reads ``footfall_components FINAL`` (per camera-hour occurrences and windows with any,
published by the flow aggregator; FINAL so that a replayed hour counts once) and subtracts the
expected fictitious persons of the parameter set; demographics read the ``demographics_hourly``
table. Neither touches the restricted per-window group cells, and an hour of a camera is one row
whatever the window length.
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
    occurrences: int          # real + fictitious occurrences published
    windows: int              # windows that had rows in the hour
    estimated_persons: float  # occurrences - windows * fictitious_per_group * n_groups

    @property
    def camera(self) -> str:
        return f"{self.site_id}/{self.camera_id}"


@dataclass(frozen=True)
class DemographicRow:
    site_id: str
    camera_id: str
    hour: datetime            # start of the hour, UTC
    age_band: str
    gender: str
    persons: int

    @property
    def camera(self) -> str:
        return f"{self.site_id}/{self.camera_id}"


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
    rows = (f"SELECT site_id, camera_id, hour, occurrences, windows, "
            f"occurrences - windows * fictitious_per_window AS persons_est "
            f"FROM (SELECT params_version, site_id, camera_id, hour, occurrences, windows "
            f"FROM {db}.footfall_components FINAL WHERE {where}) AS f "
            f"ANY LEFT JOIN ({fictitious}) AS p USING (params_version)")
    sql = (f"SELECT site_id, camera_id, toUInt32(hour) AS hour_epoch, sum(occurrences) AS occurrences, "
           f"sum(windows) AS windows, sum(persons_est) AS estimated_persons FROM ({rows}) "
           f"GROUP BY site_id, camera_id, hour_epoch ORDER BY site_id, camera_id, hour_epoch")
    return sql, params


def demographics_sql(db: str, version: str, start: datetime, end: datetime,
                     sites: Sequence[str] = ()) -> tuple[str, dict[str, object]]:
    where, params = _where(version, start, end, sites)
    sql = (f"SELECT site_id, camera_id, toUInt32(hour) AS hour_epoch, age_band, gender, sum(persons) AS persons "
           f"FROM {db}.demographics_hourly WHERE {where} "
           f"GROUP BY site_id, camera_id, hour_epoch, age_band, gender "
           f"ORDER BY site_id, camera_id, hour_epoch, age_band, gender")
    return sql, params


def footfall_hourly(wh: Warehouse, version: str, start: datetime, end: datetime,
                    sites: Sequence[str] = ()) -> list[FootfallRow]:
    """Estimated persons per camera and hour (fictitious persons' expectation subtracted).

    For an unregistered version the join yields 0 for the fictitious figures, so the estimate
    equals the raw occurrences (register the parameter set first).
    """
    sql, params = footfall_sql(wh.database, version, start, end, sites)
    return [FootfallRow(str(s), str(c), _hour(h), int(o), int(w), float(e))
            for s, c, h, o, w, e in wh.rows(sql, params)]


def demographics_hourly(wh: Warehouse, version: str, start: datetime, end: datetime,
                        sites: Sequence[str] = ()) -> list[DemographicRow]:
    """Persons per camera, hour, age band and gender (already protected by the processor)."""
    sql, params = demographics_sql(wh.database, version, start, end, sites)
    return [DemographicRow(str(s), str(c), _hour(h), str(a), str(g), int(p))
            for s, c, h, a, g, p in wh.rows(sql, params)]
