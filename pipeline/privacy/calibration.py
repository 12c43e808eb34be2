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

import numpy as np

from pipeline.privacy.anonymizer import Anonymizer
from pipeline.privacy.lsh import GroupHash
from pipeline.privacy.params import PrivacyParams, ReferenceStats
from pipeline.privacy.seeding import DOMAIN_CALIBRATION, seeded_rng

__all__ = ["fit_reference", "same_group_rate", "choose_noise_scale", "fictitious_ratio_for",
           "synthetic_pairs", "calibrate", "CalibrationResult"]

log = logging.getLogger(__name__)


def fit_reference(embeddings: np.ndarray, shrinkage: float = 0.05) -> ReferenceStats:
    """Mean and ZCA whitening ``(C + shrinkage * mean_eig * I)^(-1/2)`` of sample descriptors.

    Shrinkage keeps near-empty directions (e.g. the sum-to-one constraint of a
    histogram, rare colour bins) from being blown up into pure measurement noise.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a 2-D array of at least 2 sample descriptors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("sample descriptors contain NaN or infinity")
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False).reshape(x.shape[1], x.shape[1])
    eig, vec = np.linalg.eigh(cov)
    eig = np.clip(eig, 0.0, None)
    floor = shrinkage * max(eig.mean(), 1e-30)
    w = (vec / np.sqrt(eig + floor)) @ vec.T
    # Scale so the whitened descriptor has unit mean squared norm per dimension (scale is irrelevant
    # after normalisation, but keeps numbers readable).
    return ReferenceStats(input_dim=x.shape[1], mean=mean.astype(np.float32), whitening=w.astype(np.float32),
                          n_samples=int(x.shape[0]))


def _groups_with(anon: Anonymizer, params: PrivacyParams, working: np.ndarray, unit_noise: np.ndarray,
                 scale: float) -> np.ndarray:
    h = GroupHash(params.with_changes(noise_scale=scale), anon._project.matrix, anon._project.signal_rank)
    return h(working + unit_noise * np.float32(scale))


def same_group_rate(anon: Anonymizer, a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                    repeats: int = 1) -> float:
    """Fraction of (a[i], b[i]) same-person pairs that land in the same group (noise included)."""
    wa, wb = anon.working_vectors(a), anon.working_vectors(b)
    hits = 0
    for _ in range(repeats):
        hits += int((anon.groups_of_working(wa, rng) == anon.groups_of_working(wb, rng)).sum())
    return hits / (repeats * max(len(a), 1))


def choose_noise_scale(params: PrivacyParams, a: np.ndarray, b: np.ndarray, target: float = 0.5,
                       rng: np.random.Generator | None = None, hi: float = 0.5,
                       iters: int = 14) -> tuple[float, float, float]:
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

    def rate(s: float) -> float:
        return float(np.mean(_groups_with(anon, params, wa, na, s) == _groups_with(anon, params, wb, nb, s)))

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


@dataclass(frozen=True)
class CalibrationResult:
    params: PrivacyParams
    rate_without_noise: float
    target_met: bool


def calibrate(embeddings: np.ndarray, *, version: str, pairs: tuple[np.ndarray, np.ndarray] | None = None,
              base: PrivacyParams | None = None, target_rate: float = 0.5, linkage_prior: float = 0.2,
              max_posterior: float = 1 / 3, assumed_similarity: float = 0.85, shrinkage: float = 0.05,
              seed: int | None = None, n_synthetic: int = 4000) -> CalibrationResult:
    """Fit reference statistics, noise scale and fictitious ratio; return a new parameter set.

    ``embeddings``: sample descriptors of many different people (reference statistics).
    ``pairs``: measured same-person descriptor pairs (two arrays, row i of each is
    the same person, different captures). Without them, pairs are synthesised in
    the whitened space with cosine similarity ``assumed_similarity`` (an assumption
    recorded in the output).
    """
    base = base or PrivacyParams.default()
    ref = fit_reference(embeddings, shrinkage)
    params = base.with_changes(reference=ref, version=version,
                               seed=secrets.randbits(127) if seed is None else seed)
    rng = seeded_rng(params.seed, DOMAIN_CALIBRATION)
    if pairs is None:
        # Synthesise in the whitened space and map back, so the pairs go through the real pipeline.
        wa, wb = synthetic_pairs(ref.input_dim, n_synthetic, assumed_similarity, rng)
        inv = np.linalg.pinv(ref.whitening.astype(np.float64))
        a = (wa @ inv.T + ref.mean).astype(np.float32)
        b = (wb @ inv.T + ref.mean).astype(np.float32)
        source = f"synthetic pairs, assumed same-person cosine {assumed_similarity}"
    else:
        a, b = pairs
        source = f"{len(a)} measured same-person pairs"
    scale, rate, r0 = choose_noise_scale(params, a, b, target=target_rate, rng=rng)
    ratio = fictitious_ratio_for(linkage_prior, max_posterior)
    params = params.with_changes(
        noise_scale=round(scale, 6), same_group_rate=round(rate, 4), fictitious_ratio=round(ratio, 6),
        calibration={"pairs": source, "target_same_group_rate": target_rate,
                     "same_group_rate_without_noise": round(r0, 4),
                     "linkage_prior": linkage_prior, "max_posterior": round(max_posterior, 6),
                     "whitening_shrinkage": shrinkage, "reference_samples": int(len(embeddings))})
    met = rate >= target_rate - 0.05
    log.info("calibrated %s: noise_scale %.4f, same-group rate %.3f (without noise %.3f), fictitious ratio %.3f",
             version, scale, rate, r0, ratio)
    return CalibrationResult(params, r0, met)
