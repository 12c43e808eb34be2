import numpy as np

from pipeline.simulator.journeys import generate_journeys
from pipeline.simulator.scenario import DAY
from tests.simulator.conftest import scenario


def test_arrival_totals_within_poisson_tolerance_and_inside_opening_hours():
    sc = scenario(days=20, entries=[{"camera": "A", "arrivals_per_day": 500},
                                    {"camera": "B", "arrivals_per_day": 80, "hourly_profile": {12: 1.0, 13: 3.0}}])
    j = generate_journeys(sc, np.random.default_rng(1))
    first = j.visit_step == 0
    cam, t = j.visit_camera[first], j.visit_time[first]
    for c, rate in ((0, 500), (1, 80)):
        n = int((cam == c).sum())
        expected = rate * sc.days
        assert abs(n - expected) < 4 * np.sqrt(expected), (c, n, expected)
    tod = t % DAY
    assert tod.min() >= 9 * 3600 and tod.max() < 21 * 3600
    b = tod[cam == 1]
    assert b.min() >= 12 * 3600 and b.max() < 14 * 3600
    share_13 = float((b >= 13 * 3600).mean())
    assert abs(share_13 - 0.75) < 0.05
    # each day receives its own Poisson draw
    per_day = np.bincount((t[cam == 0] // DAY).astype(int), minlength=sc.days)
    assert per_day.std() > 0 and abs(per_day.mean() - 500) < 4 * np.sqrt(500 / sc.days)


def test_route_probabilities_and_transit_medians_recovered():
    routes = [{"from": "A", "to": "B", "probability": 0.6,
               "transit": {"median_seconds": 240, "sigma": 0.5, "min_seconds": 30, "max_seconds": 1800}},
              {"from": "A", "to": "C", "probability": 0.2,
               "transit": {"median_seconds": 600, "sigma": 0.3, "min_seconds": 500, "max_seconds": 700}},
              {"from": "B", "to": "C", "probability": 0.5}]
    sc = scenario(days=10, entries=[{"camera": "A", "arrivals_per_day": 2000}], routes=routes)
    j = generate_journeys(sc, np.random.default_rng(2))
    same = j.visit_person[1:] == j.visit_person[:-1]
    src, dst = j.visit_camera[:-1][same], j.visit_camera[1:][same]
    dt = (j.visit_time[1:] - j.visit_time[:-1])[same]
    n_a = int((j.visit_camera == 0).sum())
    assert abs(((src == 0) & (dst == 1)).sum() / n_a - 0.6) < 0.015
    assert abs(((src == 0) & (dst == 2)).sum() / n_a - 0.2) < 0.015
    n_b = int((j.visit_camera == 1).sum())
    assert abs(((src == 1) & (dst == 2)).sum() / n_b - 0.5) < 0.02
    assert not ((src == 2)).any()  # C has no routes: everyone leaves
    ab = dt[(src == 0) & (dst == 1)]
    assert abs(np.median(ab) / 240 - 1) < 0.03
    assert ab.min() >= 30 - 1e-6 and ab.max() <= 1800 + 1e-6
    ac = dt[(src == 0) & (dst == 2)]
    assert abs(np.median(ac) / 600 - 1) < 0.03 and ac.min() >= 500 - 1e-6 and ac.max() <= 700 + 1e-6
    # default transit for B -> C: median 180 s
    assert abs(np.median(dt[(src == 1) & (dst == 2)]) / 180 - 1) < 0.05


def test_capture_probability_and_unknown_faces():
    sc = scenario(days=5, sites=[{"site_id": "s1", "cameras": [{"camera_id": "A", "capture_probability": 0.7},
                                                             {"camera_id": "B"}, {"camera_id": "C"}]}],
                  entries=[{"camera": "A", "arrivals_per_day": 2000}],
                  demographics={"unknown_face_rate": 0.25, "genders": {"female": 1.0}})
    j = generate_journeys(sc, np.random.default_rng(3))
    assert abs(j.captured.mean() - 0.7) < 0.02
    cap = j.captures()
    assert abs((cap.gender == 2).mean() - 0.25) < 0.02
    assert set(np.unique(cap.gender[cap.gender != 2])) == {0}
    assert ((cap.band == 7) == (cap.gender == 2)).all()


def test_reference_week_generates_in_seconds():
    import time

    from pipeline.simulator.scenario import load_scenario

    sc = load_scenario("reference")
    t = time.monotonic()
    j = generate_journeys(sc, np.random.default_rng(4))
    assert time.monotonic() - t < 5
    per_cam_day = np.bincount(j.captures().camera, minlength=6) / sc.days
    np.testing.assert_allclose(per_cam_day, 2000, rtol=0.05)
