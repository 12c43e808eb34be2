"""Group ids for simulated captures: a fast statistical model, or the real privacy core.

``fast``: each person gets a home group, uniform in ``[0, n_groups)``; each capture lands in
the home group with probability ``q``, else in a uniform random group. The brief asked for
``q = params.same_group_rate``, but then two captures of one person share a group with
probability ``q**2 + (1 - q**2) / n``, about 0.25 for a rate of 0.5, while the parameter is
defined (and flow estimators use it) as the probability that a *re-capture* lands in the same
group as the other capture. So ``q`` is solved from ``q**2 + (1 - q**2) / n = rate``
(:func:`fast_home_probability`): every pair of captures of a person, consecutive or not, then
shares a group with exactly the configured rate, as with the real hash (where each capture's
group is an independent noisy draw around the person's appearance).

With the scenario's group knobs (``realism.popularity``, ``realism.same_group``; they travel
with the captures) the fast model departs from uniform groups and one rate for all, see
:func:`realistic_groups`.

``core``: each person gets an appearance (``pipeline.privacy.simulation.appearance``), each
capture a descriptor under its camera's conditions, and the descriptors go through the real
:class:`pipeline.privacy.Anonymizer` in batches (seeded noise through
``groups_of_working(..., rng)`` so runs repeat; production uses OS entropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.privacy import Anonymizer, PrivacyParams
from pipeline.privacy.simulation.appearance import AppearanceModel, Cameras, People
from pipeline.simulator.journeys import Captures, Journeys
from pipeline.simulator.scenario import DAY, Popularity, Realism, SameGroup

__all__ = ["fast_home_probability", "fast_groups", "realistic_groups", "popularity_table", "person_rates",
           "core_groups", "same_group_rate", "SameGroupRate"]


def fast_home_probability(params: PrivacyParams) -> float:
    """Home-group probability q whose pairwise same-group rate equals ``params.same_group_rate``."""
    n = params.n_groups
    p = params.same_group_rate
    q2 = (p - 1.0 / n) / (1.0 - 1.0 / n)
    return float(np.sqrt(np.clip(q2, 0.0, 1.0)))


def fast_groups(captures: Captures, n_persons: int, params: PrivacyParams, rng: np.random.Generator,
                realism: Realism | None = None) -> np.ndarray:
    """Group id of every capture (fast mode). ``realism`` defaults to the knobs the captures carry."""
    realism = captures.realism if realism is None else realism
    if realism is not None and realism.groups_on:
        return realistic_groups(captures, n_persons, params, rng, realism.popularity, realism.same_group)
    n = params.n_groups
    home = rng.integers(0, n, size=n_persons)
    q = fast_home_probability(params)
    m = len(captures)
    stay = rng.random(m) < q
    return np.where(stay, home[captures.person], rng.integers(0, n, size=m)).astype(np.int64)


def popularity_table(pop: Popularity, n_cameras: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """(n_cameras, 24, n_groups) probability of each group per camera and UTC clock hour
    (the model is in :class:`pipeline.simulator.scenario.Popularity`)."""
    z, x, y = rng.standard_normal((3, n_groups))
    u = rng.standard_normal((n_cameras, n_groups))
    theta = 2 * np.pi * (np.arange(24) + 0.5) / 24
    a = np.sqrt(max(1.0 - pop.hour_drift - pop.camera_drift, 0.0))
    hour = np.sqrt(pop.hour_drift) * (np.cos(theta)[:, None] * x + np.sin(theta)[:, None] * y)   # (24, G)
    log_w = pop.sigma * (a * z + hour[None, :, :] + np.sqrt(pop.camera_drift) * u[:, None, :])
    w = np.exp(log_w - log_w.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def person_rates(same: SameGroup, p: float, chance: float, n_persons: int, rng: np.random.Generator) -> np.ndarray:
    """Per-person same-group rate p_i = chance + (1 - chance) r_i, with r_i ~ Beta around
    r = (p - chance) / (1 - chance), so that the population mean is p (see
    :class:`pipeline.simulator.scenario.SameGroup`); all equal to p without a concentration."""
    r = float(np.clip((p - chance) / (1.0 - chance), 0.0, 1.0))
    if same.concentration is None or r in (0.0, 1.0):
        ri = np.full(n_persons, r)
    else:
        ri = rng.beta(r * same.concentration, (1.0 - r) * same.concentration, size=n_persons)
    return chance + (1.0 - chance) * ri


def _draw(keys: np.ndarray, table: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One group per row, from the distribution ``table[key]`` of its key."""
    cum = np.cumsum(table, axis=-1)
    u = rng.random(keys.shape[0])
    out = np.empty(keys.shape[0], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    uk, first = np.unique(keys[order], return_index=True)
    for k, a, b in zip(uk.tolist(), first.tolist(), np.append(first[1:], keys.shape[0]).tolist()):
        rows = order[a:b]
        out[rows] = np.searchsorted(cum[k], u[rows] * cum[k, -1], side="right")
    return np.minimum(out, table.shape[-1] - 1)


def realistic_groups(captures: Captures, n_persons: int, params: PrivacyParams, rng: np.random.Generator,
                     pop: Popularity, same: SameGroup) -> np.ndarray:
    """Fast groups under the popularity and same-group knobs.

    Person i has a home group drawn from the popularity at their first capture's camera and
    hour; each capture lands in the home group with probability q_i, else in a group drawn
    from the popularity of its own camera and hour. Two captures of i then share a group with
    probability q_i^2 + (1 - q_i^2) kappa, kappa = sum_g pi_g^2 for the captures' mean popularity
    pi (exact without drift, close with it); q_i is solved from the person's rate
    (:func:`person_rates`), whose population mean is the parameter set's rate. Uniform
    popularity and no concentration give the plain fast model's rates (not its draws).
    """
    n = params.n_groups
    m = len(captures)
    C = captures.n_cameras or (int(captures.camera.max()) + 1 if m else 1)
    if pop.on:
        table = popularity_table(pop, C, n, rng).reshape(C * 24, n)
    else:
        table = np.full((1, n), 1.0 / n)
    hour = (np.floor(captures.time % DAY / 3600).astype(np.int64)) if m else np.zeros(0, np.int64)
    key = captures.camera.astype(np.int64) * 24 + hour if pop.on else np.zeros(m, np.int64)
    mix = np.bincount(key, minlength=table.shape[0]) @ table / max(m, 1)
    chance = float((mix ** 2).sum()) if m else 1.0 / n
    q = np.sqrt((person_rates(same, params.same_group_rate, chance, n_persons, rng) - chance) / (1.0 - chance))
    home = np.zeros(n_persons, dtype=np.int64)
    if m:
        who, first = np.unique(captures.person, return_index=True)
        home[who] = _draw(key[first], table, rng)
    stay = rng.random(m) < q[captures.person]
    return np.where(stay, home[captures.person], _draw(key, table, rng)).astype(np.int64)


def _people(model: AppearanceModel, gender: np.ndarray, age: np.ndarray, rng: np.random.Generator) -> People:
    """The scenario's demographics with appearances drawn to follow them."""
    return model.people(gender.shape[0], rng, gender=gender, age=age)


def calibrate_for_appearance(params: PrivacyParams, model: AppearanceModel, cams: Cameras,
                             rng: np.random.Generator, n_people: int = 20_000, n_pairs: int = 4_000) -> PrivacyParams:
    """Fit reference statistics, hash offsets and noise to the simulated descriptor (as
    ``flowctl privacy eval`` does), keeping the given parameter set's fictitious settings and
    same-group target. The default parameter set has no reference statistics, so without this the
    HSV descriptor fills few groups and the same-group rate is far from its nominal value."""
    from pipeline.privacy.calibration import calibrate

    n_cam = len(cams)
    ref_people = model.people(n_people, rng)
    ref_x = model.capture(ref_people, rng.integers(0, n_cam, n_people), cams, rng)
    pp = model.people(n_pairs, rng)
    c1 = rng.integers(0, n_cam, n_pairs)
    c2 = (c1 + rng.integers(1, max(n_cam, 2), n_pairs)) % max(n_cam, 1)
    pairs = (model.capture(pp, c1, cams, rng), model.capture(pp, c2, cams, rng))
    res = calibrate(ref_x, version=f"{params.version}-simcal"[:64], pairs=pairs, base=params,
                    target_rate=params.same_group_rate, seed=int(rng.integers(0, 2**62)),
                    fictitious_ratio=params.fictitious_ratio)
    return res.params.with_changes(fictitious_floor=params.fictitious_floor,
                                   fictitious_ratio=params.fictitious_ratio)


def core_groups(journeys: Journeys, captures: Captures, n_cameras: int, params: PrivacyParams,
                rng: np.random.Generator, batch: int = 20_000,
                progress: Callable[[int], None] | None = None, calibrate: bool = False) -> tuple[np.ndarray, PrivacyParams]:
    """Groups from simulated descriptors through the real Anonymizer (batched).

    Returns the groups and the parameter set used (a calibrated copy when ``calibrate``).
    """
    model = AppearanceModel()
    people = _people(model, journeys.person_gender, journeys.person_age, rng)
    cams = model.cameras(n_cameras, rng)
    if calibrate:
        params = calibrate_for_appearance(params, model, cams, rng)
    anon = Anonymizer(params, model.dim)
    labels = np.array(["female", "male", "unknown"], dtype=object)
    out = np.empty(len(captures), dtype=np.int64)
    for lo in range(0, len(captures), batch):
        hi = min(lo + batch, len(captures))
        who = people.subset(captures.person[lo:hi])
        desc = model.capture(who, captures.camera[lo:hi].astype(np.int64), cams, rng)
        # The gender guess (unknown when the face is unusable) is the stratum label, as in the processor.
        strata = labels[captures.gender[lo:hi]] if params.strata else None
        offset_rows = anon.stratum_rows(strata, hi - lo)
        out[lo:hi] = anon.groups_of_working(anon.working_vectors(desc), rng=rng, offset_rows=offset_rows)
        if progress:
            progress(hi - lo)
    return out, params


@dataclass(frozen=True)
class SameGroupRate:
    """Achieved share of same-person capture pairs in one group (aggregate figures only)."""

    consecutive: float      # over consecutive captures of a person
    consecutive_pairs: int
    all_pairs: float        # over every pair of captures of a person
    all_pairs_n: int
    chance: float           # 1 / n_groups
    # over the first two captures of each person with two or more: what a calibration on separate
    # people measures, the population mean (all_pairs weighs persons by their pairs, staff heavily)
    first_pair: float = float("nan")
    first_pair_n: int = 0


def same_group_rate(captures: Captures, groups: np.ndarray, n_groups: int, max_offset: int = 50) -> SameGroupRate:
    person = captures.person
    same_c = (person[1:] == person[:-1])
    g_c = groups[1:] == groups[:-1]
    n_c = int(same_c.sum())
    hits, total = 0, 0
    for k in range(1, max_offset + 1):
        if k >= person.shape[0]:
            break
        sp = person[k:] == person[:-k]
        s = int(sp.sum())
        if s == 0:
            break
        total += s
        hits += int((sp & (groups[k:] == groups[:-k])).sum())
    first = np.flatnonzero(same_c & np.append(True, person[1:] != person[:-1])[:-1])  # a person's 1st and 2nd
    return SameGroupRate(consecutive=float((same_c & g_c).sum() / n_c) if n_c else float("nan"),
                         consecutive_pairs=n_c, all_pairs=hits / total if total else float("nan"),
                         all_pairs_n=total, chance=1.0 / n_groups,
                         first_pair=float(g_c[first].mean()) if first.size else float("nan"), first_pair_n=first.size)
