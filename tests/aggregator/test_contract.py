"""The aggregator's data contract: Avro records, the published tables, and its settings."""
from __future__ import annotations

import json

import pytest

from pipeline import serde
from pipeline.aggregator.model import (FLOW_COMPONENT_COLUMNS, FOOTFALL_COMPONENT_COLUMNS, AggregatorSpec,
                                       FlowComponent, FootfallComponent, Partial)
from pipeline.serde import SCHEMA_DIR
from pipeline.settings import ConfigError, load_settings
from pipeline.sink.clickhouse import ChdbWarehouse
from pipeline.sink.migrations import migrate

HOUR = 1_793_610_000_000


@pytest.mark.parametrize("name,row", [
    ("AggregatorPartial", Partial("COOCCURRENCE", "w60;L2", 3, 4, "v", HOUR, "s", "a", "t", "b", 0, 0, (5, 0, 1, 7))),
    ("AggregatorPartial", Partial("WINDOW", "w60;L2", 0, 4, "v", HOUR + 60_000, "s", "a", occurrences=9, squares=11)),
    ("FlowComponent", FlowComponent("v", 60, HOUR, "s", "a", "t", "b", "range", 0, 30, 12, 34, 56, 78, (5 << 70) + 9, 2)),
    ("FootfallComponent", FootfallComponent("v", 60, HOUR, "s", "a", 123, 60, 2)),
])
def test_records_round_trip_through_the_projects_serde(name, row):
    assert type(row).from_record(serde.decode(name, serde.encode(name, row.to_record()))) == row


def test_no_record_or_table_has_a_group_or_a_float():
    """Nothing the aggregator writes can carry a group id, a per-person value or a float."""
    for name in ("AggregatorPartial", "FlowComponent", "FootfallComponent"):
        doc = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
        for f in doc["fields"]:
            assert "group" not in f["name"]
            assert "float" not in json.dumps(f["type"]) and "double" not in json.dumps(f["type"])


def test_published_tables_migrate_on_the_current_engine_with_integer_columns_only(tmp_path):
    wh = ChdbWarehouse(str(tmp_path / "chdb"), "flow")
    migrate(wh)
    cols = {(t, n): ty for t, n, ty in wh.rows(
        "SELECT table, name, type FROM system.columns WHERE database = 'flow' "
        "AND table IN ('flow_components', 'footfall_components')")}
    assert [n for (t, n) in cols if t == "flow_components"] == list(FLOW_COMPONENT_COLUMNS)
    assert [n for (t, n) in cols if t == "footfall_components"] == [
        "params_version", "window_seconds", "site_id", "camera_id", "hour", "occurrences", "windows", "version",
        "noise_var_milli"]
    assert set(FOOTFALL_COMPONENT_COLUMNS) == {n for (t, n) in cols if t == "footfall_components"}
    for (t, n), ty in cols.items():
        assert "Float" not in ty and "Array" not in ty, (t, n, ty)
    engines = dict(wh.rows("SELECT name, engine FROM system.tables WHERE database = 'flow' "
                           "AND name IN ('flow_components', 'footfall_components')"))
    assert set(engines.values()) == {"ReplacingMergeTree"}


def test_settings_describe_a_valid_spec_and_refuse_an_unbounded_one(monkeypatch):
    s = load_settings()
    # The defaults, plus the published tier's noise: footfall scale = 2 x passes bound / epsilon.
    assert s.aggregator.spec() == AggregatorSpec(flow_noise_scale=s.aggregator.flow_noise_scale,
                                                 footfall_noise_scale=2 * 8 / s.aggregator.footfall_epsilon,  # two values, each moves by the bound
                                                 total_noise_scale=s.aggregator.total_noise_scale)
    assert s.aggregator.spec().fingerprint() != AggregatorSpec().fingerprint()
    assert s.aggregator.window_seconds == s.processor.window_seconds
    monkeypatch.setenv("FLOW_AGGREGATOR__LATENESS_SECONDS", "1800")
    monkeypatch.setenv("FLOW_AGGREGATOR__FAR_LAG_MAX", "110")
    with pytest.raises(ConfigError, match="aggregator.*over the bound of 7200 s"):
        load_settings()
