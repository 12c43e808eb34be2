"""Summed published components reproduce the SQL estimator on cells
(pipeline/analytics/cell_estimator.py, what pipeline/analytics/flows.py ran before the published
tier) run on the same per-window cells, on a current ClickHouse engine (chdb); the published tables also
work, and deduplicate replays, on the Debian 18.16 server.

Input: one simulated day of the reference scenario (2 sites x 3 cameras, flow profile, the
simulator's ground truth), exactly what processors publish. The cells go (a) into
``group_occurrences`` (restricted; only for this reference), for the cell estimator, and (b) through four group partitions and the
combiner, whose rows go into ``flow_components`` / ``footfall_components`` (migration 0005).

What is equal, to floating-point rounding: S; chance / kappa (the window-product sum NN); and,
given the SQL estimator's kappa, chance, flow and SE, for the whole lag range, for each single
lag, and for a configured sub-range. What differs by design: kappa itself (the far band within
the 2 h bound instead of the whole period, see docs/AGGREGATOR.md), so the published estimate
differs from the cell estimator's by a fraction of its standard error.
"""
from __future__ import annotations

import secrets
import tempfile
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.estimate import component_sums, far_extrapolation_for, flow_from_sums, sum_rows
from pipeline.aggregator.model import (FLOW_COMPONENT_COLUMNS, FOOTFALL_COMPONENT_COLUMNS, FlowComponent,
                                       flow_component_columns, footfall_component_columns)
from pipeline.analytics.dimensions import register_params
from pipeline.analytics.cell_estimator import estimate_cell_flows as estimate_flows
from pipeline.analytics.flows import CameraRef, FlowQuery
from pipeline.privacy import PrivacyParams
from pipeline.settings import load_settings
from pipeline.simulator import load_scenario, simulate
from pipeline.simulator.publish import write_cells
from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import migrate
from pipeline.analytics.cell_tables import create_cell_tables
from tests.aggregator.harness import processor_order, run_pipeline

SPEC = AggregatorSpec(ranges=((0, 30), (5, 20)))  # defaults plus a sub-range with an exact SE


@pytest.fixture(scope="module")
def day():
    params = PrivacyParams.profile("flow")
    sim = simulate(load_scenario("reference"), params, np.random.default_rng(11), days=1, mode="fast")
    pub = sim.published
    cells = [OccurrenceCell.from_record(r) for r in pub.occurrence_records()]
    flow, foot = run_pipeline(processor_order(cells), SPEC, partitions=4, seed=11)
    with tempfile.TemporaryDirectory() as d:
        wh = ChdbWarehouse(d, database="flow")
        migrate(wh)
        create_cell_tables(wh)  # restricted: dropped by migration 0009, here only for the reference
        register_params(wh, params)
        write_cells(pub, wh)
        wh.insert("flow_components", list(FLOW_COMPONENT_COLUMNS), flow_component_columns(flow))
        wh.insert("footfall_components", list(FOOTFALL_COMPONENT_COLUMNS), footfall_component_columns(foot))
        start = datetime.fromtimestamp(pub.start_epoch, timezone.utc)
        cams = tuple(CameraRef(pub.site_ids[pub.camera_site[i]], c) for i, c in enumerate(pub.camera_ids))
        yield dict(wh=wh, params=params, sim=sim, flow=flow, foot=foot, start=start, end=start + timedelta(days=1),
                   cams=cams)
        wh.close()


def _check_equal(est, sums, p):
    assert float(sums.s) == est.co_occurrences
    assert sums.nn == pytest.approx(est.chance / est.kappa, rel=1e-12)
    _, chance, flow, se = flow_from_sums(sums, p, kappa=est.kappa)
    assert chance == pytest.approx(est.chance, rel=1e-12)
    assert flow == pytest.approx(est.flow, rel=1e-9, abs=1e-9)
    assert se == pytest.approx(est.se, rel=1e-9)


@pytest.mark.parametrize("lags", [(0, 30), (5, 20)])
def test_summed_components_reproduce_the_sql_estimator_term_by_term(day, lags):
    lo, hi = lags
    q = FlowQuery(day["params"].version, day["cams"], day["start"], day["end"], min_lag=lo, max_lag=hi)
    expected = {(e.origin, e.destination): e for e in estimate_flows(day["wh"], q)}
    got = component_sums(day["wh"], day["params"].version, [c.key for c in day["cams"]], day["start"], day["end"],
                         min_lag=lo, max_lag=hi)
    assert len(expected) == 30 and got.keys() == expected.keys()
    for pair, e in expected.items():
        assert got[pair].se_exact
        _check_equal(e, got[pair], day["params"].same_group_rate)


def test_each_lag_reproduces_the_sql_estimator_by_lag(day):
    q = FlowQuery(day["params"].version, day["cams"], day["start"], day["end"])
    expected = {(e.origin, e.destination, e.lag): e for e in estimate_flows(day["wh"], q, by_lag=True)}
    got = component_sums(day["wh"], day["params"].version, [c.key for c in day["cams"]], day["start"], day["end"],
                         by_lag=True)
    assert len(expected) == 30 * 31 and got.keys() == expected.keys()
    for key, e in expected.items():
        _check_equal(e, got[key], day["params"].same_group_rate)


def test_in_memory_sums_equal_the_warehouse_sums(day):
    cams = [c.key for c in day["cams"]]
    in_wh = component_sums(day["wh"], day["params"].version, cams, day["start"], day["end"])
    assert sum_rows(day["flow"]) == in_wh


def test_far_band_kappa_stays_close_to_the_whole_period_kappa(day):
    """The one intended difference. kappa from window pairs 61..102 minutes apart (either order,
    inner and outer half, extrapolated: pipeline/aggregator/estimate.py) against kappa from every
    pair further apart than 30 minutes in the day: within kappa's sampling error. The flows then
    differ by about that error, which the published SE adds (the SQL estimator's whole-period
    kappa has ~20x more pairs and leaves it out)."""
    q = FlowQuery(day["params"].version, day["cams"], day["start"], day["end"])
    expected = {(e.origin, e.destination): e for e in estimate_flows(day["wh"], q)}
    got = sum_rows(day["flow"])
    p = day["params"].same_group_rate
    lam = far_extrapolation_for(p)
    z = []
    for pair, e in expected.items():
        x = got[pair]
        kappa, _, flow, se = flow_from_sums(x, p)
        assert kappa == pytest.approx((1 + lam) * x.s_far / x.nn_far - lam * x.s_far_in / x.nn_far_in, rel=1e-12)
        # relative sampling error of each band's kappa: about 1 / sqrt(its s); extrapolated, the
        # outer band's counts (1 + lam) times and the inner one's lam times
        rel_sd = np.sqrt((1 + lam) ** 2 / x.s_far + lam ** 2 / x.s_far_in)
        assert abs(kappa - e.kappa) < 4 * kappa * rel_sd, pair
        kappa_sd = np.sqrt(se ** 2 - e.se ** 2)  # the added term, var0 * NN * c_k / (p - kappa)^2
        assert 0.5 * e.se < kappa_sd < 1.8 * e.se
        z.append((flow - e.flow) / kappa_sd)
    assert max(abs(x) for x in z) < 4
    assert 0.3 < np.std(z) < 2.0


def test_footfall_components_equal_footfall_hourly(day):
    wh = day["wh"]
    v = day["params"].version
    old = {(s, c, int(h)): (int(o), int(w)) for s, c, h, o, w in wh.rows(
        "SELECT site_id, camera_id, toUInt32(hour), sum(occurrences), sum(windows) FROM flow.footfall_hourly "
        "WHERE params_version = %(v)s GROUP BY site_id, camera_id, hour", {"v": v})}
    new = {(s, c, int(h)): (int(o), int(w)) for s, c, h, o, w in wh.rows(
        "SELECT site_id, camera_id, toUInt32(hour), sum(occurrences), sum(windows) FROM flow.footfall_components "
        "FINAL WHERE params_version = %(v)s GROUP BY site_id, camera_id, hour", {"v": v})}
    assert len(new) == len(day["foot"])
    # Hours nobody passed a seen camera are published too (zero, noised in deployments), so the
    # components hold every camera-hour and match the SQL wherever a window existed.
    assert {k: x for k, x in new.items() if x[1] > 0} == old
    zeros = {k for k, x in new.items() if x[1] == 0}
    assert all(new[k] == (0, 0) for k in zeros) and not zeros & old.keys()
    assert len({k[2] for k in new}) * len({k[:2] for k in new}) == len(new)


def test_a_replayed_hour_replaces_its_rows(day):
    """Inserting the same hour again (a replay), or a newer version of it, never adds."""
    wh, v = day["wh"], day["params"].version
    cams = [c.key for c in day["cams"]]
    before = component_sums(wh, v, cams, day["start"], day["end"])
    hour = sorted({r.hour_ms for r in day["flow"]})[5]
    again = [r for r in day["flow"] if r.hour_ms == hour]
    wh.insert("flow_components", list(FLOW_COMPONENT_COLUMNS), flow_component_columns(again))
    assert component_sums(wh, v, cams, day["start"], day["end"]) == before
    # a re-emission with a higher version and different content supersedes the old rows
    bumped = [FlowComponent(**{**r.__dict__, "s": r.s + 1, "version": r.version + 1}) for r in again
              if r.kind == "range" and (r.lag_lo, r.lag_hi) == (0, 30)]
    wh.insert("flow_components", list(FLOW_COMPONENT_COLUMNS), flow_component_columns(bumped))
    after = component_sums(wh, v, cams, day["start"], day["end"])
    for pair, x in before.items():
        added = sum(1 for r in bumped if (f"{r.origin_site}/{r.origin_camera}", f"{r.dest_site}/{r.dest_camera}") == pair)
        assert after[pair].s == x.s + added
    # restore the day for the other tests (module fixture): the original rows at a higher version
    restored = [FlowComponent(**{**r.__dict__, "version": r.version + 2}) for r in again
                if r.kind == "range" and (r.lag_lo, r.lag_hi) == (0, 30)]
    wh.insert("flow_components", list(FLOW_COMPONENT_COLUMNS), flow_component_columns(restored))
    assert component_sums(wh, v, cams, day["start"], day["end"]) == before


@pytest.mark.integration
def test_published_tables_deduplicate_replays_on_clickhouse_18_16(stack, day):
    """The same migration and queries on the Debian server: FINAL and ReplacingMergeTree on 18.16."""
    db = f"flow_test_agg_{secrets.token_hex(4)}"
    wh = ServerWarehouse(load_settings().clickhouse, database=db, role="admin")
    try:
        assert wh.server_version().startswith("18.16")
        migrate(wh)
        rows = day["flow"]
        wh.insert("flow_components", list(FLOW_COMPONENT_COLUMNS), flow_component_columns(rows))
        wh.insert("flow_components", list(FLOW_COMPONENT_COLUMNS), flow_component_columns(rows[: len(rows) // 2]))
        wh.insert("footfall_components", list(FOOTFALL_COMPONENT_COLUMNS), footfall_component_columns(day["foot"]))
        cams = [c.key for c in day["cams"]]
        v = day["params"].version
        assert component_sums(wh, v, cams, day["start"], day["end"]) == \
            component_sums(day["wh"], v, cams, day["start"], day["end"])
        assert component_sums(wh, v, cams, day["start"], day["end"], by_lag=True) == \
            component_sums(day["wh"], v, cams, day["start"], day["end"], by_lag=True)
        occ = wh.rows(f"SELECT sum(occurrences) FROM {db}.footfall_components FINAL WHERE params_version = %(v)s",
                      {"v": v})
        assert int(occ[0][0]) == sum(r.occurrences for r in day["foot"])
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {db}")
