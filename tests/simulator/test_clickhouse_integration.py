"""The small scenario lands in a throwaway ClickHouse database with exact per-camera totals."""

import uuid

import numpy as np
import pytest

from pipeline.privacy import PrivacyParams
from pipeline.settings import load_settings
from pipeline.simulator import simulate
from pipeline.simulator.publish import SimulatorError, prepare_database, write_clickhouse
from pipeline.simulator.scenario import load_scenario

pytestmark = pytest.mark.integration

OCC_COLUMNS = {"site_id", "camera_id", "window_start", "window_seconds", "group_id", "occurrences",
               "params_version", "kafka_partition", "kafka_offset", "ingested_at"}
DEM_COLUMNS = {"site_id", "camera_id", "window_start", "window_seconds", "age_band", "gender", "persons",
               "params_version", "kafka_partition", "kafka_offset", "ingested_at"}


@pytest.fixture(scope="module")
def sim_db(stack):
    s = load_settings()
    name = f"flow_sim_test_{uuid.uuid4().hex[:8]}"
    wh, first = prepare_database(s, name)
    yield s, wh, first
    wh.execute(f"DROP DATABASE IF EXISTS {name}")
    wh.close()


def test_small_scenario_lands_with_exact_totals_and_nothing_person_level(sim_db):
    s, wh, first = sim_db
    db = wh.database
    params = PrivacyParams.default().with_changes(fictitious_floor=1, fictitious_ratio=0.2, n_groups=100)
    pub, truth = simulate(load_scenario("small"), params, np.random.default_rng(21))
    written = write_clickhouse(pub, wh, first_offsets=first, batch_rows=5000)
    assert written == {"group_occurrences": pub.occurrence_rows, "demographic_counts": pub.demographic_rows}

    totals = dict(wh.rows(f"SELECT camera_id, sum(occurrences) FROM {db}.group_occurrences GROUP BY camera_id"))
    caps = truth.captures_per_camera()
    for i, cam in enumerate(pub.camera_ids):
        assert int(totals[cam]) == caps[cam] + int(pub.fictitious_per_camera[i])
    assert sum(int(v) for v in totals.values()) == truth.captures + pub.fictitious_added

    # offsets: partition 0, unique and running
    n, n_off, lo, hi, parts = wh.rows(f"SELECT count(), uniqExact(kafka_offset), min(kafka_offset), "
                                      f"max(kafka_offset), groupUniqArray(kafka_partition) FROM {db}.group_occurrences")[0]
    assert n == n_off == pub.occurrence_rows and lo == 0 and hi == n - 1 and list(parts) == [0]
    # windows are aligned and in the scenario's day
    bad = wh.rows(f"SELECT count() FROM {db}.group_occurrences WHERE toUnixTimestamp(window_start) % 60 != 0 "
                  f"OR toDate(window_start) != toDate('2026-11-02')")[0][0]
    assert bad == 0
    dem = wh.rows(f"SELECT min(persons), sum(persons) FROM {db}.demographic_counts")[0]
    assert dem[0] >= params.demographic_min_count and dem[1] == int(pub.demographic_persons_per_camera.sum())

    # nothing person-level: only the aggregate columns of the schema exist
    for table, expected in (("group_occurrences", OCC_COLUMNS), ("demographic_counts", DEM_COLUMNS)):
        cols = {r[0] for r in wh.rows(f"SELECT name FROM system.columns WHERE database = %(d)s AND table = %(t)s",
                                      {"d": db, "t": table})}
        assert cols == expected
    assert wh.rows(f"SELECT groupUniqArray(params_version) FROM {db}.group_occurrences")[0][0] == [params.version]


def test_refuses_rewriting_a_filled_database_and_the_sinks(sim_db):
    s, wh, _ = sim_db
    with pytest.raises(SimulatorError, match="already holds"):
        prepare_database(s, wh.database)
    _, first = prepare_database(s, wh.database, append=True)
    assert first["group_occurrences"] > 0
    with pytest.raises(SimulatorError, match="refusing"):
        prepare_database(s, s.clickhouse.database)
