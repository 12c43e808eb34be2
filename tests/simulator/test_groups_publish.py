import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import serde
from pipeline.privacy import PrivacyParams
from pipeline.simulator import simulate
from pipeline.simulator.groups import fast_home_probability
from pipeline.simulator.scenario import load_scenario
from tests.simulator.conftest import scenario


@pytest.mark.parametrize("rate", [0.5, 0.8])
def test_fast_mode_same_group_rate_matches_params(rate):
    params = PrivacyParams.default().with_changes(same_group_rate=rate)
    sc = scenario(days=3, entries=[{"camera": "A", "arrivals_per_day": 3000}],
                  routes=[{"from": "A", "to": "B", "probability": 0.6}, {"from": "B", "to": "C", "probability": 0.5}])
    sim = simulate(sc, params, np.random.default_rng(5))
    sg = sim.stats.same_group
    assert sg.all_pairs_n > 5000
    assert abs(sg.all_pairs - rate) < 0.03
    assert abs(sg.consecutive - rate) < 0.03
    q = fast_home_probability(params)
    assert abs(q * q + (1 - q * q) / params.n_groups - rate) < 1e-9


def test_published_totals_are_captures_plus_fictitious_drawn():
    params = PrivacyParams.default().with_changes(fictitious_floor=1, fictitious_ratio=0.3, n_groups=200)
    sim = simulate(load_scenario("small"), params, np.random.default_rng(6))
    pub, truth = sim
    per_cam = pub.occurrences_per_camera()
    caps = truth.captures_per_camera()
    for i, c in enumerate(pub.camera_ids):
        assert per_cam[c] == caps[c] + pub.fictitious_per_camera[i]
    # the floor alone puts n_groups * floor fictitious occurrences in every published window
    assert (pub.fictitious_per_camera >= pub.windows_per_camera * 200).all()
    assert (pub.occ_count > 0).all() and pub.occ_group.max() < 200
    # demographics: no published cell under the threshold, never more than the captures
    assert (pub.dem_persons >= params.demographic_min_count).all()
    assert (pub.demographic_persons_per_camera <= pub.real_per_camera).all()
    # every opening-hours window of every camera is published (2 h of 60 s windows)
    assert (pub.windows_per_camera >= 120).all()
    wins, m = pub.counts_matrix("n-door")
    assert m.sum() == per_cam["n-door"] and wins.size == pub.windows_per_camera[0]


def test_records_encode_with_the_real_serde():
    pub, _ = simulate(load_scenario("small"))
    for rec in list(pub.occurrence_records(0, 50)):
        assert serde.decode("GroupOccurrence", serde.encode("GroupOccurrence", rec))["group_id"] == rec["group_id"]
    for rec in list(pub.demographic_records(0, 20)):
        serde.encode("DemographicCount", rec)
    ws = next(pub.occurrence_records())["window_start"]
    assert ws % 60_000 == 0


def test_same_seed_same_journeys_in_both_modes():
    params = PrivacyParams.default().with_changes(n_groups=50, working_dim=64)
    sc = load_scenario("small")
    fast = simulate(sc, params, np.random.default_rng(11), mode="fast")
    core = simulate(sc, params, np.random.default_rng(11), mode="core")
    assert fast.stats.captures == core.stats.captures
    np.testing.assert_array_equal(fast.truth.pairs, core.truth.pairs)
    assert core.published.occ_group.max() < 50
    assert 0 <= core.stats.same_group.all_pairs <= 1


def test_cli_runs_without_services_and_writes_truth(tmp_path):
    from pipeline.simulator.cli import simulate_group

    out = tmp_path / "truth.json"
    res = CliRunner().invoke(simulate_group, ["run", "small", "--to", "none", "--truth", str(out)])
    assert res.exit_code == 0, res.output
    assert "same-group rate achieved" in res.output and "captures" in res.output
    d = json.loads(out.read_text())
    assert d["captures"] == sum(d["captures_per_camera"].values())
    assert "fictitious_added" in d["notes"]


def test_cli_refuses_the_sinks_database():
    from pipeline.settings import load_settings
    from pipeline.simulator.cli import simulate_group

    main_db = load_settings().clickhouse.database
    res = CliRunner().invoke(simulate_group, ["run", "small", "--database", main_db])
    assert res.exit_code != 0 and "refusing" in res.output


def test_cli_reports_scenario_errors(tmp_path):
    from pipeline.simulator.cli import simulate_group

    bad = tmp_path / "bad.yaml"
    bad.write_text("start: 2026-11-02\nsites: [{site_id: s, cameras: [{camera_id: A}]}]\n"
                   "entries: [{camera: A, arrivals_per_day: 5}]\nroutes: [{from: A, to: X, probability: 0.5}]\n")
    res = CliRunner().invoke(simulate_group, ["run", str(bad), "--to", "none"])
    assert res.exit_code != 0 and "unknown camera 'X'" in res.output


def test_demographics_are_protected_per_longer_window_so_few_persons_are_lost():
    """Per-minute cells at ~3 persons would almost all be pooled into unknown; 15-minute ones are not."""
    sim = simulate(load_scenario("reference"), PrivacyParams.default(), np.random.default_rng(1), days=1)
    pub = sim.published
    assert pub.dem_window_seconds == 900
    assert pub.demographic_persons_per_camera.sum() >= 0.97 * pub.real_per_camera.sum()
    known = pub.dem_persons[pub.dem_gender != 2].sum() / pub.dem_persons.sum()
    assert known > 0.5  # most published persons carry a real band and gender
    rec = next(pub.demographic_records())
    assert rec["window_seconds"] == 900 and rec["window_start"] % 900_000 == 0
