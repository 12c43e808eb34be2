"""The simulator's realism knobs (issue 12): validation, each knob's stated effect, exact truth."""

import numpy as np
import pytest

from pipeline.privacy import PrivacyParams
from pipeline.simulator import simulate
from pipeline.simulator.groups import fast_groups, person_rates, popularity_table
from pipeline.simulator.journeys import Captures, generate_journeys
from pipeline.simulator.scenario import DAY, Popularity, SameGroup, ScenarioError, load_scenario
from pipeline.simulator.truth import pair_counts
from tests.simulator.conftest import scenario

TWO_SITES = [{"site_id": "s1", "opening_hours": "09:00-21:00", "cameras": [{"camera_id": "A"}, {"camera_id": "B"}]},
             {"site_id": "s2", "opening_hours": "10:00-20:00", "cameras": [{"camera_id": "C"}, {"camera_id": "D"}]}]


def _err(**realism) -> str:
    with pytest.raises(ScenarioError) as e:
        scenario(realism=realism)
    return str(e.value)


# ---- validation ---------------------------------------------------------------------------------

def test_knobs_are_off_by_default_and_the_realistic_mix_turns_every_one_on():
    assert scenario().realism.knobs_on() == []
    sc = load_scenario("realistic")
    assert sc.realism.knobs_on() == ["popularity", "same_group", "long_transits", "detection", "staff", "onward",
                                     "closing"]
    assert len(sc.sites) == 3 and len(sc.camera_ids) == 9
    np.testing.assert_allclose(sc.expected_captures_per_day(), 2000, rtol=0.01)
    assert sc.with_overrides(days=2).realism == sc.realism  # survives a round trip through a dump


def test_bad_knob_values_are_refused_with_the_knob_named():
    assert "realism.popularity.sigma" in _err(popularity={"sigma": -1})
    assert "at most 1" in _err(popularity={"sigma": 1, "hour_drift": 0.7, "camera_drift": 0.5})
    assert "need sigma > 0" in _err(popularity={"hour_drift": 0.2})
    assert "realism.same_group.concentration" in _err(same_group={"concentration": 0})
    assert "realism.long_transits.share" in _err(long_transits={"share": 1.5})
    assert "realism.long_transits.share" in _err(long_transits={"median_seconds": 3600})  # share is required
    assert "min_seconds <= median_seconds" in _err(long_transits={"share": 0.1, "median_seconds": 600,
                                                                  "min_seconds": 1860})
    assert "realism.detection.capture_probability" in _err(detection={"capture_probability": 0})
    assert "realism.closing.stragglers" in _err(closing={"stragglers": 2})
    assert "realism.staff.0.passes_per_day" in _err(staff=[{"site": "s1", "count": 2, "passes_per_day": 0}])
    assert "unknown key" in _err(stafff=[])


def test_knob_references_are_checked_against_the_layout():
    assert "unknown site 'zz'" in _err(staff=[{"site": "zz", "count": 1, "passes_per_day": 30}])
    msg = _err(staff=[{"site": "s1", "count": 1, "passes_per_day": 30, "cameras": ["A", "Q"]}])
    assert "['Q'] are not cameras of site 's1'" in msg
    assert "more than the 1 camera(s)" in _err(staff=[{"site": "s1", "count": 1, "passes_per_day": 30,
                                                       "cameras": ["A"], "cameras_per_person": 2}])
    assert "two or more sites" in _err(onward={"share": 0.1})


# ---- group popularity ---------------------------------------------------------------------------

def test_popularity_table_has_the_requested_dispersion_and_drift():
    pop = Popularity(sigma=0.8, hour_drift=0.4, camera_drift=0.25)
    t = popularity_table(pop, 3, 4000, np.random.default_rng(1))
    assert t.shape == (3, 24, 4000)
    np.testing.assert_allclose(t.sum(axis=-1), 1.0)
    lg = np.log(t)
    assert abs(lg.std(axis=-1).mean() / 0.8 - 1) < 0.05
    # hours 12 apart: correlation 1 - 2 hour_drift; neighbouring hours almost 1; cameras: 1 - camera_drift
    assert abs(np.corrcoef(lg[0, 3], lg[0, 15])[0, 1] - (1 - 2 * 0.4)) < 0.06
    assert np.corrcoef(lg[0, 3], lg[0, 4])[0, 1] > 0.97
    assert abs(np.corrcoef(lg[0, 3], lg[1, 3])[0, 1] - (1 - 0.25)) < 0.05
    flat = popularity_table(Popularity(sigma=0.8), 2, 500, np.random.default_rng(1))
    np.testing.assert_allclose(flat[0, 0], flat[1, 17])  # no drift: one table


def _captures(person: np.ndarray, camera: np.ndarray, time: np.ndarray, n_cameras: int = 1) -> Captures:
    z = np.zeros(person.size, dtype=np.int8)
    return Captures(person=person, camera=camera, time=time, true_band=z, true_gender=z, band=z, gender=z,
                    n_cameras=n_cameras)


def test_captures_fill_groups_log_normally():
    # one capture per person at one camera-hour: group counts follow the popularity
    m, sigma = 400_000, 0.7
    caps = _captures(np.arange(m), np.zeros(m, np.int16), np.full(m, 12 * 3600.0))
    params = PrivacyParams.default()
    pop = Popularity(sigma=sigma)
    g = fast_groups(caps, m, params, np.random.default_rng(2), realism=scenario(
        realism={"popularity": pop.model_dump()}).realism)
    counts = np.bincount(g, minlength=params.n_groups)
    cv = counts.std() / counts.mean()
    expected = np.sqrt(np.exp(sigma ** 2) - 1 + params.n_groups / m)  # log-normal spread plus Poisson noise
    assert abs(cv / expected - 1) < 0.1
    uniform = np.bincount(fast_groups(caps, m, params, np.random.default_rng(2)), minlength=params.n_groups)
    assert uniform.std() / uniform.mean() < 0.1


# ---- per-person same-group rate -----------------------------------------------------------------

def test_person_rates_have_the_population_mean_p_and_the_beta_spread():
    r = person_rates(SameGroup(concentration=3), 0.3, 0.002, 200_000, np.random.default_rng(3))
    assert abs(r.mean() - 0.3) < 0.003
    rbar = (0.3 - 0.002) / 0.998
    assert abs(r.var() / (rbar * (1 - rbar) / 4 * 0.998 ** 2) - 1) < 0.03
    assert (r >= 0.002).all() and (r <= 1).all()
    np.testing.assert_allclose(person_rates(SameGroup(), 0.3, 0.002, 5, np.random.default_rng(3)), 0.3)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_same_group_tendency_varies_by_person_around_the_scenario_rate(p):
    # 20,000 persons with 20 captures each over a day at 3 cameras; popularity on as well
    n, k = 20_000, 20
    rng = np.random.default_rng(4)
    person = np.repeat(np.arange(n), k)
    time = np.sort(rng.uniform(9 * 3600, 21 * 3600, size=(n, k)), axis=1).ravel()
    caps = _captures(person, rng.integers(0, 3, n * k).astype(np.int16), time, n_cameras=3)
    params = PrivacyParams.default().with_changes(same_group_rate=p)
    realism = scenario(realism={"popularity": {"sigma": 0.6, "hour_drift": 0.3},
                                "same_group": {"concentration": 2}}).realism
    g = fast_groups(caps, n, params, np.random.default_rng(5), realism=realism).reshape(n, k)
    same = g[:, 0::2] == g[:, 1::2]            # 10 disjoint pairs per person
    # calibrated on separate people: one pair per person, population mean = p
    assert abs(same[:, 0].mean() - p) < 0.015
    per_person = same.mean(axis=1)
    assert abs(per_person.mean() - p) < 0.01
    # the spread across persons beyond binomial noise is the Beta's: r(1 - r) / (concentration + 1)
    between = per_person.var() - (per_person * (1 - per_person)).mean() / (10 - 1)
    assert abs(between / (p * (1 - p) / 3) - 1) < 0.2
    flat = fast_groups(caps, n, params, np.random.default_rng(5)).reshape(n, k)
    pp = (flat[:, 0::2] == flat[:, 1::2]).mean(axis=1)
    assert abs(pp.var() - (pp * (1 - pp)).mean() / 9) < 0.002  # one rate for all: binomial spread only


# ---- journeys -----------------------------------------------------------------------------------

def _walks(**realism):
    sc = scenario(days=3, entries=[{"camera": "A", "arrivals_per_day": 4000}],
                  routes=[{"from": "A", "to": "B", "probability": 0.8,
                           "transit": {"median_seconds": 300, "sigma": 0.4, "min_seconds": 30, "max_seconds": 1500}},
                          {"from": "B", "to": "C", "probability": 0.5}],
                  realism=realism)
    return generate_journeys(sc, np.random.default_rng(6))


def _steps(j, a: int, b: int) -> np.ndarray:
    """Transit seconds of consecutive passes a -> b of one person."""
    same = j.visit_person[1:] == j.visit_person[:-1]
    m = same & (j.visit_camera[:-1] == a) & (j.visit_camera[1:] == b)
    return (j.visit_time[1:] - j.visit_time[:-1])[m]


def test_long_transits_take_the_stated_share_beyond_the_lag_range_and_leave_no_true_pair():
    j = _walks(long_transits={"share": 0.2, "median_seconds": 3600, "sigma": 0.3, "min_seconds": 1860,
                                  "max_seconds": 7200})
    dt = _steps(j, 0, 1)
    long = dt > 1500
    assert abs(long.mean() - 0.2) < 0.015
    assert abs(np.median(dt[long]) / 3600 - 1) < 0.05 and dt[long].min() >= 1860
    j0 = _walks()
    assert (_steps(j0, 0, 1) <= 1500).all()
    cap = j.captures()
    pc = pair_counts(cap.person, cap.camera, cap.time, 3, 4, 60, 30)
    short = _steps(j, 0, 1)
    assert pc[:, 0, 1].sum() <= (short <= 1500).sum() < pc[:, 0, 1].sum() + 1  # only the short ones pair


def test_missed_detections_reduce_captures_by_the_stated_rate_and_leave_walks_alone():
    j = _walks(detection={"capture_probability": 0.8})
    j0 = _walks()
    np.testing.assert_array_equal(j.visit_time, j0.visit_time)
    assert j0.captured.all()
    assert abs(j.captured.mean() - 0.8) < 0.01
    sc2 = scenario(sites=[{"site_id": "s1", "cameras": [{"camera_id": "A", "capture_probability": 0.5},
                                                       {"camera_id": "B"}, {"camera_id": "C"}]}],
                   entries=[{"camera": "A", "arrivals_per_day": 20_000}],
                   realism={"detection": {"capture_probability": 0.8}})
    j2 = generate_journeys(sc2, np.random.default_rng(7))
    assert abs(j2.captured.mean() - 0.4) < 0.01  # on top of the camera's own probability


def test_staff_pass_their_cameras_dozens_of_times_a_day_every_day():
    sites = [{"site_id": "s1", "opening_hours": "09:00-21:00",
              "cameras": [{"camera_id": "A"}, {"camera_id": "B"}, {"camera_id": "C"}, {"camera_id": "D"}]},
             {"site_id": "s2", "cameras": [{"camera_id": "E"}]}]
    staff = [{"site": "s1", "count": 30, "passes_per_day": 40, "cameras_per_person": 2},
             {"site": "s2", "count": 5, "passes_per_day": 25}]
    base = dict(days=4, sites=sites, entries=[{"camera": "A", "arrivals_per_day": 500}])
    with pytest.raises(ScenarioError, match="more than the 1 camera"):
        scenario(**base, realism={"staff": staff})
    staff[1]["cameras_per_person"] = 1
    sc = scenario(**base, realism={"staff": staff})
    j = generate_journeys(sc, np.random.default_rng(8))
    j0 = generate_journeys(scenario(**base), np.random.default_rng(8))
    assert j.n_staff == 35 and j.n_persons == j0.n_persons + 35
    visitor = ~j.person_is_staff[j.visit_person]
    np.testing.assert_array_equal(j.visit_time[visitor], j0.visit_time)  # visitors untouched
    sp, sc_, st = j.visit_person[~visitor], j.visit_camera[~visitor], j.visit_time[~visitor]
    assert (j.visit_step[~visitor] == -1).all()
    per_day = np.zeros((j.n_persons, 4), int)
    np.add.at(per_day, (sp, (st // DAY).astype(int)), 1)
    north = per_day[j.n_persons - 35:j.n_persons - 5]
    assert abs(north.mean() - 40) < 1.5 and (north > 15).all()  # dozens, every day
    assert abs(per_day[j.n_persons - 5:].mean() - 25) < 2.5
    for who in range(j.n_persons - 35, j.n_persons):
        cams = set(sc_[sp == who].tolist())
        assert len(cams) == (2 if who < j.n_persons - 5 else 1)
        assert cams <= ({0, 1, 2, 3} if who < j.n_persons - 5 else {4})
    tod = st % DAY
    assert tod.min() >= 9 * 3600 and tod.max() < 21 * 3600
    # their passes are true flows: a staff member pairs with themself all week
    cap = j.captures()
    pc = pair_counts(cap.person, cap.camera, cap.time, 5, 4, 60, 30)
    assert pc[:, 0, 4].sum() == 0 and pc.sum() > 30 * 4 * 10


def test_visitors_go_on_to_another_site_once_and_only_while_it_is_open():
    sc = scenario(days=3, sites=TWO_SITES,
                  entries=[{"camera": "A", "arrivals_per_day": 3000}, {"camera": "C", "arrivals_per_day": 1000}],
                  routes=[{"from": "A", "to": "B", "probability": 0.5}, {"from": "C", "to": "D", "probability": 0.5}],
                  realism={"onward": {"share": 0.3, "median_seconds": 2400, "sigma": 0.3, "min_seconds": 1200,
                                      "max_seconds": 3600}})
    j = generate_journeys(sc, np.random.default_rng(9))
    site = sc.camera_site[j.visit_camera]
    same = j.visit_person[1:] == j.visit_person[:-1]
    cross = same & (site[1:] != site[:-1])
    dt = (j.visit_time[1:] - j.visit_time[:-1])[cross]
    assert dt.min() >= 1200 - 1e-6 and dt.max() <= 3600 + 1e-6
    assert set(j.visit_camera[1:][cross].tolist()) <= {0, 2}  # they arrive at the other site's entry
    movers = np.unique(j.visit_person[1:][cross])
    assert np.bincount(j.visit_person[1:][cross]).max() == 1  # at most once
    tod = j.visit_time[1:][cross] % DAY
    close = np.where(site[1:][cross] == 0, 21 * 3600, 20 * 3600)
    assert (tod < close).all()
    # 30% of leavers from site s1 go on when s2 is still open on arrival (left before ~19:00)
    first_site = np.zeros(j.n_persons, int)
    first_site[j.visit_person[::-1]] = site[::-1]
    from_s1 = first_site == 0
    last_in_s1 = np.full(j.n_persons, -1.0)
    m = site == 0
    np.maximum.at(last_in_s1, j.visit_person[m], j.visit_time[m])
    early = from_s1 & (last_in_s1 % DAY < 17 * 3600)   # any transit up to an hour arrives before 20:00
    assert abs(np.isin(np.flatnonzero(early), movers).mean() - 0.3) < 0.02
    late = from_s1 & (last_in_s1 % DAY > 20 * 3600)
    assert not np.isin(np.flatnonzero(late), movers).any()


def test_closing_ends_walks_except_for_stragglers():
    base = dict(days=4, entries=[{"camera": "A", "arrivals_per_day": 3000, "hourly_profile": {20: 1.0}}],
                routes=[{"from": "A", "to": "B", "probability": 0.9,
                         "transit": {"median_seconds": 900, "sigma": 0.5, "min_seconds": 60, "max_seconds": 1800}},
                        {"from": "B", "to": "C", "probability": 0.9,
                         "transit": {"median_seconds": 900, "sigma": 0.5, "min_seconds": 60, "max_seconds": 1800}}])
    sc0 = scenario(**base)
    j0 = generate_journeys(sc0, np.random.default_rng(10))

    def after_close(j):
        tod = j.visit_time % DAY
        return (tod >= 21 * 3600) | (tod < 9 * 3600), tod

    late0, _ = after_close(j0)
    n0 = np.unique(j0.visit_person[late0]).size
    assert n0 > 3000  # without the knob walks ignore closing time
    # every visitor straggles, long enough for every walk: the walks are those without the knob
    j1 = generate_journeys(scenario(**base, realism={"closing": {"stragglers": 1.0, "straggle_seconds": 7200}}),
                           np.random.default_rng(10))
    np.testing.assert_array_equal(j1.visit_time, j0.visit_time)
    j2 = generate_journeys(scenario(**base, realism={"closing": {"stragglers": 0.0}}), np.random.default_rng(10))
    assert not after_close(j2)[0].any()
    j3 = generate_journeys(scenario(**base, realism={"closing": {"stragglers": 0.25, "straggle_seconds": 600}}),
                           np.random.default_rng(10))
    late3, tod3 = after_close(j3)
    assert late3.any() and (tod3[late3] - 21 * 3600 <= 600).all()
    j4 = generate_journeys(scenario(**base, realism={"closing": {"stragglers": 0.25, "straggle_seconds": 7200}}),
                           np.random.default_rng(10))
    n4 = np.unique(j4.visit_person[after_close(j4)[0]]).size
    assert abs(n4 / n0 - 0.25) < 0.03


# ---- truth --------------------------------------------------------------------------------------

def _brute_force(person, camera, time, C, D, L):
    out = np.zeros((D, C, C, L + 1), dtype=np.int64)
    w = np.floor(time / 60).astype(int)
    by = {}
    for i, p in enumerate(person.tolist()):
        by.setdefault(p, []).append(i)
    for rows in by.values():
        for x in rows:
            for y in rows:
                lag = w[y] - w[x]  # lag 0 counts both orders, as the two orders of (x, y) come by
                if camera[x] != camera[y] and 0 <= lag <= L:
                    out[int(time[x] // DAY), camera[x], camera[y], lag] += 1
    return out


def test_truth_under_every_knob_is_the_brute_force_count_of_captured_pairs():
    sc = load_scenario("realistic").with_overrides(days=2, seed=11)
    sim = simulate(sc, PrivacyParams.profile("flow"))
    tr = sim.truth
    assert tr.notes["realism_knobs"] == sc.realism.knobs_on() and tr.notes["staff_persons"] == 12
    assert tr.notes["staff_captures"] > 12 * 2 * 20
    # rebuild the captures the truth saw (same seed, same journeys) and count pairs by brute force
    j_rng, _, _ = np.random.default_rng(sc.seed).spawn(3)
    cap = generate_journeys(sc, j_rng).captures()
    assert len(cap) == tr.captures == sim.stats.captures
    D = tr.pairs.shape[0]
    brute = _brute_force(cap.person, cap.camera.astype(int), cap.time, len(sc.camera_ids), D, sc.max_lag_windows)
    np.testing.assert_array_equal(tr.pairs, brute)
    # the retail park shares no walk with the malls: its pairs with them have no true flow
    park = [tr.cam(c) for c in ("p-entrance", "p-diy", "p-garden")]
    mall = [i for i in range(9) if i not in park]
    assert tr.pairs[:, park][:, :, mall].sum() == 0 and tr.pairs[:, mall][:, :, park].sum() == 0
    assert tr.pairs[:, park][:, :, park].sum() > 0


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_the_realistic_mix_keeps_the_parameter_rate_as_its_population_mean(p):
    params = PrivacyParams.profile("flow").with_changes(same_group_rate=p)
    sim = simulate(load_scenario("realistic").with_overrides(days=4), params, np.random.default_rng(12))
    sg = sim.stats.same_group
    assert sg.first_pair_n > 15_000
    assert abs(sg.first_pair - p) < 3 * np.sqrt(p * (1 - p) / sg.first_pair_n) + 0.005
