import numpy as np

from pipeline.simulator.scenario import DAY
from pipeline.simulator.truth import pair_counts

A, B, C = 0, 1, 2
W = 60


def _rows(rows):
    """rows: (person, camera, minute) -> sorted arrays (person, time)."""
    rows = sorted(rows, key=lambda r: (r[0], r[2]))
    p = np.array([r[0] for r in rows])
    c = np.array([r[1] for r in rows])
    t = np.array([r[2] * 60.0 + 1.0 for r in rows])
    return p, c, t


def test_hand_made_journeys():
    p, c, t = _rows([
        (0, A, 0), (0, C, 2), (0, B, 5),      # A..B not consecutive: counts for (A,C), (C,B) and (A,B)
        (1, A, 100), (1, B, 131),             # lag 31 > 30: not counted
        (2, A, 200), (2, B, 230),             # lag 30: counted
        (3, A, 300.1), (3, B, 300.5),         # same window: (A,B) and (B,A) at lag 0
        (4, A, 400), (4, A, 401), (4, B, 403),  # two captures at A before B: two (A,B) pairs, no (A,A)
    ])
    pc = pair_counts(p, c, t, n_cameras=3, n_days=1, window_seconds=W, max_lag=30)
    assert pc.shape == (1, 3, 3, 31)
    d = pc[0]
    assert d[A, C, 2] == 1 and d[C, B, 3] == 1 and d[A, B, 5] == 1
    assert d[A, B, 30] == 1
    assert d[A, B, 0] == 1 and d[B, A, 0] == 1
    assert d[A, B, 3] == 1 and d[A, B, 2] == 1
    assert d[A, A].sum() == 0 and d.diagonal().sum() == 0
    assert d[A, B].sum() == 5  # lags 5, 30, 0, 3, 2 ; the lag-31 pair is not there
    assert d.sum() == 1 + 1 + 5 + 1  # plus (A,C), (C,B), (B,A)


def test_day_is_the_day_of_the_first_capture():
    p = np.array([0, 0])
    c = np.array([A, B])
    t = np.array([DAY - 30.0, DAY + 400.0])
    pc = pair_counts(p, c, t, n_cameras=2, n_days=2, window_seconds=W, max_lag=30)
    assert pc[0, A, B].sum() == 1 and pc[1].sum() == 0
    assert pc[0, A, B, 7] == 1  # windows 1439 -> 1446


def test_truth_of_a_simulation_matches_its_own_captures():
    from pipeline.simulator import simulate
    from pipeline.simulator.scenario import load_scenario

    sim = simulate(load_scenario("small"))
    tr = sim.truth
    assert tr.captures == sim.stats.captures == int(sim.published.real_per_camera.sum())
    assert tr.flow("n-door", "n-shop") > 0 and tr.flow("s-shop", "n-shop") == 0  # no route leads north
    h = tr.transit_histogram("n-door", "n-shop")
    assert h.shape == (31,) and h.sum() == tr.flow("n-door", "n-shop")
    assert tr.demographics_per_hour.sum() == tr.captures == tr.observed_demographics_per_hour.sum()
    d = tr.to_json_dict()
    assert d["persons"] == sim.stats.persons and d["flows"] and "definition" in d
