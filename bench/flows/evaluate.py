"""Flow estimator vs ground truth: errors, interval coverage, analytic vs empirical SE, by flow size and period.

    .venv/bin/python bench/flows/evaluate.py                      # reference scenario, 12 replicates
    .venv/bin/python bench/flows/evaluate.py --replicates 4 --scenario small --periods 1

Each replicate simulates the scenario with a fresh seed (journeys, groups, fictitious
persons), runs what processors would publish through the flow aggregator in-process and writes
its published components into a ClickHouse database of its own (``flow_eval``, one parameter-set
version per replicate; ``pipeline.simulator.publish.write_clickhouse``), runs the estimator on
the components (``pipeline.analytics.flows``, what ``flowctl flows`` runs) for every ordered
camera pair over the first 1, 3 and 7 days, and compares with the simulator's ground
truth (pairs of captures of one person within the lag range: the estimator's definition).

Printed: per-pair table of the first replicate; coverage of the 95% intervals; the ratio of
the empirical error (across replicates) to the analytic SE; median relative error of flows of
at least 100 people/day; and the same for the strict privacy profile if --strict. Figures and
a plot of relative error vs flow size and period go to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.analytics.dimensions import register_params  # noqa: E402
from pipeline.analytics.flows import CameraRef, FlowQuery, estimate_flows  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.simulator import load_scenario, simulate  # noqa: E402
from pipeline.simulator.publish import prepare_database, write_clickhouse  # noqa: E402

console = Console()


@dataclass
class Row:
    profile: str
    replicate: int
    period_days: int
    origin: str
    destination: str
    truth: float
    estimate: float
    se: float

    @property
    def covered(self) -> bool:
        return abs(self.estimate - self.truth) <= 1.959964 * self.se

    @property
    def per_day(self) -> float:
        return self.truth / self.period_days


def run_profile(profile: str, params: PrivacyParams, args: argparse.Namespace, wh,
                prog: Progress) -> list[Row]:
    sc = load_scenario(args.scenario)
    days = max(args.periods) if profile == "flow" else 1
    periods = [p for p in args.periods if p <= days] or [days]
    replicates = args.replicates if profile == "flow" else args.strict_replicates
    rows: list[Row] = []
    task = prog.add_task(f"{profile} profile: replicates", total=replicates)
    for r in range(replicates):
        p = params.with_changes(version=f"eval-{profile}-{args.seed}-r{r}")
        sim = simulate(sc, p, np.random.default_rng([args.seed, r]), days=days, mode="fast")
        pub, truth = sim.published, sim.truth
        register_params(wh, p)
        write_clickhouse(pub, wh, demographics=())   # flows only: no demographic components needed
        start = datetime(sc.start.year, sc.start.month, sc.start.day, tzinfo=timezone.utc)
        cams = tuple(CameraRef(s, c) for c, s in zip(truth.camera_ids, truth.camera_site))
        if profile == "strict":  # 1,000 rows per camera-window: estimate one site's cameras only
            cams = cams[:args.strict_cameras]
        for period in periods:
            q = FlowQuery(p.version, cams, start, start + timedelta(days=period), sc.window_seconds, 0,
                          truth.max_lag_windows)
            true = truth.pairs[:period].sum(axis=(0, 3))
            for e in estimate_flows(wh, q):
                a = truth.cam(e.origin.split("/", 1)[1])
                b = truth.cam(e.destination.split("/", 1)[1])
                rows.append(Row(profile, r, period, e.origin, e.destination, float(true[a, b]), e.flow, e.se))
        prog.advance(task)
    return rows


def summarise(rows: list[Row], profile: str, min_per_day: float) -> dict:
    out: dict = {"profile": profile, "periods": {}}
    for period in sorted({r.period_days for r in rows}):
        sel = [r for r in rows if r.period_days == period]
        big = [r for r in sel if r.per_day >= min_per_day]
        # Empirical error spread per pair across replicates vs the analytic SE of that pair.
        ratios = []
        for pair in sorted({(r.origin, r.destination) for r in sel}):
            pr = [r for r in sel if (r.origin, r.destination) == pair]
            if len(pr) >= 3:
                err = np.array([r.estimate - r.truth for r in pr])
                ratios.append(float(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean([r.se ** 2 for r in pr]))))
        err_all = np.array([r.estimate - r.truth for r in sel])
        se_all = np.array([r.se for r in sel])
        out["periods"][period] = {
            "estimates": len(sel),
            "coverage_95": float(np.mean([r.covered for r in sel])),
            "coverage_95_big": float(np.mean([r.covered for r in big])) if big else None,
            "rmse_over_rms_se": float(np.sqrt(np.mean(err_all ** 2)) / np.sqrt(np.mean(se_all ** 2))),
            "per_pair_ratio_median": float(np.median(ratios)) if ratios else None,
            "per_pair_ratio_range": [float(min(ratios)), float(max(ratios))] if ratios else None,
            "big_flows": len(big),
            "median_rel_error_big": float(np.median([abs(r.estimate - r.truth) / r.truth for r in big])) if big else None,
            "median_rel_se_big": float(np.median([r.se / r.truth for r in big])) if big else None,
        }
    return out


def plot(rows: list[Row], path: Path, min_per_day: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {1: "tab:red", 3: "tab:orange", 7: "tab:blue"}
    flow_rows = [r for r in rows if r.profile == "flow" and r.truth > 0]
    for period in sorted({r.period_days for r in flow_rows}):
        sel = [r for r in flow_rows if r.period_days == period]
        x = np.array([r.per_day for r in sel])
        y = np.array([abs(r.estimate - r.truth) / r.truth for r in sel])
        s = np.array([r.se / r.truth for r in sel])
        c = colours.get(period, None)
        axes[0].scatter(x, y, s=8, alpha=0.35, color=c, label=f"|error| / truth, {period} day(s)")
        order = np.argsort(x)
        axes[0].plot(x[order], 0.674 * s[order], color=c, lw=1.5, label=f"analytic median |error|, {period} d")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].axvline(min_per_day, color="grey", ls=":")
    axes[0].axhline(0.10, color="grey", ls="--")
    axes[0].set_xlabel("true flow (capture pairs per day)")
    axes[0].set_ylabel("relative error")
    axes[0].set_title("Flow error vs flow size and period")
    axes[0].legend(fontsize=7)
    z = np.array([(r.estimate - r.truth) / r.se for r in flow_rows if r.se > 0])
    axes[1].hist(z, bins=40, density=True, color="tab:blue", alpha=0.6, label="(estimate - truth) / SE")
    g = np.linspace(-4, 4, 200)
    axes[1].plot(g, np.exp(-g ** 2 / 2) / np.sqrt(2 * np.pi), color="k", label="standard normal")
    axes[1].set_title("Standardised errors (should be N(0,1))")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(summary: dict, label: str) -> None:
    t = Table("period (days)", "estimates", "95% coverage", "coverage ≥100/day", "RMSE / RMS SE",
              "per-pair ratio (median, range)", "flows ≥100/day", "median rel. error", "median rel. SE",
              title=f"{label}")
    for period, s in summary["periods"].items():
        pr = s["per_pair_ratio_range"]
        t.add_row(str(period), str(s["estimates"]), f"{s['coverage_95']:.3f}",
                  "-" if s["coverage_95_big"] is None else f"{s['coverage_95_big']:.3f}",
                  f"{s['rmse_over_rms_se']:.3f}",
                  "-" if pr is None else f"{s['per_pair_ratio_median']:.2f} ({pr[0]:.2f}-{pr[1]:.2f})",
                  str(s["big_flows"]),
                  "-" if s["median_rel_error_big"] is None else f"{s['median_rel_error_big']:.3f}",
                  "-" if s["median_rel_se_big"] is None else f"{s['median_rel_se_big']:.3f}")
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--replicates", type=int, default=12)
    ap.add_argument("--periods", default="1,3,7", help="analysis periods in days, comma separated")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--min-per-day", type=float, default=100.0)
    ap.add_argument("--strict", action="store_true", help="also run the strict privacy profile (1 day)")
    ap.add_argument("--strict-replicates", type=int, default=2)
    ap.add_argument("--strict-cameras", type=int, default=3, help="cameras estimated in the strict run")
    ap.add_argument("--database", default="flow_eval")
    ap.add_argument("--out", type=Path, default=ROOT / ".var" / "reports" / "flow-eval")
    args = ap.parse_args(argv)
    try:
        args.periods = sorted({int(x) for x in args.periods.split(",") if x.strip()})
    except ValueError:
        ap.error("--periods must be comma-separated whole days, e.g. 1,3,7")
    if not args.periods or min(args.periods) < 1 or args.replicates < 1:
        ap.error("--periods must be >= 1 day and --replicates >= 1")

    t0 = time.monotonic()
    settings = load_settings()
    wh = prepare_database(settings, args.database, replace=True)
    rows: list[Row] = []
    with Progress(console=console) as prog:
        rows += run_profile("flow", PrivacyParams.profile("flow"), args, wh, prog)
        if args.strict:
            rows += run_profile("strict", PrivacyParams.profile("strict"), args, wh, prog)

    first = [r for r in rows if r.profile == "flow" and r.replicate == 0 and r.period_days == max(args.periods)]
    t = Table("origin", "destination", "true", "estimate", "95% CI", "covered", "rel. error",
              title=f"replicate 0, {max(args.periods)} days ({args.scenario})")
    for r in sorted(first, key=lambda r: -r.truth):
        rel = f"{(r.estimate - r.truth) / r.truth:+.1%}" if r.truth else "-"
        t.add_row(r.origin, r.destination, f"{r.truth:,.0f}", f"{r.estimate:,.0f}",
                  f"[{r.estimate - 1.96 * r.se:,.0f}, {r.estimate + 1.96 * r.se:,.0f}]", "yes" if r.covered else "NO", rel)
    console.print(t)
    summary = {"scenario": args.scenario, "replicates": args.replicates, "seed": args.seed,
               "flow": summarise([r for r in rows if r.profile == "flow"], "flow", args.min_per_day)}
    print_summary(summary["flow"], f"flow profile ({args.replicates} replicates, {args.scenario})")
    if args.strict:
        summary["strict"] = summarise([r for r in rows if r.profile == "strict"], "strict", args.min_per_day)
        print_summary(summary["strict"], f"strict profile ({args.strict_replicates} replicates, 1 day)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "estimates.json").write_text(json.dumps([r.__dict__ for r in rows]) + "\n")
    plot(rows, args.out / "error_vs_flow_size.png", args.min_per_day)
    console.print(f"written {args.out}/summary.json, estimates.json, error_vs_flow_size.png "
                  f"in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
