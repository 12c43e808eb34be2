"""Parameter sets: defaults, JSON round trip, strict rejection of unknown keys, rotation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.privacy import ParamsError, PrivacyParams
from pipeline.privacy.calibration import fit_reference


def _roundtrip(p: PrivacyParams) -> PrivacyParams:
    return PrivacyParams.from_json_dict(json.loads(json.dumps(p.to_json_dict())))


def test_default_works_without_files_and_has_a_version():
    p = PrivacyParams.default()
    assert p.version == "pp-2026.11-default"
    assert p.n_groups == 1000 and p.working_dim == 1024
    assert 0 < p.same_group_rate <= 1
    # flow profile: no floor, geometric mean r/(1-r) = 1/1000 per group, one per camera-window
    assert p.fictitious_rate == pytest.approx(0.001)
    assert p.fictitious_per_window == pytest.approx(1.0)
    strict = PrivacyParams.profile("strict")
    # floor 2 + geometric mean r/(1-r) = 1 with r = 0.5
    assert strict.fictitious_rate == pytest.approx(3.0)
    assert strict.fictitious_per_window == pytest.approx(3000.0)
    assert strict.linkage_likelihood_ratio_bound == pytest.approx(2.0)


def test_json_roundtrip_keeps_every_field_and_array(rng):
    x = rng.standard_normal((500, 12)).astype(np.float32)
    p = PrivacyParams.default().with_changes(
        version="pp-test.1", seed=2**100 + 7, noise_scale=0.0123, reference=fit_reference(x),
        hash_offsets=rng.standard_normal(1000).astype(np.float32), strata=("female", "male"),
        stratum_offsets=rng.standard_normal((2, 1000)).astype(np.float32), calibration={"note": "x", "n": 3})
    q = _roundtrip(p)
    assert q.to_json_dict() == p.to_json_dict()
    assert q.seed == 2**100 + 7
    np.testing.assert_array_equal(q.reference.whitening, p.reference.whitening)
    np.testing.assert_array_equal(q.stratum_offsets, p.stratum_offsets)
    assert q.strata == ("female", "male")


def test_save_and_load_use_the_same_format(tmp_path):
    p = PrivacyParams.default().with_changes(version="pp-file")
    path = tmp_path / "p.json"
    p.save(path)
    assert PrivacyParams.load(path).to_json_dict() == p.to_json_dict()


def test_unknown_top_level_key_is_rejected_by_name():
    d = PrivacyParams.default().to_json_dict()
    d["noise_scael"] = 0.1
    with pytest.raises(ParamsError, match="noise_scael"):
        PrivacyParams.from_json_dict(d)


def test_unknown_nested_key_is_rejected(rng):
    d = PrivacyParams.default().with_changes(reference=fit_reference(rng.standard_normal((50, 4)))).to_json_dict()
    d["reference"]["extra"] = 1
    with pytest.raises(ParamsError, match="extra"):
        PrivacyParams.from_json_dict(d)


@pytest.mark.parametrize("change, message", [
    ({"schema_version": 99}, "schema_version"),
    ({"n_groups": 2000}, "cannot exceed working_dim"),
    ({"fictitious_ratio": 1.0}, "fictitious_ratio"),
    ({"version": "has space"}, "version"),
])
def test_invalid_values_are_rejected(change, message):
    d = PrivacyParams.default().to_json_dict()
    d.update(change)
    with pytest.raises(ParamsError, match=message):
        PrivacyParams.from_json_dict(d)


def test_offsets_of_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match="hash_offsets"):
        PrivacyParams.default().with_changes(hash_offsets=np.zeros(999, dtype=np.float32))


def test_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ParamsError, match="not valid JSON"):
        PrivacyParams.load(path)


def test_rotation_needs_new_version_and_changes_seed():
    p = PrivacyParams.default().with_changes(hash_offsets=np.zeros(1000, dtype=np.float32))
    with pytest.raises(ParamsError):
        p.rotated(version=p.version)
    q = p.rotated(version="pp-rotated")
    assert q.seed != p.seed and q.version == "pp-rotated"
    assert q.hash_offsets is None  # offsets belong to the old hash family


def test_params_are_immutable():
    p = PrivacyParams.default()
    with pytest.raises(Exception):
        p.noise_scale = 1.0  # type: ignore[misc]
