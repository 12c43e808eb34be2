import pytest

from pipeline.settings import ConfigError, load_settings


def test_defaults_target_loopback():
    s = load_settings()
    assert s.kafka.bootstrap.startswith("127.0.0.1") and s.clickhouse.host == "127.0.0.1"


def test_env_overrides_and_unknown_keys(monkeypatch):
    monkeypatch.setenv("FLOW_PROCESSOR__WINDOW_SECONDS", "30")
    assert load_settings().processor.window_seconds == 30
    monkeypatch.setenv("FLOW_PROCESSOR__WINDOW_SECONDZ", "30")
    with pytest.raises(ConfigError, match="processor.window_secondz"):
        load_settings()


def test_out_of_range_value_names_the_field(monkeypatch):
    monkeypatch.setenv("FLOW_STORE__TTL_SECONDS", "100000")
    with pytest.raises(ConfigError, match="store.ttl_seconds"):
        load_settings()


def test_config_file(tmp_path, monkeypatch):
    f = tmp_path / "flow.yaml"
    f.write_text("edge:\n  camera_id: door-3\nclickhouse:\n  password: hunter2\n")
    monkeypatch.setenv("FLOW_CONFIG", str(f))
    s = load_settings()
    assert s.edge.camera_id == "door-3"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOW_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_bad_database_identifier(monkeypatch):
    monkeypatch.setenv("FLOW_CLICKHOUSE__DATABASE", "flow; DROP TABLE x")
    with pytest.raises(ConfigError, match="clickhouse.database"):
        load_settings()
