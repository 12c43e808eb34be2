"""The estimator's two choices on published rows (pipeline/aggregator/estimate.py): only active
hours are summed, and kappa comes from the outer far band extrapolated with the inner one.

Worlds built here, in memory, so that each choice is seen doing its job: a camera pair whose
only same-person pairs lie beyond the flow lags (people who come back an hour later) must not
get a negative flow, and closed hours must be left out without losing the flow of open ones.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

import numpy as np
import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.estimate import EstimatorOptions, PairSums, flow_from_sums, sum_hours, sum_rows, HourTerms
from pipeline.privacy import PrivacyParams, pad_with_fictitious

START = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()


def _cells(params: PrivacyParams, rng: np.random.Generator, *, returners: float, open_hours: tuple[int, int],
           visitors: int = 4000, days: int = 1) -> list[OccurrenceCell]:
    """Cameras A and B, open ``open_hours`` each day; no walk from A to B within 30 minutes, but
    a share ``returners`` of A's visitors shows up at B 45 to 120 minutes later (median an hour:
    the same-person pairs that reach into the far bands). Fictitious persons in every window of
    the day, as processors add them."""
    g_n, q = params.n_groups, np.sqrt(params.same_group_rate)
    caps: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for day in range(days):
        t0 = START + day * 86400 + open_hours[0] * 3600
        span = (open_hours[1] - open_hours[0]) * 3600
        ta = t0 + rng.uniform(0, span, visitors)
        home = rng.integers(0, g_n, visitors)
        back = rng.random(visitors) < returners
        lag = np.clip(rng.lognormal(np.log(3600), 0.3, int(back.sum())), 2700, 7200)

        def group(h: np.ndarray) -> np.ndarray:
            return np.where(rng.random(h.size) < q, h, rng.integers(0, g_n, h.size))

        caps["A"].append((ta, group(home)))
        caps["B"].append((np.concatenate([ta[back] + lag, t0 + rng.uniform(0, span, visitors)]),
                          np.concatenate([group(home[back]), rng.integers(0, g_n, visitors)])))
    cells = []
    for cam, parts in caps.items():
        t = np.concatenate([x for x, _ in parts])
        g = np.concatenate([y for _, y in parts])
        per: dict[int, Counter] = defaultdict(Counter)
        for w, gi in zip((t // 60 * 60).astype(np.int64), g):
            per[int(w)][int(gi)] += 1
        for w in range(int(START), int(START) + days * 86400, 60):   # every window of the day
            for gi, c in pad_with_fictitious(dict(per.get(w, {})), params, rng).items():
                cells.append(OccurrenceCell(params.version, "s1", cam, w * 1000, 60, gi, c))
    return cells


def _ab(params: PrivacyParams, cells: list[OccurrenceCell], options: EstimatorOptions) -> PairSums:
    rows, _ = aggregate_cells(cells, AggregatorSpec())
    return sum_rows(rows, options=options)["s1/A", "s1/B"]


@pytest.fixture(scope="module")
def returners():
    params = PrivacyParams.profile("flow")
    options = EstimatorOptions(fictitious_per_window=params.fictitious_per_window)
    sums = [_ab(params, _cells(params, np.random.default_rng(seed), returners=0.5, open_hours=(9, 21)), options)
            for seed in range(4)]
    return params, sums


def test_same_person_pairs_beyond_the_lags_do_not_make_a_negative_flow(returners):
    """Truth is 0 (nobody reaches B within 30 minutes). Weighing both far bands equally
    (lam = -0.5, the single band of before) takes the returners for chance and reports a flow
    several SE below 0; at p = 0.5 the default extrapolates outwards (lam = 0.5) and removes
    most of that (what bench/flows/realism_eval.py measures on the simulated worlds)."""
    params, sums = returners
    p = params.same_group_rate
    assert p == 0.5
    pooled = [flow_from_sums(x, p, far_extrapolation=-0.5) for x in sums]
    extrap = [flow_from_sums(x, p) for x in sums]
    z_pooled = np.mean([f / se for _, _, f, se in pooled])
    z_extrap = np.mean([f / se for _, _, f, se in extrap])
    assert z_pooled < -2.0, z_pooled
    assert abs(z_extrap) < 0.5 * abs(z_pooled), (z_extrap, z_pooled)
    # the inner band holds more of the returners than the outer one
    assert all(x.s_far_in / x.nn_far_in > x.s_far / x.nn_far for x in sums)
    # the extrapolation is paid for in SE
    assert all(e[3] > q[3] for e, q in zip(extrap, pooled))


def test_closed_hours_are_left_out(returners):
    """Fictitious persons fill every window of the day; only the hours where both cameras have
    visitors are summed (12 open hours, plus the hour after closing that B's returners reach)."""
    _, sums = returners
    for x in sums:
        assert x.hours_seen >= 23 and 12 <= x.hours <= 14, (x.hours, x.hours_seen)


def test_every_hour_is_kept_without_fictitious_persons_or_with_factor_zero():
    t = HourTerms([5, 100, 0, 0, 0, 0], None, [1, 900, 0], [1, 1000, 0], nn_active=100)
    idle = HourTerms([0, 0, 0, 0, 0, 0], None, [0, 0, 0], [0, 0, 0], nn_active=0)
    assert sum_hours([t, idle], 31, EstimatorOptions()).hours == 1          # nn = 0 carries nothing
    quiet = HourTerms([0, 1800, 0, 0, 0, 0], None, [0, 5000, 0], [0, 5000, 0], nn_active=1800)
    f1 = EstimatorOptions(fictitious_per_window=1.0)                        # floor 2 * 60 * 31 = 3720
    assert sum_hours([t, quiet], 31, f1).hours == 0
    assert sum_hours([t, quiet], 31, EstimatorOptions(fictitious_per_window=1.0, active_factor=0)).hours == 2
    with pytest.raises(ValueError, match="estimator options"):
        EstimatorOptions(active_factor=-1)


def test_the_far_band_weights_follow_the_same_group_rate():
    """lam = 2p - 0.5 within [-0.5, 0.5]: equal weights at low p, the outer band at 0.25,
    extrapolated outwards from 0.5; the SE's kappa term grows with |lam| away from equal weights."""
    from pipeline.aggregator.estimate import far_extrapolation_for

    assert [far_extrapolation_for(p) for p in (0.01, 0.1, 0.25, 0.5, 0.9)] == pytest.approx([-0.48, -0.3, 0.0, 0.5, 0.5])
    x = PairSums(s=300, nn=100_000, qq=120_000, qn=1_000_000, nn2=10_000_000, s_far=160, nn_far=140_000,
                 s_far_in=200, nn_far_in=140_000)
    k_eq = flow_from_sums(x, 0.1)[0]     # lam -0.3
    k_out = flow_from_sums(x, 0.25)[0]   # lam 0
    k_ex = flow_from_sums(x, 0.5)[0]     # lam 0.5
    assert k_out == pytest.approx(160 / 140_000)
    assert k_ex == pytest.approx(1.5 * 160 / 140_000 - 0.5 * 200 / 140_000)
    assert k_ex < k_out < k_eq
    ses = [flow_from_sums(x, 0.5, far_extrapolation=lam)[3] for lam in (-0.5, 0.0, 0.5)]
    assert ses[0] < ses[1] < ses[2]   # the further out, the more variance (same p)
    one_band = PairSums(s=300, nn=100_000, qq=120_000, qn=1_000_000, nn2=10_000_000, s_far=360, nn_far=280_000)
    assert flow_from_sums(one_band, 0.5)[0] == pytest.approx(360 / 280_000)   # data with one far band
