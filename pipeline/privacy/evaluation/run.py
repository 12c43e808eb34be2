"""Runs the privacy evaluation on simulated crowds with ground truth.

Why this shape: calibration and evaluation use *different* simulated people
(a "calibration day" and an "evaluation day"), so every figure is measured
out of sample, exactly as a deployment would calibrate on one set of footage
and then run on live crowds. Nothing here is tuned to the targets: the
simulation parameters live in the simulation modules with their stated
assumptions, and the targets only appear when the report compares against them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import numpy as np

from pipeline.privacy.anonymizer import Anonymizer
from pipeline.privacy.calibration import CALIBRATION_STAGES, calibrate
from pipeline.privacy.demographics import AGE_BANDS, GENDERS, UNKNOWN, protect_demographic_counts
from pipeline.privacy.evaluation import metrics as M
from pipeline.privacy.fictitious import fictitious_counts
from pipeline.privacy.params import PrivacyParams
from pipeline.privacy.simulation.appearance import AppearanceModel, People
from pipeline.privacy.simulation.crowd import SiteModel

__all__ = ["EvalConfig", "EvalResult", "run_evaluation"]

log = logging.getLogger(__name__)

# A progress hook: (description, total) -> context manager yielding advance(n) callable.
ProgressFactory = Callable[[str, int], ContextManager[Callable[[int], None]]]


class _NoProgress:
    def __init__(self, *_: Any) -> None:
        pass

    def __enter__(self) -> Callable[[int], None]:
        return lambda n=1: None

    def __exit__(self, *exc: Any) -> None:
        return None


@dataclass
class EvalConfig:
    seed: int = 1
    visitors: int = 6000
    window_minutes: float = 15.0
    calibration_people: int = 80000
    calibration_pairs: int = 4000
    attribute_people: int = 100000
    linkage_targets: int = 400
    adversary_samples: int = 200
    linkage_prior: float = 0.2
    stratify_gender: bool = True       # give the anonymiser the demographic model's gender guess
    gender_guess_error: float = 0.05   # assumed error rate of that guess (independent per capture)
    params: PrivacyParams | None = None  # evaluate this parameter set instead of calibrating one


@dataclass
class EvalResult:
    params: PrivacyParams
    figures: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _cross_camera_pairs(model: AppearanceModel, people: People, cams: Any, n_cams: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c1 = rng.integers(0, n_cams, len(people))
    c2 = (c1 + rng.integers(1, n_cams, len(people))) % n_cams
    return model.capture(people, c1, cams, rng), model.capture(people, c2, cams, rng)


def _gender_guess(gender: np.ndarray, cfg: EvalConfig, rng: np.random.Generator) -> np.ndarray | None:
    """The demographic model's per-capture gender guess (truth flipped with the assumed error rate)."""
    if not cfg.stratify_gender:
        return None
    flip = rng.random(gender.shape[0]) < cfg.gender_guess_error
    return np.array(["female", "male"], dtype=object)[np.where(flip, 1 - gender, gender)]


def _groups(anon: Anonymizer, desc: np.ndarray, guess: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    work = anon.working_vectors(desc)
    return anon.groups_of_working(work, rng, offset_rows=anon.stratum_rows(guess, desc.shape[0]))


def run_evaluation(cfg: EvalConfig, progress: ProgressFactory | None = None) -> EvalResult:
    """Simulate, calibrate (unless params given), anonymise a day, and measure everything."""
    prog: ProgressFactory = progress or _NoProgress
    rng = np.random.default_rng(cfg.seed)
    model = AppearanceModel()
    site = SiteModel(visitors=cfg.visitors, window_minutes=cfg.window_minutes)
    cams = model.cameras(site.n_cameras, rng)
    figures: dict[str, Any] = {"config": {k: v for k, v in vars(cfg).items() if k != "params"}}
    arrays: dict[str, np.ndarray] = {}

    # ---- calibration day (different people from the evaluation day) ----------------------
    if cfg.params is None:
        with prog("calibration: simulate + fit", 1 + len(CALIBRATION_STAGES)) as adv:
            ref_people = model.people(cfg.calibration_people, rng)
            ref_x = model.capture(ref_people, rng.integers(0, site.n_cameras, len(ref_people)), cams, rng)
            pair_people = model.people(cfg.calibration_pairs, rng)
            pairs = _cross_camera_pairs(model, pair_people, cams, site.n_cameras, rng)
            pair_strata = None
            if cfg.stratify_gender:
                pair_strata = (_gender_guess(pair_people.gender, cfg, rng), _gender_guess(pair_people.gender, cfg, rng))
            adv(1)
            cal = calibrate(ref_x, version="pp-eval-simulated", pairs=pairs, seed=cfg.seed,
                            strata_labels=_gender_guess(ref_people.gender, cfg, rng), pair_strata=pair_strata,
                            on_stage=lambda _name: adv(1))
        params = cal.params
        figures["calibration"] = {"dims_tried": cal.dims_tried, "rate_without_noise": cal.rate_without_noise}
    else:
        params = cfg.params
        if params.reference is not None and params.reference.input_dim != model.dim:
            raise ValueError(f"parameter set is for {params.reference.input_dim}-dim descriptors, "
                             f"the simulation produces {model.dim}")
    anon = Anonymizer(params, model.dim)
    K = params.n_groups

    # ---- evaluation day ---------------------------------------------------------------------
    with prog("evaluation day: capture + anonymise", 2) as adv:
        people = model.people(cfg.visitors, rng)
        passes = site.day(rng)
        desc = model.capture(people.subset(passes.person), passes.camera, cams, rng)
        adv(1)
        work = anon.working_vectors(desc)
        guess = _gender_guess(people.gender[passes.person], cfg, rng)
        groups = anon.groups_of_working(work, rng, offset_rows=anon.stratum_rows(guess, len(passes)))
        adv(1)
    nC, nW = site.n_cameras, site.n_windows
    real = np.zeros((nC, nW, K), dtype=np.int64)
    np.add.at(real, (passes.camera, passes.window, groups), 1)
    published = real + fictitious_counts(params, rng, size=real.shape)
    figures["day"] = {"occurrences": len(passes), "visitors": cfg.visitors, "cameras": nC, "windows": nW,
                      "crowd_per_camera_window": _quantiles(real.sum(axis=2)[real.sum(axis=2) > 0])}

    # ---- 1. same-group rate for re-captures (consecutive passes of a visit at different cameras)
    nxt = np.flatnonzero((passes.person[1:] == passes.person[:-1]) & (passes.camera[1:] != passes.camera[:-1]))
    rate, lo, hi = M.pair_rate(groups[nxt], groups[nxt + 1], passes.person[nxt], rng)
    rnd = rng.permutation(len(groups))
    diff = passes.person != passes.person[rnd]
    figures["same_group"] = {"rate": rate, "ci95": [lo, hi], "pairs": int(nxt.size),
                             "calibrated_p": params.same_group_rate,
                             "different_person_rate": float(np.mean(groups[diff] == groups[rnd][diff]))}

    # ---- filling (on a large independent sample, so Poisson noise is small) -----------------
    with prog("group filling + attribute inference: capture + anonymise", 2) as adv:
        pop = model.people(cfg.attribute_people, rng)
        pop_cam = rng.integers(0, nC, len(pop))
        pop_groups = _groups(anon, model.capture(pop, pop_cam, cams, rng), _gender_guess(pop.gender, cfg, rng), rng)
        adv(1)
        figures["filling"] = M.filling_stats(pop_groups, K)
        arrays["filling_counts"] = np.bincount(pop_groups, minlength=K)
        # ---- 4. attribute inference from the group id (train on half, test on the other half)
        half = len(pop) // 2
        att: dict[str, Any] = {}
        for name, y, ncls in (("gender", pop.gender, 2), ("age_band", pop.age_band, len(AGE_BANDS))):
            a, acc, base = M.attribute_advantage(pop_groups[:half], y[:half], pop_groups[half:], y[half:], K, ncls)
            att[name] = {"advantage": a, "accuracy": acc, "baseline": base}
        # context: how much demographic signal the clean descriptor itself carries
        sub = np.arange(min(40000, len(pop)))
        sub_desc = model.capture(pop.subset(sub), pop_cam[sub], cams, rng)
        att["descriptor_gender_accuracy"] = _linear_accuracy(sub_desc, pop.gender[sub], 2)
        att["descriptor_gender_baseline"] = float(max(np.mean(pop.gender[sub]), 1 - np.mean(pop.gender[sub])))
        figures["attributes"] = att
        arrays["female_share_per_group"] = _share_per_group(pop_groups, pop.gender == 0, K)
        adv(1)

    # ---- 2. effective anonymity set of each real occurrence --------------------------------
    no_floor = params.with_changes(fictitious_floor=0)
    pub_no_floor = real + fictitious_counts(no_floor, rng, size=real.shape)
    figures["k"] = {"share_k3": M.cell_k_fraction(published, passes.camera, passes.window, groups),
                    "share_k3_without_floor": M.cell_k_fraction(pub_no_floor, passes.camera, passes.window, groups),
                    "share_k3_without_fictitious": M.cell_k_fraction(real, passes.camera, passes.window, groups),
                    "median_cell_count": float(np.median(published[passes.camera, passes.window, groups]))}

    # ---- 3. linkage attack -------------------------------------------------------------------
    figures["linkage"], arrays_link = _linkage(cfg, model, cams, people, passes, anon, params, real, published,
                                               rng, prog)
    arrays.update(arrays_link)

    # ---- transient noisy vector: can it be narrowed down within its crowd? (seed's vector claim)
    figures["vector"] = _vector_identifiability(model, people, passes, work, anon, rng)

    # ---- 5. utility: counts and flows --------------------------------------------------------
    err = M.count_errors(published, real, params)
    active = real.sum(axis=2).ravel() > 0
    day_err = (published.sum(axis=(1, 2)) - params.fictitious_per_window * nW) - real.sum(axis=(1, 2))
    figures["counts"] = {"window_rmse": float(np.sqrt(np.mean(err[active] ** 2))),
                         "window_sd_expected": float(np.sqrt(K * params.fictitious_variance_per_group)),
                         "window_mean_real": float(real.sum(axis=2).ravel()[active].mean()),
                         "day_rel_err_median": float(np.median(np.abs(day_err) / real.sum(axis=(1, 2)))),
                         "day_real_per_camera": float(real.sum(axis=(1, 2)).mean()),
                         "noise_variance_added": 0.0}
    arrays["count_errors"] = err[active]
    truth = _true_flows(passes, nC)
    for label, counts in (("published", published), ("without_fictitious", real)):
        est = M.flow_estimates(counts, params.same_group_rate)
        mask = ~np.eye(nC, dtype=bool) & (truth >= 50)
        rel = np.abs(est[mask] - truth[mask]) / truth[mask]
        figures.setdefault("flows", {})[label] = {"median_rel_err": float(np.median(rel)),
                                                  "pairs": int(mask.sum()), "max_rel_err": float(rel.max())}
        arrays[f"flow_est_{label}"] = est[mask]
    arrays["flow_truth"] = truth[~np.eye(nC, dtype=bool) & (truth >= 50)]
    figures["tradeoff"] = _tradeoff(params, cfg.linkage_prior, real, truth, (0.0, 0.1, 0.2, 1 / 3, 0.5, 2 / 3), rng)

    # ---- demographics: how much small-count suppression hides ------------------------------
    figures["demographics"] = _demographics(people, passes, params, nC, nW)
    return EvalResult(params=params, figures=figures, arrays=arrays)


# ------------------------------------------------------------------------------------------ helpers


def _quantiles(x: np.ndarray) -> dict[str, float]:
    q = np.percentile(x, [5, 50, 95]) if x.size else [0, 0, 0]
    return {"p5": float(q[0]), "median": float(q[1]), "p95": float(q[2])}


def _share_per_group(groups: np.ndarray, flag: np.ndarray, k: int) -> np.ndarray:
    tot = np.bincount(groups, minlength=k)
    hit = np.bincount(groups, weights=flag.astype(float), minlength=k)
    return hit[tot > 0] / tot[tot > 0]


def _linear_accuracy(x: np.ndarray, y: np.ndarray, ncls: int) -> float:
    """Held-out accuracy of a least-squares linear classifier: the demographic signal in the descriptor."""
    n = x.shape[0] // 2
    xa = np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)]).astype(np.float64)
    onehot = np.eye(ncls)[y]
    w, *_ = np.linalg.lstsq(xa[:n], onehot[:n], rcond=None)
    return float(np.mean((xa[n:] @ w).argmax(axis=1) == y[n:]))


def _true_flows(passes: Any, n_cams: int) -> np.ndarray:
    """People at A in window w and at B in window w or w+1 (same definition as the estimator)."""
    out = np.zeros((n_cams, n_cams))
    order = np.argsort(passes.person, kind="stable")
    person = passes.person[order]
    cam, win = passes.camera[order], passes.window[order]
    starts = np.flatnonzero(np.r_[True, person[1:] != person[:-1]])
    ends = np.r_[starts[1:], person.size]
    for s, e in zip(starts, ends):
        for i in range(s, e):
            for j in range(s, e):
                if i != j and cam[i] != cam[j] and win[j] - win[i] in (0, 1):
                    out[cam[i], cam[j]] += 1
    return out


def _linkage(cfg: EvalConfig, model: AppearanceModel, cams: Any, people: People, passes: Any,
             anon: Anonymizer, params: PrivacyParams, real: np.ndarray, published: np.ndarray,
             rng: np.random.Generator, prog: ProgressFactory) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Adversary with a clear photo and the full parameter set tests "was the target at camera X in window t?".

    The adversary simulates the target's captures (knowing the true capture
    model and all seeds; only the fresh noise is unknown) to get the target's
    group distribution, then computes the exact likelihood ratio of the
    published counts of (X, t). Present cases: a window where the target did
    pass X. Absent cases: a window at the same camera where the target did not.
    """
    K = params.n_groups
    nC, nW = real.shape[:2]
    targets = rng.choice(cfg.visitors, size=min(cfg.linkage_targets, cfg.visitors), replace=False)
    expected_fict = params.fictitious_per_window
    lr_pub = {"present": [], "absent": []}
    lr_raw = {"present": [], "absent": []}
    top_share = []
    pmf_cache: dict[tuple[bool, int], np.ndarray] = {}

    def pmf(padded: bool, background: float) -> np.ndarray:
        key = (padded, int(round(background * 1000)))
        if key not in pmf_cache:
            pmf_cache[key] = M.rest_pmf(params if padded else None, background, 80)
        return pmf_cache[key]

    with prog("linkage attack: adversary simulates targets", len(targets)) as adv:
        for t in targets:
            mine = np.flatnonzero(passes.person == t)
            if mine.size == 0:
                adv(1)
                continue
            sim = model.capture(people.subset(np.full(cfg.adversary_samples, t)),
                                rng.integers(0, nC, cfg.adversary_samples), cams, rng)
            g = _groups(anon, sim, _gender_guess(np.full(cfg.adversary_samples, people.gender[t]), cfg, rng), rng)
            dist = (np.bincount(g, minlength=K) + 1.0 / K) / (g.size + 1.0)
            top_share.append(dist.max())
            i = rng.choice(mine)
            c, w = passes.camera[i], passes.window[i]
            present_windows = set(passes.window[mine[passes.camera[mine] == c]].tolist())
            absent_choices = [x for x in range(nW) if x not in present_windows and real[c, x].sum() > 0]
            w_abs = rng.choice(absent_choices)
            for case, ww in (("present", w), ("absent", w_abs)):
                pub, raw = published[c, ww], real[c, ww]
                bg_pub = max(pub.sum() - expected_fict, 0.0) / K
                bg_raw = max(raw.sum() - (1 if case == "present" else 0), 0.0) / K
                lr_pub[case].append(M.presence_likelihood_ratio(dist, pub, pmf(True, bg_pub)))
                lr_raw[case].append(M.presence_likelihood_ratio(dist, raw, pmf(False, max(bg_raw, 1e-3))))
            adv(1)
    lp, la = np.array(lr_pub["present"]), np.array(lr_pub["absent"])
    rp, ra = np.array(lr_raw["present"]), np.array(lr_raw["absent"])
    prior = cfg.linkage_prior
    post = M.posterior(prior, lp)
    out = {"targets": int(lp.size), "prior": prior, "bound_lr": params.linkage_likelihood_ratio_bound,
           "max_lr": float(max(lp.max(), la.max())),
           "posterior_max": float(post.max()), "posterior_p99": float(np.percentile(post, 99)),
           "posterior_mean_present": float(post.mean()),
           "posterior_mean_absent": float(M.posterior(prior, la).mean()),
           "posterior_max_prior_half": float(M.posterior(0.5, lp).max()),
           "advantage": M.best_advantage(lp, la), "auc": M.auc(lp, la),
           "without_fictitious": {"posterior_p99": float(np.percentile(M.posterior(prior, rp), 99)),
                                  "posterior_median": float(np.median(M.posterior(prior, rp))),
                                  "advantage": M.best_advantage(rp, ra), "auc": M.auc(rp, ra)},
           "target_top_group_share_median": float(np.median(top_share))}
    return out, {"lr_present": lp, "lr_absent": la, "lr_raw_present": rp, "lr_raw_absent": ra}


def _tradeoff(params: PrivacyParams, prior: float, real: np.ndarray, truth: np.ndarray,
              ratios: tuple[float, ...], rng: np.random.Generator) -> dict[str, list[float]]:
    """Daily flow error and worst-case linkage posterior for several fictitious ratios r."""
    mask = ~np.eye(truth.shape[0], dtype=bool) & (truth >= 50)
    errs, bounds = [], []
    for r in ratios:
        p = params.with_changes(fictitious_ratio=r)
        est = M.flow_estimates(real + fictitious_counts(p, rng, size=real.shape), params.same_group_rate)
        errs.append(float(np.median(np.abs(est[mask] - truth[mask]) / truth[mask])))
        lr = p.linkage_likelihood_ratio_bound
        bounds.append(1.0 if not np.isfinite(lr) else float(prior * lr / (prior * lr + 1 - prior)))
    return {"ratio": [round(r, 4) for r in ratios], "flow_median_rel_err": errs, "posterior_bound": bounds}


def _vector_identifiability(model: AppearanceModel, people: People, passes: Any, work: np.ndarray,
                            anon: Anonymizer, rng: np.random.Generator, n_cells: int = 60) -> dict[str, float]:
    """Within its (camera, window) crowd, is the noisy working vector closest to its owner's clear photo?

    This is the seed's claim about the transient noisy vector (never stored or
    emitted): an adversary with clear photos of everyone present tries to
    single out whose vector it is. Reported as top-1 accuracy of nearest
    neighbour matching; the seed's "one of three" would need <= 1/3.
    """
    from pipeline.privacy.noise import add_noise

    cells = np.unique(np.stack([passes.camera, passes.window], axis=1), axis=0)
    cells = cells[rng.permutation(len(cells))[:n_cells]]
    hits, total, sizes = 0, 0, []
    for c, w in cells:
        idx = np.flatnonzero((passes.camera == c) & (passes.window == w))
        if idx.size < 2:
            continue
        noisy = add_noise(work[idx], anon.params.noise_scale, rng)
        who = passes.person[idx]
        clear = anon.working_vectors(model.capture(people.subset(who), np.zeros(idx.size, int), None, rng, clear=True))
        d = ((noisy[:, None, :] - clear[None, :, :]) ** 2).sum(axis=2)
        hits += int(np.sum(d.argmin(axis=1) == np.arange(idx.size)))
        total += idx.size
        sizes.append(idx.size)
    return {"top1_accuracy": hits / max(total, 1), "occurrences": total,
            "median_crowd": float(np.median(sizes)) if sizes else 0.0}


def _demographics(people: People, passes: Any, params: PrivacyParams, n_cams: int, n_win: int) -> dict[str, float]:
    """Share of real people whose demographic cell is published as is, pooled, or suppressed."""
    band = np.array(AGE_BANDS)[people.age_band[passes.person]]
    gender = np.array(GENDERS)[people.gender[passes.person]]
    kept = pooled = dropped = 0
    for c in range(n_cams):
        for w in range(n_win):
            sel = (passes.camera == c) & (passes.window == w)
            if not sel.any():
                continue
            keys, cnt = np.unique(np.stack([band[sel], gender[sel]], axis=1), axis=0, return_counts=True)
            counts = {(str(k[0]), str(k[1])): int(n) for k, n in zip(keys, cnt)}
            out = protect_demographic_counts(counts, params)
            exact = sum(v for k, v in out.items() if k != (UNKNOWN, UNKNOWN))
            pool = out.get((UNKNOWN, UNKNOWN), 0)
            kept += exact
            pooled += pool
            dropped += int(sel.sum()) - exact - pool
    n = max(kept + pooled + dropped, 1)
    return {"exact_share": kept / n, "pooled_share": pooled / n, "suppressed_share": dropped / n}
