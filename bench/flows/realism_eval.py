"""The flow estimator against ground truth in worlds that depart from its assumptions (issue 12).

    .venv/bin/python bench/flows/realism_eval.py                            # reference + realistic, p 0.5/0.25/0.1, 3 replicates
    .venv/bin/python bench/flows/realism_eval.py --holdout                  # plus the held-out world (bench/flows/worlds/holdout.yaml)
    .venv/bin/python bench/flows/realism_eval.py --scenario realistic --p 0.1 --replicates 6
    .venv/bin/python bench/flows/realism_eval.py --knobs --p 0.5            # realistic-off with one knob on at a time
    .venv/bin/python bench/flows/realism_eval.py --estimator current --estimator before   # compare estimators

Each replicate simulates the scenario (fast groups, flow privacy profile at the same-group rate
p, seed ``[seed, replicate]``, the same seeds for every scenario and p), runs the published
occurrence cells through the aggregator in-process **with the published tier's noise** (the
settings' default scales and a fresh release key per replicate; ``--no-noise`` drops it) and
estimates every ordered camera pair, and every site pair (the roll-up), over the first
``--periods`` days from the summed components, as ``flowctl flows`` does
(pipeline.aggregator.estimate). Truth: the simulator's capture pairs of one person within the lag
range (pipeline/simulator/truth.py), staff included.

Estimators (``--estimator``, repeatable):

* ``current``: what the product runs (active hours, kappa from the outer far band extrapolated
  with the inner one, lam = min(p, 0.5));
* ``before``: the estimator before issue 12 (every hour with windows, both far bands weighed
  equally, lam = -0.5);
* ``outer``: active hours, outer far band alone (lam = 0);
* ``extrapolated``: active hours, lam = 0.5 whatever p;
* ``all-hours``: ``current`` without the active-hour choice.

Printed per scenario, p, period, estimator and level (camera pairs, site pairs), over all
replicates' pairs pooled (and the spread across replicates in the JSON):

* ``cov95`` / ``cov95 0``: share of pairs (of pairs with no true flow) whose truth lies in
  estimate +- 1.96 SE; ``false 5%``: share of no-flow pairs called significant at 5% (``+``: the
  positive ones, nominal 2.5%);
* ``mean z``, ``sd z``: of (estimate - truth) / SE;
* ``rel err >=100``, ``30-100``: median |estimate - truth| / truth of flows of at least 100 a
  day (and 30 to 100 a day) on average over the period; ``rel se``: median SE / truth of the
  big ones.

Writes ``results.json`` (every pair of every run) and ``z_vs_truth.png`` (z against the true
flow per day, per scenario and p) to ``--out`` (default .var/reports/flow-eval/).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.aggregator import AggregatorSpec, OccurrenceCell  # noqa: E402
from pipeline.aggregator.batch import aggregate_cells  # noqa: E402
from pipeline.aggregator.estimate import EstimatorOptions, flow_from_sums, sum_rows  # noqa: E402
from pipeline.aggregator.model import HOUR_MS  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.settings import AggregatorSettings  # noqa: E402
from pipeline.simulator import simulate  # noqa: E402
from pipeline.simulator.scenario import Scenario, load_scenario, parse_scenario  # noqa: E402

Z95 = 1.959964
HOLDOUT = ROOT / "bench" / "flows" / "worlds" / "holdout.yaml"
ESTIMATORS = {
    "current": dict(),
    "before": dict(active_factor=0.0, far_extrapolation=-0.5),
    "outer": dict(far_extrapolation=0.0),
    "extrapolated": dict(far_extrapolation=0.5),
    "all-hours": dict(active_factor=0.0),
}


def _with_realism(sc: Scenario, name: str, realism: dict) -> Scenario:
    data = sc.model_dump(by_alias=True)
    data["realism"] = realism
    data["name"] = name
    return parse_scenario(data, source=name)


def scenarios(names: list[str], knobs: bool, holdout: bool) -> list[Scenario]:
    """The named scenarios (``realistic-off``: realistic without its knobs), realistic-off with
    one of realistic's knobs on at a time (``knobs``) and the held-out world (``holdout``)."""
    out = []
    realistic = load_scenario("realistic")
    for n in names:
        out.append(_with_realism(realistic, n, {}) if n == "realistic-off" else load_scenario(n))
    if knobs:
        full = realistic.realism.model_dump(by_alias=True)
        for k in realistic.realism.knobs_on():
            out.append(_with_realism(realistic, f"only {k}", {k: full[k]}))
    if holdout:
        out.append(load_scenario(str(HOLDOUT)))
    return out


@dataclass(frozen=True)
class Run:
    """One replicate of one scenario at one p: published rows, truth and what they are about."""

    rows: list
    truth_pairs: np.ndarray        # (days, C, C) capture pairs within the lag range, by origin day
    cameras: list[str]             # "site/camera" in the truth's camera order
    sites: list[str]
    start_ms: int
    max_lag: int
    fictitious_per_window: float


def run_world(sc: Scenario, p: float, rng: np.random.Generator, days: int, spec: AggregatorSpec,
              partitions: int) -> Run:
    params = PrivacyParams.profile("flow").with_changes(same_group_rate=p, version=f"eval-{p:g}")
    sim = simulate(sc, params, rng, days=days, mode="fast")
    pub, tr = sim.published, sim.truth
    cells = (OccurrenceCell.from_record(x) for x in pub.occurrence_records())
    key = rng.bytes(32) if spec.flow_noise_scale or spec.total_noise_scale else None
    rows, _ = aggregate_cells(cells, spec, partitions, noise_key=key)
    cams = [f"{tr.camera_site[i]}/{c}" for i, c in enumerate(tr.camera_ids)]
    return Run(rows, tr.pairs.sum(axis=-1), cams, [c.split("/")[0] for c in cams], pub.start_epoch * 1000,
               tr.max_lag_windows, params.fictitious_per_window)


def estimate(run: Run, p: float, period_days: int, name: str) -> dict[str, list[tuple[float, float, float]]]:
    """(truth, estimate, se) per camera pair and per site pair, for one estimator and period."""
    options = EstimatorOptions(fictitious_per_window=run.fictitious_per_window, **ESTIMATORS[name])
    hours = (run.start_ms, run.start_ms + period_days * 24 * HOUR_MS)
    sums = sum_rows(run.rows, 0, run.max_lag, hours=hours, options=options)
    truth = run.truth_pairs[:period_days].sum(axis=0)
    ix = {c: i for i, c in enumerate(run.cameras)}
    lam = options.far_extrapolation
    out: dict[str, list[tuple[float, float, float]]] = {"camera": [], "site": []}
    for (a, b), x in sums.items():
        _, _, f, se = flow_from_sums(x, p, far_extrapolation=lam)
        out["camera"].append((float(truth[ix[a], ix[b]]), f, se))
    site_of = {c: c.split("/")[0] for c in run.cameras}
    site_truth: dict[tuple[str, str], float] = {}
    for a in run.cameras:
        for b in run.cameras:
            if a != b:
                k = (site_of[a], site_of[b])
                site_truth[k] = site_truth.get(k, 0.0) + float(truth[ix[a], ix[b]])
    for (a, b), x in sum_rows(run.rows, 0, run.max_lag, hours=hours, options=options, level_of=site_of).items():
        _, _, f, se = flow_from_sums(x, p, far_extrapolation=lam)
        out["site"].append((site_truth[a, b], f, se))
    return out


def metrics(res: np.ndarray, days: int) -> dict[str, float]:
    t, f, se = res.T
    err = f - t
    z = err / se
    per_day = t / days
    big, mid, zero = per_day >= 100, (per_day >= 30) & (per_day < 100), t == 0
    nan = float("nan")

    def med(m: np.ndarray, x: np.ndarray) -> float:
        return float(np.median(x[m])) if m.any() else nan

    return {"pairs": float(t.size), "big": float(big.sum()), "zero": float(zero.sum()),
            "cov95": float((np.abs(z) <= Z95).mean()),
            "cov95_zero": float((np.abs(z[zero]) <= Z95).mean()) if zero.any() else nan,
            "false5": float((np.abs(f[zero]) > Z95 * se[zero]).mean()) if zero.any() else nan,
            "false_pos": float((f[zero] > Z95 * se[zero]).mean()) if zero.any() else nan,
            "mean_z": float(z.mean()), "sd_z": float(z.std(ddof=1)) if z.size > 1 else nan,
            "rel_err_big": med(big, np.abs(err) / np.maximum(t, 1)), "rel_err_mid": med(mid, np.abs(err) / np.maximum(t, 1)),
            "rel_se_big": med(big, se / np.maximum(t, 1))}


def plot(results: dict, out: Path) -> Path | None:
    """z against true flow per day, one panel per scenario, colour per p (camera pairs, longest
    period, the first estimator)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = sorted({k[0] for k in results})
    if not scen:
        return None
    fig, axes = plt.subplots(1, len(scen), figsize=(5.2 * len(scen), 4.2), squeeze=False, sharey=True)
    for ax, sc in zip(axes[0], scen):
        keys = [k for k in results if k[0] == sc and k[4] == "camera"]
        period = max(k[2] for k in keys)
        first = keys[0][3]
        for k in sorted(k for k in keys if k[2] == period and k[3] == first):
            res = np.array(results[k])
            t, f, se = res.T
            ax.scatter(t / period, (f - t) / se, s=9, alpha=0.6, label=f"p = {k[1]:g}")
        ax.axhline(0, color="black", lw=0.8)
        for y in (-Z95, Z95):
            ax.axhline(y, color="grey", lw=0.8, ls="--")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=-1)   # truth is never negative; 0 is the pairs without flow
        ax.set_title(f"{sc}: {period} day(s), {first}")
        ax.set_xlabel("true flow per day (capture pairs)")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("z = (estimate - truth) / SE")
    fig.suptitle("Flow estimates against truth: each dot a camera pair of one replicate; dashed: ±1.96")
    fig.tight_layout()
    path = out / "z_vs_truth.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", dest="scenarios",
                    help="scenario name or YAML path, repeatable (default: reference, realistic)")
    ap.add_argument("--knobs", action="store_true", help="also realistic-off with one knob on at a time")
    ap.add_argument("--holdout", action="store_true", help=f"also the held-out world ({HOLDOUT.relative_to(ROOT)})")
    ap.add_argument("--days", type=int, default=7, help="days simulated (the longest period)")
    ap.add_argument("--periods", default="1,3,7", help="comma-separated periods in days, each at most --days")
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--p", type=float, action="append", help="same-group rate, repeatable (default 0.5, 0.25, 0.1)")
    ap.add_argument("--estimator", action="append", choices=sorted(ESTIMATORS), help="repeatable (default current)")
    ap.add_argument("--no-noise", action="store_true", help="leave out the published tier's noise")
    ap.add_argument("--partitions", type=int, default=4, help="aggregator group partitions")
    ap.add_argument("--out", type=Path, default=ROOT / ".var" / "reports" / "flow-eval")
    args = ap.parse_args(argv)
    try:
        periods = sorted({int(x) for x in args.periods.split(",")})
    except ValueError:
        ap.error("--periods must be comma-separated whole days, e.g. 1,3,7")
    if args.days < 1 or args.replicates < 1 or not periods or min(periods) < 1 or max(periods) > args.days:
        ap.error("--days and --replicates must be at least 1, and every period between 1 and --days")
    ps = args.p or [0.5, 0.25, 0.1]
    if any(not 0 < p < 1 for p in ps):
        ap.error("--p must be between 0 and 1")
    estimators = args.estimator or ["current"]
    scs = scenarios(args.scenarios or ["reference", "realistic"], args.knobs, args.holdout)
    settings = AggregatorSettings()
    spec = settings.spec()
    if args.no_noise:
        from dataclasses import replace
        spec = replace(spec, flow_noise_scale=0.0, total_noise_scale=0.0, footfall_noise_scale=0.0)
    console = Console()
    console.print(f"aggregator spec {spec.fingerprint()}, {args.days} day(s), periods {periods}, "
                  f"{args.replicates} replicate(s), seed {args.seed}, estimators {estimators}")
    results: dict[tuple, list] = {}
    per_rep: dict[tuple, list[dict[str, float]]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    t0 = time.monotonic()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("simulating", total=len(scs) * len(ps) * args.replicates)
        for sc in scs:
            for p in ps:
                for r in range(args.replicates):
                    bar.update(task, description=f"{sc.name}, p={p:g}, replicate {r + 1}")
                    run = run_world(sc, p, np.random.default_rng([args.seed, r]), args.days, spec, args.partitions)
                    for d in periods:
                        for name in estimators:
                            for level, res in estimate(run, p, d, name).items():
                                key = (sc.name, p, d, name, level)
                                results.setdefault(key, []).extend(res)
                                per_rep.setdefault(key, []).append(metrics(np.array(res), d))
                    bar.advance(task)
    head = (f"{'scenario':22} {'p':>5} {'days':>4} {'estimator':10} {'level':6} {'pairs':>5} {'no fl':>5} "
            f"{'cov95':>6} {'cov95 0':>7} {'false5%':>7} {'+':>5} {'mean z':>7} {'sd z':>5} "
            f"{'rel err >=100':>13} {'30-100':>7} {'rel se':>6}")
    lines = [head, "-" * len(head)]
    table = []
    for key, res in results.items():
        sc, p, d, name, level = key
        m = metrics(np.array(res), d)
        table.append({"scenario": sc, "p": p, "days": d, "estimator": name, "level": level, **m,
                      "replicates": per_rep[key]})
        lines.append(f"{sc:22} {p:5g} {d:4d} {name:10} {level:6} {m['pairs']:5.0f} {m['zero']:5.0f} "
                     f"{m['cov95']:6.3f} {m['cov95_zero']:7.3f} {m['false5']:7.3f} {m['false_pos']:5.3f} "
                     f"{m['mean_z']:+7.2f} {m['sd_z']:5.2f} {m['rel_err_big']:13.3f} {m['rel_err_mid']:7.3f} "
                     f"{m['rel_se_big']:6.3f}")
    console.print(f"\nall replicates' pairs pooled; noise {'off' if args.no_noise else 'on'}; "
                  f"z = (estimate - truth) / SE; big = truth >= 100/day", highlight=False, soft_wrap=True)
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"argv": argv if argv is not None else sys.argv[1:], "spec": spec.fingerprint(), "summary": table,
         "pairs": [{"scenario": k[0], "p": k[1], "days": k[2], "estimator": k[3], "level": k[4],
                    "truth_estimate_se": [list(map(float, x)) for x in v]} for k, v in results.items()]},
        indent=1, allow_nan=True))
    png = plot(results, args.out)
    console.print(f"\nwrote {args.out / 'results.json'}" + (f" and {png}" if png else "") +
                  f" in {time.monotonic() - t0:.0f} s", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
