"""The deployment's secret parameter set: created once with OS entropy beside the processor key,
protected like it, rotated to a new version, and the public development set refused."""
import os
import stat

import pytest
from click.testing import CliRunner

from pipeline.privacy import ParamsError, PrivacyParams
from pipeline.privacy.deployment import (deployment_params_path, ensure_deployment_params, is_development,
                                         resolve_params, rotate_deployment_params)


def test_first_use_creates_a_secret_set_readable_by_the_owner_only_and_later_uses_load_it(tmp_path):
    keys = tmp_path / "keys"
    p1, created = ensure_deployment_params(keys)
    assert created and not is_development(p1) and p1.version.startswith("pp-")
    path = deployment_params_path(keys)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    p2, created2 = ensure_deployment_params(keys)
    assert not created2 and (p2.seed, p2.version) == (p1.seed, p1.version)
    other, _ = ensure_deployment_params(tmp_path / "other")
    assert other.seed != p1.seed  # each deployment draws its own
    assert resolve_params(None, keys).seed == p1.seed


def test_rotation_makes_a_new_version_and_seed_and_keeps_the_old_file_aside(tmp_path):
    old, _ = ensure_deployment_params(tmp_path)
    before, new = rotate_deployment_params(tmp_path)
    assert before.version == old.version and new.version != old.version and new.seed != old.seed
    assert resolve_params(None, tmp_path).version == new.version
    assert (tmp_path / f"privacy-params.{old.version}.json").is_file()
    with pytest.raises(ParamsError, match="keys init"):
        rotate_deployment_params(tmp_path / "nothing")


def test_the_public_development_set_is_refused_unless_explicitly_allowed(tmp_path):
    with pytest.raises(ParamsError, match="flowctl keys init"):
        resolve_params(None, tmp_path)
    assert is_development(resolve_params(None, tmp_path, allow_development=True))
    public = tmp_path / "public.json"
    PrivacyParams.default().save(public)
    with pytest.raises(ParamsError, match="public development seed"):
        resolve_params(public, tmp_path)
    assert is_development(resolve_params(public, tmp_path, allow_development=True))


def test_processor_and_rotate_commands_say_what_to_run(tmp_path, monkeypatch):
    from pipeline.cli import cli

    monkeypatch.setenv("FLOW_KEYS__DIR", str(tmp_path / "keys"))
    r = CliRunner().invoke(cli, ["process", "--max-seconds", "1"])
    assert r.exit_code != 0 and "flowctl keys init" in r.output
    r = CliRunner().invoke(cli, ["keys", "init"])
    assert r.exit_code == 0 and "privacy parameter set pp-" in r.output and "created" in r.output
    r = CliRunner().invoke(cli, ["privacy", "rotate"])
    assert r.exit_code == 0 and "rotated" in r.output
