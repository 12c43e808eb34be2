"""Site roll-ups give the camera path's numbers (site and chain level, whole range and per lag), on a
current engine (chdb) and on the Debian ClickHouse 18.16 server; questions they do not cover fall
back to the camera rows; a build is idempotent and refuses a range the aggregator does not publish.

Data: two days, 09:00-12:00 UTC, two sites of three cameras (plus the two hours after, where the
far bands reach), background at every camera and flows planted within site-a and from site-a to
site-b; through the aggregator in-process with published noise (flow_components as published).
"""
from __future__ import annotations

import random
import secrets
import tempfile
from datetime import date, datetime, timezone

import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.estimate import EstimatorOptions
from pipeline.analytics import rollups
from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import CameraRef, FlowQuery, _rollup_sums, estimate_flows
from pipeline.privacy import PrivacyParams
from pipeline.settings import load_settings
from pipeline.simulator.publish import write_components
from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import migrate

CAMERAS = ("site-a/entrance", "site-a/aisle", "site-a/checkout", "site-b/door", "site-b/aisle", "site-b/till")
DAYS = (date(2026, 3, 2), date(2026, 3, 3))
KEY = b"rollup-test-key-" * 2


def _cells(params: PrivacyParams, seed: int = 11) -> list[OccurrenceCell]:
    rng = random.Random(seed)
    counts: dict[tuple[str, int, int], int] = {}

    def add(cam: str, t: int, g: int) -> None:
        counts[cam, t, g] = counts.get((cam, t, g), 0) + 1

    def other(g: int) -> int:
        return g if rng.random() < params.same_group_rate else rng.randrange(params.n_groups)

    for day in DAYS:
        t0 = int(datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc).timestamp()) // 60
        for w in range(300):
            for cam in CAMERAS:
                for _ in range(5 if cam.startswith("site-a") else 3):
                    add(cam, t0 + w, rng.randrange(params.n_groups))
            if w < 180:
                for _ in range(3):
                    g = rng.randrange(params.n_groups)
                    add("site-a/entrance", t0 + w, g)
                    add("site-a/checkout", t0 + w + rng.randint(2, 8), other(g))
                    if rng.random() < 0.5:
                        add("site-b/door", t0 + w + rng.randint(10, 25), other(g))
    return [OccurrenceCell(params.version, *cam.split("/"), t * 60_000, 60, g, n)
            for (cam, t, g), n in counts.items()]


@pytest.fixture(scope="module", params=["camera", "site"])
def published(request):
    """Cross-site flows per camera pair, and per site pair (the chain's setting)."""
    params = PrivacyParams.default()
    spec = AggregatorSpec(flow_noise_scale=3.0, footfall_noise_scale=2.0, cross_site=request.param)
    return params, aggregate_cells(_cells(params), spec, noise_key=KEY)


def _question(params: PrivacyParams, first: date = DAYS[0], end: date = date(2026, 3, 4)) -> FlowQuery:
    t = lambda d: datetime(d.year, d.month, d.day, tzinfo=timezone.utc)  # noqa: E731
    return FlowQuery(params.version, tuple(CameraRef.parse(c) for c in CAMERAS), t(first), t(end))


def _same(a, b) -> None:
    assert [(e.origin, e.destination, e.lag, e.hours, e.hours_seen, e.se_exact) for e in a] == \
        [(e.origin, e.destination, e.lag, e.hours, e.hours_seen, e.se_exact) for e in b]
    for x, y in zip(a, b):
        # co-occurrences, chance and kappa are integer sums and their ratios: exact; the SE carries the
        # design effect, whose residuals the roll-ups store in thousandths
        assert (x.co_occurrences, x.kappa) == pytest.approx((y.co_occurrences, y.kappa), rel=1e-12)
        assert (x.flow, x.se) == pytest.approx((y.flow, y.se), rel=1e-6, abs=1e-9)


def check(wh, published) -> None:
    params, (flow_rows, foot_rows) = published
    # one camera pair-hour without its range row (a configuration change mid-day would do this):
    # site-a -> site-a has no exact SE then, on either path, and sums its lag rows instead
    ten = int(datetime(2026, 3, 2, 10, tzinfo=timezone.utc).timestamp()) * 1000
    gone = next(r for r in flow_rows if r.kind == "range" and r.hour_ms == ten
                and (r.origin_camera, r.dest_camera) == ("entrance", "checkout"))
    migrate(wh)
    register_params(wh, params)
    write_components(wh, [r for r in flow_rows if r is not gone], foot_rows)
    q = _question(params)
    site = {c: c.split("/")[0] for c in CAMERAS}
    chain = {c: "chain" for c in CAMERAS}
    opts = EstimatorOptions(fictitious_per_window=params.fictitious_per_window)

    def camera_rows(qx: FlowQuery, lv: dict, by_lag: bool = False):
        """A whole-site question answered from the camera rows (explicit options: no roll-ups)."""
        return estimate_flows(wh, qx, level_of=lv, by_lag=by_lag, whole_sites=True, options=opts)

    camera_path = {name: camera_rows(q, lv) for name, lv in (("site", site), ("chain", chain))}
    by_lag = camera_rows(q, site, by_lag=True)
    assert {(e.origin, e.destination) for e in camera_path["site"]} == {
        ("site-a", "site-a"), ("site-a", "site-b"), ("site-b", "site-a"), ("site-b", "site-b")}
    big = next(e for e in camera_path["site"] if (e.origin, e.destination) == ("site-a", "site-a"))
    assert big.flow > 1.5 * big.se   # the planted flow is there (so the comparison is not of noise alone)
    assert not big.se_exact and all(e.se_exact for e in camera_path["site"] if e is not big)

    # nothing built: the roll-up path is not taken, and the answers are the camera path's
    assert not rollups.covered(wh, params.version, 60, (0, 30), ["site-a", "site-b"], DAYS[0], date(2026, 3, 4))
    options = EstimatorOptions(fictitious_per_window=params.fictitious_per_window)
    with pytest.raises(rollups.RollupError, match="no SE range"):
        rollups.build_site_rollups(wh, params.version, DAYS[0], date(2026, 3, 4), lag_range=(0, 10), options=options)
    # one day built of two: still the camera path
    rollups.build_site_rollups(wh, params.version, DAYS[0], DAYS[1], options=options)
    assert not rollups.covered(wh, params.version, 60, (0, 30), ["site-a", "site-b"], DAYS[0], date(2026, 3, 4))
    _same(estimate_flows(wh, q, level_of=site, whole_sites=True), camera_path["site"])

    # both days built, twice (a rebuild replaces): the roll-up path gives the camera path's numbers
    for _ in range(2):
        r = rollups.build_site_rollups(wh, params.version, DAYS[0], date(2026, 3, 4), options=options)
    assert r.sites == 2 and r.days == 2 and r.camera_pair_hours > 0
    assert rollups.covered(wh, params.version, 60, (0, 30), ["site-a", "site-b"], DAYS[0], date(2026, 3, 4))
    # the rebuild replaced the first build's site pair-hours (FINAL keeps one row per key)
    n_final = int(wh.rows(f"SELECT count() FROM {wh.database}.flow_site_rollups FINAL WHERE kind = 'range'")[0][0])
    assert n_final == r.rows_written
    sums = rollups.rollup_sums(wh, params.version, ["site-a", "site-b"], *q.hours, window_seconds=60, lag_range=(0, 30))
    assert sums[("site-a", "site-a")].design_effect > 1.0   # pairs that share cameras: the effect is measured
    # (and the roll-ups are what answers: the path is taken)
    assert _rollup_sums(wh, q, False, site) is not None and _rollup_sums(wh, q, True, chain) is not None
    _same(estimate_flows(wh, q, level_of=site, whole_sites=True), camera_path["site"])
    _same(estimate_flows(wh, q, level_of=chain, whole_sites=True), camera_path["chain"])
    _same(estimate_flows(wh, q, level_of=site, by_lag=True, whole_sites=True), by_lag)
    # one day of two; part of a day (the camera path: the residuals' daily level would differ)
    for a, b in (((3, 3, 0), (3, 4, 0)), ((3, 3, 10), (3, 3, 12))):
        q1 = FlowQuery(params.version, q.cameras, datetime(2026, *a, tzinfo=timezone.utc),
                       datetime(2026, *b, tzinfo=timezone.utc))
        _same(estimate_flows(wh, q1, level_of=site, whole_sites=True), camera_rows(q1, site))
    # chosen cameras (not whole sites) and zone-like labels never read the roll-ups
    assert rollups.covered(wh, params.version, 60, (0, 30), ["site-a", "site-b"], DAYS[1], date(2026, 3, 4))
    zones = {**site, "site-a/checkout": "site-a/tills"}
    assert _rollup_sums(wh, q, False, zones) is None
    _same(estimate_flows(wh, q, level_of=zones, whole_sites=True), camera_rows(q, zones))
    if any(r.origin_camera == "" for r in flow_rows):
        # cross-site flows per site pair: only whole-site questions see them
        assert not any(e.origin != e.destination for e in estimate_flows(wh, q, level_of=site, options=opts))


def test_rollups_on_chdb(published):
    pytest.importorskip("chdb")
    with tempfile.TemporaryDirectory() as d:
        wh = ChdbWarehouse(d, database="flow")
        try:
            check(wh, published)
        finally:
            wh.close()


@pytest.mark.integration
def test_rollups_on_clickhouse_18_16(stack, published):
    wh = ServerWarehouse(load_settings().clickhouse, database=f"flow_rollup_test_{secrets.token_hex(4)}", role="admin")
    try:
        check(wh, published)
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")
        wh.close()
