"""Attacks on what analysts can read (the published tier), issue 11 item 5 (b), (c), (e).

    .venv/bin/python bench/privacy/published_attacks.py                 # 2 days, defaults
    .venv/bin/python bench/privacy/published_attacks.py --days 3 --flow-scale 4 --total-scale 2

The attacker has a held-out prior run of the same scenario (another seed), as a real attacker
would have earlier published data and public knowledge of the site, and the published rows of
the target run (produced by the aggregator's cores in-process, with the deployment's noise).

(b) **An analyst who saw the target once**: at camera A in minute t (a real mover whose next
capture is at another camera B within the flow lags). From the prior run the analyst knows,
per hour of day, how likely each next camera and lag is (the prior) and the mean and variance
of every published co-occurrence sum s_d(A, B') (the background). The target's own capture
at B at lag d adds 1 to s_d(A, B) with probability p (same group), on top of background and
noise. The analyst's posterior over B' weighs each hypothesis by the Gaussian likelihood ratio
of that +1 on the observed rows of the target's hour. Printed: the gain of the posterior of the
true next camera over its prior, median and 99th percentile, for busy, quiet and after-close
hours. Also the worst case of differential privacy (an analyst who knows every other person's
contribution exactly, so that only the noise protects): the largest possible gain given the
noise on the values one next capture changes (lag row, range row, one window total).

(c) Share of published values that aggregate at least 3 real persons, and share that carry
noise (the rule: every analyst-visible value does one or the other).

(e) Row existence: camera-hours with a published row but no real capture, and the share of
hours with a real capture that have a row (1.0 and > 0 mean rows do not exist *because*
someone passed).
"""
from __future__ import annotations

import argparse
import math
import secrets
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.aggregator import AggregatorSpec, OccurrenceCell  # noqa: E402
from pipeline.aggregator.batch import aggregate_cells  # noqa: E402
from pipeline.aggregator.model import LAG  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.privacy.release import discrete_laplace_variance  # noqa: E402
from pipeline.simulator import load_scenario, simulate  # noqa: E402

HOUR = 3600


def run(scenario: str, days: int, seed: int, spec: AggregatorSpec):
    params = PrivacyParams.profile("flow").with_changes(version=f"attack-{seed}")
    sim = simulate(load_scenario(scenario), params, np.random.default_rng(seed), days=days, mode="fast",
                   keep_captures=True)
    pub = sim.published
    cells = [OccurrenceCell.from_record(x) for x in pub.occurrence_records()]
    key = secrets.token_bytes(32)
    flow, foot = aggregate_cells(cells, spec, noise_key=key)
    return sim, flow, foot


def movers(sim, max_lag: int, w: int):
    """(A, t_window, B, lag) for every capture followed by the same person's next capture at
    another camera within the flow lags."""
    c = sim.captures
    win = np.floor(c.time / w).astype(np.int64)
    same = c.person[1:] == c.person[:-1]
    lag = win[1:] - win[:-1]
    ok = same & (c.camera[1:] != c.camera[:-1]) & (lag >= 0) & (lag <= max_lag)
    idx = np.nonzero(ok)[0]
    return c.camera[idx], win[idx], c.camera[idx + 1], lag[idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--flow-scale", type=float, default=4.0)
    ap.add_argument("--total-scale", type=float, default=2.0)
    ap.add_argument("--footfall-scale", type=float, default=8.0)
    ap.add_argument("--max-targets", type=int, default=20000)
    args = ap.parse_args(argv)
    spec = AggregatorSpec(flow_noise_scale=args.flow_scale, total_noise_scale=args.total_scale,
                          footfall_noise_scale=args.footfall_scale)
    L, w = spec.max_lag, spec.window_seconds
    print(f"scenario {args.scenario}, {args.days} day(s); noise scales: s {args.flow_scale}, window totals "
          f"{args.total_scale}, footfall {args.footfall_scale}")

    prior_sim, prior_flow, _ = run(args.scenario, args.days, args.seed + 1000, spec)   # the attacker's
    sim, flow, foot = run(args.scenario, args.days, args.seed, spec)
    pub = sim.published
    cams = list(pub.camera_ids)
    p = sim.params.same_group_rate
    start = pub.start_epoch

    # ---- prior: next camera and lag per (origin, hour of day), background of every lag row --------
    a0, t0, b0, d0 = movers(prior_sim, L, w)
    hod0 = (t0 * w // HOUR) % 24
    next_cam = defaultdict(lambda: np.ones(len(cams)))            # Laplace-smoothed counts
    lag_given = defaultdict(lambda: np.ones(L + 1))
    for a, h, b, d in zip(a0, hod0, b0, d0):
        next_cam[(a, h)][b] += 1
        lag_given[(a, b)][d] += 1
    bg = defaultdict(list)                                        # (A, B, d, hod) -> s values
    pstart = prior_sim.published.start_epoch
    for r in prior_flow:
        if r.kind == LAG:
            hod = ((r.hour_ms // 1000 - pstart) // HOUR) % 24
            bg[(r.origin_camera, r.dest_camera, r.lag_lo, hod)].append(r.s)
    noise_var = discrete_laplace_variance(args.flow_scale)

    rows = {(r.origin_camera, r.dest_camera, r.lag_lo, r.hour_ms): r.s for r in flow if r.kind == LAG}
    open_s, close_s = _opening(args.scenario)
    hourly = np.zeros(24)
    for r in foot:
        hourly[((r.hour_ms // 1000 - start) // HOUR) % 24] += r.occurrences
    open_hours = [h for h in range(24) if open_s <= h * HOUR < close_s]
    med = np.median(hourly[open_hours]) if open_hours else 0
    busy = {h for h in open_hours if hourly[h] >= med}

    # ---- (b) the analyst with a sighting ------------------------------------------------------
    a1, t1, b1, d1 = movers(sim, L, w)
    sel = np.arange(len(a1))
    if len(sel) > args.max_targets:
        sel = np.random.default_rng(args.seed).choice(sel, args.max_targets, replace=False)
    gains = defaultdict(list)
    priors = defaultdict(list)
    for i in sel:
        a, t, b = int(a1[i]), int(t1[i]), int(b1[i])
        hod = (t * w // HOUR) % 24
        hour_ms = (start + t * w) // HOUR * HOUR * 1000
        prior = next_cam[(a, hod)].copy()
        prior[a] = 0
        prior /= prior.sum()
        loglr = np.zeros(len(cams))
        for bb in range(len(cams)):
            if bb == a:
                continue
            pd = lag_given[(a, bb)] / lag_given[(a, bb)].sum()
            like = 0.0
            for d in range(L + 1):
                x = rows.get((cams[a], cams[bb], d, hour_ms))
                if x is None:
                    like += pd[d]
                    continue
                hist = bg.get((cams[a], cams[bb], d, hod), [0])
                mu, var = float(np.mean(hist)), float(np.var(hist)) + noise_var
                z = (x - mu - 0.5) / max(var, 1e-9)
                like += pd[d] * ((1 - p) + p * math.exp(min(z, 50.0)))
            loglr[bb] = math.log(like)
        post = prior * np.exp(loglr - loglr.max())
        post[a] = 0
        post /= post.sum()
        kind = "after-close" if hod not in open_hours else ("busy" if hod in busy else "quiet")
        gains[kind].append(post[b] - prior[b])
        priors[kind].append(prior[b])

    eps_s = 1 / args.flow_scale if args.flow_scale else math.inf
    eps_n = 1 / args.total_scale if args.total_scale else math.inf
    eps_f = 1 / args.footfall_scale if args.footfall_scale else math.inf
    eps_dp = 2 * eps_s + eps_n + eps_f    # lag row + range row (+1 each), N_B(t + d), B's footfall hour
    print("\n(b) analyst who saw the target at A in minute t: posterior of the true next camera minus its prior")
    print(f"{'hours':12} {'targets':>8} {'prior (mean)':>12} {'gain median':>11} {'gain p99':>9} {'DP worst case':>13}")
    for kind in ("busy", "quiet", "after-close"):
        g = np.array(gains.get(kind, []))
        if not len(g):
            print(f"{kind:12} {0:8d} {'-':>12} {'-':>11} {'-':>9} {'-':>13}")
            continue
        pr = float(np.mean(priors[kind]))
        worst = pr * math.exp(eps_dp) / (pr * math.exp(eps_dp) + 1 - pr) - pr if math.isfinite(eps_dp) else 1 - pr
        print(f"{kind:12} {len(g):8d} {pr:12.3f} {np.median(g):11.4f} {np.quantile(g, 0.99):9.4f} {worst:13.3f}")

    # ---- (c) values aggregating >= 3 real persons or noised -------------------------------------
    c = sim.captures
    hours_cam = defaultdict(set)
    for person, cam, tt in zip(c.person, c.camera, c.time):
        hours_cam[(int(cam), int(tt // HOUR))].add(int(person))

    def real_persons(camera_id: str, hour_ms: int) -> int:
        return len(hours_cam.get((cams.index(camera_id), (hour_ms // 1000 - start) // HOUR), ()))

    # A flow row is counted on its origin (A) side: every product in it involves the hour at A.
    values = [(real_persons(r.camera_id, r.hour_ms), r.noise_var_milli > 0) for r in foot]
    values += [(real_persons(r.origin_camera, r.hour_ms), r.noise_var_milli > 0) for r in flow]
    n_rows = len(values)
    three = sum(n >= 3 for n, _ in values)
    noised = sum(z for _, z in values)
    either = sum(n >= 3 or z for n, z in values)
    print(f"\n(c) published values: {n_rows}; aggregate >= 3 real persons (A side): {three / n_rows:.3f}; carry "
          f"noise: {noised / n_rows:.3f}; one or the other: {either / n_rows:.3f}")

    # ---- (e) row existence ------------------------------------------------------------------------
    have = {(r.camera_id, (r.hour_ms // 1000 - start) // HOUR) for r in foot}
    real = {(cams[k[0]], k[1]) for k in hours_cam}
    no_person = len(have - real)
    closed = {k for k in have if (k[1] % 24) not in open_hours}
    print(f"(e) camera-hours with a row: {len(have)}; of them with no real capture: {no_person}; camera-hours "
          f"with a real capture that have a row: {len(real & have) / max(len(real), 1):.3f}; camera-hours with a "
          f"real capture: {len(real)}")
    print(f"    rows outside opening hours: {len(closed)}, every one with a real capture: "
          f"{len(closed & real) == len(closed)} (the simulator pads only open hours, so a straggler's row "
          f"exists because of them; the processor pads every window of a camera that streams, so deployed "
          f"rows exist for every hour the camera is on)")
    return 0


def _opening(scenario: str) -> tuple[int, int]:
    sc = load_scenario(scenario)
    oh = sc.sites[0].opening_hours
    return int(oh.open), int(oh.close)


if __name__ == "__main__":
    raise SystemExit(main())
