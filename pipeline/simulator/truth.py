"""Ground truth of a simulation, kept aside from the published aggregates.

Definitions (windows are the publication windows, ``window = floor(t / window_seconds)``
counted from the scenario's start midnight, UTC; ``L = max_lag_windows``, default 30):

* **Pair count** ``pairs[d, A, B, lag]`` for an ordered camera pair (A, B) with A != B: the
  number of triples (person, capture a at A, capture b at B) of the *same* person with
  ``lag = window(b) - window(a)`` in ``[0, L]``, where ``d`` is the day of capture a.
  *Every* such pair of a person's captures counts, not only consecutive ones (a walk
  A -> C -> B contributes to (A, C), (C, B) and (A, B)), and a person who passes A twice
  before B contributes two pairs. That is exactly what a co-occurrence estimator measures:
  it matches group occurrences at A in window w with occurrences at B in window w + lag,
  whatever happened in between. At lag 0 both (A, B) and (B, A) count (same window, order
  unknown to the windows).
* **Flow** ``flows(day)[A, B] = sum over lag of pairs[day, A, B, lag]``; over all days when
  ``day`` is None. **Transit histogram** of (A, B): ``pairs[:, A, B, :]`` summed over days.
* ``visit_pairs``: the same counts over camera passes whether captured or not (what the flow
  would be with a capture probability of 1 everywhere).
* Under the scenario's realism knobs the definition does not change, it is applied to the
  captures that happened: a missed detection leaves no pair, a staff member's passes pair like
  anyone's (one person all period), a transit or onward visit beyond ``L`` windows leaves no
  pair within the lag range, and the group knobs do not enter the truth at all. ``persons``
  counts staff too; ``notes`` names the knobs that were on and the staff count.
* Per camera and UTC hour: captures, visits, the *true* (age band, gender) of captured
  persons and the *observed* labels (``unknown`` when the face was unusable), both before
  any small-count protection.

Only these aggregates leave the simulator; no per-person row is stored or written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.privacy.demographics import AGE_BANDS, UNKNOWN
from pipeline.simulator.journeys import Captures, Journeys
from pipeline.simulator.scenario import DAY, GENDER_NAMES, Scenario

__all__ = ["Truth", "compute_truth", "pair_counts"]

OBS_BANDS: tuple[str, ...] = AGE_BANDS + (UNKNOWN,)
OBS_GENDERS: tuple[str, ...] = GENDER_NAMES + (UNKNOWN,)


def pair_counts(person: np.ndarray, camera: np.ndarray, time: np.ndarray, n_cameras: int, n_days: int,
                window_seconds: int, max_lag: int) -> np.ndarray:
    """(n_days, C, C, max_lag + 1) pair counts as defined in the module docstring.

    Rows must be sorted by (person, time).
    """
    w = np.floor(time / window_seconds).astype(np.int64)
    day = np.floor(time / DAY).astype(np.int64)
    C, L1 = n_cameras, max_lag + 1
    size = n_days * C * C * L1
    out = np.zeros(size, dtype=np.int64)
    cam = camera.astype(np.int64)
    m = person.shape[0]
    k = 1
    while k < m:
        lag = w[k:] - w[:-k]
        ok = (person[k:] == person[:-k]) & (lag <= max_lag)
        if not ok.any():
            break  # windows never decrease along a person's captures: larger k gives larger lags
        a, b = cam[:-k][ok], cam[k:][ok]
        lg, da, db = lag[ok], day[:-k][ok], day[k:][ok]
        diff = a != b
        a, b, lg, da, db = a[diff], b[diff], lg[diff], da[diff], db[diff]
        out += np.bincount(((da * C + a) * C + b) * L1 + lg, minlength=size)
        z = lg == 0
        out += np.bincount(((db[z] * C + b[z]) * C + a[z]) * L1, minlength=size)
        k += 1
    return out.reshape(n_days, C, C, L1)


@dataclass(frozen=True)
class Truth:
    """Ground-truth aggregates of one simulation (see the module docstring for definitions)."""

    scenario: str
    start: dt.date
    days: int
    window_seconds: int
    max_lag_windows: int
    site_ids: tuple[str, ...]
    camera_ids: tuple[str, ...]
    camera_site: tuple[str, ...]           # site id of each camera
    persons: int
    pairs: np.ndarray                      # (D, C, C, L+1) capture pairs; D >= days (late captures spill over)
    visit_pairs: np.ndarray                # same over visits
    captures_per_hour: np.ndarray          # (C, H)
    visits_per_hour: np.ndarray            # (C, H)
    demographics_per_hour: np.ndarray      # (C, H, len(AGE_BANDS), 2) true attributes of captures
    observed_demographics_per_hour: np.ndarray  # (C, H, len(AGE_BANDS) + 1, 3) observed labels
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. same-group rate achieved (aggregate)

    # ---- convenience ------------------------------------------------------------------------
    def cam(self, camera_id: str) -> int:
        return self.camera_ids.index(camera_id)

    def flows(self, day: int | None = None) -> np.ndarray:
        """(C, C) pair counts summed over lags; one day or all days."""
        p = self.pairs.sum(axis=0) if day is None else self.pairs[day]
        return p.sum(axis=-1)

    def flow(self, a: str, b: str, day: int | None = None) -> int:
        return int(self.flows(day)[self.cam(a), self.cam(b)])

    def transit_histogram(self, a: str, b: str) -> np.ndarray:
        """Pairs (A, B) by lag in windows 0..max_lag, over all days."""
        return self.pairs[:, self.cam(a), self.cam(b), :].sum(axis=0)

    @property
    def captures(self) -> int:
        return int(self.captures_per_hour.sum())

    def captures_per_camera(self) -> dict[str, int]:
        return {c: int(n) for c, n in zip(self.camera_ids, self.captures_per_hour.sum(axis=1))}

    def captures_per_camera_day(self) -> np.ndarray:
        """(C, days) captures by day (spill-over after the last midnight folded into the last day)."""
        h = self.captures_per_hour
        per_day = np.add.reduceat(h, np.arange(0, h.shape[1], 24), axis=1) if h.shape[1] else h
        if per_day.shape[1] > self.days:
            per_day[:, self.days - 1] += per_day[:, self.days:].sum(axis=1)
            per_day = per_day[:, :self.days]
        return per_day

    def day_date(self, d: int) -> dt.date:
        return self.start + dt.timedelta(days=d)

    # ---- JSON -------------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        start = dt.datetime(self.start.year, self.start.month, self.start.day, tzinfo=dt.timezone.utc)

        def hour(h: int) -> str:
            return (start + dt.timedelta(hours=h)).strftime("%Y-%m-%dT%H:00:00Z")

        flows = []
        D, C = self.pairs.shape[0], len(self.camera_ids)
        for d in range(D):
            for a in range(C):
                for b in range(C):
                    tot = int(self.pairs[d, a, b].sum())
                    vtot = int(self.visit_pairs[d, a, b].sum())
                    if tot or vtot:
                        flows.append({"day": self.day_date(d).isoformat(), "from": self.camera_ids[a],
                                      "to": self.camera_ids[b], "pairs": tot, "visit_pairs": vtot,
                                      "by_lag": self.pairs[d, a, b].tolist()})
        hist = []
        allp = self.pairs.sum(axis=0)
        for a in range(C):
            for b in range(C):
                if a != b and allp[a, b].sum():
                    hist.append({"from": self.camera_ids[a], "to": self.camera_ids[b],
                                 "pairs": int(allp[a, b].sum()), "by_lag": allp[a, b].tolist()})
        per_hour = []
        for c in range(C):
            for h in np.flatnonzero(self.visits_per_hour[c] + self.captures_per_hour[c]):
                per_hour.append({"camera": self.camera_ids[c], "hour": hour(int(h)),
                                 "captures": int(self.captures_per_hour[c, h]),
                                 "visits": int(self.visits_per_hour[c, h])})

        def demo(arr: np.ndarray, bands: tuple[str, ...], genders: tuple[str, ...]) -> list[dict[str, Any]]:
            rows = []
            for c, h, b, g in zip(*np.nonzero(arr)):
                rows.append({"camera": self.camera_ids[c], "hour": hour(int(h)), "age_band": bands[b],
                             "gender": genders[g], "captures": int(arr[c, h, b, g])})
            return rows

        return {
            "definition": __doc__.strip(),
            "scenario": self.scenario, "start": self.start.isoformat(), "days": self.days,
            "window_seconds": self.window_seconds, "max_lag_windows": self.max_lag_windows,
            "cameras": [{"camera_id": c, "site_id": s} for c, s in zip(self.camera_ids, self.camera_site)],
            "persons": self.persons, "captures": self.captures, "visits": int(self.visits_per_hour.sum()),
            "captures_per_camera": self.captures_per_camera(),
            "notes": self.notes,
            "flows": flows, "transit_histograms": hist, "per_camera_hour": per_hour,
            "demographics_per_camera_hour": demo(self.demographics_per_hour, AGE_BANDS, GENDER_NAMES),
            "observed_demographics_per_camera_hour": demo(self.observed_demographics_per_hour, OBS_BANDS, OBS_GENDERS),
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(p)
        return p


def _per_hour(camera: np.ndarray, time: np.ndarray, C: int, H: int, *extra: tuple[np.ndarray, int]) -> np.ndarray:
    h = np.floor(time / 3600).astype(np.int64)
    idx = camera.astype(np.int64) * H + h
    shape = [C, H]
    for arr, n in extra:
        idx = idx * n + arr.astype(np.int64)
        shape.append(n)
    return np.bincount(idx, minlength=int(np.prod(shape))).reshape(shape)


def compute_truth(sc: Scenario, journeys: Journeys, captures: Captures,
                  notes: dict[str, Any] | None = None) -> Truth:
    C = len(sc.camera_ids)
    t_max = float(journeys.visit_time.max()) if journeys.n_visits else 0.0
    D = max(sc.days, int(t_max // DAY) + 1)
    H = D * 24
    L = sc.max_lag_windows
    cap_pairs = pair_counts(captures.person, captures.camera, captures.time, C, D, sc.window_seconds, L)
    vis_pairs = pair_counts(journeys.visit_person, journeys.visit_camera, journeys.visit_time, C, D,
                            sc.window_seconds, L)
    site_of = {c.camera_id: s.site_id for s in sc.sites for c in s.cameras}
    return Truth(
        scenario=sc.name, start=sc.start, days=sc.days, window_seconds=sc.window_seconds, max_lag_windows=L,
        site_ids=sc.site_ids, camera_ids=sc.camera_ids, camera_site=tuple(site_of[c] for c in sc.camera_ids),
        persons=journeys.n_persons, pairs=cap_pairs, visit_pairs=vis_pairs,
        captures_per_hour=_per_hour(captures.camera, captures.time, C, H),
        visits_per_hour=_per_hour(journeys.visit_camera, journeys.visit_time, C, H),
        demographics_per_hour=_per_hour(captures.camera, captures.time, C, H,
                                        (captures.true_band, len(AGE_BANDS)), (captures.true_gender, 2)),
        observed_demographics_per_hour=_per_hour(captures.camera, captures.time, C, H,
                                                 (captures.band, len(OBS_BANDS)), (captures.gender, len(OBS_GENDERS))),
        notes={**_realism_notes(sc, journeys), **(notes or {})},
    )


def _realism_notes(sc: Scenario, journeys: Journeys) -> dict[str, Any]:
    on = sc.realism.knobs_on()
    if not on:
        return {}
    return {"realism_knobs": on, "staff_persons": journeys.n_staff,
            "staff_captures": int(journeys.captured[journeys.person_is_staff[journeys.visit_person]].sum())}
