"""The aggregator's pure cores against the definition of every component, and their state machine:
late and out-of-order windows, fragments, hour closing, the state bound, restarts and replays.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pipeline.aggregator import (AggregatorSpec, Combiner, ComponentOverflow, FlowComponent, GroupPartitionAggregator,
                                 OccurrenceCell, SpecError)
from pipeline.aggregator.estimate import latest_rows
from pipeline.aggregator.model import COOCCURRENCE, HOUR_MS, PROGRESS, RANGE_SQUARES, WINDOW, default_far_min
from tests.aggregator.harness import (as_dicts, brute_force, interleave, partition_of, processor_order, random_cells,
                                      run_partitions, run_pipeline, same_components)

SMALL = AggregatorSpec(window_seconds=60, max_lag=5, ranges=((0, 5), (2, 4)), far_min=7, far_max=12,
                       lateness_seconds=120)
T0 = 1_793_577_600_000 + 9 * HOUR_MS  # 2026-11-02 09:00 UTC


def cell(cam: str, minute: int, group: int, n: int = 1, site: str = "s1", version: str = "v1",
         start: int = T0) -> OccurrenceCell:
    return OccurrenceCell(version, site, cam, start + minute * 60_000, 60, group, n)


def _random_spec(r: np.random.Generator) -> AggregatorSpec:
    L = int(r.integers(0, 6))
    far_min = L + 1 + int(r.integers(0, 3))
    ranges = {tuple(sorted(int(x) for x in r.integers(0, L + 1, 2))) for _ in range(int(r.integers(1, 3)))}
    w = int(r.choice([60, 300, 900]))
    far_max = far_min + int(r.integers(0, 8))
    return AggregatorSpec(window_seconds=w, max_lag=L, ranges=tuple(ranges), far_min=far_min,
                          far_max=far_max, far_split=1 if far_max == far_min else int(r.integers(1, 3)),
                          lateness_seconds=int(r.integers(0, 3)) * w,
                          cross_site=("camera", "site", "off")[int(r.integers(0, 3))], bound_seconds=10 ** 6)


@pytest.mark.parametrize("seed", range(16))
def test_every_component_equals_its_definition(seed):
    """Random configurations, partition counts, an overnight gap, two parameter versions and
    arrival order shuffled within the lateness: the published rows equal a brute-force
    computation of each term from a dense (camera, window, group) array."""
    r = np.random.default_rng(seed)
    spec = _random_spec(r)
    w = spec.window_seconds
    cells = random_cells(r, windows=int(r.integers(20, 70)), window_seconds=w, density=float(r.uniform(0.02, 0.4)))
    cut = (min(c.window_start_ms for c in cells) + max(c.window_start_ms for c in cells)) // 2
    cells = [c if c.window_start_ms < cut else OccurrenceCell(c.params_version, c.site_id, c.camera_id,
                                                              c.window_start_ms + 86_400_000, w, c.group_id,
                                                              c.occurrences) for c in cells]
    cells += random_cells(r, windows=15, window_seconds=w, version="v2", cams=(("s1", "a"), ("s1", "z")))
    shuffle = random.Random(seed)
    order = sorted(processor_order(cells), key=lambda c: c.window_start_ms + shuffle.uniform(0, spec.lateness_ms))
    flow, foot = run_pipeline(order, spec, partitions=int(r.integers(1, 6)), seed=seed)
    want, want_foot = brute_force(cells, spec)
    got, got_foot = as_dicts(flow, foot)
    assert same_components(got, want) == []
    assert same_components(got_foot, want_foot) == []


def test_the_lag_rows_of_a_range_add_up_to_its_range_row():
    flow, _ = run_pipeline(processor_order(random_cells(np.random.default_rng(1), windows=130)), SMALL, 3)
    by_key = {r.key: r for r in flow}
    ranges = [r for r in flow if r.kind == "range"]
    assert ranges
    for r in ranges:
        lags = [by_key[r.key[:7] + ("lag", d, d)] for d in range(r.lag_lo, r.lag_hi + 1)]
        assert r.s == sum(x.s for x in lags) and r.nn == sum(x.nn for x in lags)


def test_partition_count_and_interleaving_do_not_change_the_output():
    cells = processor_order(random_cells(np.random.default_rng(2), windows=130))
    reference, ref_foot = run_pipeline(cells, SMALL, partitions=1, seed=None)
    for partitions, seed in ((2, 0), (5, 1), (7, 2)):
        flow, foot = run_pipeline(cells, SMALL, partitions=partitions, seed=seed)
        assert sorted(flow, key=lambda r: r.key) == sorted(reference, key=lambda r: r.key)
        assert sorted(foot, key=lambda r: r.key) == sorted(ref_foot, key=lambda r: r.key)


def test_out_of_order_within_lateness_equals_in_order_and_fragments_are_summed():
    cells = processor_order(random_cells(np.random.default_rng(3), windows=90))
    in_order = run_pipeline(cells, SMALL, 2)
    # every window's cells arrive up to 119 s late, in random order, some split into fragments
    r = random.Random(3)
    jittered = []
    for c in cells:
        if c.occurrences > 1 and r.random() < 0.5:
            jittered += [OccurrenceCell(c.params_version, c.site_id, c.camera_id, c.window_start_ms, 60, c.group_id, 1),
                         OccurrenceCell(c.params_version, c.site_id, c.camera_id, c.window_start_ms, 60, c.group_id,
                                        c.occurrences - 1)]
        else:
            jittered.append(c)
    jittered.sort(key=lambda c: c.window_start_ms + r.uniform(0, 119_000))
    assert run_pipeline(jittered, SMALL, 2) == in_order


def test_a_window_arriving_after_its_lateness_is_dropped_and_counted():
    core = GroupPartitionAggregator(SMALL)
    core.add(cell("a", 0, 1))
    core.add(cell("b", 1, 1))
    # clock at minute 3: window 0 (ends at 1) is final once the clock reaches 1 + 2 (lateness) = 3
    out = core.add(cell("a", 3, 2))
    assert [p.kind for p in out] == [WINDOW, RANGE_SQUARES, PROGRESS]
    assert core.final_through == T0 + 60_000
    before = core.snapshot()
    assert core.add(cell("b", 0, 1, n=5)) == []       # window 0 is final: late
    assert core.stats.late_cells == 1 and core.stats.late_occurrences == 5
    after = core.snapshot()
    assert after["ring"] == before["ring"] and after["pending"] == before["pending"]
    assert core.add(cell("b", 1, 1, n=2)) == []       # window 1 is not final yet: merged
    assert core.snapshot()["pending"][0][1:] == [["v1", "s1", "b"], 1, 3]


def test_an_hour_closes_exactly_when_its_last_pairing_window_is_final():
    """Hour h's co-occurrences need B windows up to h + 1 h + H windows; the partition sends them
    at the first clock value that makes that window final, and the combiner publishes when every
    partition has done so."""
    spec = SMALL
    core = GroupPartitionAggregator(spec, 0, 2)
    other = GroupPartitionAggregator(spec, 1, 2)
    comb = Combiner(spec, 2)
    comb.add_many(core.add(cell("a", 10, 1, n=2)) + core.add(cell("b", 12, 1, n=2)) + other.add(cell("a", 10, 2, n=3)))
    closes = spec.hour_closes_at(T0)
    assert closes == T0 + HOUR_MS + spec.far_max * 60_000
    due = closes + spec.lateness_ms  # the clock value that makes the window before `closes` final
    out = core.advance(due - 1)
    assert not [p for p in out if p.kind == COOCCURRENCE]
    comb.add_many(out)
    out = core.advance(due)
    cooc = [p for p in out if p.kind == COOCCURRENCE]
    assert [(p.camera_id, p.dest_camera_id, p.values[2]) for p in cooc] == [("a", "b", 4)]
    assert comb.add_many(out) == []                    # partition 1 has not closed the hour yet
    rows = comb.add_many(other.advance(due))
    lag2 = [r for r in rows if isinstance(r, FlowComponent) and r.kind == "lag" and r.lag_lo == 2]
    # s: group 1, 2 x 2; nn: N_a(10) = 2 + 3 (both partitions) times N_b(12) = 2
    # b -> a gets its rows too (all zero): every seen camera pair is published every hour
    assert [(r.origin_camera, r.dest_camera, r.s, r.nn) for r in lag2] == [("a", "b", 4, 10), ("b", "a", 0, 0)]


def test_a_partition_that_never_saw_a_cell_still_reports_progress():
    """Few people, several partitions: some partition may get no cell at all. It must still say
    that its windows are final (empty), or the combiner never completes one (what made the
    end-to-end test fail when its few groups all hashed to three of four partitions)."""
    spec = SMALL
    fed, empty = GroupPartitionAggregator(spec, 0, 2), GroupPartitionAggregator(spec, 1, 2)
    comb = Combiner(spec, 2)
    comb.add_many(fed.add(cell("a", 10, 1, n=2)) + fed.add(cell("b", 12, 1, n=2)))
    last = T0 + 12 * 60_000
    assert empty.advance(T0) and empty.final_through is not None            # idle clock: progress
    rows = comb.add_many(fed.flush(last) + empty.flush(last))
    lag2 = [r for r in rows if isinstance(r, FlowComponent) and r.kind == "lag" and r.lag_lo == 2]
    assert [(r.origin_camera, r.dest_camera, r.s) for r in lag2] == [("a", "b", 4), ("b", "a", 0)]
    # a cell for a window the empty partition already called final is late, never merged
    assert empty.add(cell("a", 10, 3)) == [] and empty.stats.late_cells == 1


def test_state_stays_within_its_bound_for_hours_of_input():
    spec = AggregatorSpec()  # defaults: 60 s windows, lags 0..30, far band 61..102, 5 min lateness
    assert spec.state_age_seconds + spec.changelog_seconds <= spec.bound_seconds == 7200
    cells = processor_order(random_cells(np.random.default_rng(4), groups=40, windows=6 * 60, density=0.05))
    cores = [GroupPartitionAggregator(spec, p, 2) for p in range(2)]
    comb = Combiner(spec, 2)
    limit = (spec.horizon + 1) * spec.window_ms + spec.lateness_ms  # event time between a held window and the clock
    worst = 0
    for c in cells:
        core = cores[partition_of(c.group_id, 2)]
        comb.add_many(core.add(c))
        st = core.state_size()
        if st["oldest_window_ms"] is not None:
            worst = max(worst, st["clock_ms"] - st["oldest_window_ms"])
        assert st["ring_windows"] <= spec.horizon + 1
        cs = comb.state_size()
        if cs["oldest_window_ms"] is not None and cs["complete_through_ms"] is not None:
            assert cs["complete_through_ms"] - cs["oldest_window_ms"] <= (spec.horizon + 1) * spec.window_ms
    assert limit - 2 * spec.window_ms <= worst <= limit
    # wall clock: a window's counts arrive ~window + processor delay after its start and leave when
    # a record that much newer than `limit` arrives: state_age_seconds.
    assert limit // 1000 + spec.window_seconds + spec.processor_delay_seconds == spec.state_age_seconds


def test_an_idle_partition_expires_its_state_when_the_clock_is_advanced():
    core = GroupPartitionAggregator(SMALL)
    core.add(cell("a", 0, 1))
    core.add(cell("b", 1, 1))
    assert core.state_size()["pending_cells"] == 2
    core.advance(T0 + 3 * HOUR_MS)  # e.g. wall clock minus skew, after input stopped
    st = core.state_size()
    assert st["ring_cells"] == st["pending_cells"] == st["open_pair_hours"] == 0


def _norm(rows):
    """Rows in a canonical order (flow and footfall rows together)."""
    return sorted(rows, key=lambda r: (type(r).__name__, r.key))


def _offset_run(cells, spec, crash_at=None, replay_from=None):
    """One partition with offsets; optionally crash after `crash_at` records and restart from a
    snapshot taken after `replay_from` records (the changelog's last write before the crash)."""
    core = GroupPartitionAggregator(spec, 0, 1)
    out, snap = [], None
    for i, c in enumerate(cells):
        if crash_at is not None and i == crash_at:
            core = GroupPartitionAggregator.restore(spec, json.loads(json.dumps(snap)))
            for j, c2 in enumerate(cells[snap["offset"] + 1:], start=snap["offset"] + 1):
                out += core.add(c2, offset=j)  # the consumer resumes after the snapshot's offset
            break
        out += core.add(c, offset=i)
        if replay_from is not None and i == replay_from:
            snap = core.snapshot()
    out += core.flush()
    return out


def test_a_partition_killed_and_restored_from_its_snapshot_publishes_the_same_rows():
    cells = processor_order(random_cells(np.random.default_rng(5), windows=150))
    clean = _offset_run(cells, SMALL)
    crashed = _offset_run(cells, SMALL, crash_at=len(cells) * 2 // 3, replay_from=len(cells) // 3)
    assert len(crashed) > len(clean)  # partials between snapshot and crash were sent twice
    rows_clean = Combiner(SMALL, 1).add_many(clean)
    comb = Combiner(SMALL, 1)
    rows_crashed = comb.add_many(crashed)
    assert comb.stats.late_cells > 0  # repeated partials for already processed windows: ignored
    assert _norm(latest_rows(rows_crashed)) == _norm(rows_clean)


def test_a_replayed_offset_is_skipped():
    core = GroupPartitionAggregator(SMALL)
    core.add(cell("a", 0, 1, n=2), offset=7)
    assert core.add(cell("a", 0, 1, n=2), offset=7) == [] and core.stats.duplicates == 1
    assert core.snapshot()["pending"] == [[T0, ["v1", "s1", "a"], 1, 2]]


def test_a_combiner_restored_mid_hour_publishes_the_same_rows():
    cells = processor_order(random_cells(np.random.default_rng(6), windows=150))
    partials = interleave(run_partitions(cells, SMALL, 3), 6)
    clean = Combiner(SMALL, 3).add_many(partials)
    comb = Combiner(SMALL, 3)
    emitted = []
    snap_at, crash_at = len(partials) // 3, len(partials) // 2
    for i, p in enumerate(partials[:crash_at]):
        emitted += comb.add(p, offset=i)
        if i == snap_at:
            snap = json.loads(json.dumps(comb.snapshot()))
    comb = Combiner.restore(SMALL, snap)
    for i, p in enumerate(partials[snap["offset"] + 1:], start=snap["offset"] + 1):
        emitted += comb.add(p, offset=i)
    assert _norm(latest_rows(emitted)) == _norm(clean)


def test_repeated_partials_replace_rather_than_add():
    cells = processor_order(random_cells(np.random.default_rng(7), windows=100))
    streams = run_partitions(cells, SMALL, 2)
    once = Combiner(SMALL, 2).add_many(interleave(streams, 1))
    # partition 1 restarts from scratch and sends everything again, interleaved with partition 0
    twice = Combiner(SMALL, 2).add_many(interleave([streams[0], streams[1][: len(streams[1]) // 2] + streams[1]], 2))
    assert _norm(once) == _norm(twice)


def test_cross_site_pairs_can_be_left_out_and_versions_never_pair():
    cells = processor_order(random_cells(np.random.default_rng(8), windows=80)
                            + random_cells(np.random.default_rng(9), windows=80, version="v2"))
    spec = AggregatorSpec(window_seconds=60, max_lag=5, far_min=7, far_max=12, cross_site=False)
    flow, _ = run_pipeline(cells, spec, 3)
    pairs = {(r.params_version, r.origin_site, r.origin_camera, r.dest_site, r.dest_camera) for r in flow}
    assert pairs == {(v, "s1", a, "s1", b) for v in ("v1", "v2") for a, b in (("a", "b"), ("b", "a"))}


def test_cross_site_flows_per_site_pair_are_the_sums_of_their_camera_pairs():
    """cross_site "site": one pseudo-camera per site. Its S and NN rows equal the sums over the
    site pair's camera pairs (products are bilinear), camera pairs within a site are unchanged,
    no cross-site camera pair is published, and footfall is the cameras' alone."""
    cells = processor_order(random_cells(np.random.default_rng(21), windows=120,
                                         cams=(("s1", "a"), ("s1", "b"), ("s2", "c"), ("s2", "d"), ("s3", "e"))))
    kw = dict(window_seconds=60, max_lag=5, far_min=7, far_max=12)
    by_cam, foot_cam = as_dicts(*run_pipeline(cells, AggregatorSpec(cross_site="camera", **kw), 3))
    by_site, foot_site = as_dicts(*run_pipeline(cells, AggregatorSpec(cross_site="site", **kw), 3))
    assert foot_site == foot_cam
    site_rows = {k: v for k, v in by_site.items() if k[3] == ""}
    assert {(k[2], k[4]) for k in site_rows} == {(a, b) for a in ("s1", "s2", "s3") for b in ("s1", "s2", "s3") if a != b}
    assert all(k[5] == "" for k in site_rows)          # whole site to whole site, never camera to site
    summed: dict = {}
    for k, v in by_cam.items():
        if k[2] != k[4]:                                  # a cross-site camera pair
            key = k[:3] + ("", k[4], "") + k[6:]
            summed[key] = tuple(x + y for x, y in zip(summed.get(key, (0,) * 5), v))
    for k, v in site_rows.items():
        assert (v[0], v[1]) == summed[k][:2], k         # S and NN of lags, ranges and far bands
    assert sum(v[0] for v in site_rows.values()) > 0
    assert {k: v for k, v in by_site.items() if k[3] != ""} == {k: v for k, v in by_cam.items() if k[2] == k[4]}


def test_bad_cells_are_rejected_and_counted_without_effect():
    core = GroupPartitionAggregator(SMALL)
    for bad, reason in ((OccurrenceCell("v", "s", "", T0, 60, 1, 1), "empty_camera"),
                        (OccurrenceCell("v", "s", "a", T0, 300, 1, 1), "window_seconds"),
                        (OccurrenceCell("v", "s", "a", T0 + 5, 60, 1, 1), "unaligned_window"),
                        (OccurrenceCell("v", "s", "a", T0, 60, 1, -1), "negative_count"),
                        (OccurrenceCell("v", "s", "a", T0, 60, -1, 1), "negative_group")):
        assert core.add(bad) == []
        assert core.stats.rejected[reason] == 1
    assert core.state_size()["pending_cells"] == 0


def test_combiner_refuses_partials_of_another_configuration():
    out = GroupPartitionAggregator(SMALL, 0, 1).add_many([cell("a", 0, 1), cell("b", 9, 1)])
    other = AggregatorSpec(window_seconds=60, max_lag=4, far_min=7, far_max=12)
    comb = Combiner(other, 1)
    assert comb.add_many(out) == [] and comb.stats.rejected["spec_mismatch"] == len(out)
    comb = Combiner(SMALL, 2)
    comb.add_many(out)
    assert comb.stats.rejected["partition_mismatch"] == len(out)


def test_spec_refuses_what_it_cannot_promise():
    with pytest.raises(SpecError, match="over the bound"):
        AggregatorSpec(far_max=108)
    with pytest.raises(SpecError, match="beyond max_lag"):
        AggregatorSpec(max_lag=115)
    with pytest.raises(SpecError, match="divide an hour"):
        AggregatorSpec(window_seconds=7)
    with pytest.raises(SpecError, match="within the flow lags"):
        AggregatorSpec(ranges=((0, 40),))
    s = AggregatorSpec()
    assert (s.max_lag, s.ranges, s.far_min, s.far_max) == (30, ((0, 30),), 61, 102)
    assert s.restricted_age_seconds == (102 + 2) * 60 + 300 + 15 + 600 <= 7200
    assert default_far_min(90, 112) == 93 and default_far_min(100, 112) == 101
    with pytest.raises(SpecError, match="changelog"):
        AggregatorSpec(changelog_seconds=3600, far_max=60)


def test_components_that_outgrow_64_bits_are_refused_not_wrapped():
    big = FlowComponent("v", 60, T0, "s", "a", "s", "b", "lag", 0, 0, 1 << 63, 0, 0, 0, 0, 1)
    with pytest.raises(ComponentOverflow):
        big.to_record()
    huge_nn2 = FlowComponent("v", 60, T0, "s", "a", "s", "b", "lag", 0, 0, 1, 1, 1, 1, (1 << 80) + 3, 1)
    rec = huge_nn2.to_record()
    assert (rec["nn2_hi"] << 32) + rec["nn2_lo"] == (1 << 80) + 3


def test_output_is_deterministic_and_carries_no_group():
    cells = processor_order(random_cells(np.random.default_rng(10), windows=100))
    streams = run_partitions(cells, SMALL, 3)
    assert streams == run_partitions(cells, SMALL, 3)
    for p in (x for s in streams for x in s):
        assert not hasattr(p, "group_id")
        rec = p.to_record()
        assert "group_id" not in rec


def test_batch_helper_puts_a_camera_major_backfill_in_window_order():
    from pipeline.aggregator.batch import aggregate_cells

    cells = random_cells(np.random.default_rng(11), windows=100)  # camera by camera, like a dump
    assert aggregate_cells(cells, SMALL, 3) == run_pipeline(processor_order(cells), SMALL, 3)
    _, foot = aggregate_cells(cells, SMALL, 3, in_arrival_order=True)  # fed as is: later cameras are late
    per_cam = {c: sum(r.occurrences for r in foot if r.camera_id == c) for c in "abc"}
    assert per_cam["a"] == sum(c.occurrences for c in cells if c.camera_id == "a")
    assert per_cam["b"] < sum(c.occurrences for c in cells if c.camera_id == "b") / 5


def test_a_cold_restart_publishes_only_hours_it_can_complete():
    """Restarted without a snapshot after its restricted input partly expired, the aggregator
    must not publish a re-computed hour that misses the expired windows: that row would replace
    the complete one. Hours from the first complete one on equal the uninterrupted run."""
    from pipeline.aggregator.model import complete_from

    cells = processor_order(random_cells(np.random.default_rng(12), windows=5 * 60, density=0.05))
    warm_flow, warm_foot = run_pipeline(cells, SMALL, 3)
    restart = T0 + 2 * HOUR_MS + 7 * 60_000           # first record still on the topic
    kept = [c for c in cells if c.window_start_ms >= restart]
    cores = [GroupPartitionAggregator(SMALL, p, 3, cold_start=True) for p in range(3)]
    partials = []
    for c in kept:
        partials += cores[partition_of(c.group_id, 3)].add(c)
    for core in cores:
        partials += core.flush(kept[-1].window_start_ms)
    comb = Combiner(SMALL, 3, cold_start=True)
    rows = comb.add_many(partials) + comb.flush()
    flows_from, foot_from = complete_from(SMALL, restart)
    assert (flows_from, foot_from) == (T0 + 3 * HOUR_MS, T0 + 3 * HOUR_MS)
    assert comb.stats.rejected["incomplete_hour"] > 0
    cold = {(type(r).__name__, r.key): r for r in rows}
    warm = {(type(r).__name__, r.key): r for r in warm_flow + warm_foot if r.hour_ms >= flows_from}
    assert cold and cold == warm


def test_a_window_marker_counts_the_window_for_footfall_and_nothing_else():
    """A window a processor closed with no cell sends a marker (0 occurrences): footfall counts
    the window (so the expected fictitious persons of a live but empty window are subtracted) and
    no flow term changes."""
    cells = [cell("a", m, 5) for m in range(0, 60, 2)] + [cell("b", m, 5) for m in range(0, 60, 3)]
    markers = [cell("a", m, 0, n=0) for m in range(1, 60, 2)]
    flow, foot = run_pipeline(cells, SMALL, 2)
    flow_m, foot_m = run_pipeline(cells + markers, SMALL, 2)
    assert {r.key: (r.s, r.nn, r.qq, r.qn, r.nn2) for r in flow_m} == {r.key: (r.s, r.nn, r.qq, r.qn, r.nn2) for r in flow}
    a = {r.hour_ms: (r.occurrences, r.windows) for r in foot if r.camera_id == "a"}
    a_m = {r.hour_ms: (r.occurrences, r.windows) for r in foot_m if r.camera_id == "a"}
    assert a[T0] == (30, 30) and a_m[T0] == (30, 60)



def test_footfall_of_empty_hours_is_unbiased_with_markers():
    """Nobody passes for 12 hours; processors pad every window with fictitious persons (about
    one a window with the flow profile) and send a marker for a window left empty. Estimated
    persons = occurrences - windows x fictitious per window then average 0; counting only
    windows with cells (no markers) reads about 60 (1 - 1/e) fewer windows: ~+22 an hour."""
    from pipeline.privacy import PrivacyParams
    from pipeline.processor.app import occurrence_records
    from pipeline.processor.windows import ClosedWindow

    params = PrivacyParams.profile("flow")
    rng = np.random.default_rng(3)
    recs = [r for m in range(12 * 60) for r in occurrence_records(
        ClosedWindow("s1", "a", T0 + m * 60_000, 60, {}), params, rng)]
    cells = [OccurrenceCell.from_record({**r, "params_version": "v1"}) for r in recs]
    spec = AggregatorSpec(window_seconds=60, max_lag=5, far_min=7, far_max=12)
    f = params.fictitious_per_window
    for with_markers, lo, hi in ((True, -7.0, 7.0), (False, 15.0, 30.0)):   # SE of the mean ~2.3
        use = cells if with_markers else [c for c in cells if c.occurrences]
        _, foot = run_pipeline(use, spec, 2)
        est = [r.occurrences - r.windows * f for r in foot if r.camera_id == "a"]
        assert len(est) == 12
        assert lo < np.mean(est) < hi, (with_markers, np.mean(est))
