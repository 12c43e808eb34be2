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
    f.write_text("edge:\n  camera_id: door-3\nclickhouse:\n  credentials_dir: /run/flowpipe/clickhouse\n")
    monkeypatch.setenv("FLOW_CONFIG", str(f))
    s = load_settings()
    assert s.edge.camera_id == "door-3" and str(s.clickhouse.credentials_dir) == "/run/flowpipe/clickhouse"


def test_secrets_are_files_never_settings(tmp_path, monkeypatch):
    """A password in the config file (where it would end up in repr, logs and dumps) is refused
    by name; each role reads its own 0600 file, and a missing or shared one is a clear error."""
    from pipeline.ops.kafka_clients import role_password
    from pipeline.sink.clickhouse import role_password as ch_password

    f = tmp_path / "flow.yaml"
    f.write_text("clickhouse:\n  password: hunter2\n")
    monkeypatch.setenv("FLOW_CONFIG", str(f))
    with pytest.raises(ConfigError, match="clickhouse.password"):
        load_settings()
    monkeypatch.delenv("FLOW_CONFIG")
    s = load_settings(kafka={"credentials_dir": tmp_path}, clickhouse={"credentials_dir": tmp_path})
    with pytest.raises(ConfigError, match="no credentials for role 'edge'.*stack up"):
        role_password(s.kafka, "edge")
    (tmp_path / "sink.password").write_text("s3cret\n")
    (tmp_path / "sink.password").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        ch_password(s.clickhouse, "sink")
    (tmp_path / "sink.password").chmod(0o600)
    assert ch_password(s.clickhouse, "sink") == "s3cret" and role_password(s.kafka, "sink") == "s3cret"
    assert "s3cret" not in repr(s)


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOW_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_bad_database_identifier(monkeypatch):
    monkeypatch.setenv("FLOW_CLICKHOUSE__DATABASE", "flow; DROP TABLE x")
    with pytest.raises(ConfigError, match="clickhouse.database"):
        load_settings()
