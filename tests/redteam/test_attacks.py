"""The attack suite on tiny hand-made worlds whose answers are known, and the CLI end to end.

Each world is a handful of captures; its restricted cells are made from them (plus, where said,
one fictitious occurrence per camera-window), and its published tiers by the project's own cores
(pipeline.redteam.world.build_tiers), so the attacks run on exactly what the aggregator and the
counts core would publish.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.aggregator import AggregatorSpec
from pipeline.redteam import attacks as A
from pipeline.redteam.suite import SuiteResult, judge
from pipeline.redteam.world import (ANALYST, HOUR, RESTRICTED, UNPROTECTED, CaptureTable, Cells, Tier, World,
                                    build_tiers, demographics_spec)

START = int(dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc).timestamp())
KEY = bytes(range(32))
SPEC = AggregatorSpec(max_lag=5, flow_noise_scale=4.0, total_noise_scale=2.0, footfall_noise_scale=8.0)
PAD_GROUP = 999
DAY = 86400


def make_world(captures: CaptureTable, *, cameras: int = 3, spec: AggregatorSpec = SPEC, p: float = 1.0,
               pad: range | None = None, unknown_face_rate: float = 0.0, publish: bool = True) -> World:
    """Cells from the captures (each capture one occurrence of its group), plus with ``pad`` one
    fictitious occurrence in group 999 in every window of that range at every camera. Window 0 of
    every camera holds fictitious occurrences in groups 996-999, one for each of the batch
    aggregator's four partitions: a partition core that never receives a cell never reports
    progress, and the combiner then publishes nothing (the real stream's fictitious persons fill
    every partition)."""
    w = captures.window(60)
    keys: dict[tuple[int, int, int], int] = {(c, 0, g): 1 for c in range(cameras) for g in range(996, 1000)}
    for c, win, g in zip(captures.camera.tolist(), w.tolist(), captures.group.tolist()):
        keys[(c, win, g)] = keys.get((c, win, g), 0) + 1
    for win in pad or ():
        for c in range(cameras):
            keys[(c, win, PAD_GROUP)] = keys.get((c, win, PAD_GROUP), 0) + 1
    k = sorted(keys)
    cells = Cells(*(np.array([x[i] for x in k], dtype=np.int64) for i in range(3)),
                  np.array([keys[x] for x in k], dtype=np.int64))
    world = World(cameras=tuple(("site", f"cam{i}") for i in range(cameras)), params_version="v1", start_epoch=START,
                  window_seconds=60, spec=spec, same_group_rate=p, n_groups=1000,
                  open_hours=np.ones((cameras, 24), dtype=bool), captures=captures, cells=cells,
                  unknown_face_rate=unknown_face_rate, label="hand-made")
    return build_tiers(world, KEY, demographics_spec()) if publish else world


@functools.lru_cache(maxsize=None)
def movers_world(days: int, seed: int, *, spec: AggregatorSpec = SPEC) -> World:
    """One person a day: camera 0 at 10:00:30, then camera 1 or 2 three windows later, same group."""
    rng = np.random.default_rng(seed)
    person, cam, t, grp = [], [], [], []
    for d in range(days):
        b = int(rng.integers(1, 3))
        t0 = d * DAY + 10 * HOUR + 30
        person += [d, d]
        cam += [0, b]
        t += [t0, t0 + 180]
        grp += [d, d]
    return make_world(CaptureTable.simple(person, cam, t, grp), spec=spec)


# ---- (a) ---------------------------------------------------------------------------------------------

def test_group_following_recovers_what_the_group_shows_and_nothing_on_published_rows():
    # person 0: cam0 (group 7) -> cam1 (group 7) -> cam2 (group 3: the group changed); person 1 stays in 5
    cap = CaptureTable.simple([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [100, 400, 800, 200, 300], [7, 7, 3, 5, 5])
    w = make_world(cap)
    r = A.group_following(w)
    assert (r.target_days, r.later_captures) == (2, 3)
    assert r.recovered == pytest.approx(2 / 3) and r.whole_days == pytest.approx(0.5)
    assert r.precision == pytest.approx(1.0)           # no other occurrence of groups 7 and 5 that day
    for tier in (ANALYST, UNPROTECTED):
        pub = A.group_following_published(w, tier)
        assert pub.recovered == 0 and pub.whole_days == 0 and not pub.group_fields
        assert "no published field identifies a group" in pub.note


def test_a_published_row_with_a_group_field_is_caught():
    @dataclass
    class LeakyRow:
        camera_id: str
        group_id: int
        count: int

    w = make_world(CaptureTable.simple([0], [0], [100]), publish=False)
    w.tiers["leaky"] = Tier("leaky", [], [LeakyRow("cam0", 7, 1)], [])
    r = A.group_following_published(w, "leaky")
    assert r.group_fields == ["LeakyRow.group_id"] and np.isnan(r.recovered)


# ---- (b) ---------------------------------------------------------------------------------------------

def test_sighting_attack_unprotected_rows_leak_the_next_camera_noised_rows_do_not():
    prior, world = movers_world(8, 1), movers_world(8, 2)
    targets = A.sighting_targets(world, None)
    assert len(targets) == 8
    bare = A.sighting_attack(prior, world, UNPROTECTED, targets)
    noised = A.sighting_attack(prior, world, ANALYST, targets)
    insider = A.sighting_attack_restricted(prior, world, targets)
    g_bare = [g for g in bare.rows if g.targets]
    g_noised = [g for g in noised.rows if g.targets]
    # without noise the one co-occurrence in the lag row gives B away; the prior was about one half
    assert all(g.gain_median > 0.3 for g in g_bare)
    assert all(abs(g.gain_median) < 0.02 and g.gain_p99 < 0.1 for g in g_noised)
    assert all(g.gain_median > 0.3 for g in insider.rows if g.targets)


# ---- (c) ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def coverage_world() -> World:
    """Hour 10: five persons at cam0 going to cam1; hour 12: one person does the same."""
    person, cam, t, grp = [], [], [], []
    for i in range(5):
        person += [i, i]
        cam += [0, 1]
        t += [10 * HOUR + 60 * i + 5, 10 * HOUR + 60 * i + 125]
        grp += [i, i]
    person += [9, 9]
    cam += [0, 1]
    t += [12 * HOUR + 5, 12 * HOUR + 125]
    grp += [9, 9]
    return make_world(CaptureTable.simple(person, cam, t, grp), cameras=2, pad=range(0, 15 * 60))


def test_value_coverage_noised_tier_noises_every_value_the_bare_tier_fails():
    w = coverage_world()
    noised = A.value_coverage(w, ANALYST)
    failing = {(f.table, f.field) for f in noised.fields if f.either < f.values}
    assert failing == set() and noised.share("either") == 1   # footfall windows carry their own noise
    bare = A.value_coverage(w, UNPROTECTED)
    assert bare.share("noised") == 0
    bare_failing = {(f.table, f.field) for f in bare.fields if f.either < f.values}
    assert {("flow lag", "s"), ("footfall", "occurrences"), ("footfall", "windows"),
            ("demographics", "count")} <= bare_failing
    cells = A.value_coverage_restricted(w)
    assert cells.share("either") == 0                     # a group cell is one person (or a fictitious one)


def test_value_coverage_counts_values_of_busy_hours_as_aggregating():
    w = coverage_world()
    bare = A.value_coverage(w, UNPROTECTED)
    fo = next(f for f in bare.fields if (f.table, f.field) == ("footfall", "occurrences"))
    hours = {w.hour_index(r.hour_ms) for r in w.tiers[UNPROTECTED].footfall if r.camera_id == "cam0"}
    # cam0 has >= 3 persons only in hour 10; every other of its hours fails without noise
    assert 10 in hours and fo.three_plus == 2             # hour 10 at cam0 and at cam1


# ---- (d) ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def demo_world(days: int, seed: int) -> World:
    """Each day a 78+ man goes from cam0 to cam1 or cam2 in hour 10; three 18-27 women at every
    camera in every hour 9-11 as background."""
    rng = np.random.default_rng(seed)
    person, cam, t, band, gender = [], [], [], [], []
    pid = 0
    for d in range(days):
        b = int(rng.integers(1, 3))
        t0 = d * DAY + 10 * HOUR + 100
        person += [pid, pid]
        cam += [0, b]
        t += [t0, t0 + 600]
        band += [6, 6]
        gender += [1, 1]
        pid += 1
        for c in range(3):
            for h in (9, 10, 11):
                for k in range(3):
                    person.append(pid)
                    cam.append(c)
                    t.append(d * DAY + h * HOUR + 300 * k + 7 * c)
                    band.append(0)
                    gender.append(0)
                    pid += 1
    cap = CaptureTable.simple(person, cam, t, np.arange(len(person)) % 1000, band, gender)
    return make_world(cap)


def test_demographic_linkage_exact_counts_give_the_next_camera_away_noised_counts_stay_within_dp():
    prior, world = demo_world(6, 3), demo_world(6, 4)
    rare = A.rare_cells(prior, 1)
    assert rare == [(6, 1)]
    targets = A.demographic_targets(world, rare, None)
    assert len(targets) == 6
    bare = A.demographic_linkage(prior, world, UNPROTECTED, targets)
    noised = A.demographic_linkage(prior, world, ANALYST, targets)
    gb = next(g for g in bare.rows if g.targets)
    gn = next(g for g in noised.rows if g.targets)
    assert gb.gain_median > 0.5                           # the 1 in the rare cell at B, 0 elsewhere
    assert gn.gain_max <= gn.dp_worst_case + 1e-9 and gn.gain_p99 < 0.06


def test_count_likelihood_is_a_distribution():
    for mu, scale in ((0.3, 8.0), (4.0, 8.0), (2.0, 0.0), (0.05, 2.0)):
        total = sum(A.count_likelihood(x, mu, scale, 0) for x in range(0, 400))
        assert total == pytest.approx(1.0, abs=1e-6)


# ---- (e) ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def sparse_world(pad: range | None) -> World:
    """Two visitors at 10:00 and 15:00 over one day; with ``pad`` fictitious persons in every window."""
    cap = CaptureTable.simple([0, 0, 1, 1], [0, 1, 0, 2], [10 * HOUR + 5, 10 * HOUR + 200, 15 * HOUR + 5,
                                                          15 * HOUR + 100], [1, 1, 2, 2])
    return make_world(cap, pad=pad)


def test_row_existence_finds_no_missing_row_when_every_hour_is_published():
    w = sparse_world(range(0, 24 * 60))
    r = A.row_existence(w, ANALYST)
    assert not r.row_leaks
    foot = next(t for t in r.tables if t.table == "footfall")
    assert foot.missing_no_capture == 0 and foot.present_no_capture > 0   # zero rows for empty hours exist


def test_row_existence_detects_rows_that_exist_only_for_captured_hours():
    w = replace(sparse_world(range(0, 24 * 60)))         # a copy: the cached world stays as it is
    w.tiers = dict(w.tiers)
    t = w.tiers[ANALYST]
    captured = {(int(c), int(h)) for c, h in zip(w.captures.camera, w.captures.hour())}
    keep = [r for r in t.footfall if (w.camera_code(r.site_id, r.camera_id), w.hour_index(r.hour_ms)) in captured]
    w.tiers["leaky"] = replace(t, name="leaky", footfall=keep, flow=[], demographics=[])
    r = A.row_existence(w, "leaky")
    foot = next(x for x in r.tables if x.table == "footfall")
    assert foot.missing_no_capture > 0 and foot.missing_with_capture == 0
    assert r.row_leaks and "footfall" in r.row_leaks[0]


def test_values_published_exactly_where_nobody_passed_are_flagged():
    # without padding, windows exist only where someone passed: the window count and the products
    # of empty hours are exact zeros, a passer-by makes them non-zero
    r = A.row_existence(sparse_world(None), ANALYST)
    flagged = {x.split(":", 1)[0] for x in r.value_leaks}
    assert "flow lag.nn" in flagged
    assert not {"footfall.occurrences", "footfall.windows", "flow lag.s"} & flagged   # noised
    bare = {x.split(":", 1)[0] for x in A.row_existence(sparse_world(None), UNPROTECTED).value_leaks}
    assert {"footfall.windows", "footfall.occurrences", "flow lag.s"} <= bare
    # with every window padded (as the processor does) the products carry noise everywhere too
    r = A.row_existence(sparse_world(range(0, 24 * 60)), ANALYST)
    assert r.value_leaks == []


# ---- the verdicts and JSON --------------------------------------------------------------------------

def test_verdicts_and_json_of_a_hand_made_suite():
    prior, world = movers_world(8, 1), movers_world(8, 2)
    targets = A.sighting_targets(world, None)
    res = SuiteResult(config={"scenario": "hand-made"}, worlds={},
                      a=[A.group_following(world), A.group_following_published(world, ANALYST)],
                      b=[A.sighting_attack(prior, world, ANALYST, targets),
                         A.sighting_attack_restricted(prior, world, targets)],
                      c=[A.value_coverage(world, ANALYST)],
                      d=[A.demographic_linkage(prior, world, ANALYST, np.zeros(0, np.int64))],
                      e=[A.row_existence(world, ANALYST)], verdicts=[])
    res.verdicts = judge(res)
    by = {}
    for v in res.verdicts:
        by.setdefault(v.attack, []).append(v)
    assert set(by) == {"a", "b", "c", "d", "e"}
    assert by["a"][0].passed is True
    assert all(v.passed is None for v in by["d"])          # no targets: n/a, not a failure
    doc = json.loads(json.dumps(res.to_dict()))
    assert doc["attacks"]["a"][0]["tier"] == RESTRICTED and doc["passed"] == res.passed


# ---- the command ---------------------------------------------------------------------------------

def test_flowctl_privacy_attack_runs_every_attack():
    from pipeline.cli import cli

    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["privacy", "attack", "--days", "1", "--max-targets", "200"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    out = res.output
    for heading in ("(a) group-following insider", "(b) analyst who saw the target", "(c) analyst-visible values",
                    "(d) demographics to path", "(e) row existence", "Done-when on the analyst tier"):
        assert heading in out, out[-3000:]
    met = "every analyst-tier bar met" in out
    assert res.exit_code == (0 if met else 1) and ("analyst-tier bar(s) not met" in out) != met
    assert time.monotonic() - t0 < 120
