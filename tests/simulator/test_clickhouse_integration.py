"""The small scenario's published tier lands in a throwaway ClickHouse database with exact
per-camera totals, and none of its restricted cells or exact per-window counts do."""

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.privacy import PrivacyParams
from pipeline.settings import load_settings
from pipeline.simulator import simulate
from pipeline.aggregator.estimate import component_sums, sum_rows
from pipeline.aggregator.model import FLOW_COMPONENT_COLUMNS, FOOTFALL_COMPONENT_COLUMNS
from pipeline.aggregator.counts import demographic_grid
from pipeline.simulator.publish import (SimulatorError, prepare_database, publish_components, publish_demographics,
                                        write_clickhouse, write_components)
from pipeline.simulator.scenario import load_scenario

pytestmark = pytest.mark.integration

FLOW_COLUMNS = set(FLOW_COMPONENT_COLUMNS)
FOOT_COLUMNS = set(FOOTFALL_COMPONENT_COLUMNS)
DEM_COLUMNS = {"params_version", "site_id", "camera_id", "hour", "age_band", "gender", "persons", "noise_var_milli",
               "version"}


@pytest.fixture(scope="module")
def sim_db(stack):
    s = load_settings()
    name = f"flow_sim_test_{uuid.uuid4().hex[:8]}"
    wh = prepare_database(s, name)
    yield s, wh
    wh.execute(f"DROP DATABASE IF EXISTS {name}")
    wh.close()


def test_small_scenario_publishes_components_with_exact_totals_and_no_cells(sim_db):
    s, wh = sim_db
    db = wh.database
    params = PrivacyParams.default().with_changes(fictitious_floor=1, fictitious_ratio=0.2, n_groups=100)
    pub, truth = simulate(load_scenario("small"), params, np.random.default_rng(21))
    flow, foot = publish_components(pub)
    key = b"sim-test-key" * 3
    dem = publish_demographics(pub, noise_key=key)
    written = write_clickhouse(pub, wh, noise_key=key, batch_rows=500)
    assert written == {"flow_components": len(flow), "footfall_components": len(foot),
                       "demographic_components": len(dem)}
    # the restricted per-window cells never land where analysts read: no table can hold one (0009)
    assert int(wh.rows("SELECT count() FROM system.columns WHERE database = %(db)s AND name = 'group_id'",
                       {"db": db})[0][0]) == 0

    totals = dict(wh.rows(f"SELECT camera_id, sum(occurrences) FROM {db}.footfall_components FINAL GROUP BY camera_id"))
    caps = truth.captures_per_camera()
    for i, cam in enumerate(pub.camera_ids):
        assert int(totals[cam]) == caps[cam] + int(pub.fictitious_per_camera[i])
    assert sum(int(v) for v in totals.values()) == truth.captures + pub.fictitious_added

    # the warehouse's summed components are the aggregator's rows; a rerun (--append) replaces them
    cams = [f"{pub.site_ids[pub.camera_site[i]]}/{c}" for i, c in enumerate(pub.camera_ids)]
    t0 = datetime.fromtimestamp(pub.start_epoch, timezone.utc)
    in_wh = component_sums(wh, params.version, cams, t0, t0 + timedelta(days=1))
    assert in_wh == sum_rows(flow) and len(in_wh) == len(cams) * (len(cams) - 1)
    write_components(wh, flow, foot)
    assert component_sums(wh, params.version, cams, t0, t0 + timedelta(days=1)) == in_wh

    # demographics: every grid cell of every camera-hour, the demographics stage's noised rows
    n, persons, nv = wh.rows(f"SELECT count(), sum(persons), sum(noise_var_milli) "
                             f"FROM {db}.demographic_components FINAL")[0]
    hours = {r.hour_ms for r in dem}
    assert n == len(dem) == len(pub.camera_ids) * len(hours) * len(demographic_grid())
    assert persons == sum(r.count for r in dem) and nv == sum(r.noise_var_milli for r in dem) > 0
    # published hours are whole hours of the scenario's day
    for table in ("flow_components", "footfall_components", "demographic_components"):
        bad = wh.rows(f"SELECT count() FROM {db}.{table} WHERE toUnixTimestamp(hour) % 3600 != 0 "
                      f"OR toDate(hour) != toDate('2026-11-02')")[0][0]
        assert bad == 0
    # nothing per window and no exact per-window counts: the landing tables are gone (0010)
    tables = {r[0] for r in wh.rows("SELECT name FROM system.tables WHERE database = %(db)s", {"db": db})}
    assert not tables & {"demographic_counts", "demographics_hourly", "line_crossings"}

    # nothing person-level, nothing per group or window in the published tables
    for table, expected in (("flow_components", FLOW_COLUMNS), ("footfall_components", FOOT_COLUMNS),
                            ("demographic_components", DEM_COLUMNS)):
        cols = {r[0] for r in wh.rows(f"SELECT name FROM system.columns WHERE database = %(d)s AND table = %(t)s",
                                      {"d": db, "t": table})}
        assert cols == expected and "group_id" not in cols
    assert "window_start" not in FLOW_COLUMNS | FOOT_COLUMNS
    for table in ("flow_components", "footfall_components", "demographic_components"):
        assert wh.rows(f"SELECT groupUniqArray(params_version) FROM {db}.{table}")[0][0] == [params.version]


def test_refuses_rewriting_a_filled_database_and_the_sinks(sim_db):
    s, wh = sim_db
    with pytest.raises(SimulatorError, match="already holds"):
        prepare_database(s, wh.database)
    prepare_database(s, wh.database, append=True).close()
    with pytest.raises(SimulatorError, match="refusing"):
        prepare_database(s, s.clickhouse.database)
