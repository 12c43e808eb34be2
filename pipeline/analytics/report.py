"""One self-contained HTML report of a period: footfall, flows with their uncertainty,
transit times and demographics, with the SQL that produced every figure.

Everything is embedded (matplotlib figures as base64 PNG, inline CSS, no JavaScript), so the file
can be mailed or archived as is. The numbers shown are returned in :class:`ReportData`, and the
flow table is formatted with :func:`format_number`, so a caller (``flowctl report``, tests) can
check that the report and ``flowctl flows`` print the same figures.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.analytics.dimensions import camera_levels  # noqa: E402
from pipeline.analytics.flows import (  # noqa: E402
    Z95, CameraRef, FlowEstimate, FlowQuery, FlowQueryError, PublishedLags, cameras_with_data, estimate_flows,
    flow_sql, published_lags, registered_rate, render_sql)
from pipeline.analytics.queries import (  # noqa: E402
    DemographicRow, FootfallRow, demographics_hourly, demographics_sql, footfall_hourly, footfall_sql, noise_ci95)
from pipeline.sink.clickhouse import Warehouse  # noqa: E402

MAX_TRANSIT_PLOTS = 6
FEW_HOURS = 6  # up to this many hours, footfall is drawn as bars per hour
SECTION_TITLES = ("Summary", "Hourly footfall", "Flows between cameras", "Transit times",
                  "Demographics by hour", "SQL used")


def format_number(x: float, digits: int = 1) -> str:
    """How the report prints a flow figure (flow, SE, CI bounds, S, chance)."""
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


_SUBQUERY = re.compile(r"\(\s*SELECT\b")
_CLAUSE = re.compile(r"(ALL INNER JOIN|ANY LEFT JOIN|ARRAY JOIN|GROUP BY|ORDER BY|FROM|WHERE|USING)\b")


def pretty_sql(sql: str, indent: str = "  ") -> str:
    """Line breaks and indentation for a generated statement: each subquery indented, each clause
    (FROM, WHERE, JOIN, USING, GROUP BY, ORDER BY) on its own line. Only whitespace outside string
    literals changes, so the statement means the same."""
    out: list[str] = []
    stack: list[bool] = []   # per open parenthesis: is it a subquery?
    i, n = 0, len(sql)

    def newline() -> None:
        while out and out[-1] == " ":
            out.pop()
        out.append("\n" + indent * sum(stack))

    while i < n:
        c = sql[i]
        if c == "'":
            j = i + 1
            while j < n and sql[j] != "'":
                j += 2 if sql[j] == "\\" else 1
            out.append(sql[i:j + 1])
            i = j + 1
        elif c == "(":
            sub = _SUBQUERY.match(sql, i) is not None
            stack.append(sub)
            out.append("(")
            i += 1
            if sub:
                newline()
                while i < n and sql[i] == " ":
                    i += 1
        elif c == ")":
            if stack and stack[-1]:
                stack.pop()
                newline()
            elif stack:
                stack.pop()
            out.append(")")
            i += 1
        elif (not stack or stack[-1]) and (i == 0 or sql[i - 1] == " ") and (m := _CLAUSE.match(sql, i)):
            newline()
            out.append(m.group(1))
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out).strip()


@dataclass(frozen=True)
class ParamsSummary:
    version: str
    n_groups: int
    same_group_rate: float
    fictitious_floor: int
    fictitious_ratio: float
    fictitious_per_group: float

    @property
    def fictitious_per_window(self) -> float:
        return self.n_groups * self.fictitious_per_group


@dataclass
class ReportData:
    out_path: Path
    version: str
    start: datetime
    end: datetime
    level: str
    window_seconds: int
    min_lag: int
    max_lag: int
    params: ParamsSummary
    cameras: tuple[CameraRef, ...]
    flows: list[FlowEstimate]              # at ``level``, summed over the lag range (the table)
    flows_by_lag: list[FlowEstimate]       # at ``level``, one per lag
    transit_pairs: list[tuple[str, str]]   # pairs given a transit-time plot, largest flow first
    footfall: list[FootfallRow]
    demographics: list[DemographicRow]
    sql: dict[str, str] = field(default_factory=dict)   # title -> statement with values filled in
    figures: list[str] = field(default_factory=list)    # titles of the embedded images, in order
    truth: "GroundTruth | None" = None                  # labelled persons, for footage with labels
    published: PublishedLags | None = None              # lags, SE ranges and far band found in the period


@dataclass(frozen=True)
class GroundTruth:
    """Labelled persons per camera for footage that has labels (the demo's vtest.avi): lets the
    report set what the pipeline counted against who was really there."""

    persons: dict[str, int]          # camera key -> distinct labelled persons in the frames it got
    source: str                      # where the labels come from, for the reader
    seconds: dict[str, float]        # camera key -> seconds of footage it got
    # camera key -> persons the pipeline counted in exactly this run (occurrences minus expected
    # fictitious ones). Not the hourly footfall: an hour can hold other runs of the same cameras.
    counted: dict[str, float]
    visits: dict[str, int] = field(default_factory=dict)  # camera key -> labelled visits (exits and returns split)


def params_summary(wh: Warehouse, version: str) -> ParamsSummary:
    registered_rate(wh, version)  # raises FlowQueryError with a how-to if the version is unknown
    rows = wh.rows(f"SELECT argMax(n_groups, registered_at), argMax(same_group_rate, registered_at), "
                   f"argMax(fictitious_floor, registered_at), argMax(fictitious_ratio, registered_at), "
                   f"argMax(fictitious_per_group, registered_at) FROM {wh.database}.privacy_params "
                   f"WHERE params_version = %(v)s GROUP BY params_version", {"v": version})
    n, p, floor, ratio, per_group = rows[0]
    return ParamsSummary(version, int(n), float(p), int(floor), float(ratio), float(per_group))


def _cameras(wh: Warehouse, version: str, start: datetime, end: datetime,
             cameras: Sequence[CameraRef | str]) -> tuple[CameraRef, ...]:
    if cameras:
        return tuple(c if isinstance(c, CameraRef) else CameraRef.parse(c) for c in cameras)
    found = tuple(cameras_with_data(wh, version, start, end))
    if len(found) < 2:
        raise FlowQueryError(f"fewer than two cameras published anything for {version!r} in the period; "
                             "nothing to report flows for")
    return found


def build_report(wh: Warehouse, version: str, start: datetime, end: datetime, *,
                 cameras: Sequence[CameraRef | str] = (), min_lag: int = 0, max_lag: int = 30,
                 window_seconds: int = 60, level: str = "camera", out_path: Path | str,
                 max_transit_plots: int = MAX_TRANSIT_PLOTS, truth: GroundTruth | None = None) -> ReportData:
    """Query everything, draw the figures and write one HTML file to ``out_path``.

    ``cameras``: CameraRef or "SITE/CAMERA" strings; empty means every camera with data in the
    period. ``level``: camera, zone, store or site (camera pairs' flow components summed per
    label pair with the layout in ``cameras``, pooling kappa; footfall and demographics stay per
    camera). Lags are in windows. Everything comes from the published tier.
    """
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    params = params_summary(wh, version)
    cams = _cameras(wh, version, start, end, cameras)
    q = FlowQuery(version, cams, start, end, window_seconds=window_seconds, min_lag=min_lag, max_lag=max_lag)
    levels = camera_levels(wh, level)
    flows = estimate_flows(wh, q, level_of=levels)
    by_lag = estimate_flows(wh, q, by_lag=True, level_of=levels)

    keys = {c.key for c in cams}
    sites = tuple(sorted({c.site_id for c in cams}))
    footfall = [r for r in footfall_hourly(wh, version, start, end, sites) if r.camera in keys]
    demo = [r for r in demographics_hourly(wh, version, start, end, sites) if r.camera in keys]

    ranked = sorted((e for e in flows if math.isfinite(e.flow)), key=lambda e: (-e.flow, e.origin, e.destination))
    transit_pairs = [(e.origin, e.destination) for e in ranked[:max_transit_plots]]

    db = wh.database
    sql = {
        "Flows over the lag range (table, heatmap)": render_sql(*flow_sql(db, q)),
        "Flows per lag (transit times)": render_sql(*flow_sql(db, q, by_lag=True)),
        "Hourly footfall": render_sql(*footfall_sql(db, version, start, end, sites)),
        "Demographics by hour": render_sql(*demographics_sql(db, version, start, end, sites)),
    }
    data = ReportData(Path(out_path), version, start, end, level, window_seconds, min_lag, max_lag, params, cams,
                      flows, by_lag, transit_pairs, footfall, demo, sql, truth=truth, published=published_lags(wh, q))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(_render(data), encoding="utf-8")
    return data


# ---------------------------------------------------------------------------------------------
# figures

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in the period", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _fig_footfall(rows: list[FootfallRow]):
    fig, ax = plt.subplots(figsize=(10, 4))
    if not rows:
        _no_data(ax, "footfall")
    else:
        by_cam: dict[str, list[FootfallRow]] = {}
        for r in rows:
            by_cam.setdefault(r.camera, []).append(r)
        hours = sorted({r.hour for r in rows})
        if len(hours) <= FEW_HOURS:
            # A handful of hours: bars per hour and camera. A date axis would stretch two points
            # over years of empty ticks.
            width = 0.8 / max(len(by_cam), 1)
            for k, (cam, rs) in enumerate(sorted(by_cam.items())):
                at = {r.hour: r.estimated_persons for r in rs}
                ax.bar([i + k * width for i in range(len(hours))], [at.get(h, 0.0) for h in hours], width=width,
                       label=cam)
            ax.set_xticks([i + width * (len(by_cam) - 1) / 2 for i in range(len(hours))],
                          [h.strftime("%Y-%m-%d %H:00") for h in hours])
        else:
            for cam, rs in sorted(by_cam.items()):
                rs.sort(key=lambda r: r.hour)
                ax.plot([r.hour for r in rs], [r.estimated_persons for r in rs], marker="o", label=cam)
            fig.autofmt_xdate()
        ax.set_ylabel("estimated persons per hour")
        ax.set_xlabel("hour (UTC)")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    ax.set_title("Estimated footfall per camera and hour")
    return fig


def _fig_matrix(flows: list[FlowEstimate]):
    labels = sorted({e.origin for e in flows} | {e.destination for e in flows})
    n = max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * n, 1.5 + 1.1 * n))
    if not flows:
        _no_data(ax, "flows")
        ax.set_title("Estimated flows (origin -> destination)")
        return fig
    idx = {l: i for i, l in enumerate(labels)}
    grid = [[float("nan")] * n for _ in range(n)]
    text = {}
    for e in flows:
        i, j = idx[e.origin], idx[e.destination]
        grid[i][j] = e.flow
        text[(i, j)] = f"{format_number(e.flow)}\n±{format_number(Z95 * e.se)}"
    finite = [abs(v) for row in grid for v in row if math.isfinite(v)]
    vmax = max(finite) if finite and max(finite) > 0 else 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    for (i, j), t in text.items():
        ax.text(j, i, t, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("destination")
    ax.set_ylabel("origin")
    ax.set_title("Estimated flows (cell: flow, ± 95% CI half-width)")
    fig.colorbar(im, ax=ax, label="estimated flow (capture pairs)")
    return fig


def _fig_transit(pair: tuple[str, str], by_lag: list[FlowEstimate], window_seconds: int):
    es = sorted((e for e in by_lag if (e.origin, e.destination) == pair), key=lambda e: e.lag or 0)
    fig, ax = plt.subplots(figsize=(7, 3))
    if not es:
        _no_data(ax, "per-lag estimates")
    else:
        minutes = [(e.lag or 0) * window_seconds / 60 for e in es]
        width = window_seconds / 60 * 0.8
        ax.bar(minutes, [e.flow if math.isfinite(e.flow) else 0 for e in es], width=width,
               yerr=[Z95 * e.se if math.isfinite(e.se) else 0 for e in es], capsize=2, color="#4c72b0",
               ecolor="#333333")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("lag (minutes from origin window to destination window)")
        ax.set_ylabel("estimated flow")
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Transit time {pair[0]} -> {pair[1]} (bars: estimate, whiskers: 95% CI)")
    return fig


def _hour_axis(rows) -> list[datetime]:
    return sorted({r.hour for r in rows})


def _band_key(band: str) -> tuple[int, int, str]:
    if band == "unknown":
        return (1, 0, band)
    digits = "".join(ch for ch in band.split("-")[0] if ch.isdigit())
    return (0, int(digits) if digits else 0, band)


def _fig_stacked(rows: list[DemographicRow], attr: str, title: str, order_key=None):
    fig, ax = plt.subplots(figsize=(10, 4))
    if not rows:
        _no_data(ax, "demographic counts")
        ax.set_title(title)
        return fig
    hours = _hour_axis(rows)
    hidx = {h: i for i, h in enumerate(hours)}
    cats = sorted({getattr(r, attr) for r in rows}, key=order_key)
    totals = {c: [0] * len(hours) for c in cats}
    for r in rows:
        totals[getattr(r, attr)][hidx[r.hour]] += r.persons
    bottom = [0] * len(hours)
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    for k, c in enumerate(cats):
        ax.bar(range(len(hours)), totals[c], bottom=bottom, label=c, color=cmap(k % cmap.N))
        bottom = [b + v for b, v in zip(bottom, totals[c])]
    step = max(1, len(hours) // 24)
    ax.set_xticks(range(0, len(hours), step), [hours[i].strftime("%m-%d %H:00") for i in range(0, len(hours), step)],
                  rotation=45, ha="right")
    ax.set_ylabel("persons")
    ax.set_xlabel("hour (UTC)")
    ax.legend(fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.label { text-align: left; }
.note { background: #f7f7e8; border-left: 4px solid #c9c36a; padding: .6em 1em; }
img { max-width: 100%; display: block; margin: 1em 0; }
pre { background: #f6f6f6; padding: .8em; white-space: pre-wrap; word-break: break-all; font-size: .8em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: bold; }
"""


def _img(data: ReportData, parts: list[str], fig, title: str) -> None:
    data.figures.append(title)
    parts.append(f'<img src="data:image/png;base64,{_png(fig)}" alt="{html.escape(title)}">')


def _fmt_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _fig_truth(d: ReportData):
    cams = sorted(d.truth.persons)
    counted = d.truth.counted
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = range(len(cams))
    ax.bar([x - 0.27 for x in xs], [d.truth.persons[c] for c in cams], width=0.27, label="labelled persons",
           color="#999999")
    ax.bar([x for x in xs], [d.truth.visits.get(c, 0) for c in cams], width=0.27,
           label="labelled visits (leaving and coming back: 2)", color="#555555")
    ax.bar([x + 0.27 for x in xs], [counted.get(c, 0.0) for c in cams], width=0.27,
           label="counted (estimated persons)", color="#4c72b0")
    ax.set_xticks(list(xs), cams)
    ax.set_ylabel("persons")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Counted against labelled persons, per camera")
    return fig


def _render_truth(d: ReportData, parts: list[str]) -> None:
    e = html.escape
    t = d.truth
    counted = t.counted
    parts.append('<h3 id="truth">Counted against labelled persons</h3>')
    _img(d, parts, _fig_truth(d), "Counted against labelled persons")
    parts.append('<table class="truth"><tr><th>camera</th><th>footage</th><th>labelled persons</th>'
                 "<th>labelled visits</th><th>counted</th><th>counted / visits</th></tr>")
    for cam in sorted(t.persons):
        n, c, v = t.persons[cam], counted.get(cam, 0.0), t.visits.get(cam, 0)
        parts.append(f'<tr><td class="label">{e(cam)}</td><td>{t.seconds.get(cam, 0):.0f} s</td><td>{n}</td>'
                     f"<td>{v}</td><td>{format_number(c)}</td>"
                     f"<td>{format_number(c / v if v else float('nan'), 2)}</td></tr>")
    parts.append("</table>")
    parts.append(f'<p class="note">Labels: {e(t.source)}. A labelled person counts once per camera if they '
                 "appear in any frame that camera was sent; someone who leaves the view and comes back is "
                 "rightly counted again, which is why the count is set against labelled visits. The count "
                 "is this run's occurrences minus the expected fictitious persons, so it carries that noise "
                 "(about ±1 here); the hourly footfall above covers whole hours and so also any earlier run "
                 "in the same hour. <b>What this footage can "
                 "show:</b> that each person walking through the view is counted about once (not once per "
                 "frame, not several times when crossing others), and that the pipeline runs end to end. "
                 "<b>What it cannot show:</b> flows or transit times. The \"cameras\" here are two halves of "
                 "one 80-second clip of one plaza, so nobody walks from one to the other, the period is far "
                 "shorter than the lag range the estimator needs for its chance level, and a few dozen "
                 "occurrences cannot separate a flow from chance at 1,000 groups. The flow section below "
                 "therefore shows no usable estimate; the simulated-week report (flow-report.html) shows "
                 "flows at a realistic scale.</p>")


def _far_minutes(d: ReportData) -> tuple[float, float] | None:
    if d.published is None or d.published.far is None:
        return None
    lo, hi = d.published.far
    return lo * d.window_seconds / 60, hi * d.window_seconds / 60


def _render_flow_notes(d: ReportData, parts: list[str]) -> None:
    """Say why a flow is missing or n/a instead of leaving the reader with an empty table."""
    span_min = (d.end - d.start).total_seconds() / 60
    if not d.flows:
        parts.append('<p class="note"><b>No flow components for these cameras and hours.</b> The flow aggregator '
                     "publishes an hour once every window that pairs with it is final (about three hours after "
                     "the hour starts), and after a cold start only from the first hour it can complete; "
                     f"this period spans {span_min:.0f} minutes.</p>")
    if any(not math.isfinite(f.flow) or not math.isfinite(f.se) for f in d.flows):
        far = _far_minutes(d)
        band = (f"window pairs {far[0]:g} to {far[1]:g} minutes apart, in either order" if far else
                "window pairs further apart than the lag range")
        short = far is not None and span_min <= far[0]
        parts.append('<p class="note"><b>Why some cells say n/a.</b> The chance level κ is measured on '
                     f"{band} (the aggregator's far band), so that no person's own visit to both cameras inflates "
                     f"it. This period spans {span_min:.0f} minutes"
                     + (", too short to hold such pairs" if short else
                        ", and the cameras published too few windows that far apart")
                     + ". Without κ there is no chance term to subtract, so no flow and no interval can be "
                     "given: the estimator says it does not know rather than print a number.</p>")
    if any(not f.se_exact for f in d.flows):
        parts.append(f'<p class="note">The aggregator publishes no exact standard error for lags {d.min_lag} to '
                     f"{d.max_lag}: the SE shown sums the per-lag terms, which is too narrow when the same people "
                     "are seen at the destination in consecutive windows.</p>")


def demographic_totals(rows: Sequence[DemographicRow], attr: str) -> dict[str, tuple[int, float]]:
    """Persons and noise variance per age band or gender over ``rows`` (the variances add: every
    cell's noise is drawn independently)."""
    out: dict[str, tuple[int, float]] = {}
    for r in rows:
        n, v = out.get(getattr(r, attr), (0, 0.0))
        out[getattr(r, attr)] = (n + r.persons, v + r.noise_var)
    return out


def _render_demographics_table(d: ReportData, parts: list[str]) -> None:
    e = html.escape
    parts.append("<p>Persons per camera-hour and (age band, gender) are published by the aggregator with discrete "
                 "Laplace noise (differential privacy per person-day, docs/PRIVACY.md): every cell of every hour, "
                 "zeros included, so no row reveals that someone passed. The interval below is the period's total "
                 "± 1.96 noise standard deviations (the noise variances of the summed cells add). The noise is not "
                 "clamped, so a single quiet cell can read negative while totals stay unbiased.</p>")
    parts.append('<table class="demographics"><tr><th>by</th><th>cell</th><th>persons</th>'
                 "<th>95% CI low</th><th>95% CI high</th></tr>")
    for attr, order in (("age_band", _band_key), ("gender", None)):
        tot = demographic_totals(d.demographics, attr)
        for k in sorted(tot, key=order):
            n, v = tot[k]
            lo, hi = noise_ci95(n, v)
            parts.append(f'<tr data-by="{attr}" data-cell="{e(k)}"><td class="label">{attr.replace("_", " ")}</td>'
                         f'<td class="label">{e(k)}</td><td class="persons">{n}</td>'
                         f'<td class="ci-low">{format_number(max(lo, 0.0), 0)}</td>'
                         f'<td class="ci-high">{format_number(hi, 0)}</td></tr>')
    parts.append("</table>")


def _render(d: ReportData) -> str:
    e = html.escape
    p = d.params
    parts: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>flowpipe report {e(d.version)} {e(_fmt_time(d.start))} – {e(_fmt_time(d.end))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Customer-flow report</h1>",
        f'<h2 id="summary">{SECTION_TITLES[0]}</h2>',
        "<dl>",
        f"<dt>Period</dt><dd>{e(_fmt_time(d.start))} to {e(_fmt_time(d.end))} (end excluded)</dd>",
        f"<dt>Privacy parameters</dt><dd>{e(d.version)}</dd>",
        f"<dt>Same-group rate p</dt><dd>{p.same_group_rate:.4g}</dd>",
        f"<dt>Groups</dt><dd>{p.n_groups}</dd>",
        f"<dt>Fictitious rate</dt><dd>{p.fictitious_per_group:.4g} per group and window "
        f"({p.fictitious_per_window:.4g} per camera-window; floor {p.fictitious_floor}, "
        f"ratio {p.fictitious_ratio:.4g})</dd>",
        f"<dt>Windows</dt><dd>{d.window_seconds} s</dd>",
        f"<dt>Lag range</dt><dd>{d.min_lag} to {d.max_lag} windows "
        f"({d.min_lag * d.window_seconds / 60:g} to {d.max_lag * d.window_seconds / 60:g} minutes)</dd>",
        f"<dt>Level</dt><dd>{e(d.level)}</dd>",
        f"<dt>Cameras</dt><dd>{e(', '.join(c.key for c in d.cameras))}</dd>",
        "</dl>",
        '<p class="note">No person is identified or tracked: this report reads only the published tier, '
        "hourly sums per camera pair (flow components) and per camera (footfall), over all anonymous groups "
        "and windows, with fictitious persons added; no per-window or per-group figure is shown or stored "
        "for analysts. <b>Flows are statistical estimates</b>: how much more often groups co-occur at the origin and, "
        "within the lag range, at the destination than chance predicts. Each comes with a standard error "
        "and a <b>95% confidence interval</b>; an interval that includes 0 means the data cannot tell the "
        "flow apart from none. A camera-pair flow counts <b>pairs of captures</b>: a person seen at the "
        "origin and then at the destination within the lag range counts once per such pair (twice if seen "
        "twice at the destination). Footfall is occurrences minus the expected fictitious ones; "
        "demographic counts are per camera-hour, every (age band, gender) cell published with random "
        "noise of a known variance (differential privacy), so small figures are noise-dominated.</p>",
    ]

    # footfall
    parts.append(f'<h2 id="footfall">{SECTION_TITLES[1]}</h2>')
    _img(d, parts, _fig_footfall(d.footfall), "Estimated footfall per camera and hour")
    tot: dict[str, list[float]] = {}
    for r in d.footfall:
        t = tot.setdefault(r.camera, [0, 0, 0.0])
        t[0] += r.occurrences
        t[1] += r.windows
        t[2] += r.estimated_persons
    parts.append('<table class="footfall"><tr><th>camera</th><th>occurrences</th><th>windows</th>'
                 "<th>estimated persons</th></tr>")
    for cam, (o, w, est) in sorted(tot.items()):
        parts.append(f'<tr><td class="label">{e(cam)}</td><td>{o}</td><td>{w}</td><td>{format_number(est)}</td></tr>')
    parts.append("</table>")
    if d.truth is not None:
        _render_truth(d, parts)

    # flows
    parts.append(f'<h2 id="flows">{SECTION_TITLES[2]}</h2>')
    _img(d, parts, _fig_matrix(d.flows), "Origin-destination matrix of estimated flows")
    parts.append("<p>S: co-occurrences of the same group at the origin and (within the lag range) at the "
                 "destination, summed over the hours' published components; chance: what unrelated occurrences "
                 "would give (κ from the far band); flow = (S − chance) / (p − κ). CI: flow ± 1.96 SE"
                 + ("" if d.level == "camera" else f"; {e(d.level)} rows sum the components of their camera pairs")
                 + ".</p>")
    parts.append('<table class="flows"><tr><th>origin</th><th>destination</th><th>S</th><th>chance</th>'
                 "<th>flow</th><th>SE</th><th>95% CI low</th><th>95% CI high</th></tr>")
    for f in d.flows:
        lo, hi = f.ci95
        parts.append(f'<tr data-origin="{e(f.origin)}" data-destination="{e(f.destination)}">'
                     f'<td class="label">{e(f.origin)}</td><td class="label">{e(f.destination)}</td>'
                     f"<td>{format_number(f.co_occurrences)}</td><td>{format_number(f.chance)}</td>"
                     f'<td class="flow">{format_number(f.flow)}</td><td class="se">{format_number(f.se)}</td>'
                     f'<td class="ci-low">{format_number(lo)}</td><td class="ci-high">{format_number(hi)}</td></tr>')
    parts.append("</table>")
    _render_flow_notes(d, parts)

    # transit
    parts.append(f'<h2 id="transit">{SECTION_TITLES[3]}</h2>')
    parts.append(f"<p>Per-lag flow estimates for the {len(d.transit_pairs)} largest flows "
                 f"(at most {MAX_TRANSIT_PLOTS}). Per-lag estimates add up to the pair's flow (up to the published "
                 "noise, drawn per lag and per range); each has a wider relative error than the total.</p>")
    for pair in d.transit_pairs:
        _img(d, parts, _fig_transit(pair, d.flows_by_lag, d.window_seconds), f"Transit time {pair[0]} -> {pair[1]}")

    # demographics
    parts.append(f'<h2 id="demographics">{SECTION_TITLES[4]}</h2>')
    _img(d, parts, _fig_stacked(d.demographics, "age_band", "Persons by hour and age band (all report cameras)",
                                _band_key), "Persons by hour and age band")
    _img(d, parts, _fig_stacked(d.demographics, "gender", "Persons by hour and gender (all report cameras)"),
         "Persons by hour and gender")
    _render_demographics_table(d, parts)

    # SQL
    parts.append(f'<h2 id="sql">{SECTION_TITLES[5]}</h2>')
    parts.append("<p>Every figure above comes from one of these statements (values filled in); they run as is "
                 "in clickhouse-client. The flow statements are per camera pair"
                 + ("" if d.level == "camera" else f"; the {e(d.level)} level sums the same components per "
                    f"{e(d.level)} pair before the formulas")
                 + ". See docs/ANALYST_SQL.md.</p>")
    for title, stmt in d.sql.items():
        parts.append(f"<h3>{e(title)}</h3><pre>{e(pretty_sql(stmt))}</pre>")
    parts.append(f"<p><small>Generated {e(_fmt_time(datetime.now(timezone.utc)))} by flowpipe.</small></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
