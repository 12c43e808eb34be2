"""The attack suite: two simulated runs (the attacker's held-out prior and the target), every
attack on every tier, and the issue's Done-when verdicts on the analyst tier.

Thresholds (issue 11 item 5, analyst tier):

* (a) the group-following insider recovers nothing without restricted-tier access;
* (b) the analyst with a sighting gains at most 0.05 over the prior at the 99th percentile, in
  busy, quiet and after-close hours; two analysts are run (the bench's Gaussian background and
  the exact noise model) and the stronger one per hour kind is judged;
* (c) 100% of analyst-visible values carry noise or aggregate at least 3 real persons;
* (d) not in the issue's Done-when; held to the same bar as (b) (0.05 at p99 per hour kind),
  and counted in the exit code;
* (e) no grid row missing (every key of every hour of every seen camera is published), and no
  field published exactly (without noise) in camera-hours nobody passed or whose zeros tell
  such hours from those a handful passed.

An hour kind without a single target is reported as n/a, neither pass nor fail.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Callable, ContextManager, Iterator

from pipeline.aggregator.counts import CountsSpec
from pipeline.aggregator.model import AggregatorSpec
from pipeline.redteam import attacks as A
from pipeline.redteam.world import (ANALYST, OBS_BANDS, OBS_GENDERS, UNPROTECTED, World, demographics_spec,
                                    simulated_world)

__all__ = ["SuiteConfig", "SuiteResult", "Verdict", "run_suite", "GAIN_BAR", "COVERAGE_BAR", "judge"]

GAIN_BAR = 0.05
COVERAGE_BAR = 1.0

Task = Callable[[str, int], ContextManager[Callable[..., None]]]


@dataclass
class SuiteConfig:
    scenario: str = "reference"
    days: int = 2
    seed: int = 21
    prior_seed: int | None = None          # default seed + 1000
    max_targets: int | None = 2000         # per posterior attack and for (a)
    padding: str = "stream"
    rare_cells: int = 3
    spec: AggregatorSpec | None = None     # default: the project's settings
    demo_spec: CountsSpec | None = None

    @property
    def prior(self) -> int:
        return self.seed + 1000 if self.prior_seed is None else self.prior_seed


@dataclass
class Verdict:
    attack: str
    measure: str
    bar: str
    measured: str
    passed: bool | None          # None: not measurable here (no targets of that kind)
    done_when: bool = True       # one of the Done-when thresholds


@dataclass
class SuiteResult:
    config: dict[str, Any]
    worlds: dict[str, dict[str, Any]]
    a: list[A.FollowResult]
    b: list[A.PosteriorResult]
    c: list[A.CoverageResult]
    d: list[A.PosteriorResult]
    e: list[A.ExistenceResult]
    verdicts: list[Verdict]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(v.passed is not False for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        def conv(x: Any) -> Any:
            if is_dataclass(x):
                d = {k: conv(v) for k, v in asdict(x).items()}
                if isinstance(x, A.CoverageResult):
                    d.update(values=x.values, noised_share=x.share("noised"), three_plus_share=x.share("three_plus"),
                             either_share=x.share("either"))
                if isinstance(x, A.ExistenceResult):
                    d["leaks"] = x.leaks
                return d
            if isinstance(x, dict):
                return {str(k): conv(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [conv(v) for v in x]
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {"config": self.config, "worlds": self.worlds, "passed": self.passed,
                "verdicts": conv(self.verdicts),
                "attacks": {"a": conv(self.a), "b": conv(self.b), "c": conv(self.c), "d": conv(self.d),
                            "e": conv(self.e)},
                "seconds": self.seconds}


@contextlib.contextmanager
def _no_task(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield lambda n=1: None


def _summary(w: World) -> dict[str, Any]:
    t = w.tiers[ANALYST]
    return {"label": w.label, "cameras": w.n_cameras, "captures": len(w.captures),
            "persons": int(len(set(w.captures.person.tolist()))), "restricted_cells": len(w.cells),
            "published_rows": {"flow": len(t.flow), "footfall": len(t.footfall), "demographics": len(t.demographics)},
            "same_group_rate": w.same_group_rate}


def run_suite(cfg: SuiteConfig, task: Task | None = None) -> SuiteResult:
    task = task or _no_task
    secs: dict[str, float] = {}
    spec = cfg.spec
    if spec is None:
        from pipeline.settings import load_settings

        spec = load_settings().aggregator.spec()
    demo_spec = cfg.demo_spec or demographics_spec(window_seconds=spec.window_seconds)

    worlds = {}
    for role, seed in (("prior", cfg.prior), ("target", cfg.seed)):
        t0 = time.monotonic()
        with task(f"{role} run: simulate, publish (noised and not)", 3) as adv:
            worlds[role] = simulated_world(cfg.scenario, cfg.days, seed, spec, padding=cfg.padding,
                                           demo_spec=demo_spec, progress=lambda _m: adv(1))
        secs[f"{role}_world"] = time.monotonic() - t0
    prior, world = worlds["prior"], worlds["target"]

    t0 = time.monotonic()
    with task("(a) group-following insider", 1) as adv:
        a_res = [A.group_following(world, cfg.max_targets, cfg.seed)]
        a_res += [A.group_following_published(world, tier) for tier in (ANALYST, UNPROTECTED)]
        adv(1)
    secs["a"] = time.monotonic() - t0

    t0 = time.monotonic()
    targets = A.sighting_targets(world, cfg.max_targets, cfg.seed)
    b_res = []
    for tier in (ANALYST, UNPROTECTED):
        with task(f"(b) analyst with a sighting, {tier} tier", 2 * len(targets)) as adv:
            b_res.append(A.sighting_attack(prior, world, tier, targets, tick=adv))
            b_res.append(A.sighting_attack_exact(prior, world, tier, targets, tick=adv))
    with task("(b) insider with a sighting, restricted tier", len(targets)) as adv:
        b_res.append(A.sighting_attack_restricted(prior, world, targets, tick=adv))
    secs["b"] = time.monotonic() - t0

    t0 = time.monotonic()
    with task("(c) value coverage", 3) as adv:
        c_res = []
        for tier in (ANALYST, UNPROTECTED):
            c_res.append(A.value_coverage(world, tier))
            adv(1)
        c_res.append(A.value_coverage_restricted(world))
        adv(1)
    secs["c"] = time.monotonic() - t0

    t0 = time.monotonic()
    rare = A.rare_cells(prior, cfg.rare_cells)
    d_targets = A.demographic_targets(world, rare, cfg.max_targets, cfg.seed)
    d_res = []
    for tier in (ANALYST, UNPROTECTED):
        with task(f"(d) demographics to path, {tier} tier", len(d_targets)) as adv:
            r = A.demographic_linkage(prior, world, tier, d_targets, tick=adv)
            r.note = "rare cells: " + ", ".join(f"{OBS_BANDS[b]}/{OBS_GENDERS[g]}" for b, g in rare)
            d_res.append(r)
    secs["d"] = time.monotonic() - t0

    t0 = time.monotonic()
    with task("(e) row existence", 2) as adv:
        e_res = []
        for tier in (ANALYST, UNPROTECTED):
            e_res.append(A.row_existence(world, tier))
            adv(1)
    secs["e"] = time.monotonic() - t0

    res = SuiteResult(config={"scenario": cfg.scenario, "days": cfg.days, "seed": cfg.seed, "prior_seed": cfg.prior,
                              "max_targets": cfg.max_targets, "padding": cfg.padding, "rare_cells": cfg.rare_cells,
                              "noise": {"flow_s": spec.flow_noise_scale, "window_totals": spec.total_noise_scale,
                                        "footfall": spec.footfall_noise_scale,
                                        "demographics": demo_spec.noise_scale}},
                      worlds={k: _summary(v) for k, v in worlds.items()},
                      a=a_res, b=b_res, c=c_res, d=d_res, e=e_res, verdicts=[],
                      seconds={k: round(v, 1) for k, v in secs.items()})
    res.verdicts = judge(res)
    return res


def _fmt(x: float | None, nd: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def judge(res: SuiteResult) -> list[Verdict]:
    """The analyst-tier verdicts."""
    out: list[Verdict] = []
    a = next(r for r in res.a if r.tier == ANALYST)
    ok = not a.group_fields and a.recovered == 0 and a.whole_days == 0
    out.append(Verdict("a", "later captures / whole days recovered without restricted access", "0 / 0",
                       f"{_fmt(a.recovered)} / {_fmt(a.whole_days)}", ok))
    for letter, results, done_when in (("b", res.b, True), ("d", res.d, False)):
        mine = [x for x in results if x.tier == ANALYST]
        for kind in A.HOUR_KINDS:
            rows = [(x.attack, x.by_kind()[kind]) for x in mine]
            n = max((g.targets for _, g in rows), default=0)
            worst = max((g.gain_p99 for _, g in rows if g.targets), default=None)
            what = " (the stronger of the Gaussian and the exact-model analyst)" if len(rows) > 1 else ""
            out.append(Verdict(letter, f"gain over prior at p99, {kind} hours ({n} targets){what}",
                               f"<= {GAIN_BAR}", _fmt(worst, 4), None if worst is None else worst <= GAIN_BAR,
                               done_when))
    c = next(x for x in res.c if x.tier == ANALYST)
    failing = sum(f.values - f.either for f in c.fields)
    out.append(Verdict("c", "values that carry noise or aggregate >= 3 real persons (PRIVACY.md's rule; "
                            "aggregating >= 3 alone cannot hold once empty hours publish zero rows)", "100%",
                       f"{100 * c.share('either'):.2f}% ({failing:,} of {c.values:,} not); >= 3 persons alone: "
                       f"{100 * c.share('three_plus'):.2f}%", failing == 0))
    e = next(x for x in res.e if x.tier == ANALYST)
    fields_hit = sorted({x.split(":", 1)[0] for x in e.value_leaks})
    missing = sum(t.missing_no_capture + t.missing_with_capture for t in e.tables)
    expected = sum(t.expected for t in e.tables)
    out.append(Verdict("e", "rows: grid rows (every key, every hour of every seen camera) missing", "0",
                       f"{missing} of {expected:,}", not e.row_leaks))
    out.append(Verdict("e", "values: fields exact where nobody passed, or whose zeros tell empty hours apart",
                       "none", f"{len(fields_hit)}" + (": " + ", ".join(fields_hit) if fields_hit else ""),
                       not e.value_leaks))
    return out
