"""Choosing the parameters from stated targets and embedding statistics.

Why: the noise scale and the fictitious-person ratio must follow from targets,
not be hand-picked. The targets are

* re-capture same-group rate ``p`` = 0.50 (the seed's figure): the noise scale is
  the largest that still gives ``p``, found by bisection on measured
  same-person pairs (or, when none are available, on pairs synthesised from a
  stated within-person similarity);
* linkage: an adversary whose prior that a person was at a given camera in a
  given window is at most ``linkage_prior`` must end with a posterior of at most
  ``max_posterior`` whatever the published counts; with geometric fictitious
  counts the odds rise by at most ``1/r``, which fixes the ratio ``r``.

The reference statistics (mean, whitening) that make descriptors isotropic are
fitted here from sample descriptors.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.privacy.anonymizer import Anonymizer
from pipeline.privacy.noise import add_noise
from pipeline.privacy.params import PrivacyParams, ReferenceStats
from pipeline.privacy.quantizer import QUANTIZER_METHODS, balance_offsets, fill_stats, fit_quantizer
from pipeline.privacy.seeding import DOMAIN_CALIBRATION, seeded_rng

__all__ = ["fit_reference", "same_group_rate", "choose_noise_scale", "fictitious_ratio_for",
           "synthetic_pairs", "calibrate", "CalibrationResult", "fit_offsets", "fit_all_offsets", "choose_dims"]

log = logging.getLogger(__name__)


def _inv_sqrt(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    eig, vec = np.linalg.eigh(cov)
    eig = np.clip(eig, 0.0, None)
    return (vec / np.sqrt(eig + shrinkage * max(eig.mean(), 1e-30))) @ vec.T


def _check_samples(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{what}: need a 2-D array of at least 2 descriptors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or infinity")
    return x


def fit_reference(embeddings: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None,
                  dims: int | None = None, shrinkage: float = 0.05, whiten: bool = True) -> ReferenceStats:
    """Centring and whitening statistics for the native descriptor.

    Without pairs: population whitening ``(C + shrinkage * mean_eig * I)^(-1/2)``
    (shrinkage keeps near-empty directions, e.g. a histogram's sum-to-one
    constraint or rare colour bins, from being blown up into pure noise).

    With same-person pairs: a discriminant whitening (the classic metric-learning
    step of histogram re-identification, as in KISSME/XQDA): directions are
    ranked by total variance over within-person variance, the ``dims`` most
    stable ones are kept and scaled to unit population variance. Dropping
    directions that mostly vary between captures of the same person is what
    lets a re-capture land in the same group.

    ``whiten=False`` (no pairs only): principal components without rescaling, the ``dims``
    directions of largest population variance with their variance kept ("pca"). Why: the hash
    needs isotropic input to fill its groups equally, but a learned codebook balances its
    groups itself, and whitening would blow the weak directions (mostly capture noise in a
    re-id embedding) up to the strength of the identity-carrying ones.
    """
    x = _check_samples(embeddings, "sample descriptors")
    mean = x.mean(axis=0)
    d = x.shape[1]
    total = np.atleast_2d(np.cov(x - mean, rowvar=False))
    if pairs is None and not whiten:
        eig, vec = np.linalg.eigh(total)
        order = np.argsort(eig)[::-1][: (dims or d)]
        # One global scale (unit variance along the first component) keeps the numbers moderate.
        w = vec[:, order].T / np.sqrt(max(float(eig[order[0]]), 1e-30))
        method = "pca"
    elif pairs is None:
        w = _inv_sqrt(total, shrinkage)
        if dims is not None and dims < d:
            eig, vec = np.linalg.eigh(total)
            top = vec[:, np.argsort(eig)[::-1][:dims]]
            w = top.T @ w
        method = "population-whitening"
    else:
        a = _check_samples(pairs[0], "pair descriptors (a)")
        b = _check_samples(pairs[1], "pair descriptors (b)")
        if a.shape != b.shape or a.shape[1] != d:
            raise ValueError(f"pairs must be two arrays of shape (n, {d}), got {a.shape} and {b.shape}")
        within = np.atleast_2d(np.cov(a - b, rowvar=False)) / 2.0
        wi = _inv_sqrt(within, shrinkage)
        lam, vec = np.linalg.eigh(wi @ total @ wi)
        order = np.argsort(lam)[::-1][: (dims or d)]
        lam, vec = np.clip(lam[order], 1e-12, None), vec[:, order]
        w = (vec / np.sqrt(lam)).T @ wi
        method = "discriminant-whitening"
    return ReferenceStats(input_dim=d, mean=mean.astype(np.float32), whitening=w.astype(np.float32),
                         n_samples=int(x.shape[0]), method=method)


def fit_offsets(params: PrivacyParams, embeddings: np.ndarray, rng: np.random.Generator,
                replicas: int = 2, iters: int = 300, candidates: int = 256,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Per-group offsets that make every group receive the same share of ``embeddings``.

    Semi-discrete balancing of a power diagram: repeatedly lower the offset of
    groups that receive too many samples and raise the others
    (``b_j -= eta * log(share_j / target)``). Each sample is hashed with
    ``replicas`` independent noise draws, because the noise is part of what is
    being balanced. Only the ``candidates`` best-scoring groups of each sample
    are kept (the offsets stay small, so the winner is always among them).
    """
    p0 = params.with_changes(hash_offsets=None, strata=(), stratum_offsets=None)
    anon = Anonymizer(p0, embeddings.shape[1])
    work = anon.working_vectors(embeddings)
    h = anon._hash
    candidates = min(candidates, params.n_groups - 1)
    idx_parts, val_parts = [], []
    for _ in range(max(1, replicas if params.noise_scale > 0 else 1)):
        for lo in range(0, work.shape[0], 8192):
            s = h.scores(add_noise(work[lo:lo + 8192], params.noise_scale, rng))
            idx = np.argpartition(-s, candidates, axis=1)[:, :candidates]
            idx_parts.append(idx.astype(np.int32))
            val_parts.append(np.take_along_axis(s, idx, axis=1))
    idx = np.concatenate(idx_parts)
    val = np.concatenate(val_parts)
    k = params.n_groups
    beta = balance_offsets(idx, val, k, iters=iters, progress=progress)
    # The candidate shortcut is only valid if every winner is among the candidates: check exactly.
    full = np.concatenate([np.argmax(h.scores(add_noise(work[lo:lo + 8192], params.noise_scale, rng)) + beta, axis=1)
                           for lo in range(0, work.shape[0], 8192)])
    share = np.bincount(full, minlength=k) / (full.size / k)
    if share.max() > 1.5 or share.min() < 0.5:
        log.warning("group balancing did not converge on the calibration sample (largest group %.1fx, "
                    "smallest %.1fx the mean)", share.max(), share.min())
    return beta


def _groups_with(anon: Anonymizer, working: np.ndarray, unit_noise: np.ndarray,
                 scale: float, rows: np.ndarray | None = None) -> np.ndarray:
    h = anon._hash.with_noise_scale(scale)
    return h(working + unit_noise * np.float32(scale), rows)


def same_group_rate(anon: Anonymizer, a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                    repeats: int = 1) -> float:
    """Fraction of (a[i], b[i]) same-person pairs that land in the same group (noise included)."""
    wa, wb = anon.working_vectors(a), anon.working_vectors(b)
    hits = 0
    for _ in range(repeats):
        hits += int((anon.groups_of_working(wa, rng) == anon.groups_of_working(wb, rng)).sum())
    return hits / (repeats * max(len(a), 1))


def choose_noise_scale(params: PrivacyParams, a: np.ndarray, b: np.ndarray, target: float = 0.5,
                       rng: np.random.Generator | None = None, hi: float = 0.01,
                       iters: int = 12, strata: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[float, float, float]:
    """Largest noise scale whose measured same-group rate on pairs (a, b) is >= ``target``.

    Returns (noise_scale, rate_at_that_scale, rate_without_noise). Uses common
    random numbers (one standard-normal draw, rescaled) so the rate is a smooth,
    monotone function of the scale and bisection is well defined. If even zero
    noise gives a rate below the target, returns scale 0 and says so in the log:
    the descriptor is too unstable across captures for the target.
    """
    rng = rng or seeded_rng(params.seed, DOMAIN_CALIBRATION)
    anon = Anonymizer(params, a.shape[1])
    wa, wb = anon.working_vectors(a), anon.working_vectors(b)
    na = rng.standard_normal(wa.shape, dtype=np.float32)
    nb = rng.standard_normal(wb.shape, dtype=np.float32)
    ra, rb = (None, None) if strata is None else (anon.stratum_rows(strata[0], len(a)),
                                                  anon.stratum_rows(strata[1], len(b)))

    def rate(s: float) -> float:
        return float(np.mean(_groups_with(anon, wa, na, s, ra) == _groups_with(anon, wb, nb, s, rb)))

    r0 = rate(0.0)
    if r0 < target:
        log.warning("same-group rate without noise is %.3f < target %.2f: no noise added", r0, target)
        return 0.0, r0, r0
    lo, hi_ = 0.0, hi
    while rate(hi_) >= target and hi_ < 10.0:
        lo, hi_ = hi_, hi_ * 2
    for _ in range(iters):
        mid = 0.5 * (lo + hi_)
        if rate(mid) >= target:
            lo = mid
        else:
            hi_ = mid
    return lo, rate(lo), r0


def fictitious_ratio_for(linkage_prior: float, max_posterior: float) -> float:
    """Smallest geometric ratio r with ``posterior <= max_posterior`` when the prior is ``linkage_prior``.

    Posterior odds <= prior odds / r, so r >= prior_odds * (1 - t) / t.
    """
    if not (0 < linkage_prior < 1 and 0 < max_posterior < 1):
        raise ValueError("prior and posterior must be in (0, 1)")
    if max_posterior <= linkage_prior:
        raise ValueError("the posterior target must exceed the prior (no mechanism can lower it)")
    r = linkage_prior / (1 - linkage_prior) * (1 - max_posterior) / max_posterior
    if r >= 1:
        raise ValueError("target unreachable: would need infinitely many fictitious persons")
    return float(r)


def synthetic_pairs(dim: int, n: int, similarity: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Same-person pairs of isotropic descriptors whose expected cosine similarity is ``similarity``.

    Used only when no measured pairs are available; the assumption is then
    recorded in the parameter set.
    """
    if not 0 < similarity < 1:
        raise ValueError("similarity must be in (0, 1)")
    centre = rng.standard_normal((n, dim))
    # cos(v+e1, v+e2) ~ 1 / (1 + t^2) for ||e|| = t ||v|| in high dimension
    t = np.sqrt(1.0 / similarity - 1.0)
    a = centre + t * rng.standard_normal((n, dim))
    b = centre + t * rng.standard_normal((n, dim))
    return a.astype(np.float32), b.astype(np.float32)


def choose_dims(embeddings: np.ndarray, fit_pairs: tuple[np.ndarray, np.ndarray],
                eval_pairs: tuple[np.ndarray, np.ndarray], params: PrivacyParams,
                candidates: tuple[int, ...] = (8, 12, 16, 24, 32, 48, 64, 96, 128),
                shrinkage: float = 0.05) -> tuple[int, dict[int, float]]:
    """Number of discriminant directions that maximises the noise-free re-capture rate on held-out pairs.

    Few directions: each is very stable, but 1,000 groups must then be cut from
    a low-dimensional space. Many: more information, but more unstable
    directions. The best trade-off depends on the descriptor, so it is measured.
    """
    d = embeddings.shape[1]
    rates: dict[int, float] = {}
    for k in [c for c in candidates if c <= d] or [d]:
        ref = fit_reference(embeddings, fit_pairs, dims=k, shrinkage=shrinkage)
        p = params.with_changes(reference=ref, noise_scale=0.0, hash_offsets=None)
        anon = Anonymizer(p, d)
        rates[k] = float(np.mean(anon.assign_groups(eval_pairs[0]) == anon.assign_groups(eval_pairs[1])))
    best = max(rates, key=lambda k: rates[k])
    return best, rates


@dataclass(frozen=True)
class CalibrationResult:
    params: PrivacyParams
    rate_without_noise: float
    target_met: bool
    dims_tried: dict[int, float]


MIN_STRATUM_SAMPLES_PER_GROUP = 10
# Principal components kept for a learned quantizer unless told otherwise (bench/privacy/quantizer.py
# --dims: the measured best on the synthetic 0288-like population; docs/PRIVACY.md, "Learned quantizer").
QUANTIZER_DEFAULT_DIMS = 64
CALIBRATION_STAGES = ("dims", "offsets", "noise", "rebalance")


def fit_all_offsets(params: PrivacyParams, x: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator,
                    iters: int = 300) -> PrivacyParams:
    """Pooled offsets on all samples, plus per-stratum offsets for every stratum with enough samples."""
    pooled = fit_offsets(params, x, rng, iters=iters)
    if labels is None:
        return params.with_changes(hash_offsets=pooled, strata=(), stratum_offsets=None)
    names, rows = [], []
    for name in sorted({str(v) for v in labels if isinstance(v, str) and v != "unknown"}):
        sel = labels == name
        if sel.sum() < MIN_STRATUM_SAMPLES_PER_GROUP * params.n_groups:
            log.warning("stratum %r has only %d samples (< %d): it uses the pooled offsets", name, int(sel.sum()),
                        MIN_STRATUM_SAMPLES_PER_GROUP * params.n_groups)
            continue
        names.append(name)
        rows.append(fit_offsets(params, x[sel], rng, iters=iters))
    return params.with_changes(hash_offsets=pooled, strata=tuple(names),
                               stratum_offsets=np.stack(rows) if rows else None)


def calibrate(embeddings: np.ndarray, *, version: str, pairs: tuple[np.ndarray, np.ndarray] | None = None,
              strata_labels: np.ndarray | None = None,
              pair_strata: tuple[np.ndarray, np.ndarray] | None = None,
              base: PrivacyParams | None = None, target_rate: float = 0.5, linkage_prior: float = 0.2,
              max_posterior: float = 1 / 3, assumed_similarity: float = 0.85, shrinkage: float = 0.05,
              dims: int | None = None, seed: int | None = None, n_synthetic: int = 4000,
              offset_iters: int = 300, on_stage: Callable[[str], None] | None = None,
              fictitious_ratio: float | None = None, quantizer: str | None = None,
              quantizer_embeddings: np.ndarray | None = None, quantizer_dims: int | None = None,
              quantizer_iters: int = 25) -> CalibrationResult:
    """Fit reference statistics, hash offsets, noise scale and fictitious ratio; return a new parameter set.

    ``embeddings``: sample descriptors of many different people (reference
    statistics and group balancing; tens of thousands are needed for the
    balance to generalise to 1,000 groups).
    ``pairs``: measured same-person descriptor pairs (row i of both arrays is
    the same person at two different cameras). Half are used to fit, half to
    measure. Without them, pairs are synthesised in the whitened space with
    cosine similarity ``assumed_similarity`` - an assumption recorded in the output.
    ``strata_labels``: the demographic model's guess (e.g. "female"/"male") for
    each sample descriptor; each stratum then gets offsets that make groups
    fill equally within it, so group ids do not reveal the guess.
    ``pair_strata``: the guesses for the two sides of each pair, so that the
    same-group rate is measured the way the processor will assign groups.
    ``on_stage`` is called after each of the CALIBRATION_STAGES (for progress bars).
    ``quantizer``: None or "hash" keeps the seeded hash; one of quantizer.QUANTIZER_METHODS
    (e.g. "kmeans-balanced") fits a learned codebook instead, on ``quantizer_embeddings``
    (unlabelled; default ``embeddings``), in a ``quantizer_dims``-dimensional principal-component
    space (default QUANTIZER_DEFAULT_DIMS) of those embeddings. Pairs, if given, then only
    measure the same-group rate and choose the noise; the method and the fit figures go into the
    calibration record.
    """
    stage = on_stage or (lambda name: None)
    base = base or PrivacyParams.default()
    x = _check_samples(embeddings, "sample descriptors").astype(np.float32)
    labels = None
    if strata_labels is not None:
        labels = np.asarray([str(v) if v is not None else "unknown" for v in strata_labels], dtype=object)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"strata_labels has {labels.shape[0]} labels for {x.shape[0]} descriptors")
    params = base.with_changes(version=version, seed=secrets.randbits(127) if seed is None else seed,
                               reference=None, hash_offsets=None, strata=(), stratum_offsets=None, noise_scale=0.0)
    rng = seeded_rng(params.seed, DOMAIN_CALIBRATION)
    dims_tried: dict[int, float] = {}
    learned = quantizer not in (None, "hash")
    qx = None
    if learned:
        if quantizer not in QUANTIZER_METHODS:
            raise ValueError(f"unknown quantizer {quantizer!r}; choose hash or one of {', '.join(QUANTIZER_METHODS)}")
        qx = x if quantizer_embeddings is None else _check_samples(quantizer_embeddings, "quantizer embeddings")
        if qx.shape[1] != x.shape[1]:
            raise ValueError(f"quantizer embeddings have {qx.shape[1]} columns, the sample descriptors {x.shape[1]}")
        if dims is None:
            dims = min(quantizer_dims or QUANTIZER_DEFAULT_DIMS, x.shape[1], params.working_dim)
    if pairs is not None:
        a, b = (np.asarray(v, dtype=np.float32) for v in pairs)
        if a.shape != b.shape or a.ndim != 2 or a.shape[1] != x.shape[1] or a.shape[0] < 20:
            raise ValueError(f"pairs must be two arrays of the same shape (n >= 20, {x.shape[1]}), "
                             f"got {a.shape} and {b.shape}")
        perm = rng.permutation(a.shape[0])
        half = a.shape[0] // 2
        fit_pairs = (a[perm[:half]], b[perm[:half]])
        eval_pairs = (a[perm[half:]], b[perm[half:]])
        eval_strata = None if pair_strata is None else tuple(
            [str(v) if v is not None else "unknown" for v in np.asarray(side, dtype=object)[perm[half:]]]
            for side in pair_strata)
        if dims is None:
            dims, dims_tried = choose_dims(x, fit_pairs, eval_pairs, params, shrinkage=shrinkage)
        stage("dims")
        if learned:  # the pairs fit nothing here: all of them measure
            ref = fit_reference(qx, None, dims=dims, whiten=False)
            eval_pairs = (a[perm], b[perm])
            eval_strata = None if pair_strata is None else tuple(
                [str(v) if v is not None else "unknown" for v in np.asarray(side, dtype=object)[perm]]
                for side in pair_strata)
            source = f"{a.shape[0]} measured same-person pairs (all measured; the quantizer is unlabelled)"
        else:
            ref = fit_reference(x, fit_pairs, dims=dims, shrinkage=shrinkage)
            source = f"{a.shape[0]} measured same-person pairs (half fit, half measured)"
    else:
        ref = fit_reference(qx, None, dims=dims, whiten=False) if learned else fit_reference(x, None, dims=dims,
                                                                                            shrinkage=shrinkage)
        wa, wb = synthetic_pairs(ref.reduced_dim, n_synthetic, assumed_similarity, rng)
        inv = np.linalg.pinv(ref.whitening.astype(np.float64))
        eval_pairs = ((wa @ inv.T + ref.mean).astype(np.float32), (wb @ inv.T + ref.mean).astype(np.float32))
        source = f"synthetic pairs, assumed same-person cosine {assumed_similarity} (no measured pairs)"
        eval_strata = None
        stage("dims")
    params = params.with_changes(reference=ref)
    qfit = None
    if learned:
        params, qfit = fit_quantizer(params, qx, method=quantizer, iters=quantizer_iters)
    # Round 1: balance without noise, find the noise for the target rate.
    # (The same-group rate is measured with the pooled offsets; per-stratum offsets differ little.)
    params = fit_all_offsets(params, x, labels, rng, iters=offset_iters)
    stage("offsets")
    scale, rate, r0 = choose_noise_scale(params, *eval_pairs, target=target_rate, rng=rng, strata=eval_strata)
    stage("noise")
    if scale > 0:
        # Round 2: the noise changes the distribution being balanced; rebalance and re-solve.
        params = fit_all_offsets(params.with_changes(noise_scale=scale), x, labels, rng, iters=offset_iters)
        scale, rate, _ = choose_noise_scale(params, *eval_pairs, target=target_rate, rng=rng, strata=eval_strata)
    stage("rebalance")
    # A given ratio (a profile chosen for utility) wins over the one the linkage target implies.
    ratio = fictitious_ratio_for(linkage_prior, max_posterior) if fictitious_ratio is None else fictitious_ratio
    params = params.with_changes(noise_scale=round(scale, 7))
    record: dict[str, float | int | str] = {
        "pairs": source, "target_same_group_rate": target_rate,
        "same_group_rate_without_noise": round(r0, 4), "reduced_dim": ref.reduced_dim,
        "linkage_prior": linkage_prior, "max_posterior": round(max_posterior, 6),
        "whitening_shrinkage": shrinkage, "reference_samples": int(x.shape[0]),
        "strata": ",".join(params.strata) or "none", "quantizer": quantizer if learned else "hash"}
    # How the groups fill on the calibration sample, with the calibrated noise (pooled offsets).
    anon = Anonymizer(params, x.shape[1])
    fill = fill_stats(anon.groups_of_working(anon.working_vectors(x), rng), params.n_groups)
    record.update({"fill_min_over_mean": round(fill["min_over_mean"], 3),
                   "fill_max_over_mean": round(fill["max_over_mean"], 3),
                   "effective_groups_simpson": round(fill["effective_groups_simpson"], 1),
                   "effective_groups_entropy": round(fill["effective_groups_entropy"], 1)})
    if qfit is not None:
        record.update({"quantizer_samples": int(qx.shape[0]), "quantizer_space": f"pca-{ref.reduced_dim}",
                       "quantizer_iterations": qfit.iterations, "quantizer_fit_seconds": round(qfit.seconds, 1),
                       "quantizer_rotation": "seeded (domain 4)"})
    params = params.with_changes(same_group_rate=round(max(rate, 1e-4), 4), fictitious_ratio=round(ratio, 6),
                                 calibration=record)
    met = abs(rate - target_rate) <= 0.05
    log.info("calibrated %s: %d dims, noise_scale %.5f, same-group rate %.3f (without noise %.3f), "
             "fictitious ratio %.3f", version, ref.reduced_dim, scale, rate, r0, ratio)
    return CalibrationResult(params, r0, met, dims_tried)
