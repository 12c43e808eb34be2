"""The same migrations on the Debian ClickHouse 18.16 server and on a current engine (chdb)."""
import uuid

import pytest

from pipeline.sink.clickhouse import ChdbWarehouse, ServerWarehouse
from pipeline.sink.migrations import MIGRATIONS_DIR, MigrationError, discover, migrate
from pipeline.settings import load_settings

pytestmark = pytest.mark.integration

TABLES = {"deletion_receipts", "schema_migrations", "flow_components", "footfall_components",
          "deletion_latency", "demographic_components", "crossing_components"}
# Per-window demographic and crossing counts (0001, 0004, 0006): exact counts of a few people,
# replaced by protected camera-hour cells in 0010.
UNPROTECTED_COUNTS = {"demographic_counts", "demographics_hourly", "demographics_hourly_mv", "line_crossings"}
# Per-window group cells and everything built on them (0001, 0002, 0004): restricted data, which
# migration 0009 drops and no later migration may bring back (issue 11).
RESTRICTED = {"group_occurrences", "occurrences_by_window", "occurrences_by_window_mv", "camera_window_totals",
              "camera_window_totals_mv", "camera_hourly_occurrences", "footfall_hourly"}


@pytest.fixture(params=["server-18.16", "chdb-current"])
def warehouse(request, stack, tmp_path):
    db = f"mig_{uuid.uuid4().hex[:8]}"
    if request.param == "server-18.16":
        wh = ServerWarehouse(load_settings().clickhouse, database=db, role="admin")
        assert wh.server_version().startswith("18.16")
    else:
        wh = ChdbWarehouse(str(tmp_path / "chdb"), db)
        assert int(wh.server_version().split(".")[0]) >= 24
    yield wh
    wh.execute(f"DROP DATABASE IF EXISTS {db}")


def migrate_before(warehouse, tmp_path, version: int) -> None:
    """Migrate ``warehouse`` as a deployment that stopped before migration ``version``."""
    old = tmp_path / f"before-{version:04d}"
    old.mkdir()
    for p in MIGRATIONS_DIR.glob("*.sql"):
        if int(p.name[:4]) < version:
            (old / p.name).write_text(p.read_text())
    migrate(warehouse, old)


def test_migrations_apply_once_and_record_themselves(warehouse):
    names = [f"{m.version:04d}_{m.name}" for m in discover()]
    assert migrate(warehouse) == names
    assert migrate(warehouse) == []
    tables = {r[0] for r in warehouse.rows(f"SHOW TABLES FROM {warehouse.database}")}
    assert TABLES <= tables
    assert not tables & RESTRICTED
    recorded = warehouse.rows(f"SELECT version, name FROM {warehouse.database}.schema_migrations ORDER BY version")
    assert [f"{int(v):04d}_{n}" for v, n in recorded] == names


def test_edited_migration_is_refused(warehouse, tmp_path):
    d = tmp_path / "mig"
    d.mkdir()
    for p in MIGRATIONS_DIR.glob("*.sql"):
        (d / p.name).write_text(p.read_text())
    migrate(warehouse, d)
    first = sorted(d.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(warehouse, d)


def test_restricted_cells_of_an_older_deployment_are_dropped(warehouse, tmp_path):
    """A warehouse migrated before 0009, whose group_occurrences (and the tables its materialised
    views fed) still hold cells: 0009 drops all of it, on both engines; 0010 then drops the
    unprotected per-window demographic and crossing counts and creates their protected tables."""
    from datetime import datetime, timezone

    migrate_before(warehouse, tmp_path, 9)
    db = warehouse.database
    ts = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    cols = ["site_id", "camera_id", "window_start", "window_seconds", "group_id", "occurrences", "params_version",
            "kafka_partition", "kafka_offset"]
    data = [["s", "s", "s"], ["a", "a", "b"], [ts, ts, ts], [60, 60, 60], [1, 2, 1], [2, 3, 4], ["v", "v", "v"],
            [0, 0, 0], [1, 2, 3]]
    if isinstance(warehouse, ChdbWarehouse):
        data[2] = [ts.strftime("%Y-%m-%d %H:%M:%S")] * 3
    warehouse.insert("group_occurrences", cols, data)
    assert int(warehouse.rows(f"SELECT sum(occurrences) FROM {db}.occurrences_by_window")[0][0]) == 9
    assert RESTRICTED <= {r[0] for r in warehouse.rows(f"SHOW TABLES FROM {db}")}

    assert UNPROTECTED_COUNTS <= {r[0] for r in warehouse.rows(f"SHOW TABLES FROM {db}")}
    assert migrate(warehouse)[:2] == ["0009_drop_restricted_tables", "0010_protected_counts"]
    tables = {r[0] for r in warehouse.rows(f"SHOW TABLES FROM {db}")}
    assert not tables & RESTRICTED and not tables & UNPROTECTED_COUNTS
    assert warehouse.rows(f"SELECT table FROM system.columns WHERE database = '{db}' AND name = 'group_id'") == []
    assert {"demographic_components", "crossing_components", "footfall_components"} <= tables


def test_queries_agree_on_both_engines(warehouse):
    from datetime import datetime, timezone

    from pipeline.aggregator.model import FootfallComponent
    from pipeline.analytics.counts import camera_counts
    from pipeline.simulator.publish import write_components

    migrate(warehouse)
    ts = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    # analysts' counts come from the published footfall; a replayed camera-hour counts once (FINAL)
    h = int(ts.timestamp()) * 1000
    foot = [FootfallComponent("v", 60, h, "s", "a", 5, 1, 1), FootfallComponent("v", 60, h, "s", "b", 4, 1, 1),
            FootfallComponent("v", 60, h + 3_600_000, "s", "b", 6, 2, 1)]
    write_components(warehouse, [], foot)
    write_components(warehouse, [], foot[:1])
    assert camera_counts(warehouse) == [("s", "a", 1, 5), ("s", "b", 3, 10)]
    assert camera_counts(warehouse, since=datetime(2026, 1, 1, 11, 30, tzinfo=timezone.utc)) == [("s", "b", 2, 6)]
    assert camera_counts(warehouse, site_id="x") == []


# No group_id (nor group_rows, a count of group cells): per-window group cells are restricted data
# and no table of the warehouse may hold them (0009; `flowctl audit ages` checks live warehouses).
ALLOWED_COLUMNS = {
    "site_id", "camera_id", "window_start", "window_seconds", "occurrences", "params_version",
    "kafka_partition", "kafka_offset", "ingested_at", "age_band", "gender", "persons", "frame_id", "captured_at",
    "captured_at_ms", "deleted_at_ms", "latency_ms", "outcome", "deleted_by", "version", "name", "checksum",
    "applied_at", "hour", "windows", "expires_at_ms", "frames", "p50_ms", "p95_ms", "p99_ms", "max_ms", "swept",
    # flow analytics (0004): aggregates, the camera layout and the public privacy figures
    "estimated_persons", "zone", "store", "loaded_at", "n_groups", "same_group_rate",
    "fictitious_floor", "fictitious_ratio", "fictitious_per_group", "fictitious_variance_per_group", "registered_at",
    # published tier (0005): flow components per camera pair, lag and hour; integers only
    "origin_site", "origin_camera", "dest_site", "dest_camera", "kind", "lag_lo", "lag_hi", "s", "nn", "qq", "qn",
    "nn2_hi", "nn2_lo",
    # line crossings (0006): counts per camera line, direction and window
    "line", "direction", "crossings",
    # published-tier noise (0007): the variance of the noise a row carries, in thousandths
    "noise_var_milli",
    # site roll-ups (0011): sums of published flow rows per site pair and hour, the far bands'
    # sums and noise, counts of camera pairs, the design effect's residual sums (integers), and
    # which (origin site, day) a build covered
    "exact", "s_far_in", "nn_far_in", "noise_var_far_in_milli", "s_far_out", "nn_far_out", "noise_var_far_out_milli",
    "pairs_active", "pairs_seen", "resid_micro", "resid_sq_micro", "day", "camera_pair_hours", "built_at",
}
# Stored floats could hold an embedding; only the parameter-set figures (one row per version) are floats.
FLOAT_TABLES = {"privacy_params"}


def test_warehouse_has_no_column_that_could_hold_personal_data(warehouse):
    """Privacy by schema: every column is on an allow-list of aggregate/frame-level fields, and no
    column can hold a vector (embedding), a blob or a per-person time."""
    migrate(warehouse)
    db = warehouse.database
    cols = warehouse.rows(f"SELECT table, name, type FROM system.columns WHERE database = '{db}'")
    views = {r[0] for r in warehouse.rows(f"SELECT name FROM system.tables WHERE database = '{db}' AND engine = 'View'")}
    assert cols and views
    for table, name, typ in cols:
        assert name in ALLOWED_COLUMNS, f"{table}.{name} is not on the privacy allow-list"
        assert "Array" not in typ, f"{table}.{name} has type {typ}"
        if table not in views and table not in FLOAT_TABLES:  # stored data: integers, strings and times only
            assert "Float" not in typ, f"{table}.{name} has type {typ}"


def test_flow_components_keep_every_row_when_sorted_by_day_first(warehouse, tmp_path):
    """0012 copies flow_components into a table sorted by day ahead of the camera pair and gives it
    the old name: every row and value survives, the key leads with the day, and a second run of
    the same statements (a migration stopped part-way) leaves the same rows, not twice as many."""
    from datetime import datetime

    migrate_before(warehouse, tmp_path, 12)
    db = warehouse.database
    cols = ["params_version", "window_seconds", "hour", "origin_site", "origin_camera", "dest_site", "dest_camera",
            "kind", "lag_lo", "lag_hi", "s", "nn", "qq", "qn", "nn2_hi", "nn2_lo", "version", "noise_var_milli"]
    hours = [datetime(2026, 1, 5, 10), datetime(2026, 1, 6, 11), datetime(2026, 2, 1, 9)] * 3
    if isinstance(warehouse, ChdbWarehouse):
        hours = [h.strftime("%Y-%m-%d %H:%M:%S") for h in hours]
    n = range(len(hours))
    warehouse.insert("flow_components", cols, [
        ["v"] * 9, [60] * 9, hours, ["s1"] * 9, [f"c{i % 2}" for i in n], ["s1"] * 9, [f"c{(i + 1) % 2}" for i in n],
        ["lag"] * 9, list(n), list(n), [i - 2 for i in n], [10 + i for i in n], [-i for i in n], list(n), [0] * 9,
        [i * i for i in n], [1] * 9, [7 * i for i in n]])
    def snapshot():
        return sorted(tuple(str(v) for v in r) for r in warehouse.rows(
            f"SELECT {', '.join(cols)} FROM {db}.flow_components ORDER BY hour, lag_lo"))
    rows = snapshot()
    assert len(rows) == 9
    assert migrate(warehouse) == ["0012_flow_components_by_day"]
    assert snapshot() == rows
    key = warehouse.rows(f"SELECT sorting_key FROM system.tables WHERE database = '{db}' AND name = 'flow_components'")
    assert str(key[0][0]).replace(" ", "").startswith("params_version,window_seconds,toDate(hour),origin_site")
    (m,) = [m for m in discover() if m.version == 12]
    for stmt in m.statements(db):
        warehouse.execute(stmt)
    assert snapshot() == rows
    tables = {r[0] for r in warehouse.rows(f"SHOW TABLES FROM {db}")}
    assert "flow_components_by_day" not in tables and "flow_components_by_pair" not in tables
