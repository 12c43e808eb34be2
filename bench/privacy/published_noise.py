"""Flow error and CI coverage against the published tier's noise scale: the curve the default
``aggregator.flow_noise_scale`` is chosen from (issue 11, item 3).

    .venv/bin/python bench/privacy/published_noise.py                        # 7 days, 3 replicates
    .venv/bin/python bench/privacy/published_noise.py --days 7 --replicates 6 --scales 0,1,2,4,8,16
    .venv/bin/python bench/privacy/published_noise.py --scales 0,4 --total-scales 0,2,4   # window-total noise too

Each replicate simulates the scenario (fast mode, flow profile, fresh seed) and runs its cells
through the aggregator's cores in-process (pipeline.aggregator.batch) once per noise scale, with
a fresh random release key, so every scale sees the same people and only the noise differs.
Flows of every ordered camera pair over the whole period are estimated from the summed
components with the published SE (which includes the noise variance the rows carry).

Printed per scale: the per-row privacy parameter (epsilon of the discrete Laplace mechanism for
a change of 1 in one published co-occurrence sum, i.e. one co-occurring pair of captures), the
median relative error of flows >= 100/day, the mean error, 95% CI coverage over all pairs and
over the big flows, and RMSE / RMS SE. Figures are medians over replicates.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.aggregator import AggregatorSpec, OccurrenceCell  # noqa: E402
from pipeline.aggregator.batch import aggregate_cells  # noqa: E402
from pipeline.aggregator.estimate import flow_from_sums, sum_rows  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.simulator import load_scenario, simulate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--scales", default="0,1,2,4,8,16", help="comma-separated discrete Laplace scales of s")
    ap.add_argument("--total-scales", default="0", help="comma-separated scales of the window-total noise; every "
                    "combination with --scales is run")
    ap.add_argument("--min-per-day", type=float, default=100.0)
    args = ap.parse_args(argv)
    scales = [(float(x), float(y)) for x in args.scales.split(",") for y in args.total_scales.split(",")]
    t0 = time.monotonic()
    results: dict[float, list[tuple[float, ...]]] = {s: [] for s in scales}
    for r in range(args.replicates):
        params = PrivacyParams.profile("flow").with_changes(version=f"noise-{args.seed}-r{r}")
        sim = simulate(load_scenario(args.scenario), params, np.random.default_rng([args.seed, r]),
                       days=args.days, mode="fast")
        pub = sim.published
        cells = [OccurrenceCell.from_record(x) for x in pub.occurrence_records()]
        true = sim.truth.pairs.sum(axis=(0, 3))
        p = params.same_group_rate
        for scale in scales:
            spec = AggregatorSpec(flow_noise_scale=scale[0], total_noise_scale=scale[1])
            flow, _ = aggregate_cells(cells, spec, noise_key=secrets.token_bytes(32) if any(scale) else None)
            rows = []
            for (a, b), x in sum_rows(flow, 0, sim.truth.max_lag_windows).items():
                _, _, f, se = flow_from_sums(x, p)
                t = float(true[sim.truth.cam(a.split("/", 1)[1]), sim.truth.cam(b.split("/", 1)[1])])
                rows.append((t, f, se))
            m = np.array(rows)
            truth, err, se = m[:, 0], m[:, 1] - m[:, 0], m[:, 2]
            big = truth / args.days >= args.min_per_day
            cov = np.abs(err) <= 1.959964 * se
            results[scale].append((float(np.median(np.abs(err[big]) / truth[big])) if big.any() else float("nan"),
                                   float(err[big].mean()) if big.any() else float("nan"), float(cov.mean()),
                                   float(cov[big].mean()) if big.any() else float("nan"),
                                   float(np.sqrt(np.mean(err ** 2) / np.mean(se ** 2))), int(big.sum())))
        print(f"replicate {r + 1}/{args.replicates} ({time.monotonic() - t0:.0f} s)", flush=True)
    print(f"\n{args.scenario}, {args.days} day(s), {args.replicates} replicates (medians over replicates); "
          f"p = {p}, big = flows >= {args.min_per_day:.0f}/day")
    print(f"{'scale':>6} {'totals':>6} {'eps/row':>8} {'med rel err big':>15} {'mean err big':>12} {'cov95':>6} {'cov95 big':>9} "
          f"{'RMSE/RMS SE':>11} {'big pairs':>9}")
    for scale in scales:
        med = np.median(np.array(results[scale]), axis=0)
        eps = f"{1 / scale[0]:.2f}" if scale[0] else "none"
        print(f"{scale[0]:6g} {scale[1]:6g} {eps:>8} {med[0]:15.3f} {med[1]:12.2f} {med[2]:6.3f} {med[3]:9.3f} {med[4]:11.3f} "
              f"{int(med[5]):9d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
