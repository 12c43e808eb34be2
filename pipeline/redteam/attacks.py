"""The five attacks of issue 11 item 5, as functions over a :class:`~pipeline.redteam.world.World`.

Each returns a small result dataclass (JSON-able with :func:`dataclasses.asdict`); the
thresholds and verdicts live in :mod:`pipeline.redteam.suite`.

(a) :func:`group_following` (restricted tier) and :func:`group_following_published`: an insider
    who knows the group of a target's first capture of the day follows that group through the
    per-window group cells; share of the target's later captures that day where the group shows
    up, and share of days where it shows up at every one. On a published tier the attack needs a
    group identifier in the rows: the row types' fields are inspected.
(b) :func:`sighting_attack` (the bench's analyst: Gaussian background), :func:`sighting_attack_exact`
    (the exact noise model) on published tiers, and :func:`sighting_attack_restricted` on the
    group cells: an analyst who saw the target at camera A in minute t and knows they move on
    within the flow lags; posterior of the true next camera against the prior from a held-out run.
(c) :func:`value_coverage`: every analyst-visible value (one field of one row) either carries
    noise or aggregates at least 3 real persons.
(d) :func:`demographic_linkage`: an analyst who knows a target's (age band, gender), a rare one,
    and one sighting (camera, hour), infers the next camera and hour from the published
    demographic counts.
(e) :func:`row_existence`: whether the set of published rows, or a field being exactly zero,
    depends on whether anyone real passed.
"""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Callable, Iterator

import numpy as np

from pipeline.aggregator.counts import demographic_grid
from pipeline.aggregator.model import FAR, LAG, RANGE
from pipeline.privacy.release import discrete_laplace_variance
from pipeline.redteam.world import (ANALYST, DAY, HOUR, OBS_BANDS, OBS_GENDERS, RESTRICTED, UNPROTECTED, World,
                                    dp_gain_bound, hour_types, movers, real_persons_per_camera_hour)

__all__ = ["HOUR_KINDS", "FollowResult", "GainStats", "PosteriorResult", "FieldCoverage", "CoverageResult", "Value",
           "TableExistence", "FieldSignal", "ExistenceResult", "group_following", "group_following_published",
           "sighting_targets", "sighting_attack", "sighting_attack_exact", "sighting_attack_restricted",
           "eps_next_capture", "published_values", "value_coverage", "value_coverage_restricted", "rare_cells",
           "demographic_targets", "count_likelihood", "demographic_linkage", "row_existence", "streamed_hours"]

HOUR_KINDS = ("busy", "quiet", "after-close")
Tick = Callable[[int], None]


# ---- (a) the group-following insider ------------------------------------------------------------------

@dataclass
class FollowResult:
    tier: str
    target_days: int
    later_captures: int
    recovered: float            # share of later captures where the followed group shows up
    whole_days: float           # share of target-days with every later capture recovered
    precision: float | None     # share of the followed group's later occurrences that are the target's
    groups_in_first_cell: float | None   # candidate groups in the first capture's cell (the insider must pick one)
    group_fields: list[str] = field(default_factory=list)
    note: str = ""


def group_following(world: World, max_targets: int | None = None, seed: int = 0,
                    tick: Tick | None = None) -> FollowResult:
    """Restricted tier. Target-days: a person's captures of one day, at least two. The insider
    knows the group g of the first capture (the strongest insider: in practice they pick among
    the few groups of that cell) and looks for g in the cell of each later capture that day."""
    c, ws = world.captures, world.window_seconds
    cells = world.cells.lookup()
    win = c.window(ws)
    day = np.floor(c.time / DAY).astype(np.int64)
    new = np.r_[True, (c.person[1:] != c.person[:-1]) | (day[1:] != day[:-1])] if len(c) else np.zeros(0, bool)
    starts = np.nonzero(new)[0]
    ends = np.r_[starts[1:], len(c)] if len(c) else np.zeros(0, np.int64)
    segs = [(int(s), int(e)) for s, e in zip(starts, ends) if e - s >= 2]
    if max_targets is not None and len(segs) > max_targets:
        pick = np.random.default_rng(seed).choice(len(segs), max_targets, replace=False)
        segs = [segs[i] for i in sorted(pick)]
    # the followed group's occurrences per (day, group): windows sorted, cumulative counts
    per_dg: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for (cam, w), groups in cells.items():
        for g, n in groups.items():
            per_dg[(w * ws // DAY, g)].append((w, n))
    cum = {}
    for k, lst in per_dg.items():
        lst.sort()
        cum[k] = (np.array([w for w, _ in lst]), np.cumsum([n for _, n in lst]))
    later = rec = whole = hits = occ = 0
    n_groups_first = []
    for i, (s, e) in enumerate(segs):
        g0 = int(c.group[s])
        w0, d0 = int(win[s]), int(day[s])
        n_groups_first.append(len(cells.get((int(c.camera[s]), w0), {})) or 1)
        got = [cells.get((int(c.camera[j]), int(win[j])), {}).get(g0, 0) > 0 for j in range(s + 1, e)]
        later += len(got)
        rec += sum(got)
        whole += all(got)
        hits += int(np.sum(c.group[s + 1:e] == g0))
        ws_, cs = cum.get((d0, g0), (np.zeros(0), np.zeros(0)))
        k = int(np.searchsorted(ws_, w0, side="right"))
        occ += int(cs[-1] - (cs[k - 1] if k else 0)) if len(cs) else 0
        if tick and i % 200 == 199:
            tick(200)
    n = len(segs)
    return FollowResult(RESTRICTED, n, later, rec / later if later else 0.0, whole / n if n else 0.0,
                        hits / occ if occ else None, float(np.mean(n_groups_first)) if n_groups_first else None,
                        note="insider knows the group of the first capture; a later capture counts when that "
                             "group occurs in its camera-window")


def group_following_published(world: World, tier: str) -> FollowResult:
    """Published tiers: following a group needs a group identifier in the rows. Every row type
    the tier holds is inspected; with no field naming a group the attack recovers nothing."""
    t = world.tiers[tier]
    found, kinds = [], []
    for rows in (t.flow, t.footfall, t.demographics):
        if not rows:
            continue
        r = rows[0]
        names = [f.name for f in fields(r)] if is_dataclass(r) else sorted(vars(r))
        kinds.append(f"{type(r).__name__}({', '.join(names)})")
        found += [f"{type(r).__name__}.{n}" for n in names if "group" in n.lower()]
    if found:
        return FollowResult(tier, 0, 0, float("nan"), float("nan"), None, None, found,
                            note=f"rows carry a group identifier ({', '.join(found)}): the insider attack applies")
    return FollowResult(tier, 0, 0, 0.0, 0.0, None, None, [],
                        note="0 by construction: no published field identifies a group; fields: " + "; ".join(kinds))


# ---- (b) the analyst with a sighting ------------------------------------------------------------------

@dataclass
class GainStats:
    kind: str
    targets: int
    prior_mean: float | None
    gain_median: float | None
    gain_p99: float | None
    gain_max: float | None
    dp_worst_case: float | None = None


@dataclass
class PosteriorResult:
    attack: str
    tier: str
    rows: list[GainStats]
    note: str = ""

    def by_kind(self) -> dict[str, GainStats]:
        return {r.kind: r for r in self.rows}


def _summarise(attack: str, tier: str, gains: dict[str, list[float]], priors: dict[str, list[float]],
               eps: float | None, note: str = "") -> PosteriorResult:
    rows = []
    for kind in HOUR_KINDS:
        g = np.asarray(gains.get(kind, []), float)
        if not len(g):
            rows.append(GainStats(kind, 0, None, None, None, None, None))
            continue
        pr = float(np.mean(priors[kind]))
        rows.append(GainStats(kind, len(g), pr, float(np.median(g)), float(np.quantile(g, 0.99)), float(g.max()),
                              None if eps is None else dp_gain_bound(pr, eps)))
    return PosteriorResult(attack, tier, rows, note)


def _stratified(kinds: list[str], max_targets: int | None, seed: int) -> np.ndarray:
    """Indices, at most ``max_targets``, shared as evenly as possible between the hour kinds."""
    kinds_a = np.asarray(kinds)
    if max_targets is None or len(kinds_a) <= max_targets:
        return np.arange(len(kinds_a))
    rng = np.random.default_rng(seed)
    pools = sorted((np.nonzero(kinds_a == k)[0] for k in HOUR_KINDS), key=len)
    out, left = [], max_targets
    for i, pool in enumerate(pools):
        take = min(len(pool), left // (len(pools) - i))
        out.append(rng.choice(pool, take, replace=False) if take < len(pool) else pool)
        left -= take
    return np.sort(np.concatenate(out))


def sighting_targets(world: World, max_targets: int | None, seed: int = 0) -> np.ndarray:
    """Indices into :func:`movers` of the targets of (b), stratified by hour kind."""
    _, _, t1, _, _ = movers(world, world.spec.max_lag)
    types = hour_types(world)
    kinds = [types[int(t * world.window_seconds // HOUR) % 24] for t in t1.tolist()]
    return _stratified(kinds, max_targets, seed)


def _route_prior(prior: World):
    """From the held-out run: next camera per (origin, clock hour) and lag per (origin, next camera),
    Laplace-smoothed counts."""
    L, C = prior.spec.max_lag, prior.n_cameras
    _, a0, t0, b0, d0 = movers(prior, L)
    hod0 = (t0 * prior.window_seconds // HOUR) % 24
    next_cam: dict = defaultdict(lambda: np.ones(C))
    lag_given: dict = defaultdict(lambda: np.ones(L + 1))
    for a, h, b, d in zip(a0.tolist(), hod0.tolist(), b0.tolist(), d0.tolist()):
        next_cam[(a, h)][b] += 1
        lag_given[(a, b)][d] += 1
    return next_cam, lag_given


def eps_next_capture(t, spec, demographics: bool = True) -> float:
    """Epsilon of one capture at B in window u, composed over every noised published value it
    changes (sequential composition; at the smallest sensitivities, so a lower bound):
    s of the lag row and of the range row (+1 each), the window total N_B(u) (+1), Q_B(u) (up to
    +3, noised at 3x the total scale), Q*_B of every reference window whose lag range covers u
    (one draw per reference window: hi - lo + 1 of them per SE range, each +1 or more at 9x the
    total scale), B's footfall hour and B's demographic cell (+1 each)."""
    def inv(x: float, n: float = 1.0) -> float:
        return n / x if x else math.inf

    eps = inv(t.flow_scale, 2) + inv(t.total_scale) + inv(3 * t.total_scale, 3)
    eps += sum(inv(9 * t.total_scale, hi - lo + 1) for lo, hi in spec.ranges)
    eps += inv(t.footfall_scale) + (inv(t.demographics_scale) if demographics and t.demographics else 0.0)
    return eps


def sighting_attack(prior: World, world: World, tier: str, targets: np.ndarray | None = None,
                    tick: Tick | None = None) -> PosteriorResult:
    """(b) on a published tier. From the prior run the analyst knows the next camera and lag per
    origin and clock hour, and the mean and variance of every lag row's s per clock hour (its
    background). The target's capture at B at lag d adds 1 to s_d(A, B) with probability p (same
    group). The posterior over B' weighs each hypothesis by the Gaussian likelihood ratio of that
    +1 on the observed lag rows of the target's hour."""
    L, w, C = world.spec.max_lag, world.window_seconds, world.n_cameras
    p = world.same_group_rate
    next_cam, lag_given = _route_prior(prior)
    ptier, t = prior.tiers[tier], world.tiers[tier]
    bg: dict = defaultdict(list)
    for r in ptier.flow:
        if r.kind == LAG:
            bg[(prior.camera_code(r.origin_site, r.origin_camera), prior.camera_code(r.dest_site, r.dest_camera),
                r.lag_lo, prior.hour_index(r.hour_ms) % 24)].append(r.s)
    bg_stats = {k: (float(np.mean(v)), float(np.var(v))) for k, v in bg.items()}
    noise_var = discrete_laplace_variance(t.flow_scale)
    rows = {(world.camera_code(r.origin_site, r.origin_camera), world.camera_code(r.dest_site, r.dest_camera),
             r.lag_lo, world.hour_index(r.hour_ms)): r.s for r in t.flow if r.kind == LAG}
    _, a1, t1, b1, _ = movers(world, L)
    sel = np.arange(len(a1)) if targets is None else targets
    types = hour_types(world)
    gains: dict[str, list[float]] = defaultdict(list)
    priors: dict[str, list[float]] = defaultdict(list)
    for n_done, i in enumerate(sel.tolist()):
        a, tw, b = int(a1[i]), int(t1[i]), int(b1[i])
        hod = (tw * w // HOUR) % 24
        hh = tw * w // HOUR
        prior_v = next_cam[(a, hod)].copy()
        prior_v[a] = 0
        prior_v /= prior_v.sum()
        loglr = np.zeros(C)
        for bb in range(C):
            if bb == a:
                continue
            pd = lag_given[(a, bb)] / lag_given[(a, bb)].sum()
            like = 0.0
            for d in range(L + 1):
                x = rows.get((a, bb, d, hh))
                if x is None:
                    like += pd[d]
                    continue
                mu, var = bg_stats.get((a, bb, d, hod), (0.0, 0.0))
                z = (x - mu - 0.5) / max(var + noise_var, 1e-9)
                like += pd[d] * ((1 - p) + p * math.exp(min(z, 50.0)))
            loglr[bb] = math.log(like)
        post = prior_v * np.exp(loglr - loglr.max())
        post[a] = 0
        post /= post.sum()
        kind = types[hod]
        gains[kind].append(float(post[b] - prior_v[b]))
        priors[kind].append(float(prior_v[b]))
        if tick and n_done % 100 == 99:
            tick(100)
    # telling B from B' is moving the capture between them: twice the epsilon of one capture
    eps = 2 * eps_next_capture(t, world.spec)
    return _summarise("b", tier, gains, priors, eps,
                      note="background and route prior from the held-out run's rows of the same tier; "
                           f"DP worst case at 2 x epsilon per capture = {eps:.2f}")


def sighting_attack_restricted(prior: World, world: World, targets: np.ndarray | None = None,
                               tick: Tick | None = None) -> PosteriorResult:
    """(b) on the restricted tier, for comparison. The insider reads the groups of the target's
    cell (A, t), weights each by its count, and for each hypothesis (B', d) compares each group's
    count at (B', t + d) with its chance level N_B'(t + d) / G: likelihood ratio (1 - p) + p *
    sum_g w_g k_g / lambda. Uses group matches only (not the +1 on totals): a lower bound on
    what an insider learns."""
    L, w, C, G = world.spec.max_lag, world.window_seconds, world.n_cameras, world.n_groups
    p = world.same_group_rate
    next_cam, lag_given = _route_prior(prior)
    cells = world.cells.lookup()
    totals = {k: sum(v.values()) for k, v in cells.items()}
    _, a1, t1, b1, _ = movers(world, L)
    sel = np.arange(len(a1)) if targets is None else targets
    types = hour_types(world)
    gains: dict[str, list[float]] = defaultdict(list)
    priors: dict[str, list[float]] = defaultdict(list)
    for n_done, i in enumerate(sel.tolist()):
        a, tw, b = int(a1[i]), int(t1[i]), int(b1[i])
        hod = (tw * w // HOUR) % 24
        prior_v = next_cam[(a, hod)].copy()
        prior_v[a] = 0
        prior_v /= prior_v.sum()
        mine = cells.get((a, tw), {})
        na = sum(mine.values()) or 1
        wts = {g: n / na for g, n in mine.items()}
        loglr = np.zeros(C)
        for bb in range(C):
            if bb == a:
                continue
            pd = lag_given[(a, bb)] / lag_given[(a, bb)].sum()
            like = 0.0
            for d in range(L + 1):
                there = cells.get((bb, tw + d))
                match = 0.0
                lam = totals.get((bb, tw + d), 0) / G
                if there and lam > 0:   # a window marker alone (0 occurrences) matches nothing
                    match = sum(wg * there.get(g, 0) for g, wg in wts.items()) / lam
                like += pd[d] * ((1 - p) + p * match)
            loglr[bb] = math.log(max(like, 1e-300))
        post = prior_v * np.exp(loglr - loglr.max())
        post[a] = 0
        post /= post.sum()
        kind = types[hod]
        gains[kind].append(float(post[b] - prior_v[b]))
        priors[kind].append(float(prior_v[b]))
        if tick and n_done % 100 == 99:
            tick(100)
    return _summarise("b-insider", RESTRICTED, gains, priors, None,
                      note="group cells of the target's window against the candidate cameras' windows")


# ---- (c) values aggregating >= 3 real persons or carrying noise ---------------------------------------

@dataclass
class FieldCoverage:
    table: str
    field: str
    values: int
    noised: int
    three_plus: int
    either: int
    failing_by_hour_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class CoverageResult:
    tier: str
    fields: list[FieldCoverage]
    outside_span: int = 0       # values of hours the origin camera did not stream at all (constants, left out)

    @property
    def values(self) -> int:
        return sum(f.values for f in self.fields)

    def share(self, what: str) -> float:
        n = self.values
        return sum(getattr(f, what) for f in self.fields) / n if n else 1.0


class _Contributions:
    """Whether a flow row's products hold at least one window-total pair. The combiner forms (and
    noises) a total only for a camera-window with some cell, real or fictitious; a product over
    no such pair is an exact 0."""

    def __init__(self, world: World) -> None:
        cl = world.cells
        self.per_h = HOUR // world.window_seconds
        W = int(cl.window.max()) + 1 if len(cl) else 1
        # room before window 0 for hour -1 and the far band, a whole number of hours
        self.off = -(-(world.spec.far_max + self.per_h) // self.per_h) * self.per_h
        n = W + 2 * self.off
        n += (-n) % self.per_h
        self.n = n
        self.pres = {}
        for c in range(world.n_cameras):
            arr = np.zeros(n, dtype=bool)
            arr[self.off + cl.window[cl.camera == c]] = True
            self.pres[c] = arr
        self._cs = {c: np.concatenate([[0], np.cumsum(a)]) for c, a in self.pres.items()}
        self._memo: dict[tuple, np.ndarray] = {}

    def _any_b(self, b: int, lo: int, hi: int) -> np.ndarray:
        """Per window t: camera b has a window in [t + lo, t + hi]."""
        cs = self._cs[b]
        t = np.arange(self.n)
        s, e = np.clip(t + lo, 0, self.n), np.clip(t + hi + 1, 0, self.n)
        return (cs[e] - cs[s]) > 0

    def __call__(self, a: int, b: int, hh: int, kind: str, lo: int, hi: int) -> bool:
        key = (a, b, kind, lo, hi)
        per_hour = self._memo.get(key)
        if per_hour is None:
            hit = self._any_b(b, lo, lo) if kind == LAG else self._any_b(b, lo, hi) if kind == RANGE else (
                self._any_b(b, lo, hi) | self._any_b(b, -hi, -lo))
            per_hour = self._memo[key] = (self.pres[a] & hit).reshape(-1, self.per_h).any(axis=1)
        i = self.off // self.per_h + hh
        return bool(0 <= i < len(per_hour) and per_hour[i])


def streamed_hours(world: World) -> dict[int, tuple[int, int]]:
    """Per camera, the first and last hour index with any cell (the hours it streamed)."""
    cl, per_h = world.cells, HOUR // world.window_seconds
    out = {}
    for c in range(world.n_cameras):
        w = cl.window[cl.camera == c]
        if len(w):
            out[c] = (int(w.min()) // per_h, int(w.max()) // per_h)
    return out


def _hour_kind(world: World, cam: int, hh: int, types: dict[int, str]) -> str:
    return types[hh % 24] if world.open_hours[cam].any() else "after-close"


@dataclass(frozen=True)
class Value:
    """One analyst-visible value: a field of a published row, where it belongs and what protects it."""

    table: str
    field: str
    cam: int          # the origin camera
    hour: int         # hour index since the start midnight
    value: int
    noised: bool
    real_persons: int
    in_span: bool     # the origin camera streamed in that hour (outside: a constant that depends on nobody)


def published_values(world: World, tier: str = ANALYST) -> Iterator[Value]:
    """Every value of a published tier. Noise: s and footfall occurrences when their scales are
    > 0; the window-total products (nn, qq, qn, nn2; far nn) when totals are noised and at least
    one window-total pair entered them (a product over no window is an exact 0); demographic
    counts when their scale is > 0; footfall ``windows`` with the footfall scale (the combiner
    draws it independently of occurrences). Real persons are counted on the
    origin camera-hour (every product involves it); a demographic cell counts the persons with
    that label there."""
    t = world.tiers[tier]
    persons = real_persons_per_camera_hour(world)
    contributes = _Contributions(world)
    span = streamed_hours(world)

    def inside(cam: int, hh: int) -> bool:
        lo, hi = span.get(cam, (0, -1))
        return lo <= hh <= hi

    for r in t.footfall:
        cam, hh = world.camera_code(r.site_id, r.camera_id), world.hour_index(r.hour_ms)
        n, ok = persons.get((cam, hh), 0), inside(cam, hh)
        yield Value("footfall", "occurrences", cam, hh, r.occurrences, t.footfall_scale > 0, n, ok)
        yield Value("footfall", "windows", cam, hh, r.windows, t.footfall_scale > 0, n, ok)
    for r in t.flow:
        a, b = world.camera_code(r.origin_site, r.origin_camera), world.camera_code(r.dest_site, r.dest_camera)
        hh = world.hour_index(r.hour_ms)
        n, ok = persons.get((a, hh), 0), inside(a, hh)
        table = f"flow {r.kind}"
        yield Value(table, "s", a, hh, r.s, t.flow_scale > 0, n, ok)
        contributed = t.total_scale > 0 and contributes(a, b, hh, r.kind, r.lag_lo, r.lag_hi)
        for fld in (("nn",) if r.kind == FAR else ("nn", "qq", "qn", "nn2")):
            yield Value(table, fld, a, hh, getattr(r, fld), contributed, n, ok)
    if t.demographics:
        c = world.captures
        dem_persons: dict[tuple, set] = defaultdict(set)
        for cam, hh, bd, gd, pe in zip(c.camera.tolist(), c.hour().tolist(), c.band.tolist(), c.gender.tolist(),
                                       c.person.tolist()):
            dem_persons[(cam, hh, OBS_BANDS[bd], OBS_GENDERS[gd])].add(pe)
        for r in t.demographics:
            cam, hh = world.camera_code(r.site_id, r.camera_id), world.hour_index(r.hour_ms)
            yield Value("demographics", "count", cam, hh, r.count, t.demographics_scale > 0,
                        len(dem_persons.get((cam, hh, r.key1, r.key2), ())), inside(cam, hh))


def value_coverage(world: World, tier: str = ANALYST) -> CoverageResult:
    """(c) on a published tier: every value of :func:`published_values` carries noise or
    aggregates at least 3 real persons. Values of hours the origin camera did not stream at all
    (e.g. the hour before the run, which the combiner publishes as zeros) depend on nobody and are
    left out (``outside_span``)."""
    types = hour_types(world)
    acc: dict[tuple[str, str], FieldCoverage] = {}
    outside = 0
    for v in published_values(world, tier):
        if not v.in_span:
            outside += 1
            continue
        f = acc.get((v.table, v.field))
        if f is None:
            f = acc[(v.table, v.field)] = FieldCoverage(v.table, v.field, 0, 0, 0, 0)
        f.values += 1
        f.noised += v.noised
        f.three_plus += v.real_persons >= 3
        ok = v.noised or v.real_persons >= 3
        f.either += ok
        if not ok:
            k = _hour_kind(world, v.cam, v.hour, types)
            f.failing_by_hour_kind[k] = f.failing_by_hour_kind.get(k, 0) + 1
    return CoverageResult(tier, list(acc.values()), outside)


def value_coverage_restricted(world: World) -> CoverageResult:
    """(c) on the restricted tier, for comparison: each cell's count, real persons in the cell
    (fictitious persons are padding, not noise)."""
    c, ws = world.captures, world.window_seconds
    real: dict[tuple[int, int, int], set] = defaultdict(set)
    for cam, w, g, pe in zip(c.camera.tolist(), c.window(ws).tolist(), c.group.tolist(), c.person.tolist()):
        real[(cam, w, g)].add(pe)
    types = hour_types(world)
    f = FieldCoverage("group cells", "occurrences", 0, 0, 0, 0)
    cl = world.cells
    for cam, w, g in zip(cl.camera.tolist(), cl.window.tolist(), cl.group.tolist()):
        n = len(real.get((cam, w, g), ()))
        f.values += 1
        f.three_plus += n >= 3
        f.either += n >= 3
        if n < 3:
            k = _hour_kind(world, cam, w * ws // HOUR, types)
            f.failing_by_hour_kind[k] = f.failing_by_hour_kind.get(k, 0) + 1
    return CoverageResult(RESTRICTED, [f])


# ---- (d) demographics to path -------------------------------------------------------------------------

def rare_cells(prior: World, n: int) -> list[tuple[int, int]]:
    """The n rarest (true band, true gender) cells among the prior run's persons."""
    c = prior.captures
    first = np.r_[True, c.person[1:] != c.person[:-1]] if len(c) else np.zeros(0, bool)
    cells, cnt = np.unique(np.stack([c.true_band[first], c.true_gender[first]], axis=1), axis=0, return_counts=True)
    order = np.argsort(cnt, kind="stable")
    return [(int(cells[i][0]), int(cells[i][1])) for i in order[:n]]


def demographic_targets(world: World, rare: list[tuple[int, int]], max_targets: int | None,
                        seed: int = 0) -> np.ndarray:
    """Capture indices i of persons in a rare cell whose next capture (i + 1) is at another camera
    in the same or the next hour; stratified by the hour kind of the sighting."""
    c = world.captures
    if len(c) < 2:
        return np.zeros(0, np.int64)
    h = c.hour()
    rare_set = set(rare)
    same = c.person[1:] == c.person[:-1]
    dh = h[1:] - h[:-1]
    ok = same & (c.camera[1:] != c.camera[:-1]) & (dh >= 0) & (dh <= 1)
    ok &= np.array([(int(b), int(g)) in rare_set for b, g in zip(c.true_band[:-1], c.true_gender[:-1])], bool)
    idx = np.nonzero(ok)[0]
    types = hour_types(world)
    sel = _stratified([types[int(x) % 24] for x in h[idx]], max_targets, seed)
    return idx[sel]


@functools.lru_cache(maxsize=500_000)
def count_likelihood(x: int, mu: float, scale: float, shift: int = 0, clamp: bool = True) -> float:
    """P(published value = x) for a true value of Poisson(mu) + shift, after discrete Laplace noise
    of ``scale``, clamped at 0 (counts: pipeline/aggregator/counts.py) or not (flow s); scale 0:
    the exact value. The mechanism and its scale are public (every row carries its noise
    variance)."""
    from scipy.stats import poisson

    if scale <= 0:
        return float(poisson.pmf(x - shift, mu)) if mu > 0 else float(x == shift)
    K = int(mu + 10 * math.sqrt(mu) + 12)
    k = np.arange(K + 1)
    pk = poisson.pmf(k, mu) if mu > 0 else (k == 0).astype(float)
    true = k + shift
    a = math.exp(-1.0 / scale)
    if x > 0 or not clamp:
        p_noise = (1 - a) / (1 + a) * a ** np.abs(x - true)
    else:   # published 0: the noisy value was <= 0, i.e. noise <= -true (true >= 0)
        p_noise = a ** true / (1 + a)
    return float(np.sum(pk * p_noise))


def sighting_attack_exact(prior: World, world: World, tier: str, targets: np.ndarray | None = None,
                          tick: Tick | None = None) -> PosteriorResult:
    """(b) with the exact noise model: the same analyst and hypotheses as :func:`sighting_attack`,
    but each lag row's likelihood is computed exactly, background Poisson with the held-out run's
    true mean of that row (pair, lag, clock hour: an analyst who knows the typical level exactly)
    plus the tier's discrete Laplace noise, instead of a Gaussian around the prior rows' noisy
    mean. A calibrated Bayesian: its likelihood ratios respect the mechanism's bound, and it uses
    every lag row's evidence at full strength."""
    L, w, C = world.spec.max_lag, world.window_seconds, world.n_cameras
    p = world.same_group_rate
    next_cam, lag_given = _route_prior(prior)
    bg: dict = defaultdict(list)
    for r in (prior.tiers.get(UNPROTECTED) or prior.tiers[tier]).flow:
        if r.kind == LAG:
            bg[(prior.camera_code(r.origin_site, r.origin_camera), prior.camera_code(r.dest_site, r.dest_camera),
                r.lag_lo, prior.hour_index(r.hour_ms) % 24)].append(r.s)
    mu_bg = {k: round(max(float(np.mean(v)), 0.05), 2) for k, v in bg.items()}
    t = world.tiers[tier]
    scale = float(t.flow_scale)
    rows = {(world.camera_code(r.origin_site, r.origin_camera), world.camera_code(r.dest_site, r.dest_camera),
             r.lag_lo, world.hour_index(r.hour_ms)): r.s for r in t.flow if r.kind == LAG}
    _, a1, t1, b1, _ = movers(world, L)
    sel = np.arange(len(a1)) if targets is None else targets
    types = hour_types(world)
    gains: dict[str, list[float]] = defaultdict(list)
    priors: dict[str, list[float]] = defaultdict(list)
    for n_done, i in enumerate(sel.tolist()):
        a, tw, b = int(a1[i]), int(t1[i]), int(b1[i])
        hod = (tw * w // HOUR) % 24
        hh = tw * w // HOUR
        prior_v = next_cam[(a, hod)].copy()
        prior_v[a] = 0
        prior_v /= prior_v.sum()
        like = np.ones(C)
        for bb in range(C):
            if bb == a:
                continue
            pd = lag_given[(a, bb)] / lag_given[(a, bb)].sum()
            total = 0.0
            for d in range(L + 1):
                x = rows.get((a, bb, d, hh))
                if x is None:
                    total += pd[d]
                    continue
                mu = mu_bg.get((a, bb, d, hod), 0.05)
                l0 = count_likelihood(int(x), mu, scale, 0, False)
                l1 = count_likelihood(int(x), mu, scale, 1, False)
                total += pd[d] * ((1 - p) + p * (l1 / l0 if l0 > 0 else 1e6))
            like[bb] = total
        post = prior_v * like
        post[a] = 0
        post /= post.sum()
        kind = types[hod]
        gains[kind].append(float(post[b] - prior_v[b]))
        priors[kind].append(float(prior_v[b]))
        if tick and n_done % 100 == 99:
            tick(100)
    eps = 2 * eps_next_capture(t, world.spec)
    return _summarise("b-exact", tier, gains, priors, eps,
                      note="exact noise model: lag rows' likelihood under Poisson background (held-out run's true "
                           "means) and the tier's discrete Laplace noise")


def demographic_linkage(prior: World, world: World, tier: str, targets: np.ndarray,
                        tick: Tick | None = None) -> PosteriorResult:
    """(d). The analyst knows the target's (band, gender) and saw them at camera A in hour h;
    they know the target's next capture is at another camera in hour h or h + 1 (10 hypotheses
    with 6 cameras). Prior: the held-out run's routes per (A, clock hour). Evidence: the published
    count x of the target's cell at each (B', hour). Background: Poisson with the held-out run's
    true mean of that cell, camera and clock hour (an analyst who knows the typical level
    exactly); the target adds 1 when their face is usable (probability 1 - unknown-face rate,
    public); then the tier's discrete Laplace noise, clamped at 0. The likelihood ratio of each
    hypothesis is exact under that model, so the posterior is a calibrated Bayesian's."""
    C = world.n_cameras
    c = world.captures
    hrs = c.hour()
    ph = prior.captures.hour()
    pc = prior.captures
    route: dict = defaultdict(lambda: np.ones((C, 2)))
    if len(pc) > 1:
        same = pc.person[1:] == pc.person[:-1]
        dh = ph[1:] - ph[:-1]
        ok = np.nonzero(same & (pc.camera[1:] != pc.camera[:-1]) & (dh >= 0) & (dh <= 1))[0]
        for i in ok.tolist():
            route[(int(pc.camera[i]), int(ph[i]) % 24)][int(pc.camera[i + 1]), int(dh[i])] += 1
    hist: dict = defaultdict(list)
    bg_tier = prior.tiers.get(UNPROTECTED) or prior.tiers[tier]
    for r in bg_tier.demographics:
        hist[(prior.camera_code(r.site_id, r.camera_id), prior.hour_index(r.hour_ms) % 24, r.key1, r.key2)].append(
            r.count)
    mean_bg = {k: round(float(np.mean(v)), 3) for k, v in hist.items()}
    t = world.tiers[tier]
    obs = {(world.camera_code(r.site_id, r.camera_id), world.hour_index(r.hour_ms), r.key1, r.key2): r.count
           for r in t.demographics}
    scale = float(t.demographics_scale)
    q = 1.0 - world.unknown_face_rate
    types = hour_types(world)
    gains: dict[str, list[float]] = defaultdict(list)
    priors: dict[str, list[float]] = defaultdict(list)
    for n_done, i in enumerate(targets.tolist()):
        a, h = int(c.camera[i]), int(hrs[i])
        cell = (OBS_BANDS[int(c.true_band[i])], OBS_GENDERS[int(c.true_gender[i])])
        pr = route[(a, h % 24)].copy()
        pr[a, :] = 0
        pr /= pr.sum()
        lr = np.ones((C, 2))
        for bb in range(C):
            if bb == a:
                continue
            for dh in (0, 1):
                x = obs.get((bb, h + dh, *cell))
                if x is None:
                    continue
                mu = max(mean_bg.get((bb, (h + dh) % 24, *cell), 0.0), 0.05)
                l0 = count_likelihood(int(x), mu, scale, 0)
                l1 = count_likelihood(int(x), mu, scale, 1)
                lr[bb, dh] = (1 - q) + q * (l1 / l0 if l0 > 0 else 1e6)
        post = pr * lr
        post[a, :] = 0
        post /= post.sum()
        bt, dt = int(c.camera[i + 1]), int(hrs[i + 1] - h)
        kind = types[h % 24]
        gains[kind].append(float(post[bt, dt] - pr[bt, dt]))
        priors[kind].append(float(pr[bt, dt]))
        if tick and n_done % 100 == 99:
            tick(100)
    # moving the target's next capture between two cells changes two counts by 1: 2 epsilon
    eps = 2 / scale if scale else math.inf
    return _summarise("d", tier, gains, priors, eps)


# ---- (e) row existence ------------------------------------------------------------------------------

@dataclass
class TableExistence:
    table: str
    expected: int                   # rows of the full grid: every key of every hour of every seen camera
    present: int
    missing_no_capture: int         # grid rows absent in a camera-hour nobody real passed
    missing_with_capture: int       # grid rows absent in a camera-hour someone passed
    present_no_capture: int         # rows present in camera-hours nobody real passed
    outside_grid: int = 0


@dataclass
class FieldSignal:
    """Whether a field tells a camera-hour nobody passed from one a handful passed.

    Mechanism: values published exactly (no noise) in camera-hours nobody real passed; a
    passer-by would change them (a window count, products over windows that exist only when
    somebody passed), so the exact value is evidence either way. Empirical: per origin
    camera-hour the share of the field's values that are non-zero, nobody vs 1-5 persons
    (Mann-Whitney), where enough such camera-hours exist."""

    table: str
    field: str
    values_empty: int               # values in streamed camera-hours nobody real passed
    exact_empty: int                # of them without noise
    zero_exact_empty: int           # of those, exactly 0
    n_empty: int                    # camera-hours (empirical test: whose products lie inside the run)
    n_someone: int
    nonzero_empty: float | None     # mean share of non-zero values
    nonzero_someone: float | None
    auc: float | None               # P(share | someone > share | empty) + ties / 2
    p_value: float | None           # Mann-Whitney U, two-sided
    separated: bool                 # the zero pattern alone tells the classes apart (significantly)


@dataclass
class ExistenceResult:
    tier: str
    tables: list[TableExistence]
    fields: list[FieldSignal]
    row_leaks: list[str]
    value_leaks: list[str]

    @property
    def leaks(self) -> list[str]:
        return self.row_leaks + self.value_leaks


MIN_CLASS = 3          # camera-hours per class before a field's zero pattern is judged
SOMEONE = 5            # "a handful": 1..SOMEONE real persons in the camera-hour
AUC_FLAG = 0.25        # |AUC - 0.5| above this, significant, and ...
DIFF_FLAG = 0.2        # ... the shares of non-zero values differing by this much, is a finding
SIGNIFICANCE = 1e-3


def row_existence(world: World, tier: str) -> ExistenceResult:
    """(e). Row level: each table's rows against the full grid (footfall: every hour of every
    camera from its first row on; flows: every allowed camera pair and every lag, range and far
    row of every hour; demographics: every (band, gender) cell of every camera-hour). A grid row
    missing where nobody passed would say so, a row present only where someone passed likewise.
    Value level (:class:`FieldSignal`): values published exactly where nobody passed, and the
    empirical zero-pattern test."""
    t = world.tiers[tier]
    spec = world.spec
    persons = real_persons_per_camera_hour(world)
    tables: list[TableExistence] = []
    leaks: list[str] = []
    vleaks: list[str] = []

    def judge(name: str, present: dict, grid_keys_of: Callable[[int, int], list], first: dict, last: int,
              cam_of: Callable[[tuple], int]) -> None:
        exp = miss_empty = miss_cap = 0
        grid = set()
        for unit, h0 in first.items():
            for hh in range(h0, last + 1):
                for k in grid_keys_of(unit, hh):
                    grid.add(k)
        for k in grid:
            exp += 1
            if k not in present:
                if persons.get((cam_of(k), k[1]), 0):
                    miss_cap += 1
                else:
                    miss_empty += 1
        pres_empty = sum(1 for k in present if not persons.get((cam_of(k), k[1]), 0))
        te = TableExistence(name, exp, len(present), miss_empty, miss_cap, pres_empty,
                            sum(1 for k in present if k not in grid))
        tables.append(te)
        if miss_empty or miss_cap:
            leaks.append(f"{name}: {miss_empty + miss_cap} grid rows missing ({miss_empty} in camera-hours nobody "
                         f"passed, {miss_cap} where someone did): row existence follows captures")

    # footfall: key (cam, hour)
    foot = {(world.camera_code(r.site_id, r.camera_id), world.hour_index(r.hour_ms)): r for r in t.footfall}
    if foot:
        first: dict = {}
        for cam, hh in foot:
            first[cam] = min(first.get(cam, hh), hh)
        judge("footfall", foot, lambda cam, hh: [(cam, hh)], first, max(hh for _, hh in foot), lambda k: k[0])
    # flows: key ((a, b), hour, kind, lo, hi)
    flow = {((world.camera_code(r.origin_site, r.origin_camera), world.camera_code(r.dest_site, r.dest_camera)),
             world.hour_index(r.hour_ms), r.kind, r.lag_lo, r.lag_hi): r for r in t.flow}
    if flow:
        kinds = [(LAG, d, d) for d in range(spec.max_lag + 1)] + [(RANGE, lo, hi) for lo, hi in spec.ranges] + [
            (FAR, lo, hi) for lo, hi in spec.far_bands]
        seen = {k[0][0] for k in flow} | {k[0][1] for k in flow}
        start = min(k[1] for k in flow)
        pairs = {(a, b): start for a in seen for b in seen
                 if spec.allows(world.cam_key(a), world.cam_key(b))}
        judge("flow", flow, lambda ab, hh: [(ab, hh, *k) for k in kinds], pairs, max(k[1] for k in flow),
              lambda k: k[0][0])
    # demographics: key (cam, hour, key1, key2)
    demo = {(world.camera_code(r.site_id, r.camera_id), world.hour_index(r.hour_ms), r.key1, r.key2): r
            for r in t.demographics}
    if demo:
        cells_grid = sorted({(k[2], k[3]) for k in demo})
        cells_grid = sorted(set(cells_grid) | set(demographic_grid()))
        first = {}
        for cam, hh, _, _ in demo:
            first[cam] = min(first.get(cam, hh), hh)
        judge("demographics", demo, lambda cam, hh: [(cam, hh, *c) for c in cells_grid], first,
              max(k[1] for k in demo), lambda k: k[0])

    # value level. The empirical test uses camera-hours whose every product window lies inside
    # the run (a bounded run's first and last hours lack windows for reasons unrelated to anyone).
    per_h = HOUR // world.window_seconds
    span = streamed_hours(world)
    lo_w = max((a for a, _ in span.values()), default=0) * per_h
    hi_w = (min((b for _, b in span.values()), default=-1) + 1) * per_h

    def safe(hh: int) -> bool:
        return hh * per_h - spec.far_max >= lo_w and (hh + 1) * per_h + spec.far_max <= hi_w

    units: dict[tuple[str, str], dict[tuple[int, int], list[bool]]] = defaultdict(lambda: defaultdict(list))
    exact: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for v in published_values(world, tier):
        if not v.in_span:
            continue
        key = (v.table, v.field)
        if v.real_persons == 0:
            e = exact[key]
            e[0] += 1
            e[1] += not v.noised
            e[2] += (not v.noised) and v.value == 0
        if v.real_persons <= SOMEONE and safe(v.hour):
            units[key][(v.cam, v.hour)].append(v.value != 0)
    fsig = []
    for key in sorted(set(units) | set(exact)):
        table, fld = key
        by_unit = units.get(key, {})
        e = np.array([np.mean(x) for k, x in by_unit.items() if persons.get(k, 0) == 0], float)
        f = np.array([np.mean(x) for k, x in by_unit.items() if persons.get(k, 0) > 0], float)
        me = float(e.mean()) if len(e) else None
        mf = float(f.mean()) if len(f) else None
        auc = pval = None
        sep = False
        if len(e) >= MIN_CLASS and len(f) >= MIN_CLASS:
            auc = float(((f[:, None] > e[None, :]).sum() + 0.5 * (f[:, None] == e[None, :]).sum()) / (len(e) * len(f)))
            if np.ptp(np.r_[e, f]) > 0:
                from scipy.stats import mannwhitneyu

                pval = float(mannwhitneyu(f, e, alternative="two-sided").pvalue)
            else:
                pval = 1.0
            sep = bool(pval < SIGNIFICANCE and abs(mf - me) >= DIFF_FLAG
                       and (f.min() > e.max() or f.max() < e.min()))
        n_vals, n_exact, n_zero = exact.get(key, [0, 0, 0])
        fsig.append(FieldSignal(table, fld, n_vals, n_exact, n_zero, len(e), len(f), me, mf, auc, pval, sep))
        if n_exact:
            vleaks.append(f"{table}.{fld}: {n_exact:,} of {n_vals:,} values in camera-hours nobody passed are published "
                         f"exactly ({n_zero:,} of them 0); someone passing would change them")
        if sep or (pval is not None and pval < SIGNIFICANCE and abs(auc - 0.5) > AUC_FLAG
                   and abs(mf - me) >= DIFF_FLAG):
            vleaks.append(f"{table}.{fld}: non-zero in {me:.0%} of the values of {len(e)} camera-hours nobody passed "
                         f"against {mf:.0%} in {len(f)} with 1-{SOMEONE} persons (AUC {auc:.2f}, p = {pval:.1g})"
                         + (": its zeros alone tell the two apart" if sep else ""))
    return ExistenceResult(tier, tables, fsig, leaks, vleaks)
