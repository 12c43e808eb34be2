"""Flows from the aggregator's published components vs ground truth and vs the SQL estimator on cells.

    .venv/bin/python bench/flows/components_eval.py                       # 12 one-day replicates
    .venv/bin/python bench/flows/components_eval.py --days 7 --replicates 8
    .venv/bin/python bench/flows/components_eval.py --far-min 31          # another far band

Each replicate simulates the scenario (fast mode, flow profile, fresh seed), runs its cells
through the aggregator's cores in-process (pipeline.aggregator.batch: 4 group partitions and
the combiner) and estimates every ordered camera pair from the summed components
(pipeline.aggregator.estimate); the same cells go into an embedded current ClickHouse (chdb)
for the SQL estimator on cells (pipeline/analytics/cell_estimator.py, what flows.py ran before the
published tier). Truth: the simulator's capture pairs within the lag range.
Printed per estimator: 95% CI coverage (all pairs and flows >= 100/day), mean error and median
relative error of flows >= 100/day, and RMSE / RMS SE. Also the components' SE without
kappa's sampling error, to show why it is included.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.aggregator import AggregatorSpec, OccurrenceCell  # noqa: E402
from pipeline.aggregator.batch import aggregate_cells  # noqa: E402
from pipeline.aggregator.estimate import flow_from_sums, sum_rows  # noqa: E402
from pipeline.analytics.dimensions import register_params  # noqa: E402
from pipeline.analytics.cell_estimator import estimate_cell_flows  # noqa: E402
from pipeline.analytics.flows import CameraRef, FlowQuery  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.simulator import load_scenario, simulate  # noqa: E402
from pipeline.analytics.cell_tables import create_cell_tables  # noqa: E402
from pipeline.simulator.publish import write_cells  # noqa: E402
from pipeline.sink.clickhouse import ChdbWarehouse  # noqa: E402
from pipeline.sink.migrations import migrate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--replicates", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--far-min", type=int, default=0, help="start of the far band (0: the default)")
    ap.add_argument("--min-per-day", type=float, default=100.0)
    args = ap.parse_args(argv)
    spec = AggregatorSpec(far_min=args.far_min)
    print(f"aggregator spec {spec.fingerprint()}, restricted counts live <= {spec.restricted_age_seconds} s")
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        wh = ChdbWarehouse(d, "flow")
        migrate(wh)
        create_cell_tables(wh)   # a throwaway database: the reference estimator reads cells
        for r in range(args.replicates):
            params = PrivacyParams.profile("flow").with_changes(version=f"eval-{args.seed}-r{r}")
            register_params(wh, params)
            sim = simulate(load_scenario(args.scenario), params, np.random.default_rng([args.seed, r]),
                           days=args.days, mode="fast")
            pub = sim.published
            write_cells(pub, wh, first_offset=r << 32)
            flow, _ = aggregate_cells((OccurrenceCell.from_record(x) for x in pub.occurrence_records()), spec)
            sums = sum_rows(flow, 0, sim.truth.max_lag_windows)
            start = datetime.fromtimestamp(pub.start_epoch, timezone.utc)
            cams = tuple(CameraRef(pub.site_ids[pub.camera_site[i]], c) for i, c in enumerate(pub.camera_ids))
            q = FlowQuery(params.version, cams, start, start + timedelta(days=args.days), pub.window_seconds, 0,
                          sim.truth.max_lag_windows)
            true = sim.truth.pairs.sum(axis=(0, 3))
            p = params.same_group_rate
            for e in estimate_cell_flows(wh, q):
                x = sums[(e.origin, e.destination)]
                k, _, f, se = flow_from_sums(x, p)
                var0 = k * x.qq - k * k * x.qn + k ** 3 * x.nn2
                se_no_kappa = np.sqrt(max(var0, 0) / (p - k) ** 2 + max(f, 0) * (1 - p) / p)
                t = float(true[sim.truth.cam(e.origin.split("/", 1)[1]), sim.truth.cam(e.destination.split("/", 1)[1])])
                rows.append((t, e.flow, e.se, f, se, se_no_kappa))
            print(f"replicate {r + 1}/{args.replicates} ({time.monotonic() - t0:.0f} s)", flush=True)
    a = np.array(rows)
    truth = a[:, 0]
    big = truth / args.days >= args.min_per_day
    print(f"\n{args.scenario}, {args.days} day(s), {args.replicates} replicates, {len(a)} pair estimates, "
          f"{int(big.sum())} with >= {args.min_per_day:.0f}/day")
    print(f"{'estimator':34} {'cov95':>6} {'cov95 big':>9} {'mean err big':>12} {'med rel err big':>15} {'RMSE/RMS SE':>11}")
    for name, est, se in (("SQL on cells (flows.py)", a[:, 1], a[:, 2]), ("components (published SE)", a[:, 3], a[:, 4]),
                          ("components, SE without kappa term", a[:, 3], a[:, 5])):
        err = est - truth
        cov = np.abs(err) <= 1.959964 * se
        print(f"{name:34} {cov.mean():6.3f} {cov[big].mean():9.3f} {err[big].mean():12.2f} "
              f"{np.median(np.abs(err[big]) / truth[big]):15.3f} {np.sqrt(np.mean(err ** 2) / np.mean(se ** 2)):11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
