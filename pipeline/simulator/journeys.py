"""Person journeys: arrivals, Markov routes with transit times, captures, demographics.

Persons exist only here. A :class:`Journeys` object holds one row per camera pass (visit)
with its person index; it is handed to the group assignment, the publisher and the
ground-truth counter inside :func:`pipeline.simulator.simulate` and is never written out.
Everything is vectorised over persons: a route step draws the next camera and the transit
time for every still-walking person at once.

The scenario's ``realism`` knobs act here on the walks (long transits, going on to another
site, closing time and stragglers), on the captures (missed detections) and by adding staff;
the group knobs travel with the captures to :func:`pipeline.simulator.groups.fast_groups`.
With every knob off the draws are exactly the original simulator's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.privacy.demographics import AGE_BANDS
from pipeline.simulator.scenario import DAY, Realism, Scenario, Transit, arrival_segments

__all__ = ["Journeys", "generate_journeys", "UNKNOWN_BAND", "UNKNOWN_GENDER"]

# Observed-label codes: age band index len(AGE_BANDS) and gender index 2 mean "unknown".
UNKNOWN_BAND = len(AGE_BANDS)
UNKNOWN_GENDER = 2


@dataclass(frozen=True)
class Journeys:
    """Simulator-internal per-person data. Visits are sorted by (person, time)."""

    n_persons: int
    person_age: np.ndarray       # (P,) int8, index into AGE_BANDS
    person_gender: np.ndarray    # (P,) int8, 0 female / 1 male
    person_entry_day: np.ndarray  # (P,) int16, day of the person's arrival (staff: 0)
    visit_person: np.ndarray     # (V,) int64
    visit_camera: np.ndarray     # (V,) int16, index into scenario.camera_ids
    visit_time: np.ndarray       # (V,) float64, seconds after the scenario's start midnight (UTC)
    visit_step: np.ndarray       # (V,) int16, position of the pass within the person's walk; -1: a staff pass
    captured: np.ndarray         # (V,) bool, the pass produced a capture
    face_visible: np.ndarray     # (V,) bool, a capture's age band and gender are usable
    n_staff: int = 0             # staff are the last n_staff persons
    n_cameras: int = 0
    realism: Realism | None = None  # the scenario's knobs (the group knobs are read by fast_groups)

    @property
    def person_is_staff(self) -> np.ndarray:
        return np.arange(self.n_persons) >= self.n_persons - self.n_staff

    @property
    def n_visits(self) -> int:
        return int(self.visit_person.shape[0])

    def captures(self) -> "Captures":
        m = self.captured
        person = self.visit_person[m]
        face = self.face_visible[m]
        band = np.where(face, self.person_age[person], UNKNOWN_BAND).astype(np.int8)
        gender = np.where(face, self.person_gender[person], UNKNOWN_GENDER).astype(np.int8)
        return Captures(person=person, camera=self.visit_camera[m], time=self.visit_time[m],
                        true_band=self.person_age[person], true_gender=self.person_gender[person],
                        band=band, gender=gender, n_cameras=self.n_cameras, realism=self.realism)


@dataclass(frozen=True)
class Captures:
    """One row per capture, sorted by (person, time). ``band``/``gender`` are the observed labels."""

    person: np.ndarray
    camera: np.ndarray
    time: np.ndarray
    true_band: np.ndarray
    true_gender: np.ndarray
    band: np.ndarray
    gender: np.ndarray
    n_cameras: int = 0              # cameras of the scenario (0: unknown)
    realism: Realism | None = None  # the scenario's knobs, for the group model

    def __len__(self) -> int:
        return int(self.person.shape[0])

    def window(self, window_seconds: int) -> np.ndarray:
        """Window index since the start midnight (windows are epoch-aligned since window | day)."""
        return np.floor(self.time / window_seconds).astype(np.int64)


def _arrivals(sc: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = sc.camera_index()
    cams, times = [], []
    for en in sc.entries:
        oh = sc.site_of(en.camera).opening_hours
        starts, ends, p = arrival_segments(en, oh)
        n_day = rng.poisson(en.arrivals_per_day, size=sc.days)
        n = int(n_day.sum())
        day = np.repeat(np.arange(sc.days), n_day)
        seg = rng.choice(len(p), size=n, p=p)
        t = day * float(DAY) + starts[seg] + rng.random(n) * (ends[seg] - starts[seg])
        cams.append(np.full(n, idx[en.camera], dtype=np.int64))
        times.append(t)
    return np.concatenate(cams), np.concatenate(times)


class _Walker:
    """The scenario's walk knobs: long transits, going on to another site, closing time.

    Its draws come from a stream of its own (``rng``), so a knob changes the walks only where it
    acts: with stragglers = 1 and a long enough straggle the walks are those without ``closing``.
    """

    def __init__(self, sc: Scenario, n_persons: int, rng: np.random.Generator) -> None:
        self.rng = rng
        r = sc.realism
        self.long = r.long_transits if r.long_transits and r.long_transits.share > 0 else None
        self.onward = r.onward if r.onward and r.onward.share > 0 else None
        self.closing = r.closing
        site = sc.camera_site
        self.site = site
        oh = [s.opening_hours for s in sc.sites]
        self.open = np.array([o.open for o in oh], float)[site]    # per camera
        self.close = np.array([o.close for o in oh], float)[site]
        self.straggler = (rng.random(n_persons) < self.closing.stragglers) if self.closing else None
        self.went_on = np.zeros(n_persons, dtype=bool) if self.onward else None
        if self.onward:
            idx = sc.camera_index()
            self.entry_cam = np.array([idx[e.camera] for e in sc.entries], dtype=np.int64)
            self.entry_rate = np.array([e.arrivals_per_day for e in sc.entries], float)

    def onward_step(self, p: np.ndarray, c: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Leaving persons (p, c, t) who go on: (mask over them, their next camera, transit seconds)."""
        on, rng = self.onward, self.rng
        assert on is not None and self.went_on is not None
        go = (rng.random(p.size) < on.share) & ~self.went_on[p]
        nxt = np.full(p.size, -1, dtype=np.int64)
        for site in np.unique(self.site[c[go]]):
            m = go & (self.site[c] == site)
            w = self.entry_rate * (self.site[self.entry_cam] != site)
            if w.sum() > 0:
                nxt[m] = self.entry_cam[rng.choice(w.size, size=int(m.sum()), p=w / w.sum())]
        dt = _lognormal(on, rng, p.size)
        arrive = (t + dt) % DAY
        go &= (nxt >= 0) & (arrive >= self.open[nxt]) & (arrive < self.close[nxt])
        self.went_on[p[go]] = True
        return go, nxt, dt

    def long_transits(self, dt: np.ndarray) -> np.ndarray:
        if self.long is None:
            return dt
        long = self.rng.random(dt.size) < self.long.share
        return np.where(long, _lognormal(self.long, self.rng, dt.size), dt)

    def open_at(self, p: np.ndarray, c: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Whether a pass of camera c at time t may happen under the closing rule."""
        if self.closing is None:
            return np.ones(p.size, dtype=bool)
        tod = t % DAY
        after = np.where(tod >= self.close[c], tod - self.close[c],   # after today's closing
                         np.where(tod < self.open[c], tod + DAY - self.close[c], -1.0))  # after yesterday's
        assert self.straggler is not None
        return (after < 0) | (self.straggler[p] & (after <= self.closing.straggle_seconds))


def _lognormal(t: Transit, rng: np.random.Generator, n: int) -> np.ndarray:
    """n draws of a transit time, clipped."""
    return np.clip(np.exp(np.log(t.median_seconds) + t.sigma * rng.standard_normal(n)), t.min_seconds, t.max_seconds)


def _staff_passes(sc: Scenario, first_person: int, rng: np.random.Generator
                  ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(number of staff, person, camera, time) of every staff pass, persons numbered from first_person."""
    idx = sc.camera_index()
    persons, cams, times = [], [], []
    n = 0
    for st in sc.realism.staff:
        site = next(s for s in sc.sites if s.site_id == st.site)
        pool = np.array([idx[c] for c in (st.cameras or [c.camera_id for c in site.cameras])], dtype=np.int64)
        oh = site.opening_hours
        for _ in range(st.count):
            mine = rng.choice(pool, size=st.cameras_per_person, replace=False)
            k = rng.poisson(st.passes_per_day, size=sc.days)
            total = int(k.sum())
            day = np.repeat(np.arange(sc.days), k)
            times.append(day * float(DAY) + oh.open + rng.random(total) * oh.seconds)
            cams.append(mine[rng.integers(0, mine.size, size=total)])
            persons.append(np.full(total, first_person + n, dtype=np.int64))
            n += 1
    if not persons:
        return 0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, float)
    return n, np.concatenate(persons), np.concatenate(cams), np.concatenate(times)


def generate_journeys(sc: Scenario, rng: np.random.Generator) -> Journeys:
    """Draw every person's walk for ``sc.days`` days from ``sc.start`` (and the staff's passes)."""
    cam0, t0 = _arrivals(sc, rng)
    order = np.argsort(t0, kind="stable")
    cam0, t0 = cam0[order], t0[order]
    n = cam0.shape[0]
    n_cam = len(sc.camera_ids)
    trans = sc.transition_matrix()
    # cumulative row probabilities with "leave" as the last column
    cum = np.cumsum(np.concatenate([trans, (1.0 - trans.sum(axis=1, keepdims=True)).clip(0)], axis=1), axis=1)
    cum[:, -1] = 1.0 + 1e-12
    tt = sc.transit_table()
    log_med = np.log(tt["median_seconds"])
    knob_rng = rng.spawn(1)[0] if sc.realism.knobs_on() else None  # the knobs' own stream
    walker = _Walker(sc, n, knob_rng) if knob_rng is not None else None

    persons = [np.arange(n)]
    cams = [cam0]
    times = [t0]
    steps = [np.zeros(n, dtype=np.int16)]
    cur_p, cur_c, cur_t = np.arange(n), cam0, t0
    for step in range(1, sc.max_visits_per_person):
        if cur_p.size == 0:
            break
        u = rng.random(cur_p.size)
        nxt = (u[:, None] >= cum[cur_c]).sum(axis=1)
        walk = nxt < n_cam
        if walker is not None and walker.onward is not None:
            lp, lc, lt = cur_p[~walk], cur_c[~walk], cur_t[~walk]
            go, on_c, on_dt = walker.onward_step(lp, lc, lt)
        cur_p, cur_c, nxt = cur_p[walk], cur_c[walk], nxt[walk]
        dt = np.exp(log_med[cur_c, nxt] + tt["sigma"][cur_c, nxt] * rng.standard_normal(cur_p.size))
        dt = np.clip(dt, tt["min_seconds"][cur_c, nxt], tt["max_seconds"][cur_c, nxt])
        cur_t = cur_t[walk] + (dt if walker is None else walker.long_transits(dt))
        cur_c = nxt
        if walker is not None:
            if walker.onward is not None:
                cur_p = np.concatenate([cur_p, lp[go]])
                cur_c = np.concatenate([cur_c, on_c[go]])
                cur_t = np.concatenate([cur_t, lt[go] + on_dt[go]])
            keep = walker.open_at(cur_p, cur_c, cur_t)
            cur_p, cur_c, cur_t = cur_p[keep], cur_c[keep], cur_t[keep]
        persons.append(cur_p)
        cams.append(cur_c)
        times.append(cur_t)
        steps.append(np.full(cur_p.size, step, dtype=np.int16))
    n_staff = 0
    if knob_rng is not None and sc.realism.staff:
        n_staff, sp, sc_, st = _staff_passes(sc, n, knob_rng)
        persons.append(sp)
        cams.append(sc_)
        times.append(st)
        steps.append(np.full(sp.size, -1, dtype=np.int16))
    person = np.concatenate(persons)
    camera = np.concatenate(cams)
    time = np.concatenate(times)
    step_arr = np.concatenate(steps)
    o = np.lexsort((time, person))
    person, camera, time, step_arr = person[o], camera[o].astype(np.int16), time[o], step_arr[o]

    v = person.shape[0]
    p_capture = sc.capture_probabilities
    if knob_rng is not None:
        p_capture = p_capture * sc.realism.detection.capture_probability
    captured = rng.random(v) < p_capture[camera]
    face = rng.random(v) >= sc.demographics.unknown_face_rate
    age = rng.choice(len(AGE_BANDS), size=n, p=sc.demographics.age_probabilities()).astype(np.int8)
    gender = rng.choice(2, size=n, p=sc.demographics.gender_probabilities()).astype(np.int8)
    if n_staff:
        assert knob_rng is not None
        age = np.concatenate([age, knob_rng.choice(len(AGE_BANDS), size=n_staff, p=sc.demographics.age_probabilities()
                                                   ).astype(np.int8)])
        gender = np.concatenate([gender, knob_rng.choice(2, size=n_staff, p=sc.demographics.gender_probabilities()
                                                         ).astype(np.int8)])
    entry_day = np.concatenate([np.floor(t0 / DAY), np.zeros(n_staff)]).astype(np.int16)
    return Journeys(n_persons=n + n_staff, person_age=age, person_gender=gender, person_entry_day=entry_day,
                    visit_person=person, visit_camera=camera, visit_time=time, visit_step=step_arr,
                    captured=captured, face_visible=face, n_staff=n_staff, n_cameras=n_cam,
                    realism=sc.realism if sc.realism.knobs_on() else None)
