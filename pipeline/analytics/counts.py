"""First analyst query: occurrences per camera, straight from ClickHouse."""
from __future__ import annotations

from datetime import datetime

from pipeline.sink.clickhouse import Warehouse


def camera_counts(wh: Warehouse, since: datetime | None = None, site_id: str | None = None) -> list[tuple]:
    """(site_id, camera_id, windows, occurrences) — occurrences include fictitious persons."""
    where, params = ["1 = 1"], {}
    if since is not None:
        where.append("window_start >= %(since)s")
        params["since"] = since.strftime("%Y-%m-%d %H:%M:%S")
    if site_id is not None:
        where.append("site_id = %(site)s")
        params["site"] = site_id
    sql = (f"SELECT site_id, camera_id, uniqExact(window_start) AS windows, sum(occurrences) AS occurrences "
           f"FROM {wh.database}.group_occurrences WHERE {' AND '.join(where)} "
           f"GROUP BY site_id, camera_id ORDER BY site_id, camera_id")
    return [(str(a), str(b), int(c), int(d)) for a, b, c, d in wh.rows(sql, params)]

