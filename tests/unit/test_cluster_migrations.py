"""The rewrite that applies the migration files to every replica of a cluster (the integration
test, tests/integration/test_clickhouse_cluster.py, applies them to two real replicas)."""
import pytest

from pipeline.sink.migrations import MigrationError, discover, on_cluster


def test_ddl_runs_on_the_cluster_and_merge_trees_become_replicated_with_their_arguments():
    stmt = ("CREATE TABLE IF NOT EXISTS d.t (a UInt8, v UInt64) ENGINE = SummingMergeTree((a, v)) "
            "PARTITION BY a ORDER BY a")
    assert on_cluster(stmt, "d", "flow") == (
        "CREATE TABLE IF NOT EXISTS d.t ON CLUSTER flow (a UInt8, v UInt64) ENGINE = "
        "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/d/t', '{replica}', (a, v)) PARTITION BY a ORDER BY a")
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/u', '{replica}') ORDER BY a" in on_cluster(
        "CREATE TABLE IF NOT EXISTS d.u (a UInt8) ENGINE = ReplacingMergeTree() ORDER BY a", "d", "flow")
    assert on_cluster("ALTER TABLE d.t MODIFY COLUMN v Int64", "d", "c") == "ALTER TABLE d.t ON CLUSTER c MODIFY COLUMN v Int64"
    assert on_cluster("DROP TABLE IF EXISTS d.t", "d", "c") == "DROP TABLE IF EXISTS d.t ON CLUSTER c"
    assert on_cluster("CREATE VIEW IF NOT EXISTS d.v AS SELECT 1", "d", "c") == \
        "CREATE VIEW IF NOT EXISTS d.v ON CLUSTER c AS SELECT 1"


def test_data_statements_run_once_and_ddl_without_a_guard_is_refused():
    assert on_cluster("INSERT INTO d.t SELECT * FROM d.s", "d", "c") == "INSERT INTO d.t SELECT * FROM d.s"
    with pytest.raises(MigrationError, match="IF"):
        on_cluster("CREATE TABLE d.t (a UInt8) ENGINE = MergeTree() ORDER BY a", "d", "c")
    with pytest.raises(MigrationError, match="unbalanced"):
        on_cluster("CREATE TABLE IF NOT EXISTS d.t (a UInt8) ENGINE = MergeTree((a", "d", "c")


def test_every_shipped_migration_has_a_cluster_form_with_one_engine_per_stored_table():
    for m in discover():
        for stmt in m.statements("flow", "flow"):
            if stmt.upper().startswith(("CREATE", "DROP", "ALTER", "RENAME")):
                assert " ON CLUSTER flow" in stmt, stmt[:80]
            if "MergeTree" in stmt:
                assert stmt.count("Replicated") == stmt.count("MergeTree("), stmt[:120]


def test_a_rename_is_queued_for_every_replica():
    assert on_cluster("RENAME TABLE d.a TO d.b, d.c TO d.a", "d", "c") == "RENAME TABLE d.a TO d.b, d.c TO d.a ON CLUSTER c"
    with pytest.raises(MigrationError, match="IF"):
        on_cluster("RENAME DATABASE d TO e", "d", "c")
