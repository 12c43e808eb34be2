"""Person journeys: arrivals, Markov routes with transit times, captures, demographics.

Persons exist only here. A :class:`Journeys` object holds one row per camera pass (visit)
with its person index; it is handed to the group assignment, the publisher and the
ground-truth counter inside :func:`pipeline.simulator.simulate` and is never written out.
Everything is vectorised over persons: a route step draws the next camera and the transit
time for every still-walking person at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.privacy.demographics import AGE_BANDS
from pipeline.simulator.scenario import DAY, Scenario, arrival_segments

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
    person_entry_day: np.ndarray  # (P,) int16, day of the person's arrival
    visit_person: np.ndarray     # (V,) int64
    visit_camera: np.ndarray     # (V,) int16, index into scenario.camera_ids
    visit_time: np.ndarray       # (V,) float64, seconds after the scenario's start midnight (UTC)
    visit_step: np.ndarray       # (V,) int16, position of the pass within the person's walk
    captured: np.ndarray         # (V,) bool, the pass produced a capture
    face_visible: np.ndarray     # (V,) bool, a capture's age band and gender are usable

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
                        band=band, gender=gender)


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


def generate_journeys(sc: Scenario, rng: np.random.Generator) -> Journeys:
    """Draw every person's walk for ``sc.days`` days from ``sc.start``."""
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
        cur_p, cur_c, nxt = cur_p[walk], cur_c[walk], nxt[walk]
        dt = np.exp(log_med[cur_c, nxt] + tt["sigma"][cur_c, nxt] * rng.standard_normal(cur_p.size))
        dt = np.clip(dt, tt["min_seconds"][cur_c, nxt], tt["max_seconds"][cur_c, nxt])
        cur_t = cur_t[walk] + dt
        cur_c = nxt
        persons.append(cur_p)
        cams.append(cur_c)
        times.append(cur_t)
        steps.append(np.full(cur_p.size, step, dtype=np.int16))
    person = np.concatenate(persons)
    camera = np.concatenate(cams)
    time = np.concatenate(times)
    step_arr = np.concatenate(steps)
    o = np.lexsort((time, person))
    person, camera, time, step_arr = person[o], camera[o].astype(np.int16), time[o], step_arr[o]

    v = person.shape[0]
    captured = rng.random(v) < sc.capture_probabilities[camera]
    face = rng.random(v) >= sc.demographics.unknown_face_rate
    age = rng.choice(len(AGE_BANDS), size=n, p=sc.demographics.age_probabilities()).astype(np.int8)
    gender = rng.choice(2, size=n, p=sc.demographics.gender_probabilities()).astype(np.int8)
    entry_day = np.floor(t0 / DAY).astype(np.int16)
    return Journeys(n_persons=n, person_age=age, person_gender=gender, person_entry_day=entry_day,
                    visit_person=person, visit_camera=camera, visit_time=time, visit_step=step_arr,
                    captured=captured, face_visible=face)
