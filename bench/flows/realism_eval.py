"""How the current component estimator fares when the simulated world departs from its assumptions.

    .venv/bin/python bench/flows/realism_eval.py                          # a week, 3 replicates, p = 0.5
    .venv/bin/python bench/flows/realism_eval.py --days 1 --replicates 2  # quick look
    .venv/bin/python bench/flows/realism_eval.py --knobs                  # plus one variant per knob
    .venv/bin/python bench/flows/realism_eval.py --p 0.1 --p 0.5          # several same-group rates

Scenarios (pipeline/simulator/scenarios/): ``reference`` (the default world), ``realistic``
(the "realistic mix" of issue 12: the reference malls plus a retail park, every realism knob on)
and ``realistic-off`` (the same layout with every knob off, to separate layout from realism).
``--knobs`` adds ``realistic-off`` with one of ``realistic``'s knobs on at a time.

Each replicate simulates the scenario (fast groups, flow privacy profile at the given
same-group rate p, seed ``[seed, replicate]``, the same seed for every scenario), runs its
published occurrence cells through the aggregator in-process (pipeline.aggregator.batch) and
estimates every ordered camera pair over the whole period and lags 0..max_lag from the summed
components (pipeline.aggregator.estimate: sum_rows, flow_from_sums). Truth: the simulator's
capture pairs of one person within the lag range (pipeline/simulator/truth.py), staff included.

Printed per scenario and p, medians over replicates of:

* ``med rel err``: median |estimate - truth| / truth over pairs with truth >= --min-per-day per
  day (on average over the period);
* ``cov95``: share of all pairs whose truth lies in estimate +- 1.96 SE (``cov95 0``: the same
  over pairs with no true flow);
* ``mean z``, ``sd z``: of (estimate - truth) / SE over all pairs;
* ``false 5%``: share of pairs with no true flow whose estimate is significant at 5% (two-sided,
  |estimate| / SE > 1.96); ``false +``: the part of it with a positive estimate (a flow that
  is not there, nominal 2.5%).

The estimator is not changed here: this measures how today's fails under realism.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.aggregator import AggregatorSpec, OccurrenceCell  # noqa: E402
from pipeline.aggregator.batch import aggregate_cells  # noqa: E402
from pipeline.aggregator.estimate import flow_from_sums, sum_rows  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.simulator import simulate  # noqa: E402
from pipeline.simulator.scenario import Scenario, load_scenario, parse_scenario  # noqa: E402

Z95 = 1.959964
METRICS = ("med_rel_err", "cov95", "cov95_zero", "mean_z", "sd_z", "false5", "false_pos")


def _with_realism(sc: Scenario, name: str, realism: dict) -> Scenario:
    data = sc.model_dump(by_alias=True)
    data["realism"] = realism
    data["name"] = name
    return parse_scenario(data, source=name)


def scenarios(names: list[str], knobs: bool) -> list[Scenario]:
    """The named scenarios (``realistic-off``: realistic without its knobs) and, with ``knobs``,
    realistic-off with one of realistic's knobs on at a time."""
    out = []
    realistic = load_scenario("realistic")
    for n in names:
        out.append(_with_realism(realistic, n, {}) if n == "realistic-off" else load_scenario(n))
    if knobs:
        full = realistic.realism.model_dump(by_alias=True)
        for k in realistic.realism.knobs_on():
            out.append(_with_realism(realistic, f"only {k}", {k: full[k]}))
    return out


@dataclass(frozen=True)
class PairResults:
    """Per ordered camera pair of one replicate: truth over the period, estimate and SE."""

    truth: np.ndarray
    flow: np.ndarray
    se: np.ndarray


def estimate_pairs(sc: Scenario, p: float, rng: np.random.Generator, days: int, spec: AggregatorSpec,
                   partitions: int) -> PairResults:
    params = PrivacyParams.profile("flow").with_changes(same_group_rate=p, version=f"realism-{p:g}")
    sim = simulate(sc, params, rng, days=days, mode="fast")
    pub, tr = sim.published, sim.truth
    cells = (OccurrenceCell.from_record(x) for x in pub.occurrence_records())
    rows, _ = aggregate_cells(cells, spec, partitions)
    sums = sum_rows(rows, 0, tr.max_lag_windows)
    true = tr.pairs.sum(axis=(0, 3))
    out = []
    for a, ca in enumerate(pub.camera_ids):
        for b, cb in enumerate(pub.camera_ids):
            if a == b:
                continue
            key = (f"{pub.site_ids[pub.camera_site[a]]}/{ca}", f"{pub.site_ids[pub.camera_site[b]]}/{cb}")
            if key not in sums:
                raise RuntimeError(f"no components for {key[0]} -> {key[1]}")
            _, _, f, se = flow_from_sums(sums[key], p)
            out.append((float(true[a, b]), f, se))
    t, f, se = np.array(out).T
    return PairResults(t, f, se)


def metrics(r: PairResults, days: int, min_per_day: float) -> dict[str, float]:
    err = r.flow - r.truth
    z = err / r.se
    big = r.truth / days >= min_per_day
    zero = r.truth == 0
    cover = np.abs(err) <= Z95 * r.se
    nan = float("nan")
    return {"med_rel_err": float(np.median(np.abs(err[big]) / r.truth[big])) if big.any() else nan,
            "cov95": float(cover.mean()), "cov95_zero": float(cover[zero].mean()) if zero.any() else nan,
            "mean_z": float(z.mean()), "sd_z": float(z.std(ddof=1)),
            "false5": float((np.abs(r.flow[zero]) > Z95 * r.se[zero]).mean()) if zero.any() else nan,
            "false_pos": float((r.flow[zero] > Z95 * r.se[zero]).mean()) if zero.any() else nan,
            "pairs": float(r.truth.size), "big": float(big.sum()), "zero": float(zero.sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", dest="scenarios",
                    help="scenario name or YAML path, repeatable (default: reference, realistic-off, realistic)")
    ap.add_argument("--knobs", action="store_true", help="also realistic-off with one knob on at a time")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--p", type=float, action="append", help="same-group rate, repeatable (default 0.5)")
    ap.add_argument("--min-per-day", type=float, default=100.0, help="'big' flows: truth per day at least this")
    ap.add_argument("--partitions", type=int, default=4, help="aggregator group partitions")
    args = ap.parse_args(argv)
    if args.days < 1 or args.replicates < 1:
        ap.error("--days and --replicates must be at least 1")
    ps = args.p or [0.5]
    if any(not 0 < p < 1 for p in ps):
        ap.error("--p must be between 0 and 1")
    scs = scenarios(args.scenarios or ["reference", "realistic-off", "realistic"], args.knobs)
    spec = AggregatorSpec()
    console = Console()
    console.print(f"aggregator spec {spec.fingerprint()}, {args.days} day(s), {args.replicates} replicate(s), "
                  f"seed {args.seed}, lags 0..{scs[0].max_lag_windows}")
    results: dict[tuple[str, float], list[dict[str, float]]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("simulating", total=len(scs) * len(ps) * args.replicates)
        for sc in scs:
            for p in ps:
                for r in range(args.replicates):
                    bar.update(task, description=f"{sc.name}, p={p:g}, replicate {r + 1}")
                    res = estimate_pairs(sc, p, np.random.default_rng([args.seed, r]), args.days, spec,
                                         args.partitions)
                    results.setdefault((sc.name, p), []).append(metrics(res, args.days, args.min_per_day))
                    bar.advance(task)
    console.print(f"\ncurrent estimator, medians over {args.replicates} replicate(s) of {args.days} day(s); "
                  f"big = truth >= {args.min_per_day:g}/day; z = (estimate - truth) / SE",
                  highlight=False, soft_wrap=True)
    head = (f"{'scenario':24} {'p':>5} {'pairs':>5} {'big':>4} {'no flow':>7} {'med rel err big':>15} {'cov95':>6} "
            f"{'cov95 no flow':>13} {'mean z':>7} {'sd z':>5} {'false 5%':>8} {'false +':>7}")
    lines = [head, "-" * len(head)]
    for (name, p), runs in results.items():
        med = {k: float(np.nanmedian(v)) if np.isfinite(v := [m[k] for m in runs]).any() else float("nan")
               for k in METRICS + ("pairs", "big", "zero")}
        lines.append(f"{name:24} {p:5g} {med['pairs']:5.0f} {med['big']:4.0f} {med['zero']:7.0f} "
                     f"{med['med_rel_err']:15.3f} {med['cov95']:6.3f} {med['cov95_zero']:13.3f} "
                     f"{med['mean_z']:+7.2f} {med['sd_z']:5.2f} {med['false5']:8.3f} {med['false_pos']:7.3f}")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
