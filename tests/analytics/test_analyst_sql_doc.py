"""Every SQL statement of docs/ANALYST_SQL.md runs on the published tier, on a current engine
(chdb) and on the Debian ClickHouse 18.16 server, and gives what the CLI's code gives.

The data use the doc's own names (database ``flow``, parameter set ``pp-2026.11-default``,
``site-a/entrance``, ``site-a/checkout``, 2026-03-02 09:00 to 17:00 UTC), plus a camera of a
second site for the roll-up; a flow entrance -> checkout is planted. Cells and per-window
demographic and crossing counts go through the aggregator in-process (with published noise) and
only its components reach the warehouse.
"""
from __future__ import annotations

import random
import re
import secrets
import tempfile
from datetime import datetime, timezone

import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.counts import CountCell, CountsSpec, demographic_grid, publish_hourly_counts
from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import CameraRef, FlowQuery, estimate_flows
from pipeline.analytics.queries import crossings_hourly, demographics_hourly, footfall_hourly
from pipeline.privacy import PrivacyParams
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.simulator.publish import write_components, write_count_components
from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import migrate

DOC = REPO_ROOT / "docs" / "ANALYST_SQL.md"
START = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
END = datetime(2026, 3, 2, 17, tzinfo=timezone.utc)
CAMERAS = ("site-a/entrance", "site-a/checkout", "site-b/door")
SITE = {c: c.split("/")[0] for c in CAMERAS}


def doc_statements() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)


def _cells(params: PrivacyParams, seed: int = 5) -> list[OccurrenceCell]:
    """8 hours (and the 2 after, where journeys end and the far band reaches) of background at
    every camera, plus 4 persons a window walking entrance -> checkout in 2 to 6 minutes."""
    rng = random.Random(seed)
    counts: dict[tuple[str, int, int], int] = {}

    def add(cam: str, w: int, g: int) -> None:
        counts[cam, w, g] = counts.get((cam, w, g), 0) + 1

    for w in range(600):
        for cam in CAMERAS:
            for _ in range(8):
                add(cam, w, rng.randrange(params.n_groups))
        if w < 480:
            for _ in range(4):
                g = rng.randrange(params.n_groups)
                add("site-a/entrance", w, g)
                add("site-a/checkout", w + rng.randint(2, 6),
                    g if rng.random() < params.same_group_rate else rng.randrange(params.n_groups))
    t0 = int(START.timestamp()) * 1000
    return [OccurrenceCell(params.version, *cam.split("/"), t0 + w * 60_000, 60, g, n)
            for (cam, w, g), n in counts.items()]


KEY = b"doc-test-key" * 3


def _counts(params: PrivacyParams):
    """Exact per-15-minute demographic and crossing counts of site-a/entrance (09:00-10:00) and
    site-b/door (10:00), through the counts stages: every cell of both cameras' hours, noised."""
    t0 = int(START.timestamp()) * 1000
    dem = [CountCell(params.version, "site-a", "entrance", t0 + i * 900_000, 900, ("28-37", "female"), n)
           for i, n in enumerate([3, 4, 5, 6])]
    dem.append(CountCell(params.version, "site-b", "door", t0 + 3_600_000, 900, ("78+", "male"), 2))
    cross = [CountCell(params.version, "site-a", "entrance", t0 + i * 900_000, 900, ("door", d), n)
             for i in range(4) for d, n in (("in", 7 + i), ("out", 2))]
    return (publish_hourly_counts(dem, CountsSpec("demographics", window_seconds=900, grid=demographic_grid()),
                                  noise_key=KEY) +
            publish_hourly_counts(cross, CountsSpec("crossings", window_seconds=900, per_person_day=16),
                                  noise_key=KEY))


def _load(wh) -> PrivacyParams:
    params = PrivacyParams.default()
    assert params.version == "pp-2026.11-default"  # the doc's parameter set
    migrate(wh)
    register_params(wh, params)
    # with published noise, so the statements' noise terms are exercised too
    spec = AggregatorSpec(flow_noise_scale=5.0, footfall_noise_scale=2.0)
    write_components(wh, *aggregate_cells(_cells(params), spec, noise_key=KEY))
    # site-a/entrance from 09:00, site-b/door from 10:00 (first seen), every grid cell; crossings
    # of site-a's 09:00 hour, the (line, direction) cells it had
    assert write_count_components(wh, _counts(params)) == {"demographic_components": 3 * len(demographic_grid()),
                                                          "crossing_components": 2}
    return params


def check_doc(wh) -> None:
    params = _load(wh)
    stmts = doc_statements()
    assert len(stmts) == 7
    results = []
    for sql in stmts:
        for gone in ("group_occurrences", "occurrences_by_window", "footfall_hourly", "demographics_hourly",
                     "demographic_counts", "line_crossings"):
            assert gone not in sql
        results.append(wh.rows(sql.replace("flow.", f"{wh.database}."), {}))
        assert results[-1], sql
    footfall, raw, demo, gender, cross, pair, sites = results
    want = footfall_hourly(wh, params.version, START, END, ("site-a",))
    assert [(str(s), str(c), int(h), int(o), int(w), float(v)) for s, c, h, o, w, _, v in footfall] == \
        [(r.site_id, r.camera_id, int(r.hour.timestamp()), r.occurrences, r.windows, r.noise_var) for r in want]
    assert all(r.noise_var > 0 for r in want)   # the estimate's interval includes the published noise
    assert sum(int(r[2]) for r in raw) == sum(r.occurrences for r in footfall_hourly(wh, params.version, START, END))

    # demographics and crossings: every cell of site-a's two hours, the published (noised) values
    # and their variances, as the query functions read them
    published = _counts(params)
    dem_a = [r for r in published if r.kind == "demographics" and r.site_id == "site-a"]
    assert len(demo) == len(dem_a) == 2 * len(demographic_grid())
    assert [(str(s), str(c), int(h), str(a), str(g), int(p), float(v)) for s, c, h, a, g, p, v in demo] == \
        [(r.site_id, r.camera_id, int(r.hour.timestamp()), r.age_band, r.gender, r.persons, r.noise_var)
         for r in demographics_hourly(wh, params.version, START, END, ("site-a",))]
    assert sum(int(r[5]) for r in demo) == sum(r.count for r in dem_a)
    assert sum(float(r[6]) for r in demo) == pytest.approx(sum(r.noise_var_milli for r in dem_a) / 1000)
    assert sum(int(r[2]) for r in gender) == sum(r.count for r in dem_a)
    for _h, _g, n, lo, hi in gender:
        assert float(lo) < int(n) < float(hi)
        assert float(hi) - float(lo) == pytest.approx(2 * 1.96 * (len(demographic_grid()) / 3 * 127.833) ** 0.5,
                                                      rel=1e-3)
    assert [(str(s), str(c), int(h), str(a), str(d), int(n), float(v)) for s, c, h, a, d, n, v in cross] == \
        [(r.site_id, r.camera_id, int(r.hour.timestamp()), r.line, r.direction, r.crossings, r.noise_var)
         for r in crossings_hourly(wh, params.version, START, END, ("site-a",))]
    assert {(str(r[3]), str(r[4])) for r in cross} == {("door", "in"), ("door", "out")}
    q = FlowQuery(params.version, (CameraRef("site-a", "entrance"), CameraRef("site-a", "checkout")), START, END)
    _same(pair, estimate_flows(wh, q))
    rolled = estimate_flows(wh, FlowQuery(params.version, tuple(CameraRef.parse(c) for c in CAMERAS), START, END),
                            level_of=SITE)
    _same(sites, rolled)
    ab = next(e for e in rolled if (e.origin, e.destination) == ("site-a", "site-a"))
    assert ab.ci95[0] > 0   # the planted flow shows at site level


def _same(rows: list[tuple], estimates) -> None:
    """The doc statement's (origin, destination, s, chance, kappa, p, flow, se, ...) rows are the estimates."""
    assert len(rows) == len(estimates) > 0
    for r, e in zip(rows, estimates):
        assert (str(r[0]), str(r[1])) == (e.origin, e.destination)
        got = [float(x) for x in r[2:8]]
        want = [e.co_occurrences, e.chance, e.kappa, e.same_group_rate, e.flow, e.se]
        assert got == pytest.approx(want, rel=1e-9)


def test_generated_statements_in_the_doc_are_current():
    """The footfall, demographics, crossings and pair-flow statements are copies of what the code generates: regenerate
    them (see the doc) when the estimator changes."""
    from pipeline.analytics.flows import flow_sql, render_sql
    from pipeline.analytics.queries import footfall_sql
    from pipeline.analytics.report import pretty_sql

    q = FlowQuery("pp-2026.11-default", (CameraRef("site-a", "entrance"), CameraRef("site-a", "checkout")), START, END)
    from pipeline.analytics.queries import crossings_sql, demographics_sql

    stmts = [s.strip() for s in doc_statements()]
    assert stmts[0] == render_sql(*footfall_sql("flow", q.params_version, START, END, ("site-a",)))
    assert stmts[2] == render_sql(*demographics_sql("flow", q.params_version, START, END, ("site-a",)))
    assert stmts[4] == render_sql(*crossings_sql("flow", q.params_version, START, END, ("site-a",)))
    assert stmts[5] == pretty_sql(render_sql(*flow_sql("flow", q)))
    every = FlowQuery(q.params_version, tuple(CameraRef.parse(c) for c in CAMERAS), START, END)
    assert stmts[6] == pretty_sql(render_sql(*flow_sql("flow", every, sites=True)))


def test_doc_statements_on_chdb():
    pytest.importorskip("chdb")
    with tempfile.TemporaryDirectory() as d:
        wh = ChdbWarehouse(d, database="flow")
        try:
            check_doc(wh)
        finally:
            wh.close()


@pytest.mark.integration
def test_doc_statements_on_clickhouse_18_16(stack):
    wh = ServerWarehouse(load_settings().clickhouse, database=f"flow_doc_test_{secrets.token_hex(4)}", role="admin")
    try:
        check_doc(wh)
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")
        wh.close()
