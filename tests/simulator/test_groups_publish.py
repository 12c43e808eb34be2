import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import serde
from pipeline.privacy import PrivacyParams
from pipeline.simulator import simulate
from pipeline.aggregator.counts import CountsSpec, demographic_grid
from pipeline.simulator.groups import fast_home_probability
from pipeline.simulator.publish import SimulatorError, publish_demographics
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
    # cells hold occurrences; a 0 is a window marker, the only cell of its (camera, window)
    assert (pub.occ_count >= 0).all() and pub.occ_group.max() < 200
    # demographics: exact per-window counts of every capture (restricted input of the aggregator;
    # nothing suppressed), non-empty cells only
    assert (pub.dem_persons >= 1).all()
    assert (pub.demographic_persons_per_camera == pub.real_per_camera).all()
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
    for rec in [r.to_record() for r in publish_demographics(pub)[:20]]:
        assert serde.decode("CountComponent", serde.encode("CountComponent", rec))["count"] == rec["count"]
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


def test_demographics_are_exact_per_window_and_published_as_noised_camera_hours():
    """The processor's exact 15-minute counts (no suppression: nothing is lost before the
    aggregator), summed per camera-hour into every grid cell and noised by the demographics stage."""
    sim = simulate(load_scenario("reference"), PrivacyParams.default(), np.random.default_rng(1), days=1)
    pub, truth = sim
    assert pub.dem_window_seconds == 900 == pub.demographics_window_seconds
    assert pub.dem_persons.sum() == pub.real_per_camera.sum() == truth.captures
    rec = next(pub.demographic_records())
    assert rec["window_seconds"] == 900 and rec["window_start"] % 900_000 == 0

    # exact hourly sums (the restricted tier) are the truth's observed demographics, cell by cell
    exact = publish_demographics(pub, exact=True)
    grid = demographic_grid()
    cams = {c: i for i, c in enumerate(pub.camera_ids)}
    obs = truth.observed_demographics_per_hour          # (C, H, bands + unknown, genders + unknown)
    for r in exact:
        h = (r.hour_ms // 1000 - pub.start_epoch) // 3600
        b, g = divmod(grid.index((r.key1, r.key2)), 3)
        assert r.count == obs[cams[r.camera_id], h, b, g], r
    assert sum(r.count for r in exact) == truth.captures

    # published: every cell of every camera-hour from the first one seen, zeros included, noised
    key = b"k" * 32
    noised = publish_demographics(pub, noise_key=key)
    assert [r.key for r in noised] == [r.key for r in exact]
    hours = {r.hour_ms for r in noised}
    assert len(noised) == len(pub.camera_ids) * len(hours) * len(grid)
    assert all(r.noise_var_milli > 0 for r in noised) and any(r.count < 0 for r in noised)   # signed, unclamped
    assert noised != exact and noised == publish_demographics(pub, noise_key=key)   # keyed: replays repeat
    diffs = np.array([n.count - e.count for n, e in zip(noised, exact) if e.count >= 20])   # rarely clamped
    var = noised[0].noise_var_milli / 1000
    assert len(diffs) > 50 and abs(diffs.mean()) < 4 * (var / len(diffs)) ** 0.5
    with pytest.raises(SimulatorError, match="900 s"):
        publish_demographics(pub, CountsSpec("demographics", window_seconds=60, grid=grid))


def test_kafka_records_go_out_in_window_order_as_processors_send_them():
    """The aggregator finalises a window once a later one is seen: a camera-major stream would
    make every camera after a partition's first arrive late and be dropped."""
    pub = simulate(scenario(), PrivacyParams.default(), np.random.default_rng(3), mode="fast").published
    ordered = list(pub.occurrence_records_by_window())
    windows = [r["window_start"] for r in ordered]
    assert windows == sorted(windows) and len({r["camera_id"] for r in ordered[:50]}) > 1
    key = lambda r: (r["camera_id"], r["window_start"], r["group_id"], r["occurrences"])  # noqa: E731
    assert sorted(map(key, ordered)) == sorted(map(key, pub.occurrence_records()))
