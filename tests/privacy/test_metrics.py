"""Evaluation measures on hand-made inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.privacy import PrivacyParams
from pipeline.privacy.evaluation import metrics as M


def test_posterior_and_advantage():
    assert M.posterior(0.2, np.array([2.0]))[0] == pytest.approx(1 / 3)
    assert M.best_advantage(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == pytest.approx(1.0)
    assert M.auc(np.array([1.0]), np.array([1.0])) == pytest.approx(0.5)


def test_attribute_advantage_is_zero_for_uninformative_groups(rng):
    g = rng.integers(0, 100, 40000)
    y = rng.integers(0, 2, 40000)
    adv, _, _ = M.attribute_advantage(g[:20000], y[:20000], g[20000:], y[20000:], 100, 2)
    assert abs(adv) < 0.02
    adv2, _, _ = M.attribute_advantage(g[:20000], g[:20000] % 2, g[20000:], g[20000:] % 2, 100, 2)
    assert adv2 > 0.45  # a group that encodes the attribute is caught


def test_flow_estimator_recovers_a_known_flow(rng):
    k, w, flow, p = 1000, 40, 30, 0.5
    counts = rng.poisson(0.05, size=(2, w, k))
    for t in range(w):  # 30 people per window seen at A, and at B in the same window with prob p
        g = rng.integers(0, k, flow)
        np.add.at(counts[0, t], g, 1)
        same = rng.random(flow) < p
        np.add.at(counts[1, t], np.where(same, g, rng.integers(0, k, flow)), 1)
    est = M.flow_estimates(counts, p, lags=(0,))
    assert est[0, 1] == pytest.approx(flow * w, rel=0.15)


def test_count_errors_subtract_expected_fictitious():
    p = PrivacyParams.profile("strict")
    real = np.zeros((1, 1, p.n_groups), dtype=np.int64)
    real[0, 0, :40] = 1
    published = real + 3  # exactly the expected fictitious count per group
    assert M.count_errors(published, real, p)[0] == pytest.approx(0.0)


def test_cell_k_fraction():
    pub = np.array([[[1, 3, 5]]])
    assert M.cell_k_fraction(pub, np.array([0, 0, 0]), np.array([0, 0, 0]), np.array([0, 1, 2])) == pytest.approx(2 / 3)
