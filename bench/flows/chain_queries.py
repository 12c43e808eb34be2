"""Flow questions at chain scale: how long an analyst waits, and what the published tier stores.

    .venv/bin/python bench/flows/chain_load.py --days 31          # once: January of a 50 x 20 chain (~8 min)
    .venv/bin/python bench/flows/chain_queries.py [--runs 3]

On the database ``chain_load.py`` filled (``flow_chain``; hash-generated values of the published
shape: only times and sizes mean anything), it builds the site roll-ups of every loaded day
(timed: what `flowctl rollups build` costs per day, and one day of every site: the nightly
build) and times, median of ``--runs``, each
question the way `flowctl flows` / `od-matrix` / `transit` ask it (pipeline.analytics.flows:
cameras with data, the parameter set, then the estimate):

* all camera pairs of one site for one day (380 pairs), and for one week;
* a camera pair's transit-time distribution over the month (31 lags);
* the site-level OD of the whole chain for one week and for the month (roll-ups), and the same
  month for one site from the camera rows (what a site-level question costs without roll-ups);
* the chain total for the month; a site pair's transit over the month (roll-ups);
* the site-level OD over a year: 28 days of the month's roll-ups copied into 12 x 28 consecutive days (the
  camera rows of a year, 2.8 billion, are not generated; a year's roll-ups are what the question
  reads), into a separate database.

Storage: rows, bytes on disk and bytes per row of the components and the roll-ups, and the
year's components extrapolated from the month's. Queries run as the admin role of the local
stack (the analyst's profile has the same 4 GB memory limit; the analyst is granted only the
product's databases).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.aggregator.estimate import EstimatorOptions  # noqa: E402
from pipeline.analytics import rollups  # noqa: E402
from pipeline.analytics.flows import (CameraRef, FlowQuery, cameras_with_data, estimate_flows,  # noqa: E402
                                      registered_params)
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.sink.clickhouse import ServerWarehouse  # noqa: E402
from pipeline.sink.migrations import migrate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_load import FIRST_DAY, storage  # noqa: E402

out = Console()


def _t(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def timed(runs: int, f: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.monotonic()
        result = f()
        times.append(time.monotonic() - t)
    return statistics.median(times), result


def ask(wh, version: str, first: date, end: date, *, sites: tuple[str, ...] = (), level: str = "camera",
        cameras: tuple[str, ...] = (), by_lag: bool = False, whole_sites: bool = True):
    """What the CLI does for one question: cameras with data, the parameter set, the estimate."""
    t0, t1 = _t(first), _t(end)
    registered_params(wh, version)
    refs = tuple(CameraRef.parse(c) for c in cameras) or tuple(cameras_with_data(wh, version, t0, t1, sites))
    q = FlowQuery(version, refs, t0, t1)
    lv = None if level == "camera" else {k: (k.partition("/")[0] if level == "site" else "chain") for k in q.camera_keys}
    return estimate_flows(wh, q, by_lag=by_lag, level_of=lv, whole_sites=whole_sites and not cameras)


def year_of_rollups(settings, src: str, version: str, month_days: int) -> ServerWarehouse:
    """A database holding the source month's roll-ups copied into each month of the year."""
    wh = ServerWarehouse(settings.clickhouse, database=f"{src}_year", role="admin")
    wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")
    migrate(wh)
    wh.execute(f"INSERT INTO {wh.database}.privacy_params SELECT * FROM {src}.privacy_params")
    days = min(month_days, 28)
    for m in range(12):   # 12 x 28 consecutive days
        shift = m * days * 86400
        wh.execute(f"INSERT INTO {wh.database}.flow_site_rollups SELECT params_version, window_seconds, "
                   f"toDateTime(toUInt32(hour) + {shift}), origin_site, dest_site, kind, lag_lo, lag_hi, s, nn, qq, qn, "
                   f"nn2_hi, nn2_lo, noise_var_milli, exact, s_far_in, nn_far_in, noise_var_far_in_milli, s_far_out, "
                   f"nn_far_out, noise_var_far_out_milli, pairs_active, pairs_seen, resid_micro, resid_sq_micro, version "
                   f"FROM {src}.flow_site_rollups WHERE hour < toDateTime({int(_t(FIRST_DAY).timestamp()) + days * 86400})")
        wh.execute(f"INSERT INTO {wh.database}.flow_rollup_days SELECT params_version, window_seconds, lag_lo, lag_hi, "
                   f"origin_site, day + {shift // 86400}, camera_pair_hours, built_at, version FROM {src}.flow_rollup_days "
                   f"WHERE day < toDate('{FIRST_DAY + timedelta(days=days)}')")
        wh.execute(f"INSERT INTO {wh.database}.footfall_components SELECT params_version, window_seconds, site_id, "
                   f"camera_id, toDateTime(toUInt32(hour) + {shift}), occurrences, windows, version, noise_var_milli "
                   f"FROM {src}.footfall_components WHERE hour < toDateTime({int(_t(FIRST_DAY).timestamp()) + days * 86400})")
    return wh


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", default="flow_chain")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the roll-ups even if built")
    a = ap.parse_args(argv)
    if not 1 <= a.runs <= 20:
        ap.error("--runs must be between 1 and 20")
    settings = load_settings()
    wh = ServerWarehouse(settings.clickhouse, database=a.database, role="admin")
    migrate(wh)   # a database loaded before the roll-up tables existed gets them
    version = PrivacyParams.default().version
    days = sorted(r[0] for r in wh.rows(f"SELECT DISTINCT toDate(hour) FROM {a.database}.footfall_components"))
    if len(days) < 28:
        raise SystemExit(f"{a.database} holds {len(days)} day(s); load a month first: bench/flows/chain_load.py --days 31")
    first, end = days[0], days[-1] + timedelta(days=1)
    sites = [r[0] for r in wh.rows(f"SELECT DISTINCT site_id FROM {a.database}.footfall_components ORDER BY site_id")]
    cams = wh.rows(f"SELECT DISTINCT camera_id FROM {a.database}.footfall_components WHERE site_id = %(s)s "
                   f"ORDER BY camera_id", {"s": sites[0]})
    out.print(f"{a.database}: {len(sites)} sites, {len(days)} days ({first} to {days[-1]}), "
              f"{len(cams)} cameras at {sites[0]}")

    _, fict = registered_params(wh, version)
    if a.rebuild or not rollups.covered(wh, version, 60, (0, 30), sites, first, end):
        r = rollups.build_site_rollups(wh, version, first, end, options=EstimatorOptions(fictitious_per_window=fict),
                                       progress=lambda s: out.print(f"  roll-ups built: {s}", end="\r"))
        out.print(f"roll-ups: {r.days} days x {r.sites} sites, {r.camera_pair_hours:,} camera pair-hours -> "
                  f"{r.rows_written:,} site pair-hours in {r.seconds:.0f} s ({r.seconds / r.days:.1f} s per day)")
    mid = first + timedelta(days=14)
    # What a deployment runs every night (`flowctl rollups build`): one closed day, every site;
    # rebuilding it writes the same rows again with a newer version.
    r = rollups.build_site_rollups(wh, version, mid, mid + timedelta(days=1),
                                   options=EstimatorOptions(fictitious_per_window=fict))
    out.print(f"nightly roll-up build (one day, {r.sites} sites): {r.seconds:.1f} s "
              f"({r.seconds / max(1, r.sites):.2f} s per site-day)")
    site = sites[0]
    cam_a, cam_b = f"{site}/{cams[0][0]}", f"{site}/{cams[1][0]}"
    questions = [
        ("all camera pairs of one site, 1 day", lambda: ask(wh, version, mid, mid + timedelta(days=1), sites=(site,))),
        ("all camera pairs of one site, 1 week", lambda: ask(wh, version, mid, mid + timedelta(days=7), sites=(site,))),
        ("one camera pair's transit (31 lags), 1 month",
         lambda: ask(wh, version, first, end, cameras=(cam_a, cam_b), by_lag=True)),
        ("site OD of the chain, 1 week (roll-ups)",
         lambda: ask(wh, version, mid, mid + timedelta(days=7), level="site")),
        ("site OD of the chain, 1 month (roll-ups)", lambda: ask(wh, version, first, end, level="site")),
        ("one site, site level, 1 month, camera rows (no roll-ups)",
         lambda: ask(wh, version, first, end, sites=(site,), level="site", whole_sites=False)),
        ("chain total, 1 month (roll-ups)", lambda: ask(wh, version, first, end, level="chain")),
        ("a site's transit (31 lags), 1 month (roll-ups)",
         lambda: ask(wh, version, first, end, sites=(site,), level="site", by_lag=True)),
    ]
    t = Table("question", "answers", f"seconds (median of {a.runs})", title="chain-scale flow questions")
    for name, f in questions:
        took, res = timed(a.runs, f)
        t.add_row(name, f"{len(res):,}", f"{took:.2f}")
        out.print(f"  {name}: {took:.2f} s", end="\r")
    ywh = year_of_rollups(settings, a.database, version, len(days))
    ydays = sorted(r[0] for r in ywh.rows(f"SELECT DISTINCT day FROM {ywh.database}.flow_rollup_days"))
    took, res = timed(a.runs, lambda: ask(ywh, version, ydays[0], ydays[-1] + timedelta(days=1), level="site"))
    t.add_row(f"site OD of the chain, 1 year ({len(ydays)} days of roll-ups)", f"{len(res):,}", f"{took:.2f}")
    out.print(t)

    s = Table("table", "rows", "MiB on disk", "bytes/row", title="storage")
    comp = storage(wh, "flow_components")
    for name, (n, disk, _) in (("flow_components (the month)", comp),
                               ("flow_site_rollups (the month)", storage(wh, "flow_site_rollups")),
                               ("footfall_components (the month)", storage(wh, "footfall_components")),
                               ("flow_site_rollups (the year)", storage(ywh, "flow_site_rollups"))):
        s.add_row(name, f"{n:,}", f"{disk / 2**20:,.1f}", f"{disk / max(n, 1):.2f}")
    s.add_row("flow_components, a year (the month x 365 / days)", f"{comp[0] * 365 // len(days):,}",
              f"{comp[1] * 365 / len(days) / 2**20:,.1f}", f"{comp[1] / max(comp[0], 1):.2f}")
    out.print(s)
    ywh.execute(f"DROP DATABASE IF EXISTS {ywh.database}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
