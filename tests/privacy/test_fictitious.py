"""Fictitious persons: invariants of the padding and the linkage bound it guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.privacy import PrivacyParams, pad_with_fictitious
from pipeline.privacy.evaluation.metrics import presence_likelihood_ratio, rest_pmf
from pipeline.privacy.fictitious import fictitious_counts


STRICT = PrivacyParams.profile("strict")


def test_padding_only_adds_and_respects_the_floor(rng):
    p = STRICT
    real = {3: 1, 10: 4, 999: 2}
    out = pad_with_fictitious(real, p, rng)
    assert set(out) == set(range(p.n_groups))  # floor 2: every group is published
    assert all(isinstance(k, int) and isinstance(v, int) for k, v in out.items())
    for g in range(p.n_groups):
        assert out[g] >= real.get(g, 0) + p.fictitious_floor
    assert min(out.values()) >= 2


def test_a_real_occurrence_is_never_alone_in_its_count(rng):
    p = STRICT
    for _ in range(20):
        out = pad_with_fictitious({7: 1}, p, rng)
        assert out[7] >= 3


def test_without_floor_zero_counts_are_omitted(rng):
    p = STRICT.with_changes(fictitious_floor=0)
    out = pad_with_fictitious({}, p, rng)
    assert all(v > 0 for v in out.values())
    assert 0 < len(out) < p.n_groups


def test_mean_and_variance_match_the_recorded_rate(rng):
    p = PrivacyParams.default().with_changes(fictitious_ratio=0.4)
    draws = fictitious_counts(p, rng, size=(200, p.n_groups))
    assert draws.mean() == pytest.approx(p.fictitious_rate, rel=0.02)
    assert draws.var() == pytest.approx(p.fictitious_variance_per_group, rel=0.05)


def test_output_does_not_depend_on_default_rng_state():
    p = STRICT
    a = pad_with_fictitious({}, p)
    b = pad_with_fictitious({}, p)
    assert a != b  # fresh OS entropy each call


@pytest.mark.parametrize("bad", [{-1: 1}, {1000: 1}, {1: -2}, {"3": 1}, {1.5: 1}])
def test_invalid_input_is_rejected(bad):
    with pytest.raises(ValueError):
        pad_with_fictitious(bad, PrivacyParams.default())


@pytest.mark.parametrize("ratio, floor, background", [(0.5, 2, 0.0), (0.5, 0, 0.3), (0.2, 2, 2.0), (0.8, 1, 0.05)])
def test_rest_distribution_has_bounded_ratio(ratio, floor, background):
    """pmf(n-1) <= pmf(n) / r for all n: the property that bounds any linkage likelihood ratio by 1/r."""
    p = PrivacyParams.default().with_changes(fictitious_ratio=ratio, fictitious_floor=floor)
    pmf = rest_pmf(p, background, 60)
    assert np.all(pmf[:-1] <= pmf[1:] / ratio + 1e-15)


def test_linkage_likelihood_ratio_never_exceeds_bound(rng):
    p = PrivacyParams.default().with_changes(n_groups=200, working_dim=256)
    pmf = rest_pmf(p, 0.1, 80)
    worst = 0.0
    for _ in range(200):
        target = rng.dirichlet(np.full(p.n_groups, 0.05))
        counts = fictitious_counts(p, rng) + rng.poisson(0.1, p.n_groups)
        counts[np.argmax(target)] += 1  # the target is present in its most likely group
        worst = max(worst, presence_likelihood_ratio(target, counts, pmf))
    assert worst <= p.linkage_likelihood_ratio_bound + 1e-9
    assert worst > 1.0  # and the attack is not vacuous


def test_flow_profile_is_the_default_and_adds_about_one_occurrence_per_camera_window(rng):
    p = PrivacyParams.default()
    assert (p.fictitious_floor, p.fictitious_ratio) == (0, PrivacyParams.profile("flow").fictitious_ratio)
    assert p.fictitious_per_window == pytest.approx(1.0)
    sizes = [sum(pad_with_fictitious({}, p, rng).values()) for _ in range(2000)]
    assert np.mean(sizes) == pytest.approx(1.0, abs=0.1)
    padded = pad_with_fictitious({5: 2}, p, rng)
    assert padded[5] >= 2 and len(padded) < 20  # sparse: a handful of rows, not one per group


def test_unknown_profile_is_refused():
    from pipeline.privacy import ParamsError

    with pytest.raises(ParamsError, match="strict"):
        PrivacyParams.profile("lenient")
