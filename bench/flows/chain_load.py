"""A documented fast loader: a retail chain's published tier, written server-side (issue 14, item 5).

    .venv/bin/python bench/flows/chain_load.py --days 7 [--sites 50 --cameras 20] [--database flow_chain]

Why a loader and not the product's path: a chain of 50 sites x 20 cameras publishes
50 x 20 x 19 = 19,000 ordered camera pairs x 34 rows (31 lags, the SE range, two far bands) per
open hour, about 7.8 million flow rows a day and 2.8 billion a year. Simulating that through the
simulator, the aggregator and the sink would take days on this machine; what the query benches
need is the *shape* of what the aggregator publishes (the same table, sort key, row identities,
partitions and value magnitudes), so one ``INSERT ... SELECT FROM numbers()`` per day generates it
inside ClickHouse at several million rows a second.

What it writes, per day, into ``<database>`` (migrated like the product's):

* ``flow_components``: every ordered pair of cameras within each site (``aggregator.cross_site``
  off: cross-site camera pairs at chain scale would be 1,000 x 999 pairs an hour, see
  docs/SCALING.md), for each of 12 open hours (08:00-20:00 UTC), with the rows the default
  aggregator spec publishes (lags 0-30, range [0, 30], far bands [61, 81] and [82, 102]). Values
  follow a camera with about 2 real and 1 fictitious occurrence per one-minute window (window
  products ~540 per lag-hour, chance s ~0.5), a flow of 0-2 extra co-occurrences per lag 1-10 on
  one pair in five, and the published noise (symmetric integers, noise_var_milli 2000).
* ``footfall_components``: every camera-hour of the open hours.
* the default privacy parameter set in ``privacy_params`` (p = 0.5, 1 fictitious per window).

It is **not** the product's output: the values are hash-generated, not estimated from people,
so flows read from it are meaningless; only sizes, times and storage are. Nothing here is
personal data.

Idempotent per day: a day already loaded is skipped (``--reload`` drops its partition rows first
is not offered: drop the database to start again, ``--drop``).
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rich.progress import track  # noqa: E402

from pipeline.aggregator.model import AggregatorSpec  # noqa: E402
from pipeline.analytics.dimensions import register_params  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.sink.clickhouse import ServerWarehouse  # noqa: E402
from pipeline.sink.migrations import migrate  # noqa: E402

OPEN_FROM, OPEN_HOURS = 8, 12
FIRST_DAY = date(2026, 1, 5)   # a Monday


def _name(prefix: str, expr: str) -> str:
    """'site-07'-style names in SQL that ClickHouse 18.16 accepts (no leftPad there)."""
    return f"concat('{prefix}', if({expr} < 10, '0', ''), toString({expr}))"


def flow_insert_sql(db: str, day: date, sites: int, cameras: int, spec: AggregatorSpec, version: str) -> tuple[str, int]:
    """One INSERT ... SELECT generating a day's flow rows; returns it with its row count."""
    lags = spec.max_lag + 1
    (f_in_lo, f_in_hi), (f_out_lo, f_out_hi) = spec.far_bands
    per_pair = lags + 3
    pairs = cameras * (cameras - 1)
    n = OPEN_HOURS * sites * pairs * per_pair
    day0 = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    # number -> (hour, site, pair, row); pair -> (origin camera, destination camera != origin)
    r = f"number % {per_pair}"
    pair = f"intDiv(number, {per_pair}) % {pairs}"
    site = f"intDiv(number, {per_pair * pairs}) % {sites}"
    hour = f"intDiv(number, {per_pair * pairs * sites})"
    o = f"intDiv({pair}, {cameras - 1})"
    dj = f"({pair} % {cameras - 1})"
    d = f"({dj} + ({dj} >= {o}))"
    h = f"intHash64(number + {day0})"
    width = f"multiIf(r < {lags}, 1, r = {lags}, {lags}, r = {lags + 1}, {f_in_hi - f_in_lo + 1}, {f_out_hi - f_out_lo + 1})"
    sql = (f"INSERT INTO {db}.flow_components (params_version, window_seconds, hour, origin_site, origin_camera, "
           f"dest_site, dest_camera, kind, lag_lo, lag_hi, s, nn, qq, qn, nn2_hi, nn2_lo, version, noise_var_milli) "
           f"SELECT '{version}', {spec.window_seconds}, toDateTime({day0} + ({OPEN_FROM} + hr) * 3600), "
           f"{_name('site-', 'st')}, {_name('cam-', 'oc')}, {_name('site-', 'st')}, {_name('cam-', 'dc')}, "
           f"multiIf(r < {lags}, 'lag', r = {lags}, 'range', 'far'), "
           f"toInt16(multiIf(r < {lags}, r, r = {lags}, 0, r = {lags + 1}, {f_in_lo}, {f_out_lo})), "
           f"toInt16(multiIf(r < {lags}, r, r = {lags}, {lags - 1}, r = {lags + 1}, {f_in_hi}, {f_out_hi})), "
           # chance ~ nn / 1000, a flow on one pair in five at lags 1-10, symmetric integer noise
           f"toInt64(intDiv(nn + (hh % 1000), 1000) + if(pr % 5 = 0 AND r >= 1 AND r <= 10, intDiv(hh, 1000) % 3, 0) "
           f"+ toInt64(intDiv(hh, 7000) % 5) - 2) AS s, "
           f"toInt64(wd * (480 + hh % 120)) AS nn, toInt64(wd * (480 + intDiv(hh, 13) % 120)) AS qq, "
           f"toInt64(wd * wd * (3000 + intDiv(hh, 17) % 500)) AS qn, toUInt64(0), "
           f"toUInt64(wd * wd * (4500 + intDiv(hh, 19) % 700)), toUInt64(1), toUInt64(2000) "
           f"FROM (SELECT number, {r} AS r, {pair} AS pr, {site} AS st, {hour} AS hr, {o} AS oc, {d} AS dc, "
           f"{h} AS hh, {width} AS wd FROM numbers({n}))")
    return sql, n


def footfall_insert_sql(db: str, day: date, sites: int, cameras: int, window_seconds: int, version: str) -> tuple[str, int]:
    n = OPEN_HOURS * sites * cameras
    day0 = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    sql = (f"INSERT INTO {db}.footfall_components (params_version, window_seconds, site_id, camera_id, hour, "
           f"occurrences, windows, version, noise_var_milli) "
           f"SELECT '{version}', {window_seconds}, {_name('site-', 'st')}, {_name('cam-', 'c')}, "
           f"toDateTime({day0} + ({OPEN_FROM} + hr) * 3600), toUInt64(150 + intHash64(number + {day0}) % 60), "
           f"toUInt32({3600 // window_seconds}), toUInt64(1), toUInt64(2000) "
           f"FROM (SELECT number, number % {cameras} AS c, intDiv(number, {cameras}) % {sites} AS st, "
           f"intDiv(number, {cameras * sites}) AS hr FROM numbers({n}))")
    return sql, n


def loaded_days(wh: ServerWarehouse, version: str) -> set[date]:
    rows = wh.rows(f"SELECT DISTINCT toDate(hour) FROM {wh.database}.footfall_components "
                   f"WHERE params_version = %(v)s", {"v": version})
    return {r[0] for r in rows}


def storage(wh: ServerWarehouse, table: str) -> tuple[int, int, int]:
    """(rows, bytes on disk, uncompressed bytes) of the table's active parts."""
    r = wh.rows("SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
                "WHERE database = %(d)s AND table = %(t)s AND active", {"d": wh.database, "t": table})[0]
    return tuple(int(x or 0) for x in r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=7, help="days from 2026-01-05 (default 7)")
    ap.add_argument("--sites", type=int, default=50)
    ap.add_argument("--cameras", type=int, default=20, help="cameras per site")
    ap.add_argument("--database", default="flow_chain")
    ap.add_argument("--drop", action="store_true", help="drop the database first")
    a = ap.parse_args(argv)
    if not (1 <= a.days <= 3660 and 1 <= a.sites <= 1000 and 2 <= a.cameras <= 100):
        ap.error("need 1 <= --days <= 3660, 1 <= --sites <= 1000, 2 <= --cameras <= 100")
    if not a.database.replace("_", "").isalnum():
        ap.error("--database takes letters, digits and underscores")
    settings = load_settings()
    wh = ServerWarehouse(settings.clickhouse, database=a.database, role="admin")
    if a.drop:
        wh.execute(f"DROP DATABASE IF EXISTS {a.database}")
    migrate(wh)
    params = PrivacyParams.default()
    if not wh.rows(f"SELECT 1 FROM {a.database}.privacy_params WHERE params_version = %(v)s", {"v": params.version}):
        register_params(wh, params)
    spec = AggregatorSpec()
    have = loaded_days(wh, params.version)
    days = [FIRST_DAY + timedelta(days=i) for i in range(a.days)]
    todo = [d for d in days if d not in have]
    t0, rows = time.monotonic(), 0
    for day in track(todo, description="days loaded"):
        for sql, n in (flow_insert_sql(a.database, day, a.sites, a.cameras, spec, params.version),
                       footfall_insert_sql(a.database, day, a.sites, a.cameras, spec.window_seconds, params.version)):
            wh.execute(sql)
            rows += n
    took = time.monotonic() - t0
    print(f"loaded {len(todo)} day(s) ({len(days) - len(todo)} already there): {rows:,} rows in {took:.0f} s"
          + (f" ({rows / took / 1e6:.1f} M rows/s)" if took > 0 and rows else ""))
    for table in ("flow_components", "footfall_components"):
        n, disk, raw = storage(wh, table)
        print(f"  {table}: {n:,} rows, {disk / 2**20:,.1f} MiB on disk ({raw / max(disk, 1):.1f}x compression, "
              f"{disk / max(n, 1):.2f} bytes/row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
