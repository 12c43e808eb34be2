"""Shared small fixtures: tiny parameter sets keep the privacy tests fast (whole suite well under 30 s)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.privacy import PrivacyParams


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture()
def small_params() -> PrivacyParams:
    """50 groups in a 64-dim working space: same mechanism, 300x less arithmetic than production."""
    return PrivacyParams.default().with_changes(n_groups=50, working_dim=64, noise_scale=0.0)
