"""Flow estimator on the published tier: real ClickHouse (Debian 18.16 server) and the current
engine (chdb).

The data are planted: people walk A -> B with known transit times, every capture goes to the
person's home group with probability sqrt(p) (so two captures share a group with rate ~p), and
the privacy core pads every window with its fictitious persons. The cells go through the flow
aggregator in-process (as the streaming app would) and only its published components reach the
warehouse. The estimator must find the planted flow inside its interval, find nothing where
nothing was planted, give the same numbers on both engines, and its SQL (``flow_sql``, what
``--show-sql`` and Grafana run) must give what the Python path gives.
"""
from __future__ import annotations

import secrets
import tempfile
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.estimate import EstimatorOptions, flow_from_sums, split_far_bands, sum_rows
from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import (CameraRef, FlowEstimate, FlowQuery, FlowQueryError, estimate_flows, flow_sql,
                                      pool, published_lags)
from pipeline.privacy import PrivacyParams, pad_with_fictitious
from pipeline.settings import load_settings
from pipeline.simulator.publish import write_components
from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import migrate

START = datetime(2026, 11, 2, tzinfo=timezone.utc)
SPEC = AggregatorSpec(ranges=((0, 30), (20, 30)))   # the default range plus one more with an exact SE


def planted(params: PrivacyParams, seed: int = 7, visitors: int = 1500,
            share: float = 0.3) -> tuple[list[OccurrenceCell], int]:
    """Cells of cameras A, B, C over one 12-hour day; returns (cells, true A->B pairs within 30 windows)."""
    rng = np.random.default_rng(seed)
    g_n, q = params.n_groups, np.sqrt(params.same_group_rate)
    t0 = START.timestamp() + 9 * 3600

    def group(home: np.ndarray) -> np.ndarray:
        return np.where(rng.random(home.size) < q, home, rng.integers(0, g_n, home.size))

    ta = t0 + rng.uniform(0, 12 * 3600, visitors)
    home = rng.integers(0, g_n, visitors)
    moved = rng.random(visitors) < share
    tb = ta[moved] + rng.lognormal(np.log(240), 0.4, int(moved.sum()))
    truth = int(((tb // 60 - ta[moved] // 60) <= 30).sum())
    others = rng.poisson(visitors)
    caps = {"A": (ta, group(home)),
            "B": (np.concatenate([tb, t0 + rng.uniform(0, 12 * 3600, visitors)]),
                  np.concatenate([group(home[moved]), rng.integers(0, g_n, visitors)])),
            "C": (t0 + rng.uniform(0, 12 * 3600, others), rng.integers(0, g_n, others))}
    cells = []
    for cam, (t, g) in caps.items():
        per: dict[int, Counter] = defaultdict(Counter)
        for w, gi in zip((t // 60 * 60).astype(np.int64), g):
            per[int(w)][int(gi)] += 1
        for w in sorted(per):
            for gi, c in pad_with_fictitious(dict(per[w]), params, rng).items():
                cells.append(OccurrenceCell(params.version, "s1", cam, w * 1000, 60, gi, c))
    return cells, truth


def _load(wh, params: PrivacyParams, cells: list[OccurrenceCell]):
    """Migrate, register the parameter set and publish the cells' components; returns the rows."""
    migrate(wh)
    register_params(wh, params)
    flow, foot = aggregate_cells(cells, SPEC)
    write_components(wh, flow, foot)
    return flow


def _query(params: PrivacyParams, **kw) -> FlowQuery:
    return FlowQuery(params.version, tuple(CameraRef("s1", c) for c in "ABC"), START, START + timedelta(days=1), **kw)


def _options(params: PrivacyParams) -> EstimatorOptions:
    """What estimate_flows uses for a registered parameter set."""
    return EstimatorOptions(fictitious_per_window=params.fictitious_per_window)


def _by_pair(est: list[FlowEstimate]) -> dict[tuple, FlowEstimate]:
    return {(e.origin, e.destination) if e.lag is None else (e.origin, e.destination, e.lag): e for e in est}


@pytest.fixture(scope="module")
def data():
    params = PrivacyParams.default()
    cells, truth = planted(params)
    return params, cells, truth


@pytest.fixture(scope="module")
def chdb(data):
    params, cells, truth = data
    with tempfile.TemporaryDirectory() as d:
        wh = ChdbWarehouse(d, database="flow")
        flow = _load(wh, params, cells)
        yield wh, params, truth, flow
        wh.close()


@pytest.fixture(scope="module")
def server(stack, data):
    params, cells, truth = data
    db = f"flow_test_flows_{secrets.token_hex(4)}"
    wh = ServerWarehouse(load_settings().clickhouse, database=db, role="admin")
    _load(wh, params, cells)
    yield wh, params, truth
    wh.execute(f"DROP DATABASE IF EXISTS {db}")


@pytest.mark.integration
def test_planted_flow_is_inside_its_interval_and_empty_pairs_are_not_flows(server):
    wh, params, truth = server
    est = _by_pair(estimate_flows(wh, _query(params)))
    assert len(est) == 6
    ab = est["s1/A", "s1/B"]
    lo, hi = ab.ci95
    assert lo <= truth <= hi, (truth, ab)
    assert lo > 0
    assert abs(ab.flow - truth) / truth < 0.25
    assert ab.kappa == pytest.approx(1 / params.n_groups, rel=0.15)
    assert ab.se_exact
    for pair in [("s1/A", "s1/C"), ("s1/C", "s1/A"), ("s1/B", "s1/C"), ("s1/C", "s1/B"), ("s1/B", "s1/A")]:
        e = est[pair]
        assert abs(e.flow) < 4 * e.se, (pair, e)  # no planted flow: within noise
        assert e.se > 0


@pytest.mark.integration
def test_transit_distribution_adds_up_to_the_flow_and_peaks_where_planted(server):
    wh, params, _ = server
    q = _query(params)
    total = _by_pair(estimate_flows(wh, q))["s1/A", "s1/B"]
    lags = [e for e in estimate_flows(wh, q, by_lag=True) if (e.origin, e.destination) == ("s1/A", "s1/B")]
    assert [e.lag for e in lags] == list(range(31))
    assert sum(e.co_occurrences for e in lags) == pytest.approx(total.co_occurrences)
    assert sum(e.flow for e in lags) == pytest.approx(total.flow, rel=1e-6)  # one kappa for every lag
    peak = max(lags, key=lambda e: e.flow).lag
    assert 2 <= peak <= 7  # planted median transit 4 minutes


@pytest.mark.integration
def test_narrow_lag_range_misses_the_flow(server):
    wh, params, _ = server
    late = _by_pair(estimate_flows(wh, _query(params, min_lag=20, max_lag=30)))["s1/A", "s1/B"]
    assert late.se_exact  # (20, 30) is a published SE range
    assert abs(late.flow) < 4 * late.se  # nobody planted takes 20+ minutes


@pytest.mark.integration
def test_unregistered_parameter_set_is_a_clear_error(server):
    wh, params, _ = server
    q = FlowQuery("pp-never-registered", _query(params).cameras, START, START + timedelta(days=1))
    with pytest.raises(FlowQueryError, match="flowctl params register"):
        estimate_flows(wh, q)


@pytest.mark.integration
def test_current_engine_and_the_sql_give_the_same_estimates(server, chdb):
    wh, params, _ = server
    expected = _by_pair(estimate_flows(wh, _query(params)))
    got = _by_pair(estimate_flows(chdb[0], _query(params)))
    assert got.keys() == expected.keys()
    for k, e in expected.items():
        assert got[k].co_occurrences == e.co_occurrences
        assert got[k].flow == pytest.approx(e.flow, rel=1e-9, abs=1e-9)
        assert got[k].se == pytest.approx(e.se, rel=1e-9)
    _assert_sql_matches(wh, _query(params))
    _assert_sql_matches(wh, _query(params, min_lag=5, max_lag=12), by_lag=True)


def _assert_sql_matches(wh, q: FlowQuery, by_lag: bool = False) -> None:
    """flow_sql's rows (what --show-sql, Grafana and the docs run) equal estimate_flows's."""
    est = estimate_flows(wh, q, by_lag=by_lag)
    rows = wh.rows(*flow_sql(wh.database, q, by_lag=by_lag))
    assert len(rows) == len(est) > 0
    for e, r in zip(est, rows):
        if by_lag:
            a, b, lag, *vals = r
            assert int(lag) == e.lag
        else:
            a, b, *vals = r
        assert (str(a), str(b)) == (e.origin, e.destination)
        s, chance, kappa, p, flow, se, exact, hours, seen = (float(v) for v in vals)
        assert s == e.co_occurrences and bool(exact) == e.se_exact and (hours, seen) == (e.hours, e.hours_seen)
        for got, want in ((chance, e.chance), (kappa, e.kappa), (p, e.same_group_rate), (flow, e.flow), (se, e.se)):
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("lags,by_lag", [((0, 30), False), ((20, 30), False), ((3, 9), False), ((0, 30), True)])
def test_the_sql_gives_what_estimate_flows_gives(chdb, lags, by_lag):
    _assert_sql_matches(chdb[0], _query(chdb[1], min_lag=lags[0], max_lag=lags[1]), by_lag)


def test_estimates_are_the_aggregators_estimator_on_the_published_rows(chdb):
    """The warehouse path is pipeline.aggregator.estimate on the rows: far-band kappa, the SE with
    kappa's own error, and per-lag terms (se_exact False) for a range without a published SE."""
    wh, params, _, flow = chdb
    for lo, hi, exact in ((0, 30, True), (3, 9, False)):
        sums = sum_rows(flow, lo, hi, options=_options(params))
        est = _by_pair(estimate_flows(wh, _query(params, min_lag=lo, max_lag=hi)))
        assert est.keys() == sums.keys()
        for pair, e in est.items():
            kappa, chance, f, se = flow_from_sums(sums[pair], params.same_group_rate)
            assert (e.kappa, e.chance, e.flow, e.se, e.se_exact) == (kappa, chance, f, se, exact)
            assert se > flow_from_sums(sums[pair], params.same_group_rate, kappa=kappa)[3]  # kappa's error added


def test_roll_ups_sum_components_and_pool_kappa(chdb):
    wh, params, _, flow = chdb
    q = _query(params)
    cams = _by_pair(estimate_flows(wh, q))
    level_of = {"s1/A": "s1/front", "s1/B": "s1/back", "s1/C": "s1/back"}
    zones = _by_pair(estimate_flows(wh, q, level_of=level_of))
    assert set(zones) == {("s1/front", "s1/back"), ("s1/back", "s1/front"), ("s1/back", "s1/back")}
    sums = sum_rows(flow, options=_options(params))
    front_back = sum_rows(flow, options=_options(params), level_of=level_of)["s1/front", "s1/back"]
    pooled = pool([sums["s1/A", "s1/B"], sums["s1/A", "s1/C"]])
    assert replace(front_back, design_effect=1.0) == pooled   # the components add up
    z = zones["s1/front", "s1/back"]
    assert z.co_occurrences == cams["s1/A", "s1/B"].co_occurrences + cams["s1/A", "s1/C"].co_occurrences
    assert z.kappa == front_back.kappa(params.same_group_rate)  # one kappa for the zone pair
    assert z.hours == cams["s1/A", "s1/B"].hours + cams["s1/A", "s1/C"].hours
    assert (z.flow, z.se) == flow_from_sums(front_back, params.same_group_rate)[2:]
    # A->B and A->C share A's chance co-occurrences: the roll-up's variance is more than the sum
    assert front_back.design_effect > 1.0
    assert z.se > flow_from_sums(pooled, params.same_group_rate)[3]
    # pooling kappa is not adding the pairs' flows: the two differ, by less than the SE
    added = cams["s1/A", "s1/B"].flow + cams["s1/A", "s1/C"].flow
    assert z.flow != added and abs(z.flow - added) < z.se
    # within a zone: both directions between B and C
    assert zones["s1/back", "s1/back"].co_occurrences == (cams["s1/B", "s1/C"].co_occurrences
                                                          + cams["s1/C", "s1/B"].co_occurrences)
    by_lag = _by_pair(estimate_flows(wh, q, by_lag=True, level_of=level_of))
    assert sum(e.flow for k, e in by_lag.items() if k[:2] == ("s1/front", "s1/back")) == pytest.approx(z.flow)


def test_a_replay_changes_nothing_and_other_versions_never_mix(chdb):
    wh, params, _, flow = chdb
    before = estimate_flows(wh, _query(params))
    write_components(wh, flow[: len(flow) // 3], [])   # a replayed stretch of hours: same keys, same version
    other = params.with_changes(version=params.version + "-rotated")
    register_params(wh, other)
    write_components(wh, [replace(r, params_version=other.version, s=r.s * 3) for r in flow], [])
    assert estimate_flows(wh, _query(params)) == before
    rotated = _by_pair(estimate_flows(wh, _query(other)))
    assert rotated["s1/A", "s1/B"].co_occurrences == 3 * _by_pair(before)["s1/A", "s1/B"].co_occurrences


def test_lags_beyond_what_is_published_are_refused(chdb):
    wh, params, _, _ = chdb
    assert published_lags(wh, _query(params)).max_lag == SPEC.max_lag
    assert published_lags(wh, _query(params)).far == (SPEC.far_min, SPEC.far_max)
    assert published_lags(wh, _query(params)).far_bands == SPEC.far_bands
    assert split_far_bands(published_lags(wh, _query(params)).far_bands) == SPEC.far_bands[1][0]
    with pytest.raises(FlowQueryError, match="publishes lags 0 to 30"):
        estimate_flows(wh, _query(params, max_lag=45))
    # a period without components: nothing to estimate, not an error
    empty = FlowQuery(params.version, _query(params).cameras, START - timedelta(days=9), START - timedelta(days=8))
    assert estimate_flows(wh, empty) == []


def test_query_inputs_are_validated():
    cams = (CameraRef("s", "a"), CameraRef("s", "b"))
    with pytest.raises(FlowQueryError, match="not after"):
        FlowQuery("v", cams, START, START)
    with pytest.raises(FlowQueryError, match="two cameras"):
        FlowQuery("v", cams[:1], START, START + timedelta(days=1))
    with pytest.raises(FlowQueryError, match="lag range"):
        FlowQuery("v", cams, START, START + timedelta(days=1), min_lag=5, max_lag=2)
    with pytest.raises(FlowQueryError, match="SITE/CAMERA"):
        CameraRef.parse("entrance")
    # components are hourly: a period is rounded out to the hours it touches
    q = FlowQuery("v", cams, START + timedelta(minutes=30), START + timedelta(hours=2, minutes=1))
    assert q.hours == (int(START.timestamp()), int(START.timestamp()) + 3 * 3600)


def test_camera_names_are_parameters_not_sql():
    cams = (CameraRef("s", "a'; DROP TABLE x; --"), CameraRef("s", "b"))
    sql, params = flow_sql("flow", FlowQuery("v", cams, START, START + timedelta(days=1)))
    assert "DROP TABLE" not in sql and params["cam0"] == "s/a'; DROP TABLE x; --"
    assert "flow.flow_components FINAL" in sql and "group_occurrences" not in sql and "occurrences_by" not in sql


def test_published_noise_enters_the_estimate_and_its_se(chdb, data):
    """With the published tier's noise (keyed discrete Laplace on every row's s), the SQL and the
    Python path still agree, and the SE grows by the noise the rows say they carry. (Same chdb
    session, another parameter version: one embedded engine per process.)"""
    wh, params, _, _ = chdb
    noisy = params.with_changes(version=params.version + "-noisy")
    register_params(wh, noisy)
    cells = [replace(c, params_version=noisy.version) for c in data[1]]
    flow, foot = aggregate_cells(cells, replace(SPEC, flow_noise_scale=20.0), noise_key=b"k" * 32)
    assert all(r.noise_var_milli > 0 for r in flow)
    write_components(wh, flow, foot)
    for lags, by_lag in (((0, 30), False), ((3, 9), False), ((0, 30), True)):
        _assert_sql_matches(wh, _query(noisy, min_lag=lags[0], max_lag=lags[1]), by_lag)
    quiet = sum_rows(aggregate_cells(cells, SPEC)[0], options=_options(noisy))
    for pair, e in _by_pair(estimate_flows(wh, _query(noisy))).items():
        assert e.se > flow_from_sums(quiet[pair], noisy.same_group_rate)[3]
