"""Calibration: whitening, noise from the same-group target, fictitious ratio from the linkage target, strata."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.privacy import Anonymizer, PrivacyParams
from pipeline.privacy.calibration import (calibrate, fictitious_ratio_for, fit_all_offsets, fit_reference,
                                          synthetic_pairs)
from pipeline.privacy.evaluation.metrics import attribute_advantage


def test_population_whitening_makes_covariance_identity(rng):
    x = rng.standard_normal((20000, 6)) @ rng.standard_normal((6, 6)) + 3.0
    ref = fit_reference(x, shrinkage=1e-6)
    z = (x - ref.mean) @ ref.whitening.T
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(6), atol=0.05)


def test_discriminant_whitening_keeps_the_stable_directions(rng):
    # dims 0-1 vary a lot between people and little between captures; dims 2-5 are capture noise
    people = rng.standard_normal((3000, 6)) * np.array([3, 3, 0.1, 0.1, 0.1, 0.1])
    a = people + rng.standard_normal(people.shape) * np.array([0.1, 0.1, 1, 1, 1, 1])
    b = people + rng.standard_normal(people.shape) * np.array([0.1, 0.1, 1, 1, 1, 1])
    ref = fit_reference(np.vstack([a, b]), pairs=(a, b), dims=2)
    assert ref.reduced_dim == 2 and ref.method == "discriminant-whitening"
    weight_on_stable = np.abs(ref.whitening[:, :2]).sum() / np.abs(ref.whitening).sum()
    assert weight_on_stable > 0.9


@pytest.mark.parametrize("prior, post, ratio", [(0.2, 1 / 3, 0.5), (0.25, 1 / 3, 2 / 3), (0.1, 1 / 3, 2 / 9)])
def test_fictitious_ratio_follows_from_the_linkage_target(prior, post, ratio):
    r = fictitious_ratio_for(prior, post)
    assert r == pytest.approx(ratio)
    odds = prior / (1 - prior) / r  # worst case posterior odds
    assert odds / (1 + odds) == pytest.approx(post)


def test_impossible_linkage_target_is_refused():
    with pytest.raises(ValueError):
        fictitious_ratio_for(0.5, 1 / 3)


def test_calibrated_noise_hits_same_group_target_on_fresh_pairs(rng):
    d = 32
    x = (rng.standard_normal((8000, d)) * np.linspace(0.2, 3, d) + 5).astype(np.float32)
    base = PrivacyParams.default().with_changes(n_groups=50, working_dim=64)
    res = calibrate(x, version="pp-t", base=base, assumed_similarity=0.9, seed=3, offset_iters=60,
                    n_synthetic=3000)
    p = res.params
    assert p.noise_scale > 0  # the descriptor was stable enough: noise was added, not hand-picked
    assert abs(p.same_group_rate - 0.5) <= 0.03
    ref = p.reference
    wa, wb = synthetic_pairs(ref.reduced_dim, 4000, 0.9, rng)
    inv = np.linalg.pinv(ref.whitening.astype(np.float64))
    a, b = ((w @ inv.T + ref.mean).astype(np.float32) for w in (wa, wb))
    anon = Anonymizer(p, d)
    measured = np.mean(anon.assign_groups(a) == anon.assign_groups(b))
    assert abs(measured - 0.5) <= 0.05
    c = np.bincount(anon.assign_groups(x), minlength=50)
    assert c.max() / c.mean() < 1.5 and c.min() / c.mean() > 0.6


def test_unstable_descriptor_gets_no_noise_and_says_so(rng):
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    base = PrivacyParams.default().with_changes(n_groups=50, working_dim=64)
    res = calibrate(x, version="pp-u", base=base, assumed_similarity=0.3, seed=1, offset_iters=30,
                    n_synthetic=2000)
    assert res.params.noise_scale == 0.0
    assert res.params.same_group_rate < 0.45 and not res.target_met


def test_stratum_offsets_hide_the_stratum(small_params, rng):
    """Appearance shifted by gender: pooled balancing leaks gender through the group, per-stratum does not."""
    n, d = 12000, 8
    gender = rng.integers(0, 2, n)
    x = (rng.standard_normal((n, d)) + 1.2 * gender[:, None] * np.eye(d)[0]).astype(np.float32)
    labels = np.array(["female", "male"], dtype=object)[gender]
    p = small_params.with_changes(reference=fit_reference(x))
    pooled = fit_all_offsets(p, x, None, rng, iters=80)
    strat = fit_all_offsets(p, x, labels, rng, iters=80)
    assert strat.strata == ("female", "male")
    xt = (rng.standard_normal((n, d)) + 1.2 * gender[:, None] * np.eye(d)[0]).astype(np.float32)
    half = n // 2
    g_pooled = Anonymizer(pooled, d).assign_groups(xt)
    g_strat = Anonymizer(strat, d).assign_groups(xt, strata=list(labels))
    adv_pooled = attribute_advantage(g_pooled[:half], gender[:half], g_pooled[half:], gender[half:], 50, 2)[0]
    adv_strat = attribute_advantage(g_strat[:half], gender[:half], g_strat[half:], gender[half:], 50, 2)[0]
    assert adv_pooled > 0.10
    assert adv_strat < 0.03
