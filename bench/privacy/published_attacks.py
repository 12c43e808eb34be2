"""Attacks on what analysts can read (the published tier), issue 11 item 5: a thin wrapper around
the attack suite in :mod:`pipeline.redteam` (the same as ``flowctl privacy attack``), with the
noise scales as options so a scale can be tried before it becomes a setting.

    .venv/bin/python bench/privacy/published_attacks.py                 # 2 days, defaults
    .venv/bin/python bench/privacy/published_attacks.py --days 3 --flow-scale 4 --total-scale 2

The attacker has a held-out prior run of the same scenario (another seed), as a real attacker
would have earlier published data and public knowledge of the site, and the published rows of
the target run (made by the aggregator's and the counts core's own code in-process, with keyed
noise). What each attack does and how it is scored: pipeline/redteam/attacks.py; the bars:
pipeline/redteam/suite.py. Exit 1 if an analyst-tier bar is not met.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.aggregator import AggregatorSpec  # noqa: E402
from pipeline.redteam.suite import SuiteConfig, run_suite  # noqa: E402
from pipeline.redteam.world import demographics_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--prior-seed", type=int, default=None, help="default: seed + 1000")
    ap.add_argument("--flow-scale", type=float, default=4.0)
    ap.add_argument("--total-scale", type=float, default=2.0)
    ap.add_argument("--footfall-scale", type=float, default=8.0)
    ap.add_argument("--demographics-epsilon", type=float, default=1.0)
    ap.add_argument("--demographics-per-person-day", type=int, default=8)
    ap.add_argument("--max-targets", type=int, default=2000)
    ap.add_argument("--padding", choices=("stream", "simulator"), default="stream")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from rich.console import Console

    from pipeline.redteam.report import print_report, rich_progress

    spec = AggregatorSpec(flow_noise_scale=args.flow_scale, total_noise_scale=args.total_scale,
                          footfall_noise_scale=args.footfall_scale)
    cfg = SuiteConfig(scenario=args.scenario, days=args.days, seed=args.seed, prior_seed=args.prior_seed,
                      max_targets=args.max_targets, padding=args.padding, spec=spec,
                      demo_spec=demographics_spec(args.demographics_epsilon, args.demographics_per_person_day,
                                                  spec.window_seconds))
    with rich_progress(Console(stderr=True)) as task:
        res = run_suite(cfg, task)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print_report(res, Console() if sys.stdout.isatty() else Console(width=200))
    return 0 if res.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
