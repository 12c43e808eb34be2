"""A customer-flow simulator with ground truth, for evaluating flow estimators and load-testing.

Entry point for evaluation code (no services needed)::

    from pipeline.simulator import load_scenario, simulate
    from pipeline.privacy import PrivacyParams

    sc = load_scenario("reference")                 # or a path to a YAML file
    published, truth = simulate(sc, PrivacyParams.default(), np.random.default_rng(1))
    published.counts_matrix("n-entrance")           # (windows, (n_windows, n_groups)) padded counts
    truth.flow("n-entrance", "n-store")             # true co-occurring capture pairs, lag 0..30 windows

Persons exist only inside :mod:`pipeline.simulator.journeys`; what leaves is the published
aggregates (:class:`Published`, exactly what the processor would publish) and the ground
truth aggregates (:class:`Truth`). ``flowctl simulate run`` writes the former into ClickHouse
or Kafka and the latter as JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from pipeline.privacy import PrivacyParams
from pipeline.simulator.groups import SameGroupRate, core_groups, fast_groups, fast_home_probability, same_group_rate
from pipeline.simulator.journeys import Captures, generate_journeys
from pipeline.simulator.publish import Published, publish
from pipeline.simulator.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from pipeline.simulator.truth import Truth, compute_truth

__all__ = ["simulate", "Simulation", "RunStats", "Scenario", "ScenarioError", "load_scenario", "parse_scenario",
           "Published", "Truth", "SameGroupRate"]


@dataclass(frozen=True)
class RunStats:
    """Aggregate figures of one run (nothing per person)."""

    mode: str
    persons: int
    visits: int
    captures: int
    captures_per_camera_day: dict[str, float]
    same_group: SameGroupRate
    target_same_group_rate: float
    fast_home_probability: float | None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Simulation:
    """Result of :func:`simulate`; unpacks as ``published, truth``."""

    published: Published
    truth: Truth
    stats: RunStats
    params: PrivacyParams  # the parameter set used (a calibrated copy with ``calibrate``)
    # Per-person captures and their groups: only with ``keep_captures`` (privacy attack benches
    # need a target's real path; nothing that publishes or reports ever gets them).
    captures: Captures | None = None
    groups: np.ndarray | None = None

    def __iter__(self) -> Iterator:
        return iter((self.published, self.truth))


def simulate(scenario: Scenario, params: PrivacyParams | None = None, rng: np.random.Generator | None = None, *,
             days: int | None = None, mode: str | None = None, calibrate: bool = False,
             progress: Callable[[str, int, int], None] | None = None, keep_captures: bool = False) -> Simulation:
    """Journeys -> groups -> published aggregates + ground truth, all in memory.

    ``rng`` defaults to ``default_rng(scenario.seed)``; journeys, group assignment and
    fictitious draws use independent child streams, so with the same seed a ``fast`` and a
    ``core`` run see the same persons and captures. ``days``/``mode`` override the scenario.
    ``calibrate`` (core mode): first fit the parameter set to the simulated descriptor
    (:func:`pipeline.simulator.groups.calibrate_for_appearance`); the published rows then carry
    the calibrated set's version, and ``truth.notes`` records it.
    ``progress(stage, done, total)`` is called now and then (for a progress bar).
    """
    sc = scenario.with_overrides(days=days, group_mode=mode) if (days or mode) else scenario
    params = PrivacyParams.default() if params is None else params
    rng = np.random.default_rng(sc.seed) if rng is None else rng
    j_rng, g_rng, f_rng = rng.spawn(3)
    secs: dict[str, float] = {}

    t = time.monotonic()
    journeys = generate_journeys(sc, j_rng)
    captures = journeys.captures()
    secs["journeys"] = time.monotonic() - t

    t = time.monotonic()
    n_cap = len(captures)
    if sc.group_mode == "fast":
        groups = fast_groups(captures, journeys.n_persons, params, g_rng)
    else:
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            if progress:
                progress("groups", done[0], n_cap)

        groups, params = core_groups(journeys, captures, len(sc.camera_ids), params, g_rng, progress=step,
                                     calibrate=calibrate)
    sg = same_group_rate(captures, groups, params.n_groups)
    secs["groups"] = time.monotonic() - t

    t = time.monotonic()
    notes = {"group_mode": sc.group_mode, "params_version": params.version,
             "same_group_rate_target": params.same_group_rate,
             "same_group_rate_consecutive": sg.consecutive, "same_group_rate_all_pairs": sg.all_pairs,
             "same_group_pairs": sg.all_pairs_n}
    truth = compute_truth(sc, journeys, captures, notes=notes)
    secs["truth"] = time.monotonic() - t

    t = time.monotonic()
    total_w = [0]
    n_windows_est = len(sc.camera_ids) * sc.days * (86_400 // sc.window_seconds)

    def pstep(n: int) -> None:
        total_w[0] += n
        if progress:
            progress("publish", total_w[0], n_windows_est)

    published = publish(sc, captures, groups, params, f_rng, progress=pstep)
    secs["publish"] = time.monotonic() - t
    per_day = truth.captures_per_camera_day().mean(axis=1) if sc.days else np.zeros(len(sc.camera_ids))
    stats = RunStats(mode=sc.group_mode, persons=journeys.n_persons, visits=journeys.n_visits, captures=n_cap,
                     captures_per_camera_day={c: float(x) for c, x in zip(sc.camera_ids, per_day)},
                     same_group=sg, target_same_group_rate=params.same_group_rate,
                     fast_home_probability=fast_home_probability(params) if sc.group_mode == "fast" else None,
                     seconds=secs)
    return Simulation(published=published, truth=truth, stats=stats, params=params,
                      captures=captures if keep_captures else None, groups=groups if keep_captures else None)
