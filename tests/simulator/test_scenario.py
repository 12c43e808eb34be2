import numpy as np
import pytest

from pipeline.simulator.scenario import SCENARIO_DIR, ScenarioError, load_scenario, parse_scenario
from tests.simulator.conftest import scenario


def _err(**over) -> str:
    with pytest.raises(ScenarioError) as e:
        scenario(**over)
    return str(e.value)


def test_shipped_scenarios_load_and_reference_is_tuned():
    ref = load_scenario("reference")
    assert ref.days == 7 and len(ref.sites) == 2 and len(ref.camera_ids) == 6
    # ~2,000 captures per camera per day, routed persons included
    np.testing.assert_allclose(ref.expected_captures_per_day(), 2000, rtol=0.01)
    small = load_scenario(SCENARIO_DIR / "small.yaml")
    assert small.days == 1


def test_route_probabilities_above_one_are_refused_with_the_camera_named():
    msg = _err(routes=[{"from": "A", "to": "B", "probability": 0.7}, {"from": "A", "to": "C", "probability": 0.5}])
    assert "routes from 'A'" in msg and "1.2000 > 1" in msg and "leave" in msg


def test_unknown_camera_in_route_or_entry():
    msg = _err(routes=[{"from": "A", "to": "Z", "probability": 0.5}])
    assert "unknown camera 'Z'" in msg and "known: A, B, C" in msg
    assert "unknown camera 'Q'" in _err(entries=[{"camera": "Q", "arrivals_per_day": 5}])


def test_other_validation_errors_are_clear():
    assert "unknown key" in _err(sitez=[])
    assert "must divide a day" in _err(window_seconds=7)
    assert "route must go to another camera" in _err(routes=[{"from": "A", "to": "A", "probability": 0.1}])
    assert "outside the site's opening hours" in _err(
        entries=[{"camera": "A", "arrivals_per_day": 5, "hourly_profile": {3: 1.0}}])
    assert "sum to 1" in _err(demographics={"genders": {"female": 0.7, "male": 0.7}})
    assert "unknown age band" in _err(demographics={"age_bands": {"10-17": 1.0}})
    assert "median_seconds" in _err(routes=[{"from": "A", "to": "B", "probability": 0.5,
                                             "transit": {"median_seconds": 5000, "max_seconds": 1800}}])
    assert "defined twice" in _err(sites=[{"site_id": "s1", "cameras": [{"camera_id": "A"}, {"camera_id": "A"}]}])
    assert "close must be after open" in _err(
        sites=[{"site_id": "s1", "opening_hours": "21:00-09:00", "cameras": [{"camera_id": "A"}]}])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)


def test_overrides_round_trip():
    sc = load_scenario("small").with_overrides(days=3, group_mode="core", seed=9)
    assert (sc.days, sc.group_mode, sc.seed) == (3, "core", 9)
    assert sc.sites[0].opening_hours.open == 10 * 3600
    with pytest.raises(ScenarioError):
        parse_scenario({"start": "2026-11-02", "sites": [], "entries": []})
