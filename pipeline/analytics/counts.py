"""First analyst query: occurrences per camera, from the published footfall components.

Reads ``footfall_components FINAL`` (camera-hours published by the flow aggregator), never the
restricted per-window group cells; so ``since`` is rounded down to its hour and the figures cover
whole hours that the aggregator has closed.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pipeline.sink.clickhouse import Warehouse


def camera_counts(wh: Warehouse, since: datetime | None = None, site_id: str | None = None, *,
                  with_noise: bool = False) -> list[tuple]:
    """(site_id, camera_id, windows, occurrences) — occurrences include fictitious persons and the
    published tier's noise; windows are the windows with any occurrence in the camera's published
    hours, plus noise of the same variance, drawn independently. ``with_noise`` appends the
    variance of the noise on each of the two (sum over the hours)."""
    where, params = ["1 = 1"], {}
    if since is not None:
        t = int((since if since.tzinfo else since.replace(tzinfo=timezone.utc)).timestamp())
        where.append("hour >= toDateTime(%(since)s)")
        params["since"] = t - t % 3600
    if site_id is not None:
        where.append("site_id = %(site)s")
        params["site"] = site_id
    sql = (f"SELECT site_id, camera_id, sum(windows) AS n_windows, sum(occurrences) AS n_occurrences, "
           f"sum(noise_var_milli) FROM {wh.database}.footfall_components FINAL WHERE {' AND '.join(where)} "
           f"GROUP BY site_id, camera_id ORDER BY site_id, camera_id")
    rows = [(str(a), str(b), int(c), int(d), int(v) / 1000) for a, b, c, d, v in wh.rows(sql, params)]
    return rows if with_noise else [r[:4] for r in rows]
