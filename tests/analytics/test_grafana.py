"""The analytics dashboard runs the estimator's SQL on the published tier, and its panels run on
ClickHouse 18.16 with the CLI's figures."""
from __future__ import annotations

import json
import re
import secrets
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.analytics.dimensions import register_params
from pipeline.analytics.flows import CameraRef, FlowQuery, estimate_flows
from pipeline.analytics.queries import demographics_hourly, footfall_hourly
from pipeline.analytics.grafana import DASHBOARD, FLOW_PANEL_TITLE, flow_panel_sql, flow_panel_target
from pipeline.privacy import PrivacyParams
from pipeline.settings import load_settings
from pipeline.simulator import load_scenario, simulate
from pipeline.simulator.publish import prepare_database, write_clickhouse

START = datetime(2026, 11, 2, tzinfo=timezone.utc)


def test_flow_panel_is_the_current_estimator():
    target = flow_panel_target(json.loads(DASHBOARD.read_text()))
    assert target["rawSql"] == flow_panel_sql(), "regenerate with `python -m pipeline.analytics.grafana`"


def test_the_dashboard_reads_only_the_published_tier():
    text = DASHBOARD.read_text()
    for gone in ("group_occurrences", "occurrences_by_window", "camera_window_totals", "footfall_hourly",
                 "demographics_hourly", "demographic_counts", "line_crossings"):
        assert gone not in text
    assert "flow_components FINAL" in text and "footfall_components FINAL" in text
    assert "demographic_components FINAL" in text


def _fill(sql: str, db: str, values: dict[str, str]) -> str:
    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m.group(1)} >= toDateTime({int(START.timestamp())}) AND "
                 f"{m.group(1)} < toDateTime({int((START + timedelta(days=1)).timestamp())})", sql)
    for name, v in values.items():
        sql = sql.replace("${" + name + "}", v)
    assert "$" not in sql, sql
    return sql.replace("flow.", f"{db}.")


@pytest.mark.integration
def test_every_panel_and_variable_query_runs_and_the_flow_panel_matches_the_cli():
    settings = load_settings()
    db = f"flow_grafana_test_{secrets.token_hex(4)}"
    wh = prepare_database(settings, db)
    try:
        params = PrivacyParams.default()
        pub = simulate(load_scenario("small"), params, np.random.default_rng(3)).published
        written = write_clickhouse(pub, wh)
        assert written["demographic_components"] > 0
        register_params(wh, params)
        values = {"version": params.version, "site:singlequote": "'north', 'south'", "origin": "north/n-door",
                  "destination": "north/n-shop", "window_seconds": "60", "min_lag": "0", "max_lag": "30",
                  "__from": str(int(START.timestamp()) * 1000),
                  "__to": str(int((START + timedelta(days=1)).timestamp()) * 1000)}
        d = json.loads(DASHBOARD.read_text())
        for var in d["templating"]["list"]:
            if var.get("type") == "query":
                assert wh.rows(_fill(var["query"], db, values)), var["name"]
        results = {}
        for panel in d["panels"]:
            for t in panel.get("targets", []):
                results[panel["title"]] = wh.rows(_fill(t["rawSql"], db, values))
                assert results[panel["title"]], panel["title"]
        panel = {(r[0], r[1]): r for r in results[FLOW_PANEL_TITLE]}
        q = FlowQuery(params.version, (CameraRef("north", "n-door"), CameraRef("north", "n-shop")), START,
                      START + timedelta(days=1))
        est = estimate_flows(wh, q)
        assert len(est) == 2
        for e in est:
            row = panel[e.origin, e.destination]
            assert row[2] == pytest.approx(round(e.flow, 1), abs=0.051)
            assert row[3] == pytest.approx(round(e.se, 1), abs=0.051)
        footfall = {(int(t.timestamp()) if hasattr(t, "timestamp") else int(t), cam): v
                    for t, cam, v in results["Estimated footfall per camera and hour"]}
        want = footfall_hourly(wh, params.version, START, START + timedelta(days=1), ("north", "south"))
        assert len(footfall) == len(want) > 0
        for r in want:
            assert footfall[int(r.hour.timestamp()), r.camera] == pytest.approx(r.estimated_persons)
        # the demographic panels sum the published cells the CLI and report read
        dm = demographics_hourly(wh, params.version, START, START + timedelta(days=1), ("north", "south"))
        for title, attr in (("Persons by hour and age band", "age_band"), ("Persons by hour and gender", "gender")):
            want_dm: dict = {}
            for r in dm:
                k = (int(r.hour.timestamp()), getattr(r, attr))
                want_dm[k] = want_dm.get(k, 0) + r.persons
            got = {(int(t.timestamp()) if hasattr(t, "timestamp") else int(t), str(a)): int(n)
                   for t, a, n in results[title]}
            assert got == want_dm and sum(got.values()) > 0
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {db}")
