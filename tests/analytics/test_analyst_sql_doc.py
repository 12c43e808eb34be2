"""Every SQL statement of docs/ANALYST_SQL.md runs on the published tier, on a current engine
(chdb) and on the Debian ClickHouse 18.16 server, and gives what the CLI's code gives.

The data use the doc's own names (database ``flow``, parameter set ``pp-2026.11-default``,
``site-a/entrance``, ``site-a/checkout``, 2026-03-02 09:00 to 17:00 UTC), plus a camera of a
second site for the roll-up; a flow entrance -> checkout is planted. Cells go through the
aggregator in-process (with published noise) and only its components reach the warehouse.
"""
from __future__ import annotations

import random
import re
import secrets
import tempfile
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.aggregator import AggregatorSpec, OccurrenceCell
from pipeline.aggregator.batch import aggregate_cells
from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import CameraRef, FlowQuery, estimate_flows
from pipeline.analytics.queries import footfall_hourly
from pipeline.privacy import PrivacyParams
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.simulator.publish import write_components
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


def _load(wh) -> PrivacyParams:
    params = PrivacyParams.default()
    assert params.version == "pp-2026.11-default"  # the doc's parameter set
    migrate(wh)
    register_params(wh, params)
    # with published noise, so the statements' noise terms are exercised too
    spec = AggregatorSpec(flow_noise_scale=5.0, footfall_noise_scale=2.0)
    write_components(wh, *aggregate_cells(_cells(params), spec, noise_key=b"doc-test-key" * 3))
    cols = ["site_id", "camera_id", "window_start", "window_seconds", "age_band", "gender", "persons",
            "params_version", "kafka_partition", "kafka_offset"]
    ts = [START + timedelta(minutes=15 * i) for i in range(4)]
    if isinstance(wh, ChdbWarehouse):
        ts = [int(t.timestamp()) for t in ts]
    wh.insert("demographic_counts", cols, [["site-a"] * 4, ["entrance"] * 4, ts, [900] * 4, ["25-34"] * 4,
                                           ["female"] * 4, [3, 4, 5, 6], [params.version] * 4, [0] * 4, [0, 1, 2, 3]])
    return params


def check_doc(wh) -> None:
    params = _load(wh)
    stmts = doc_statements()
    assert len(stmts) == 6
    results = []
    for sql in stmts:
        assert "group_occurrences" not in sql and "occurrences_by_window" not in sql and "footfall_hourly" not in sql
        results.append(wh.rows(sql.replace("flow.", f"{wh.database}."), {}))
        assert results[-1], sql
    footfall, raw, demo, _, pair, sites = results
    want = footfall_hourly(wh, params.version, START, END, ("site-a",))
    assert [(str(s), str(c), int(h), int(o), int(w)) for s, c, h, o, w, _ in footfall] == \
        [(r.site_id, r.camera_id, int(r.hour.timestamp()), r.occurrences, r.windows) for r in want]
    assert sum(int(r[2]) for r in raw) == sum(r.occurrences for r in footfall_hourly(wh, params.version, START, END))
    assert sum(int(r[-1]) for r in demo) == 18
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
    """The footfall and pair-flow statements are copies of what the code generates: regenerate
    them (see the doc) when the estimator changes."""
    from pipeline.analytics.flows import flow_sql, render_sql
    from pipeline.analytics.queries import footfall_sql
    from pipeline.analytics.report import pretty_sql

    q = FlowQuery("pp-2026.11-default", (CameraRef("site-a", "entrance"), CameraRef("site-a", "checkout")), START, END)
    stmts = [s.strip() for s in doc_statements()]
    assert stmts[0] == render_sql(*footfall_sql("flow", q.params_version, START, END, ("site-a",)))
    assert stmts[4] == pretty_sql(render_sql(*flow_sql("flow", q)))


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
    wh = ServerWarehouse(load_settings().clickhouse, database=f"flow_doc_test_{secrets.token_hex(4)}")
    try:
        check_doc(wh)
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")
        wh.close()
