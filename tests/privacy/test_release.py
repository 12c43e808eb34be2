"""Keyed discrete Laplace noise for the published tier (pipeline/privacy/release.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.model import AggregatorSpec, OccurrenceCell
from pipeline.privacy.release import (KeyedNoise, NoiseKeyError, discrete_laplace_variance, ensure_noise_key,
                                      load_noise_key)

KEY = bytes(range(32))


def test_noise_is_a_function_of_key_and_label_only():
    a, b = KeyedNoise(KEY, 3.0), KeyedNoise(KEY, 3.0)
    assert [a.draw(f"row{i}") for i in range(50)] == [b.draw(f"row{i}") for i in range(50)]
    other = KeyedNoise(bytes(32), 3.0)
    assert [a.draw(f"row{i}") for i in range(50)] != [other.draw(f"row{i}") for i in range(50)]
    assert len({a.draw(f"row{i}") for i in range(200)}) > 5


@pytest.mark.parametrize("scale", [0.5, 2.0, 8.0])
def test_draws_have_the_discrete_laplace_mean_and_variance(scale):
    n = KeyedNoise(KEY, scale)
    x = np.array([n.draw(str(i)) for i in range(20000)])
    var = discrete_laplace_variance(scale)
    assert abs(x.mean()) < 4 * np.sqrt(var / len(x))
    assert abs(x.var() / var - 1) < 0.06
    assert x.dtype.kind == "i"


def test_zero_scale_adds_nothing_and_bad_scales_are_refused():
    assert KeyedNoise(KEY, 0).draw("x") == 0
    with pytest.raises(ValueError):
        KeyedNoise(KEY, -1)
    with pytest.raises(NoiseKeyError):
        KeyedNoise(b"short", 1)


def test_the_key_file_is_private_and_checked(tmp_path):
    path = ensure_noise_key(tmp_path / "keys")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert ensure_noise_key(tmp_path / "keys") == path and len(load_noise_key(tmp_path / "keys")) == 32
    os.chmod(path, 0o644)
    with pytest.raises(NoiseKeyError, match="chmod 600"):
        load_noise_key(tmp_path / "keys")
    with pytest.raises(NoiseKeyError, match="keys init"):
        load_noise_key(tmp_path / "nowhere")


def test_published_rows_carry_noise_with_its_variance_and_replays_are_identical():
    rng = np.random.default_rng(1)
    cells = [OccurrenceCell("v", "s", cam, 3_600_000 * 100 + t * 60_000, 60, int(g), 1)
             for t in range(180) for cam in ("a", "b") for g in rng.integers(0, 50, size=3)]
    clean = AggregatorSpec()
    noisy = AggregatorSpec(flow_noise_scale=2.0, footfall_noise_scale=8.0)
    f0, o0 = aggregate_cells(cells, clean, 2)
    f1, o1 = aggregate_cells(cells, noisy, 2, noise_key=KEY)
    f2, o2 = aggregate_cells(cells, noisy, 4, noise_key=KEY)     # another partitioning: same rows
    assert (f1, o1) == (f2, o2)
    assert [r.key for r in f0] == [r.key for r in f1]
    diffs = np.array([b.s - a.s for a, b in zip(f0, f1)])
    assert (diffs != 0).mean() > 0.5 and all(r.noise_var_milli == round(discrete_laplace_variance(2.0) * 1000) for r in f1)
    assert all(a.nn == b.nn and a.qq == b.qq for a, b in zip(f0, f1))   # only s is noised
    assert any(a.occurrences != b.occurrences for a, b in zip(o0, o1))
    # footfall windows carry their own draw (a pass can be a window's only occurrence)
    assert any(a.windows != b.windows for a, b in zip(o0, o1))
    assert [b.windows - a.windows for a, b in zip(o0, o1)] != [b.occurrences - a.occurrences for a, b in zip(o0, o1)]
    with pytest.raises(Exception, match="release-noise key"):
        aggregate_cells(cells, noisy, 2)


def test_window_totals_are_noised_once_before_every_product():
    """With total noise, nn/qq/qn/nn2 move (they are products of noisy totals) but stay unbiased
    for nn, and footfall keeps the exact sums (it has its own noise, off here)."""
    rng = np.random.default_rng(2)
    cells = [OccurrenceCell("v", "s", cam, 3_600_000 * 100 + t * 60_000, 60, int(g), 1)
             for t in range(240) for cam in ("a", "b") for g in rng.integers(0, 50, size=6)]
    f0, o0 = aggregate_cells(cells, AggregatorSpec(), 2)
    f1, o1 = aggregate_cells(cells, AggregatorSpec(total_noise_scale=2.0), 2, noise_key=KEY)
    f2, _ = aggregate_cells(cells, AggregatorSpec(total_noise_scale=2.0), 3, noise_key=KEY)
    assert f1 == f2                                        # same draws whatever the partitioning
    assert [r.s for r in f0] == [r.s for r in f1]          # co-occurrences untouched
    # (hours after the input ends are published too, with no products to noise)
    fed = [(a, b) for a, b in zip(f0, f1) if a.nn]
    assert len(fed) > 0.6 * len(f0) and sum(a.nn != b.nn for a, b in fed) > 0.9 * len(fed)
    lag = [(a.nn, b.nn) for a, b in zip(f0, f1) if a.kind == "lag"]
    clean, noisy = sum(x for x, _ in lag), sum(y for _, y in lag)
    assert abs(noisy - clean) / clean < 0.02
    assert o0 == o1
