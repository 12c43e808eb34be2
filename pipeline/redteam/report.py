"""Rich tables for a :class:`~pipeline.redteam.suite.SuiteResult` (``flowctl privacy attack``)."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.table import Table

from pipeline.redteam import attacks as A
from pipeline.redteam.attacks import HOUR_KINDS
from pipeline.redteam.suite import COVERAGE_BAR, GAIN_BAR, SuiteResult
from pipeline.redteam.world import ANALYST, RESTRICTED, UNPROTECTED

__all__ = ["print_report", "rich_progress"]

TIER_LABEL = {ANALYST: "analyst (published, noised)", UNPROTECTED: "unprotected (published rows, no noise)",
              RESTRICTED: "restricted (group cells)"}


@contextlib.contextmanager
def rich_progress(console: Console) -> Iterator[Callable[[str, int], contextlib.AbstractContextManager]]:
    """A ``task(description, total)`` factory for :func:`pipeline.redteam.suite.run_suite`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:

        @contextlib.contextmanager
        def task(description: str, total: int) -> Iterator[Callable[..., None]]:
            tid = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(tid, n)
            progress.update(tid, completed=total)

        yield task


MODEL_LABEL = {"b": "Gaussian around the prior rows (bench)", "b-exact": "exact: Poisson background + noise",
               "b-insider": "group matches in the cells", "d": "exact: Poisson background + noise"}


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _verdict(ok: bool | None) -> str:
    return "[dim]n/a[/]" if ok is None else "[green]PASS[/]" if ok else "[bold red]FAIL[/]"


def print_report(res: SuiteResult, console: Console) -> None:
    cfg = res.config
    n = cfg["noise"]
    console.print(f"[bold]Attacks on what analysts read[/] - scenario {cfg['scenario']}, {cfg['days']} day(s), target "
                  f"seed {cfg['seed']}, attacker's held-out prior run seed {cfg['prior_seed']}, padding "
                  f"{cfg['padding']}, at most {cfg['max_targets']} targets per attack")
    console.print(f"noise scales: flow s {n['flow_s']:g}, window totals {n['window_totals']:g} (Q 3x, range Q* 9x), "
                  f"footfall {n['footfall']:g}, demographics {n['demographics']:g}")
    for role, w in res.worlds.items():
        pr = w["published_rows"]
        console.print(f"  {role} run: {w['captures']:,} captures of {w['persons']:,} persons, {w['cameras']} cameras, "
                      f"{w['restricted_cells']:,} restricted cells -> {pr['flow']:,} flow, {pr['footfall']:,} "
                      f"footfall, {pr['demographics']:,} demographic rows; p = {w['same_group_rate']:.2f}")

    # (a)
    t = Table(title="(a) group-following insider: follows the group of a target's first capture of the day")
    for col in ("tier", "target-days", "later captures", "recovered", "whole days", "precision",
                "groups in first cell", "bar", "verdict"):
        t.add_column(col, justify="left" if col in ("tier", "bar") else "right")
    for r in res.a:
        analyst = r.tier == ANALYST
        ok = (not r.group_fields and r.recovered == 0 and r.whole_days == 0) if analyst else None
        t.add_row(TIER_LABEL[r.tier], _f(r.target_days), _f(r.later_captures), _f(r.recovered), _f(r.whole_days),
                  _f(r.precision), _f(r.groups_in_first_cell, 1), "0 / 0" if analyst else "",
                  _verdict(ok) if analyst else "")
    console.print(t)
    a_pub = next(r for r in res.a if r.tier == ANALYST)
    console.print(f"  [dim]{a_pub.note}[/]")
    a_res = next(r for r in res.a if r.tier == RESTRICTED)
    console.print(f"  [dim]restricted: {a_res.note}; precision = share of the group's later occurrences that day "
                  f"that are the target's[/]")

    # (b) and (d)
    for letter, results, title in (
            ("b", res.b, "(b) analyst who saw the target at A in minute t: posterior of the true next camera "
                         "minus its prior"),
            ("d", res.d, "(d) demographics to path: analyst who knows the target's (band, gender) and one sighting "
                         "(camera, hour): posterior of the true next (camera, hour) minus its prior")):
        t = Table(title=title)
        for col in ("tier", "attacker's model", "hours", "targets", "prior (mean)", "gain median", "gain p99",
                    "gain max", "DP worst case", "bar", "verdict"):
            t.add_column(col, justify="left" if col in ("tier", "attacker's model", "hours", "bar") else "right")
        for r in results:
            analyst = r.tier == ANALYST
            for g in r.rows:
                ok = None if not g.targets else g.gain_p99 <= GAIN_BAR
                first = g.kind == HOUR_KINDS[0]
                t.add_row(TIER_LABEL[r.tier] if first else "", MODEL_LABEL.get(r.attack, "") if first else "",
                          g.kind, _f(g.targets), _f(g.prior_mean), _f(g.gain_median, 4), _f(g.gain_p99, 4),
                          _f(g.gain_max, 4), _f(g.dp_worst_case), f"p99 <= {GAIN_BAR}" if analyst else "",
                          _verdict(ok) if analyst else "")
            if r is not results[-1]:
                t.add_section()
        console.print(t)
        notes = {r.note for r in results if r.note}
        for note in sorted(notes):
            console.print(f"  [dim]{note}[/]")
        if letter == "d":
            console.print("  [dim](d) is not in the issue's Done-when; held to (b)'s bar and counted in the exit "
                          "code[/]")

    # (c)
    t = Table(title="(c) analyst-visible values (one field of one row) that carry noise or aggregate >= 3 real "
                    "persons")
    for col in ("tier", "values", "carry noise", ">= 3 real persons", "one or the other", "neither", "bar", "verdict"):
        t.add_column(col, justify="left" if col in ("tier", "bar") else "right")
    for r in res.c:
        analyst = r.tier == ANALYST
        neither = r.values - sum(f.either for f in r.fields)
        t.add_row(TIER_LABEL[r.tier], _f(r.values), _pct(r.share("noised")), _pct(r.share("three_plus")),
                  _pct(r.share("either")), _f(neither), f"{COVERAGE_BAR:.0%}" if analyst else "",
                  _verdict(neither == 0) if analyst else "")
    console.print(t)
    c = next(r for r in res.c if r.tier == ANALYST)
    bad = [f for f in c.fields if f.values > f.either]
    if bad:
        t = Table(title="(c) analyst tier: fields with values that neither carry noise nor aggregate >= 3 persons")
        for col in ("table", "field", "values", "neither", "by hour kind"):
            t.add_column(col)
        for f in bad:
            t.add_row(f.table, f.field, _f(f.values), _f(f.values - f.either),
                      ", ".join(f"{k} {v}" for k, v in sorted(f.failing_by_hour_kind.items())))
        console.print(t)
    if c.outside_span:
        console.print(f"  [dim]{c.outside_span:,} values of hours their camera did not stream at all (constants) are "
                      f"left out[/]")

    # (e)
    t = Table(title="(e) row existence: published rows against the full grid (every key, every hour of every seen "
                    "camera)")
    for col in ("tier", "table", "grid rows", "present", "missing, nobody passed", "missing, someone passed",
                "present where nobody passed"):
        t.add_column(col, justify="left" if col in ("tier", "table") else "right")
    for r in res.e:
        for i, tb in enumerate(r.tables):
            t.add_row(TIER_LABEL[r.tier] if i == 0 else "", tb.table, _f(tb.expected), _f(tb.present),
                      _f(tb.missing_no_capture), _f(tb.missing_with_capture), _f(tb.present_no_capture))
    console.print(t)
    t = Table(title="(e) values where nobody passed: published exactly (no noise), and zero patterns per origin "
                    "camera-hour, nobody vs 1-5 real persons")
    for col in ("tier", "field", "values, nobody passed", "exact", "exact 0", "camera-hours (nobody / 1-5)",
                "non-zero, nobody", "non-zero, 1-5", "AUC", "p", "finding"):
        t.add_column(col, justify="left" if col in ("tier", "field") else "right")
    for r in res.e:
        for f in r.fields:
            flagged = any(x.startswith(f"{f.table}.{f.field}:") for x in r.value_leaks)
            if r.tier != ANALYST and not flagged:
                continue
            t.add_row(TIER_LABEL[r.tier], f"{f.table}.{f.field}", _f(f.values_empty), _f(f.exact_empty),
                      _f(f.zero_exact_empty), f"{f.n_empty} / {f.n_someone}", _pct(f.nonzero_empty),
                      _pct(f.nonzero_someone), _f(f.auc, 2), "-" if f.p_value is None else f"{f.p_value:.1g}",
                      "[bold red]yes[/]" if flagged else "no")
    console.print(t)
    for r in res.e:
        for leak in r.leaks:
            console.print(f"  [red]{TIER_LABEL[r.tier]}: {leak}[/]" if r.tier == ANALYST
                          else f"  [dim]{TIER_LABEL[r.tier]}: {leak}[/]")
    console.print(f"  [dim]empirical test: at least {A.MIN_CLASS} camera-hours per class whose products lie inside "
                  f"the run; a finding needs p < {A.SIGNIFICANCE:g}, non-zero shares {A.DIFF_FLAG:.0%} apart and "
                  f"|AUC - 0.5| > {A.AUC_FLAG} or complete separation[/]")

    # verdicts
    t = Table(title="Done-when on the analyst tier")
    for col in ("attack", "measure", "bar", "measured", "verdict"):
        t.add_column(col, overflow="fold")
    for v in res.verdicts:
        t.add_row(v.attack + ("" if v.done_when else " *"), v.measure, v.bar, v.measured, _verdict(v.passed))
    console.print(t)
    console.print("  [dim]* not in the issue's Done-when, counted in the exit code[/]")
    secs = ", ".join(f"{k} {v:g} s" for k, v in res.seconds.items())
    console.print(f"{'[green]every analyst-tier bar met' if res.passed else '[bold red]analyst-tier bar(s) not met'}[/]"
                  f" ({secs})")
