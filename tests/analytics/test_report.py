"""The HTML report and the footfall/demographics queries on a small synthetic dataset with one
planted flow (people seen at s1/A and, 3 windows later, at s1/B in the same group with the
registered same-group rate), on the local ClickHouse 18.16 server and on chdb.

The synthetic cells and per-window demographic counts go through the flow aggregator's stages
in-process; the warehouse gets only their published components (demographics: every cell of
every camera-hour, noised), as analysts' warehouses do.
"""
from __future__ import annotations

import math
import random
import re
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.counts import CountCell, CountsSpec, demographic_grid, publish_hourly_counts
from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import CameraRef, FlowQuery, estimate_flows, flow_sql, render_sql
from pipeline.analytics.queries import demographics_hourly, footfall_hourly
from pipeline.analytics.report import (MAX_TRANSIT_PLOTS, SECTION_TITLES, build_report, demographic_totals,
                                       format_number, pretty_sql)
from pipeline.privacy import PrivacyParams
from pipeline.privacy.demographics import AGE_BANDS, GENDERS
from pipeline.settings import load_settings
from pipeline.simulator.publish import write_components, write_count_components
from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import migrate

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
HOURS = 2
W = 60
N_WINDOWS = HOURS * 3600 // W
MIN_LAG, MAX_LAG, PLANTED_LAG = 0, 5, 3
CAMERAS = (CameraRef("s1", "A"), CameraRef("s1", "B"), CameraRef("s1", "C"), CameraRef("s2", "D"))
BACKGROUND = 15       # unrelated persons per camera and window
FLOW_PER_WINDOW = 3   # persons per window going A -> B
SPEC = AggregatorSpec(ranges=((0, 30), (MIN_LAG, MAX_LAG)))   # the report's lag range has an exact SE
DEMO_SPEC = CountsSpec("demographics", window_seconds=W, grid=demographic_grid())
NOISE_KEY = b"report-test-key" * 3


def synthetic(params: PrivacyParams, seed: int = 7):
    """Group occurrences and demographic counts per (camera, window), as the processor would publish."""
    rng = random.Random(seed)
    n, p = params.n_groups, params.same_group_rate
    occ: Counter = Counter()     # (camera key, window, group) -> occurrences
    demo: Counter = Counter()    # (camera key, window, band, gender) -> persons
    bands = [b for b in AGE_BANDS] + ["unknown"]
    genders = list(GENDERS)
    for w in range(N_WINDOWS + MAX_LAG):   # destinations keep streaming past the period's end
        for cam in CAMERAS:
            for _ in range(BACKGROUND):
                occ[(cam.key, w, rng.randrange(n))] += 1
                demo[(cam.key, w, rng.choice(bands[:4]), rng.choice(genders[:2]))] += 1
            occ[(cam.key, w, rng.randrange(n))] += 1   # about n * fictitious_rate = 1 fictitious per window
        if w < N_WINDOWS:
            for _ in range(FLOW_PER_WINDOW):
                g = rng.randrange(n)
                occ[("s1/A", w, g)] += 1
                occ[("s1/B", w + PLANTED_LAG, g if rng.random() < p else rng.randrange(n))] += 1
    return occ, demo


def demographic_components(demo: Counter, params: PrivacyParams):
    """The synthetic per-window demographic counts through the demographics stage (noised)."""
    start_ms = int(START.timestamp()) * 1000
    cells = [CountCell(params.version, *cam.split("/"), start_ms + w * W * 1000, W, (band, gender), v)
             for (cam, w, band, gender), v in demo.items()]
    return publish_hourly_counts(cells, DEMO_SPEC, noise_key=NOISE_KEY)


def load(wh, params: PrivacyParams, *, windows: int | None = None) -> tuple[Counter, Counter]:
    """Publish the synthetic set's components and demographics (only its first ``windows`` windows
    when given)."""
    migrate(wh)
    register_params(wh, params)
    occ, demo = synthetic(params)
    if windows is not None:
        occ = Counter({k: v for k, v in occ.items() if k[1] < windows})
        demo = Counter({k: v for k, v in demo.items() if k[1] < windows})

    start_ms = int(START.timestamp()) * 1000
    cells = [OccurrenceCell(params.version, *cam.split("/"), start_ms + w * W * 1000, W, g, v)
             for (cam, w, g), v in occ.items()]
    write_components(wh, *aggregate_cells(cells, SPEC))
    write_count_components(wh, demographic_components(demo, params))
    return occ, demo


def expected_footfall(occ: Counter, params: PrivacyParams, end: datetime) -> dict:
    """(camera key, hour) -> (occurrences, windows, estimated persons) for hours starting before ``end``."""
    acc: dict = {}
    for (cam, w, _g), v in occ.items():
        ts = START + timedelta(seconds=w * W)
        hour = ts.replace(minute=0, second=0)
        if hour >= end:
            continue
        a = acc.setdefault((cam, hour), [0, set()])
        a[0] += v
        a[1].add(w)
    per_window = params.n_groups * params.fictitious_rate
    return {k: (o, len(ws), o - len(ws) * per_window) for k, (o, ws) in acc.items()}


def expected_demographics(demo: Counter, params: PrivacyParams, end: datetime) -> dict:
    """(camera key, hour, band, gender) -> (published persons, noise variance) of every published
    cell of hours starting before ``end``."""
    return {(f"{r.site_id}/{r.camera_id}", datetime.fromtimestamp(r.hour_ms / 1000, timezone.utc), r.key1, r.key2):
            (r.count, r.noise_var_milli / 1000)
            for r in demographic_components(demo, params) if r.hour_ms < end.timestamp() * 1000}


def check_queries(wh, occ: Counter, demo: Counter, params: PrivacyParams) -> None:
    end = START + timedelta(hours=HOURS)
    ff = footfall_hourly(wh, params.version, START, end)
    want = expected_footfall(occ, params, end)
    got = {(r.camera, r.hour): (r.occurrences, r.windows, r.estimated_persons) for r in ff}
    assert got.keys() == want.keys()
    for k, (o, w, est) in want.items():
        assert got[k][:2] == (o, w), k
        assert got[k][2] == pytest.approx(est, rel=1e-9), k
    assert all(r.hour.tzinfo is not None and r.hour.minute == 0 for r in ff)

    only_s2 = footfall_hourly(wh, params.version, START, end, sites=("s2",))
    assert {r.camera for r in only_s2} == {"s2/D"}
    # a period starting mid-hour still includes that whole hour; the end is exclusive
    half = footfall_hourly(wh, params.version, START + timedelta(minutes=30), START + timedelta(hours=1))
    assert {r.hour for r in half} == {START}

    dm = demographics_hourly(wh, params.version, START, end)
    want_dm = expected_demographics(demo, params, end)
    assert {(r.camera, r.hour, r.age_band, r.gender): r.persons for r in dm} == {k: n for k, (n, _) in want_dm.items()}
    for r in dm:
        assert r.noise_var == pytest.approx(want_dm[r.camera, r.hour, r.age_band, r.gender][1])
    # every grid cell of every camera-hour, zeros included; the noise is around the exact counts
    assert len(dm) == len(CAMERAS) * HOURS * len(demographic_grid())
    exact = sum(v for (cam, w, *_), v in demo.items() if START + timedelta(seconds=w * W) < end)
    noise_sd = sum(r.noise_var for r in dm) ** 0.5
    assert abs(sum(r.persons for r in dm) - exact) < 5 * noise_sd + 5 * len(dm)   # the clamp adds < 5 per cell
    lo, hi = dm[0].ci95
    assert hi - lo == pytest.approx(2 * 1.959963984540054 * dm[0].noise_var ** 0.5)
    assert footfall_hourly(wh, "no-such-version", START, end) == []


# ---------------------------------------------------------------------------------------------
# ClickHouse 18.16 server

@pytest.fixture(scope="module")
def server_wh(stack):
    wh = ServerWarehouse(load_settings().clickhouse, database=f"flow_report_test_{uuid.uuid4().hex[:8]}", role="admin")
    params = PrivacyParams.default()
    try:
        occ, demo = load(wh, params)
        yield wh, params, occ, demo
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")
        wh.close()


_ROW = re.compile(r'<tr data-origin="([^"]+)" data-destination="([^"]+)">.*?<td class="flow">([^<]*)</td>'
                  r'<td class="se">([^<]*)</td><td class="ci-low">([^<]*)</td><td class="ci-high">([^<]*)</td></tr>')


@pytest.mark.integration
def test_queries_on_server(server_wh):
    wh, params, occ, demo = server_wh
    check_queries(wh, occ, demo, params)


@pytest.mark.integration
def test_report_on_server(server_wh, tmp_path):
    wh, params, occ, demo = server_wh
    end = START + timedelta(hours=HOURS)
    out = tmp_path / "report" / "flows.html"
    data = build_report(wh, params.version, START, end, cameras=[c.key for c in CAMERAS], min_lag=MIN_LAG,
                        max_lag=MAX_LAG, window_seconds=W, level="camera", out_path=out)
    assert out.is_file()
    text = out.read_text(encoding="utf-8")

    # self-contained: every image inline, nothing fetched
    n_pairs = len(CAMERAS) * (len(CAMERAS) - 1)
    n_transit = min(MAX_TRANSIT_PLOTS, n_pairs)
    assert text.count('<img src="data:image/png;base64,') == 1 + 1 + n_transit + 2 == len(data.figures)
    assert text.count("<img") == len(data.figures)
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert 'rel="stylesheet"' not in text
    for title in SECTION_TITLES:
        assert f">{title}</h2>" in text
    assert params.version in text and "95% confidence interval" in text and "pairs of captures" in text

    # the table prints exactly what estimate_flows returns
    q = FlowQuery(params.version, CAMERAS, START, end, window_seconds=W, min_lag=MIN_LAG, max_lag=MAX_LAG)
    cli = estimate_flows(wh, q)
    assert len(cli) == n_pairs
    assert [(e.origin, e.destination, e.flow, e.se) for e in data.flows] == \
           [(e.origin, e.destination, e.flow, e.se) for e in cli]
    table = {(o, d): (f, se, lo, hi) for o, d, f, se, lo, hi in _ROW.findall(text)}
    assert len(table) == n_pairs
    for e in cli:
        lo, hi = e.ci95
        assert table[(e.origin, e.destination)] == (format_number(e.flow), format_number(e.se),
                                                   format_number(lo), format_number(hi))

    # the planted flow is found, and nothing else is
    ab = next(e for e in cli if (e.origin, e.destination) == ("s1/A", "s1/B"))
    assert ab.ci95[0] > 0
    planted = FLOW_PER_WINDOW * N_WINDOWS
    assert ab.ci95[0] < planted < ab.ci95[1] or abs(ab.flow - planted) < 4 * ab.se
    assert data.transit_pairs[0] == ("s1/A", "s1/B")
    lags = {e.lag: e for e in data.flows_by_lag if (e.origin, e.destination) == ("s1/A", "s1/B")}
    assert set(lags) == set(range(MIN_LAG, MAX_LAG + 1))
    assert max(lags.values(), key=lambda e: e.flow).lag == PLANTED_LAG
    assert sum(e.flow for e in lags.values()) == pytest.approx(ab.flow, rel=1e-6, abs=1e-6)

    # footfall and demographics shown are the query functions' rows
    assert data.footfall == footfall_hourly(wh, params.version, START, end, ("s1", "s2"))
    assert data.demographics == demographics_hourly(wh, params.version, START, end, ("s1", "s2"))
    # the demographics table: per band and gender, the period's published persons and the
    # interval of their summed noise
    shown = {(by, cell): (int(n), float(lo), float(hi)) for by, cell, n, lo, hi in re.findall(
        r'<tr data-by="(\w+)" data-cell="([^"]+)">.*?<td class="persons">(-?\d+)</td><td class="ci-low">([^<]+)</td>'
        r'<td class="ci-high">([^<]+)</td></tr>', text)}
    for by in ("age_band", "gender"):
        for cell, (n, v) in demographic_totals(data.demographics, by).items():
            assert shown[by, cell][0] == n
            assert shown[by, cell][2] == pytest.approx(n + 1.96 * v ** 0.5, abs=0.51)
    assert len(shown) == len(demographic_grid()) // 3 + 3
    assert "demographics_hourly" not in text and f"{wh.database}.demographic_components FINAL" in text
    # the SQL section shows runnable statements with values filled in
    assert "%(" not in "".join(data.sql.values())
    assert f"{wh.database}.flow_components FINAL" in text and f"{wh.database}.footfall_components FINAL" in text
    assert "group_occurrences" not in text and "occurrences_by_window" not in text


# ---------------------------------------------------------------------------------------------
# chdb (a current ClickHouse engine)

def test_queries_and_report_on_chdb(tmp_path):
    pytest.importorskip("chdb")
    wh = ChdbWarehouse(str(tmp_path / "chdb"), database="flow")
    try:
        params = PrivacyParams.default()
        occ, demo = load(wh, params)
        check_queries(wh, occ, demo, params)
        end = START + timedelta(hours=HOURS)
        data = build_report(wh, params.version, START, end, cameras=CAMERAS[:2], min_lag=MIN_LAG, max_lag=MAX_LAG,
                            window_seconds=W, out_path=tmp_path / "r.html")
        assert (tmp_path / "r.html").read_text().count('<img src="data:image/png;base64,') == 1 + 1 + 2 + 2
        ab = next(e for e in data.flows if (e.origin, e.destination) == ("s1/A", "s1/B"))
        assert ab.ci95[0] > 0
        # the laid-out statement the report and docs/ANALYST_SQL.md show means the same
        q = FlowQuery(params.version, CAMERAS, START, end, window_seconds=W, min_lag=MIN_LAG, max_lag=MAX_LAG)
        sql, values = flow_sql(wh.database, q, by_lag=True)
        assert wh.rows(pretty_sql(render_sql(sql, values))) == wh.rows(sql, values)
    finally:
        wh.close()


def test_short_labelled_footage_report_explains_missing_flows_and_sets_counts_against_labels(tmp_path):
    """The demo's footage report: minutes of two cameras, with labels. Flows cannot be estimated
    (the period is shorter than the lag range that chance is measured beyond) and the report must
    say why; counted persons are set against the labelled ones."""
    pytest.importorskip("chdb")
    from pipeline.analytics.report import GroundTruth

    wh = ChdbWarehouse(str(tmp_path / "chdb"), database="flow")
    try:
        params = PrivacyParams.default()
        load(wh, params, windows=8)   # 8 minutes of data, as the demo has a few
        end = START + timedelta(minutes=8)
        truth = GroundTruth({"s1/A": 11, "s1/B": 9}, "test labels", {"s1/A": 40.0, "s1/B": 40.0},
                            {"s1/A": 12.0, "s1/B": 8.5}, {"s1/A": 13, "s1/B": 9})
        data = build_report(wh, params.version, START, end, cameras=CAMERAS[:2], min_lag=0, max_lag=30,
                            window_seconds=W, out_path=tmp_path / "r.html", truth=truth)
        text = (tmp_path / "r.html").read_text()
        assert all(not math.isfinite(f.flow) for f in data.flows)
        assert "Why some cells say n/a" in text and "too short to hold such pairs" in text
        assert "Counted against labelled persons" in data.figures
        row = re.search(r'<tr><td class="label">s1/A</td><td>40 s</td><td>11</td><td>13</td><td>([^<]+)</td>', text)
        assert row and row.group(1) == format_number(12.0)
        assert "cannot show" in text
    finally:
        wh.close()
