"""Flow estimator on real ClickHouse (Debian 18.16 server) and the current engine (chdb).

The data are planted: people walk A -> B with known transit times, every capture goes to the
person's home group with probability sqrt(p) (so two captures share a group with rate ~p), and
the privacy core pads every window with its fictitious persons. The estimator must find the
planted flow inside its interval, find nothing where nothing was planted, and give the same
numbers on both engines.
"""
from __future__ import annotations

import secrets
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import (CameraRef, FlowEstimate, FlowQuery, FlowQueryError, aggregate, estimate_flows,
                                      flow_sql)
from pipeline.privacy import PrivacyParams, pad_with_fictitious
from pipeline.settings import load_settings
from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import migrate

START = datetime(2026, 11, 2, tzinfo=timezone.utc)
COLS = ["site_id", "camera_id", "window_start", "window_seconds", "group_id", "occurrences", "params_version",
        "kafka_partition", "kafka_offset"]


def planted(params: PrivacyParams, seed: int = 7, visitors: int = 1500, share: float = 0.3):
    """Rows for cameras A, B, C over one 12-hour day; returns (rows, true A->B pairs within 30 windows)."""
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
    rows = []
    for cam, (t, g) in caps.items():
        per: dict[int, Counter] = defaultdict(Counter)
        for w, gi in zip((t // 60 * 60).astype(np.int64), g):
            per[int(w)][int(gi)] += 1
        for w in sorted(per):
            for gi, c in pad_with_fictitious(dict(per[w]), params, rng).items():
                rows.append(["s1", cam, datetime.fromtimestamp(w, timezone.utc).replace(tzinfo=None), 60, gi, c,
                             params.version, 0, len(rows)])
    return [list(col) for col in zip(*rows)], truth


def _load(wh, params: PrivacyParams) -> int:
    migrate(wh)
    register_params(wh, params)
    data, truth = planted(params)
    wh.insert("group_occurrences", COLS, data)
    return truth


def _query(params: PrivacyParams, **kw) -> FlowQuery:
    return FlowQuery(params.version, tuple(CameraRef("s1", c) for c in "ABC"), START, START + timedelta(days=1), **kw)


def _by_pair(est: list[FlowEstimate]) -> dict[tuple[str, str], FlowEstimate]:
    return {(e.origin, e.destination): e for e in est}


@pytest.fixture(scope="module")
def server(stack):
    db = f"flow_test_flows_{secrets.token_hex(4)}"
    wh = ServerWarehouse(load_settings().clickhouse, database=db)
    params = PrivacyParams.default()
    truth = _load(wh, params)
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
    assert ab.kappa == pytest.approx(1 / params.n_groups, rel=0.1)
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
    assert sum(e.flow for e in lags) == pytest.approx(total.flow, rel=1e-6)
    peak = max(lags, key=lambda e: e.flow).lag
    assert 2 <= peak <= 7  # planted median transit 4 minutes


@pytest.mark.integration
def test_narrow_lag_range_misses_the_flow(server):
    wh, params, _ = server
    late = _by_pair(estimate_flows(wh, _query(params, min_lag=20, max_lag=30)))["s1/A", "s1/B"]
    assert abs(late.flow) < 4 * late.se  # nobody planted takes 20+ minutes


@pytest.mark.integration
def test_unregistered_parameter_set_is_a_clear_error(server):
    wh, params, _ = server
    q = FlowQuery("pp-never-registered", _query(params).cameras, START, START + timedelta(days=1))
    with pytest.raises(FlowQueryError, match="flowctl params register"):
        estimate_flows(wh, q)


@pytest.mark.integration
def test_current_engine_gives_the_same_estimates(server):
    wh, params, _ = server
    expected = _by_pair(estimate_flows(wh, _query(params)))
    with tempfile.TemporaryDirectory() as d:
        chdb = ChdbWarehouse(d, database="flow")
        _load(chdb, params)
        got = _by_pair(estimate_flows(chdb, _query(params)))
    assert got.keys() == expected.keys()
    for k, e in expected.items():
        assert got[k].co_occurrences == e.co_occurrences
        assert got[k].flow == pytest.approx(e.flow, rel=1e-9, abs=1e-9)
        assert got[k].se == pytest.approx(e.se, rel=1e-9)


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


def test_camera_names_are_parameters_not_sql():
    cams = (CameraRef("s", "a'; DROP TABLE x; --"), CameraRef("s", "b"))
    sql, params = flow_sql("flow", FlowQuery("v", cams, START, START + timedelta(days=1)))
    assert "DROP TABLE" not in sql and params["cam0"] == "s/a'; DROP TABLE x; --"


def test_rolling_up_adds_flows_and_variances():
    e = [FlowEstimate("s/a", "s/c", None, 10, 4, 0.001, 0.5, 12.0, 3.0),
         FlowEstimate("s/b", "s/c", None, 10, 4, 0.001, 0.5, 8.0, 4.0)]
    (z,) = aggregate(e, {"s/a": "s/entrance", "s/b": "s/entrance", "s/c": "s/shop"})
    assert (z.origin, z.destination, z.flow, z.se) == ("s/entrance", "s/shop", 20.0, 5.0)
