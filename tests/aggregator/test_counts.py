"""The hourly protected counts core (demographics, crossings): sums, row existence, noise, restart."""
from __future__ import annotations

import json
import secrets

import numpy as np
import pytest

from pipeline.aggregator.counts import (CountCell, CountsSpec, HourlyCounts, demographic_grid,
                                        publish_hourly_counts)
from pipeline.aggregator.model import HOUR_MS, SpecError

H0 = 500 * HOUR_MS
KEY = secrets.token_bytes(32)
DEMO = CountsSpec("demographics", grid=demographic_grid())
CROSS = CountsSpec("crossings", per_person_day=16)


def cell(minute: int, key=("28-37", "female"), n=1, cam="a", site="s") -> CountCell:
    return CountCell("v1", site, cam, H0 + minute * 60_000, 60, key, n)


def test_exact_hourly_sums_and_every_grid_cell_of_every_hour():
    cells = [cell(1, n=2), cell(2, n=1), cell(61, ("78+", "male"), 3), cell(130, cam="b")]
    rows = publish_hourly_counts(cells, DEMO, exact=True)
    by = {(r.camera_id, r.hour_ms, r.key1, r.key2): r.count for r in rows}
    assert by[("a", H0, "28-37", "female")] == 3
    assert by[("a", H0 + HOUR_MS, "78+", "male")] == 3
    assert by[("b", H0 + 2 * HOUR_MS, "28-37", "female")] == 1
    # Every (camera, hour) known publishes the whole grid, zeros included: the row set does not
    # depend on who passed. Camera b is published from the hour it is first seen in.
    grid = len(demographic_grid())
    assert len(rows) == 3 * grid + 1 * grid
    assert sum(r.count for r in rows) == 2 + 1 + 3 + 1
    hours_a = {r.hour_ms for r in rows if r.camera_id == "a"}
    assert hours_a == {H0, H0 + HOUR_MS, H0 + 2 * HOUR_MS}


def test_row_set_is_the_same_whoever_passed():
    """Two worlds, different people in the quiet hour: identical published keys."""
    busy = [cell(m) for m in range(0, 180, 7)]
    one = publish_hourly_counts(busy + [cell(65, ("68-77", "male"))], DEMO, noise_key=KEY)
    other = publish_hourly_counts(busy, DEMO, noise_key=KEY)
    assert [r.key for r in one] == [r.key for r in other]


def test_noise_is_keyed_calibrated_and_replays_identically():
    cells = [cell(m, n=1) for m in range(0, 600, 3)]
    a = publish_hourly_counts(cells, DEMO, noise_key=KEY)
    b = publish_hourly_counts(cells, DEMO, noise_key=KEY)
    c = publish_hourly_counts(cells, DEMO, noise_key=secrets.token_bytes(32))
    assert a == b and a != c
    exact = {r.key: r.count for r in publish_hourly_counts(cells, DEMO, exact=True)}
    # scale 8 / 1: variance 2q/(1-q)^2 with q = exp(-1/8), about 127; noise_var_milli says so
    var = 2 * np.exp(-1 / 8) / (1 - np.exp(-1 / 8)) ** 2
    assert {r.noise_var_milli for r in a} == {round(var * 1000)}
    # Not clamped: the noise over all cells (most of them zero) is centred and has the stated
    # spread, so sums over empty cells stay unbiased.
    # Pooled over eight fixed keys (1,920 cells): the sample variance of heavy-tailed
    # (discrete Laplace) noise over one key's 240 cells has a relative spread of about 14%, so a
    # +-30% band on one random key failed a few runs in a hundred (CI, 2026-11-29).
    diffs = np.array([r.count - exact[r.key] for k in range(8)
                      for r in publish_hourly_counts(cells, DEMO, noise_key=bytes([k]) * 32)])
    assert len(diffs) > 1500 and (diffs < 0).any()
    assert abs(diffs.mean()) < 4 * np.sqrt(var / len(diffs))
    assert 0.85 * var < diffs.var() < 1.15 * var


def test_an_hour_closes_after_lateness_and_late_cells_are_counted_not_merged():
    core = HourlyCounts(DEMO, exact=True)
    assert core.add(cell(10)) == []
    assert core.add(cell(60 + 4)) == []                 # hour 0 still open (lateness 300 s)
    rows = core.add(cell(60 + 5))
    assert {r.hour_ms for r in rows} == {H0} and sum(r.count for r in rows) == 1
    assert core.add(cell(59)) == [] and core.stats.late_cells == 1
    assert sum(r.count for r in core.flush()) == 2


def test_crossings_publish_every_line_a_camera_ever_had():
    cells = [cell(1, ("door", "in"), 4), cell(70, ("door", "out"), 2)]
    rows = publish_hourly_counts(cells, CROSS, exact=True)
    assert sorted((r.hour_ms - H0, r.key1, r.key2, r.count) for r in rows) == [
        (0, "door", "in", 4), (0, "door", "out", 0), (HOUR_MS, "door", "in", 0), (HOUR_MS, "door", "out", 2)]


def test_snapshot_restore_continues_exactly_and_skips_replayed_offsets():
    cells = [cell(m, n=1 + m % 3) for m in range(0, 200, 2)]
    whole = HourlyCounts(DEMO, noise_key=KEY)
    expected = [r for i, c in enumerate(cells) for r in whole.add(c, i)] + whole.flush()
    first = HourlyCounts(DEMO, noise_key=KEY)
    got = [r for i, c in enumerate(cells[:57]) for r in first.add(c, i)]
    snap = json.loads(json.dumps(first.snapshot()))
    again = HourlyCounts.restore(DEMO, snap, noise_key=KEY)
    got += [r for i, c in enumerate(cells) for r in again.add(c, i)]   # replays 0..56 first
    got += again.flush()
    assert got == expected and again.stats.duplicates == 57


def test_invalid_input_and_configuration_are_refused_with_reasons():
    core = HourlyCounts(DEMO, exact=True)
    core.add(CountCell("v1", "s", "a", H0 + 30_000, 60, ("28-37", "female"), 1))
    core.add(CountCell("v1", "s", "a", H0, 30, ("28-37", "female"), 1))
    core.add(CountCell("v1", "s", "a", H0, 60, ("9-12", "female"), 1))
    core.add(CountCell("v1", "s", "a", H0, 60, ("28-37", "female"), -1))
    assert core.stats.rejected == {"unaligned_window": 1, "window_seconds": 1, "unknown_cell": 1, "negative_count": 1}
    with pytest.raises(SpecError, match="release-noise key"):
        HourlyCounts(DEMO)
    with pytest.raises(SpecError):
        CountsSpec("faces")
    with pytest.raises(SpecError, match="spec"):
        HourlyCounts.restore(CROSS, HourlyCounts(DEMO, exact=True).snapshot(), exact=True)


def test_a_cold_start_does_not_publish_its_first_possibly_incomplete_hour():
    core = HourlyCounts(DEMO, exact=True, cold_start=True)
    rows = core.add_many([cell(30), cell(90)]) + core.flush()
    assert {r.hour_ms for r in rows} == {H0 + HOUR_MS} and core.stats.rejected == {"incomplete_hour": 1}
