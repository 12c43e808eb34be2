"""Analyst commands: flows, od-matrix, transit, demographics, crossings, report; plus the dimension loaders.

Thin on purpose: every number comes from the published tier through pipeline.analytics (flow
components summed by pipeline.aggregator.estimate, footfall, demographic and crossing components), whose
``--show-sql`` statement gives clickhouse-client users the same figures; this module only parses
the question and prints the answer. Nothing here reads the restricted per-window group cells.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from pipeline.analytics.flows import (CameraRef, FlowEstimate, FlowQuery, FlowQueryError, cameras_with_data,
                                      estimate_flows, flow_sql, registered_params, registered_rate, render_sql)

out = Console()


def _parse_time(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not an ISO date or date-time (e.g. 2026-11-02 or "
                                 f"2026-11-02T09:00)", param_hint=name) from e
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _warehouse(ctx: click.Context, role: str = "analyst"):
    """Analysis reads as the read-only analyst; loading the layout and parameters needs admin."""
    from pipeline.cli import _settings, _warehouse as wh  # the root CLI owns settings and connections

    return wh(_settings(ctx), role)


def _version(ctx: click.Context, given: str | None) -> str:
    if given:
        return given
    from pipeline.cli import _settings
    from pipeline.privacy import ParamsError
    from pipeline.privacy.deployment import load_params

    try:
        return load_params(_settings(ctx)).version
    except ParamsError:
        # Analysts do not hold the processors' secret parameter set; the warehouse has the public
        # figures of every version, and the newest registered one is the current one.
        rows = _warehouse(ctx).rows(f"SELECT params_version FROM {_settings(ctx).clickhouse.database}.privacy_params "
                                    "ORDER BY registered_at DESC, params_version DESC LIMIT 1")
        if not rows:
            raise click.ClickException("no privacy parameter set is registered in the warehouse: run "
                                       "`flowctl migrate` on a processor host or `flowctl params register --params F`, "
                                       "or pass --params-version") from None
        return str(rows[0][0])


def question(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every flow question shares: parameter set, period, cameras, lag range."""
    opts = [
        click.option("--params-version", default=None, help="Privacy parameter set (default: the configured one)."),
        click.option("--from", "start", required=True,
                     help="Period start (UTC), e.g. 2026-11-02; flows cover the whole hours the period touches."),
        click.option("--to", "end", required=True, help="Period end (UTC, exclusive), e.g. 2026-11-09."),
        click.option("--camera", "cameras", multiple=True,
                     help="SITE/CAMERA; repeat. Default: every camera with data in the period."),
        click.option("--site", "sites", multiple=True, help="Only cameras of these sites; repeat."),
        click.option("--window-seconds", default=60, show_default=True, type=click.IntRange(1, 86400)),
        click.option("--min-lag", default=0, show_default=True, type=click.IntRange(0),
                     help="Shortest transit counted, in windows."),
        click.option("--max-lag", default=30, show_default=True, type=click.IntRange(0),
                     help="Longest transit counted, in windows (30 = 30 minutes with 60-s windows); at most the "
                          "lags the aggregator publishes (aggregator.max_lag_windows)."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
        click.option("--show-sql", is_flag=True, help="Print the SQL with its values, to run elsewhere."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _query(ctx: click.Context, params_version: str | None, start: str, end: str, cameras: tuple[str, ...],
           sites: tuple[str, ...], window_seconds: int, min_lag: int, max_lag: int) -> tuple[Any, FlowQuery]:
    wh = _warehouse(ctx)
    version = _version(ctx, params_version)
    t0, t1 = _parse_time(start, "--from"), _parse_time(end, "--to")
    if t1 <= t0:
        raise click.BadParameter(f"{end} is not after --from {start}", param_hint="--to")
    try:
        registered_rate(wh, version)  # an unknown version gets the how-to, not "no cameras"
        refs = tuple(CameraRef.parse(c) for c in cameras) if cameras else tuple(
            cameras_with_data(wh, version, t0, t1, sites))
        if not cameras and len(refs) < 2:
            raise FlowQueryError(f"fewer than two cameras have data for parameter set {version!r} between "
                                 f"{t0:%Y-%m-%d %H:%M} and {t1:%Y-%m-%d %H:%M} UTC")
        return wh, FlowQuery(version, refs, t0, t1, window_seconds, min_lag, max_lag)
    except FlowQueryError as e:
        raise click.ClickException(str(e)) from e


LEVELS = ["camera", "zone", "store", "site", "chain"]


def _levels(wh: Any, q: FlowQuery, level: str) -> dict[str, str] | None:
    """camera key -> label at ``level``: sites and the chain come from the keys themselves, zones
    and stores from the loaded layout."""
    if level == "camera":
        return None
    if level == "site":
        return {k: k.partition("/")[0] for k in q.camera_keys}
    if level == "chain":
        return {k: "chain" for k in q.camera_keys}
    from pipeline.analytics.dimensions import camera_levels

    return camera_levels(wh, level)


def _estimates(wh: Any, q: FlowQuery, by_lag: bool, show_sql: bool, level: str = "camera",
               whole_sites: bool = False) -> list[FlowEstimate]:
    """Estimates at ``level``: camera pairs' components are summed per zone (store, site) pair
    before estimating, so a roll-up pools kappa (docs/ANALYST_SQL.md). ``whole_sites``: the
    cameras are every camera of their sites, so built site roll-ups can answer (docs/SCALING.md)."""
    if show_sql:
        sql, params = flow_sql(wh.database, q, by_lag=by_lag, sites=level == "site")
        if level not in ("camera", "site"):
            click.echo(f"-- camera pairs; the {level} level sums their components (s, nn, qq, qn, nn2, far) per "
                       f"{level} pair before the same formulas, with the roll-up's design effect on the chance "
                       f"variance (docs/ANALYST_SQL.md, roll-ups)")
        click.echo(render_sql(sql, params) + ";")
    try:
        return estimate_flows(wh, q, by_lag=by_lag, level_of=_levels(wh, q, level), whole_sites=whole_sites)
    except FlowQueryError as e:
        raise click.ClickException(str(e)) from e


def _fmt(x: float) -> str:
    return f"{x:,.1f}"


def flows_table(estimates: list[FlowEstimate], title: str) -> Table:
    t = Table("origin", "destination", "flow", "± se", "95% CI", "co-occurrences", "chance", title=title)
    for e in estimates:
        lo, hi = e.ci95
        t.add_row(e.origin, e.destination, _fmt(e.flow), _fmt(e.se), f"[{_fmt(lo)}, {_fmt(hi)}]",
                  _fmt(e.co_occurrences), _fmt(e.chance))
    return t


def _finite(v: Any) -> Any:
    """JSON has no NaN or infinity: an estimate that cannot be formed (no far-band products, so
    no kappa) is written as null, not as the invalid bare token ``NaN``."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _dump(rows: list[FlowEstimate]) -> None:
    click.echo(json.dumps([{k: _finite(v) for k, v in {**e.__dict__, "ci95": list(e.ci95)}.items()} for e in rows],
                          indent=2, allow_nan=False))


def _footnote(q: FlowQuery, rows: list[FlowEstimate]) -> None:
    p = rows[0].same_group_rate if rows else float("nan")
    h0, h1 = (datetime.fromtimestamp(h, timezone.utc) for h in q.hours)
    out.print(f"[dim]hours {h0:%Y-%m-%d %H:%M} to {h1:%Y-%m-%d %H:%M} UTC (published components are hourly: the "
              f"period is rounded out to whole hours); transits of {q.min_lag}-{q.max_lag} windows of "
              f"{q.window_seconds} s; parameter set {q.params_version} (same-group rate {p:.3f}). Flows count pairs "
              "of captures (a person seen at A, then at B within the lag range), estimated from the published "
              "co-occurrence components minus chance; negative values mean 'no detectable flow'.[/dim]")
    if any(not e.se_exact for e in rows):
        out.print(f"[dim]The aggregator publishes no exact SE for lags {q.min_lag}-{q.max_lag}: the SE sums the "
                  "per-lag terms (too narrow when the same people are seen at B in consecutive windows).[/dim]")


@click.command("flows")
@question
@click.option("--level", type=click.Choice(LEVELS), default="camera", show_default=True,
              help="Roll camera pairs up to zones or stores (from the loaded layout), sites, or the whole chain.")
@click.option("--min-flow", type=float, default=None, help="Only rows whose estimate is at least this.")
@click.pass_context
def flows(ctx: click.Context, level: str, min_flow: float | None, as_json: bool, show_sql: bool, **kw: Any) -> None:
    """Estimated flows between every ordered pair of cameras (or zones, stores, sites), with 95% CIs."""
    wh, q = _query(ctx, **kw)
    rows = _estimates(wh, q, False, show_sql, level, whole_sites=not kw["cameras"])
    if min_flow is not None:
        rows = [e for e in rows if e.flow >= min_flow]
    if as_json:
        return _dump(rows)
    out.print(flows_table(rows, f"estimated flows ({level} level)"))
    _footnote(q, rows)


@click.command("od-matrix")
@question
@click.option("--level", type=click.Choice(LEVELS), default="camera", show_default=True)
@click.pass_context
def od_matrix(ctx: click.Context, level: str, as_json: bool, show_sql: bool, **kw: Any) -> None:
    """Origin-destination matrix: rows are origins, columns destinations, cells 'flow ± 1.96 se'."""
    wh, q = _query(ctx, **kw)
    rows = _estimates(wh, q, False, show_sql, level, whole_sites=not kw["cameras"])
    if as_json:
        return _dump(rows)
    labels = sorted({e.origin for e in rows} | {e.destination for e in rows})
    cell = {(e.origin, e.destination): e for e in rows}
    t = Table("from \\ to", *labels, title=f"origin-destination matrix ({level} level, 95% CI half-width)")
    for a in labels:
        t.add_row(a, *[("—" if (a, b) not in cell else f"{cell[a, b].flow:,.0f} ± {1.96 * cell[a, b].se:,.0f}")
                       for b in labels])
    out.print(t)
    _footnote(q, rows)


@click.command("transit")
@question
@click.option("--origin", required=True, help="SITE/CAMERA the transit starts at (a SITE with --level site).")
@click.option("--destination", required=True, help="SITE/CAMERA it ends at (a SITE with --level site).")
@click.option("--level", type=click.Choice(["camera", "site"]), default="camera", show_default=True,
              help="site: between two sites, every camera of each (site roll-ups where built).")
@click.pass_context
def transit(ctx: click.Context, origin: str, destination: str, level: str, as_json: bool, show_sql: bool,
            **kw: Any) -> None:
    """Transit-time distribution from origin to destination: estimated flow per lag, with 95% CIs."""
    if level == "site":
        if kw["cameras"] or kw["sites"]:
            raise click.UsageError("--level site takes the two sites as --origin and --destination, not "
                                   "--camera or --site")
        kw["sites"] = (origin, destination) if origin != destination else (origin,)
        wh, q = _query(ctx, **kw)
        keys = (origin, destination)
        rows = _estimates(wh, q, True, show_sql, "site", whole_sites=True)
    else:
        kw["cameras"] = (origin, destination)
        wh, q = _query(ctx, **kw)
        keys = (CameraRef.parse(origin).key, CameraRef.parse(destination).key)
        rows = _estimates(wh, q, True, show_sql)
    rows = [e for e in rows if (e.origin, e.destination) == keys]
    if as_json:
        return _dump(rows)
    t = Table("lag (windows)", "minutes", "flow", "± se", "95% CI", title=f"transit {origin} -> {destination}")
    for e in rows:
        lo, hi = e.ci95
        t.add_row(str(e.lag), f"{(e.lag or 0) * q.window_seconds / 60:g}", _fmt(e.flow), _fmt(e.se),
                  f"[{_fmt(lo)}, {_fmt(hi)}]")
    out.print(t)
    total = sum(e.flow for e in rows)
    if total > 0:
        mean = sum((e.lag or 0) * max(e.flow, 0) for e in rows) / sum(max(e.flow, 0) for e in rows)
        out.print(f"estimated total {total:,.1f}; mean transit ≈ {mean * q.window_seconds / 60:.1f} min "
                  f"(negative lags clipped to 0 for the mean)")
    _footnote(q, rows)


def _cells(ctx: click.Context, kind: str, params_version: str | None, start: str, end: str, sites: tuple[str, ...],
           cameras: tuple[str, ...], by: str, as_json: bool, show_sql: bool) -> None:
    """Sum published count cells (demographics or crossings) per camera, hour or in total, with
    the noise variance of each sum and its 95% interval."""
    from pipeline.analytics.queries import (crossings_hourly, crossings_sql, demographics_hourly, demographics_sql,
                                            noise_ci95)

    t0, t1 = _parse_time(start, "--from"), _parse_time(end, "--to")
    if t1 <= t0:
        raise click.BadParameter(f"{end} is not after --from {start}", param_hint="--to")
    try:
        refs = {CameraRef.parse(c).key for c in cameras}
    except FlowQueryError as e:
        raise click.BadParameter(str(e), param_hint="--camera") from e
    wh = _warehouse(ctx)
    version = _version(ctx, params_version)
    # --site and --camera both narrow (their intersection); cameras alone select their sites in SQL
    sites = tuple(sorted(set(sites) or {c.split("/", 1)[0] for c in refs}))
    if kind == "demographics":
        query, make_sql, keys, value = demographics_hourly, demographics_sql, ("age_band", "gender"), "persons"
    else:
        query, make_sql, keys, value = crossings_hourly, crossings_sql, ("line", "direction"), "crossings"
    if show_sql:
        click.echo(render_sql(*make_sql(wh.database, version, t0, t1, sites)) + ";")
    agg: dict[tuple[str, str, str], list[float]] = {}
    for r in query(wh, version, t0, t1, sites):
        if refs and r.camera not in refs:
            continue
        k = {"camera": r.camera, "hour": f"{r.hour:%Y-%m-%d %H:00}", "total": "all"}[by]
        a = agg.setdefault((k, getattr(r, keys[0]), getattr(r, keys[1])), [0, 0.0])
        a[0] += getattr(r, value)
        a[1] += r.noise_var
    if as_json:
        click.echo(json.dumps([{"key": k, keys[0]: a, keys[1]: b, value: int(n), "noise_var": v,
                                "ci95": list(noise_ci95(n, v))} for (k, a, b), (n, v) in sorted(agg.items())],
                              indent=2))
        return
    t = Table(by, keys[0].replace("_", " "), keys[1], value, "95% CI",
              title=f"{kind} (published per camera-hour with noise; parameter set {version})")
    for (k, a, b), (n, v) in sorted(agg.items()):
        lo, hi = noise_ci95(n, v)
        t.add_row(k, a, b, f"{int(n):,}", f"[{max(lo, 0):,.0f}, {hi:,.0f}]")
    out.print(t)
    out.print("[dim]Every cell of every camera-hour is published with discrete Laplace noise (zeros included); the "
              "interval is the noise's (variances of the summed cells add). A single cell can read negative: the "
              "noise is not clamped, so sums stay unbiased. Hours are whole hours the period touches.[/dim]")


def _cells_command(kind: str, help_text: str) -> Callable[..., Any]:
    @click.command(kind, help=help_text)
    @click.option("--params-version", default=None, help="Privacy parameter set (default: the configured one).")
    @click.option("--from", "start", required=True, help="Period start (UTC); rounded down to its hour.")
    @click.option("--to", "end", required=True, help="Period end (UTC, exclusive).")
    @click.option("--site", "sites", multiple=True, help="Only cameras of these sites; repeat.")
    @click.option("--camera", "cameras", multiple=True, help="Only these SITE/CAMERA; repeat.")
    @click.option("--by", type=click.Choice(["camera", "hour", "total"]), default="camera", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.option("--show-sql", is_flag=True, help="Print the SQL with its values, to run elsewhere.")
    @click.pass_context
    def command(ctx: click.Context, **kw: Any) -> None:
        _cells(ctx, kind, **kw)

    return command


demographics = _cells_command(
    "demographics", "Persons per age band and gender, from the published demographic components: noised "
                    "camera-hour cells, with the 95% interval of the noise.")
crossings = _cells_command(
    "crossings", "Line crossings per line and direction, from the published crossing components: noised "
                 "camera-hour cells, with the 95% interval of the noise.")


@click.command("report")
@question
@click.option("--level", type=click.Choice(["camera", "zone", "store", "site"]), default="camera", show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("flow-report.html"),
              show_default=True)
@click.pass_context
def report(ctx: click.Context, level: str, out_path: Path, as_json: bool, show_sql: bool, **kw: Any) -> None:
    """Self-contained HTML report: footfall, OD heatmap, transit histograms, demographics, with the SQL used."""
    from pipeline.analytics.report import build_report

    wh, q = _query(ctx, **kw)
    data = build_report(wh, q.params_version, q.start, q.end, cameras=q.cameras, min_lag=q.min_lag,
                        max_lag=q.max_lag, window_seconds=q.window_seconds, level=level, out_path=out_path)
    out.print(flows_table(data.flows, "estimated flows in the report"))
    out.print(f"report written to [bold]{out_path.resolve()}[/bold] (open it in a browser)")


@click.group("layout")
def layout() -> None:
    """Camera layout (names, zones, stores) used to roll flows up."""


@layout.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def layout_load(ctx: click.Context, path: Path) -> None:
    """Load a site layout YAML (sites: [{site_id, cameras: [{camera_id, name, zone, store}]}])."""
    from pipeline.analytics.dimensions import load_layout
    from pipeline.layout import LayoutError, read_layout

    try:
        n = load_layout(_warehouse(ctx, "admin"), read_layout(path))
    except LayoutError as e:
        raise click.ClickException(str(e)) from e
    out.print(f"loaded {n} cameras from {path}")


@click.group("params")
def params_group() -> None:
    """The public figures of privacy parameter sets, as the estimators need them."""


@params_group.command("register")
@click.option("--params", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Parameter JSON (default: the processor's configured set).")
@click.pass_context
def params_register(ctx: click.Context, path: Path | None) -> None:
    """Record a parameter set's same-group rate, group count and fictitious rate in ClickHouse."""
    from pipeline.analytics.dimensions import register_params
    from pipeline.privacy import ParamsError, PrivacyParams

    try:
        if path is not None:
            p = PrivacyParams.load(path)
        else:
            from pipeline.cli import _settings
            from pipeline.privacy.deployment import load_params

            p = load_params(_settings(ctx))
    except ParamsError as e:
        raise click.ClickException(str(e)) from e
    register_params(_warehouse(ctx, "admin"), p)
    out.print(f"registered {p.version}: {p.n_groups} groups, same-group rate {p.same_group_rate}, "
              f"{p.fictitious_per_window:g} fictitious persons per camera-window")


@click.group("rollups")
def rollups_group() -> None:
    """Site roll-ups of the published flow components, for site- and chain-level questions."""


SETTLE_HOURS = 3   # a day is closed once the aggregator's 2-h bound and its lateness have passed


@rollups_group.command("build")
@click.option("--params-version", default=None, help="Privacy parameter set (default: the configured one).")
@click.option("--from", "start", default=None,
              help="First day (UTC) to build, e.g. 2026-11-02. Default: the day after the last one built (or the first "
                   "day with data).")
@click.option("--to", "end", default=None,
              help=f"Day to stop before (UTC, exclusive). Default: the last closed day ({SETTLE_HOURS} h after midnight).")
@click.option("--site", "sites", multiple=True, help="Only these origin sites; repeat. Default: every site with data.")
@click.option("--window-seconds", default=60, show_default=True, type=click.IntRange(1, 3600))
@click.option("--min-lag", default=0, show_default=True, type=click.IntRange(0))
@click.option("--max-lag", default=30, show_default=True, type=click.IntRange(0),
              help="The lag range to build for: an SE range the aggregator publishes.")
@click.pass_context
def rollups_build(ctx: click.Context, params_version: str | None, start: str | None, end: str | None,
                  sites: tuple[str, ...], window_seconds: int, min_lag: int, max_lag: int) -> None:
    """Sum closed days of camera-pair components into site pair-hours (idempotent: a rebuilt day
    replaces its rows). Runs as the sink role."""
    from pipeline.aggregator.estimate import EstimatorOptions
    from pipeline.analytics.rollups import RollupError, build_site_rollups, next_day_to_build

    wh = _warehouse(ctx, "sink")
    version = _version(ctx, params_version)
    try:
        _, fictitious = registered_params(wh, version)
        now = datetime.now(timezone.utc)
        last_closed = (now - timedelta(hours=SETTLE_HOURS)).date()
        d1 = _parse_time(end, "--to").date() if end else last_closed
        if d1 > last_closed:
            raise click.BadParameter(f"{d1} is after the last closed day ({last_closed}): an open day's roll-ups "
                                     "would be incomplete", param_hint="--to")
        d0 = _parse_time(start, "--from").date() if start else next_day_to_build(wh, version, window_seconds,
                                                                                 (min_lag, max_lag))
        if d0 is None or d0 >= d1:
            out.print(f"nothing to build for {version} before {d1}")
            return
        options = EstimatorOptions(fictitious_per_window=fictitious, windows_per_hour=3600 // window_seconds)
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("sites built", total=len(sites) or None)
            r = build_site_rollups(wh, version, d0, d1, window_seconds=window_seconds, lag_range=(min_lag, max_lag),
                                   options=options, sites=sites, progress=lambda _: bar.advance(task))
    except (RollupError, FlowQueryError) as e:
        raise click.ClickException(str(e)) from e
    out.print(f"built {r.days} day(s) {d0} to {d1} for {r.sites} site(s): {r.camera_pair_hours:,} camera pair-hours "
              f"into {r.rows_written:,} site pair-hours in {r.seconds:.1f} s")


COMMANDS = (flows, od_matrix, transit, demographics, crossings, report, layout, params_group, rollups_group)
