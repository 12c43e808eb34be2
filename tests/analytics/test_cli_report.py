"""The analyst CLI end to end on a simulated site: `flowctl simulate run` lands a day in ClickHouse,
`flowctl report` writes the HTML, and the report prints exactly the numbers `flowctl flows`,
`od-matrix` and `transit` give for the same question. This is the path `flowctl demo` takes."""
from __future__ import annotations

import html
import json
from pathlib import Path
import os
import re
import secrets
import subprocess
import sys

import pytest

from pipeline.ops.local_grants import clickhouse_grants

from pipeline.analytics.report import format_number
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.sink.clickhouse import ServerWarehouse

pytestmark = pytest.mark.integration

PERIOD = ["--from", "2026-11-02", "--to", "2026-11-03"]


# An analyst's machine: no processor keys and so no secret parameter set; the CLI takes the
# newest version registered in the warehouse (here the simulator's).
ANALYST_KEYS = f"/tmp/flowpipe-analyst-keys-{secrets.token_hex(4)}"
TRUTH = f"/tmp/flowpipe-cli-truth-{secrets.token_hex(4)}.json"


def flowctl(*args: str, db: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", FLOW_KEYS__DIR=ANALYST_KEYS)
    if db:
        env["FLOW_CLICKHOUSE__DATABASE"] = db
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def simdb(stack):
    db = f"flow_cli_test_{secrets.token_hex(4)}"
    r = flowctl("simulate", "run", "small", "--database", db, "--replace", "--truth", TRUTH)
    assert r.returncode == 0, r.stderr + r.stdout
    with clickhouse_grants(db):   # the analysis commands run as the read-only analyst
        yield db
    ServerWarehouse(load_settings().clickhouse, database=db, role="admin").execute(f"DROP DATABASE IF EXISTS {db}")


def _report_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    rows = {}
    for m in re.finditer(r'<tr data-origin="([^"]+)" data-destination="([^"]+)">(.*?)</tr>', text, re.S):
        cells = dict(re.findall(r'<td class="([a-z-]+)">([^<]*)</td>', m.group(3)))
        rows[html.unescape(m.group(1)), html.unescape(m.group(2))] = cells
    return rows


def test_report_numbers_match_the_cli(simdb, tmp_path):
    out = tmp_path / "report.html"
    r = flowctl("report", *PERIOD, "--out", str(out), db=simdb)
    assert r.returncode == 0, r.stderr + r.stdout
    text = out.read_text()
    assert text.count('<img src="data:image/png;base64,') >= 4
    table = _report_rows(text)
    r = flowctl("flows", *PERIOD, "--json", db=simdb)
    assert r.returncode == 0, r.stderr
    flows = json.loads(r.stdout)
    assert len(flows) == 12 and len(table) == 12  # 4 cameras, every ordered pair
    for f in flows:
        cells = table[f["origin"], f["destination"]]
        assert cells["flow"] == format_number(f["flow"])
        assert cells["se"] == format_number(f["se"])
        assert cells["ci-low"] == format_number(f["ci95"][0])
    # The simulated door -> shop route is a real flow: the estimate is within 3.5 SE of the
    # simulator's truth (the world has two hours, too few for a significance check to be stable:
    # the far-band extrapolation at p = 0.5 gives z of 1.7-3.7 over runs), and the truth is large.
    door_shop = next(f for f in flows if f["origin"] == "north/n-door" and f["destination"] == "north/n-shop")
    truth = json.loads(Path(TRUTH).read_text())
    true_ds = sum(t["pairs"] for t in truth["flows"] if (t["from"], t["to"]) == ("n-door", "n-shop"))
    assert true_ds >= 100, true_ds   # a real route of the world (~200-400 pairs in two hours)
    # truth is ~3 SE: an estimator that finds nothing would fail either the first or the second
    assert door_shop["flow"] > 0 and abs(door_shop["flow"] - true_ds) < 3.5 * door_shop["se"], (door_shop, true_ds)


def test_od_matrix_and_transit_agree_with_flows(simdb):
    flows = {(f["origin"], f["destination"]): f for f in json.loads(flowctl("flows", *PERIOD, "--json", db=simdb).stdout)}
    od = json.loads(flowctl("od-matrix", *PERIOD, "--json", db=simdb).stdout)
    assert {(f["origin"], f["destination"]): f["flow"] for f in od} == {k: v["flow"] for k, v in flows.items()}
    r = flowctl("transit", *PERIOD, "--origin", "north/n-door", "--destination", "north/n-shop", "--json", db=simdb)
    lags = json.loads(r.stdout)
    assert [x["lag"] for x in lags] == list(range(31))
    # the per-lag flows add up to the pair's flow up to the published noise (one draw per lag row,
    # another on the range row), which their SEs include
    total = flows["north/n-door", "north/n-shop"]
    spread = (sum(x["se"] ** 2 for x in lags) + total["se"] ** 2) ** 0.5
    assert abs(sum(x["flow"] for x in lags) - total["flow"]) < 3 * spread
    assert all(x["se_exact"] for x in lags) and total["se_exact"]


def test_site_level_rollup_and_bad_questions(simdb):
    sites = json.loads(flowctl("flows", *PERIOD, "--level", "site", "--json", db=simdb).stdout)
    assert {(f["origin"], f["destination"]) for f in sites} == {("north", "north"), ("north", "south"),
                                                               ("south", "north"), ("south", "south")}
    r = flowctl("flows", "--from", "2026-11-03", "--to", "2026-11-02", db=simdb)
    assert r.returncode != 0 and "is not after" in r.stderr
    r = flowctl("flows", *PERIOD, "--camera", "no-slash", "--camera", "north/n-door", db=simdb)
    assert r.returncode != 0 and "SITE/CAMERA" in r.stderr
    r = flowctl("flows", *PERIOD, "--params-version", "pp-unknown", db=simdb)
    assert r.returncode != 0 and "flowctl params register" in r.stderr


def test_layout_load_rolls_flows_up_to_zones(simdb, tmp_path):
    layout = tmp_path / "layout.yaml"
    layout.write_text("sites:\n"
                      "  - site_id: north\n    cameras:\n"
                      "      - {camera_id: n-door, zone: doors}\n      - {camera_id: n-shop, zone: shops}\n"
                      "  - site_id: south\n    cameras:\n"
                      "      - {camera_id: s-door, zone: doors}\n      - {camera_id: s-shop, zone: shops}\n")
    r = flowctl("layout", "load", str(layout), db=simdb)
    assert r.returncode == 0 and "loaded 4 cameras" in r.stdout, r.stderr
    cams = {(f["origin"], f["destination"]): f["flow"]
            for f in json.loads(flowctl("flows", *PERIOD, "--json", db=simdb).stdout)}
    zones = {(f["origin"], f["destination"]): f["flow"]
             for f in json.loads(flowctl("flows", *PERIOD, "--level", "zone", "--json", db=simdb).stdout)}
    assert zones["north/doors", "north/shops"] == pytest.approx(cams["north/n-door", "north/n-shop"])
    assert zones["north/doors", "south/doors"] == pytest.approx(cams["north/n-door", "south/s-door"])
    assert sum(zones.values()) == pytest.approx(sum(cams.values()))

    bad = tmp_path / "bad.yaml"
    bad.write_text("sites:\n  - site_id: north\n    cameras:\n      - {camera_id: n-door, floor: 2}\n")
    r = flowctl("layout", "load", str(bad), db=simdb)
    assert r.returncode == 1 and "floor" in r.stderr and "expected sites" in r.stderr


def test_flows_read_only_published_components(simdb):
    """`flowctl simulate` published components, not cells; `--show-sql` is the components'
    statement; a lag range beyond what the aggregator publishes is refused, not shortened."""
    wh = ServerWarehouse(load_settings().clickhouse, database=simdb, role="admin")
    assert int(wh.rows("SELECT count() FROM system.columns WHERE database = %(db)s AND name = 'group_id'",
                       {"db": simdb})[0][0]) == 0   # no table can hold a group cell (migration 0009)
    assert int(wh.rows(f"SELECT count() FROM {simdb}.flow_components")[0][0]) > 0
    r = flowctl("flows", *PERIOD, "--camera", "north/n-door", "--camera", "north/n-shop", "--show-sql", "--json",
                db=simdb)
    assert r.returncode == 0, r.stderr
    sql, _, body = r.stdout.partition(";\n")
    assert f"{simdb}.flow_components FINAL" in sql and "group_occurrences" not in sql
    by_sql = {(str(a), str(b)): float(f) for a, b, _s, _c, _k, _p, f, *_ in wh.rows(sql)}
    assert by_sql == pytest.approx({(f["origin"], f["destination"]): f["flow"] for f in json.loads(body)}, rel=1e-9)
    r = flowctl("flows", *PERIOD, "--max-lag", "45", db=simdb)
    assert r.returncode != 0 and "publishes lags 0 to 30" in r.stderr


def test_demographics_and_crossings_read_the_noised_camera_hour_cells(simdb):
    """`flowctl demographics` / `crossings` sum the published components (FINAL), with the summed
    noise variance and its interval; `--show-sql` prints the statement they ran."""
    from pipeline.aggregator.counts import CountCell, CountsSpec, publish_hourly_counts
    from pipeline.simulator.publish import write_count_components

    wh = ServerWarehouse(load_settings().clickhouse, database=simdb, role="admin")
    version = str(wh.rows(f"SELECT any(params_version) FROM {simdb}.demographic_components")[0][0])
    want = {(str(a), str(g)): (int(n), int(v) / 1000) for a, g, n, v in wh.rows(
        f"SELECT age_band, gender, sum(persons), sum(noise_var_milli) FROM {simdb}.demographic_components FINAL "
        f"GROUP BY age_band, gender")}
    r = flowctl("demographics", *PERIOD, "--by", "total", "--json", db=simdb)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert {(x["age_band"], x["gender"]): x["persons"] for x in got} == {k: n for k, (n, _) in want.items()}
    for x in got:
        assert x["noise_var"] == pytest.approx(want[x["age_band"], x["gender"]][1])
        half = 1.959963984540054 * x["noise_var"] ** 0.5
        assert x["ci95"] == pytest.approx([x["persons"] - half, x["persons"] + half])
    assert len(got) == 24   # every (age band, gender) cell is published, zeros included
    r = flowctl("demographics", *PERIOD, "--camera", "north/n-door", "--show-sql", db=simdb)
    assert r.returncode == 0, r.stderr
    assert f"{simdb}.demographic_components FINAL" in r.stdout and "north/n-door" in r.stdout
    assert "n-shop" not in r.stdout.partition(";\n")[2]

    # crossings: the simulator publishes none; land two hours of a door line's cells
    t0 = int(wh.rows(f"SELECT toUInt32(min(hour)) FROM {simdb}.demographic_components")[0][0]) * 1000
    cells = [CountCell(version, "north", "n-door", t0 + m * 60_000, 60, ("door", d), n)
             for m in range(0, 120, 5) for d, n in (("in", 3), ("out", 1))]
    rows = publish_hourly_counts(cells, CountsSpec("crossings", per_person_day=16), noise_key=b"cli-test-key" * 3)
    write_count_components(wh, rows)
    r = flowctl("crossings", *PERIOD, "--by", "hour", "--json", db=simdb)
    assert r.returncode == 0, r.stderr
    got = {(x["key"], x["line"], x["direction"]): x["crossings"] for x in json.loads(r.stdout)}
    assert len(got) == len(rows) == 4
    assert sum(got.values()) == sum(x.count for x in rows)
    r = flowctl("crossings", *PERIOD, "--site", "south", "--json", db=simdb)
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = flowctl("crossings", *PERIOD, db=simdb)
    assert r.returncode == 0 and "door" in r.stdout and "95% CI" in r.stdout


def test_rollups_build_answers_site_and_chain_questions_with_the_same_numbers(simdb):
    """`flowctl rollups build` (as the sink role) sums the day into site pair-hours; the site and
    chain levels then read them and give the numbers they gave from the camera rows."""
    def ask(*extra: str) -> dict:
        r = flowctl(*extra, *PERIOD, "--json", db=simdb)
        assert r.returncode == 0, r.stderr
        return {(f["origin"], f["destination"], f.get("lag")): (f["flow"], f["se"]) for f in json.loads(r.stdout)}

    before = {lv: ask("flows", "--level", lv) for lv in ("site", "chain")}
    transit = ask("transit", "--level", "site", "--origin", "north", "--destination", "south")
    assert [k[2] for k in transit] == list(range(31)) and set(before["chain"]) == {("chain", "chain", None)}

    r = flowctl("rollups", "build", "--from", "2026-11-02", "--to", "2099-01-01", db=simdb)
    assert r.returncode != 0 and "last closed day" in r.stderr
    r = flowctl("rollups", "build", "--from", "2026-11-02", "--to", "2026-11-03", "--max-lag", "10", db=simdb)
    assert r.returncode != 0 and "no SE range [0, 10]" in r.stderr
    r = flowctl("rollups", "build", "--from", "2026-11-02", "--to", "2026-11-03", db=simdb)
    assert r.returncode == 0 and "built 1 day(s)" in r.stdout and "for 2 site(s)" in r.stdout, r.stderr + r.stdout
    wh = ServerWarehouse(load_settings().clickhouse, database=simdb, role="admin")
    assert int(wh.rows(f"SELECT count() FROM {simdb}.flow_rollup_days WHERE day = '2026-11-02'")[0][0]) == 2
    # nothing further is closed and unbuilt before the simulated day's end... the default resumes after it
    r = flowctl("rollups", "build", "--to", "2026-11-03", db=simdb)
    assert r.returncode == 0 and "nothing to build" in r.stdout, r.stderr + r.stdout

    for lv in ("site", "chain"):
        after = ask("flows", "--level", lv)
        assert after.keys() == before[lv].keys()
        for k, (flow, se) in before[lv].items():
            assert after[k] == pytest.approx((flow, se), rel=1e-6)
    after = ask("transit", "--level", "site", "--origin", "north", "--destination", "south")
    assert after.keys() == transit.keys()
    for k, v in transit.items():
        assert after[k] == pytest.approx(v, rel=1e-6)
