"""The privacy and utility measures of the evaluation, as pure functions on arrays.

Why separate from the simulation: each measure has a precise definition that
docs/PRIVACY.md quotes; keeping them as small pure functions makes those
definitions readable and unit-testable without running a simulation.

Conventions: ``real[c, w, g]`` is the number of real occurrences of group g at
camera c in window w; ``published[c, w, g]`` the same after fictitious padding.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.privacy.params import PrivacyParams

__all__ = ["filling_stats", "pair_rate", "cell_k_fraction", "rest_pmf", "presence_likelihood_ratio",
           "posterior", "best_advantage", "auc", "attribute_advantage", "count_errors", "flow_estimates"]


def filling_stats(groups: np.ndarray, n_groups: int) -> dict[str, float]:
    """How equally groups fill: coefficient of variation vs the Poisson floor, extremes relative to the mean."""
    c = np.bincount(groups, minlength=n_groups).astype(float)
    mean = c.mean()
    cv = float(c.std() / mean)
    poisson_cv = float(1 / math.sqrt(mean))
    return {"per_group_mean": float(mean), "cv": cv, "poisson_cv": poisson_cv,
            "excess_cv": float(math.sqrt(max(cv ** 2 - poisson_cv ** 2, 0.0))),
            "min_over_mean": float(c.min() / mean), "max_over_mean": float(c.max() / mean)}


def pair_rate(g1: np.ndarray, g2: np.ndarray, cluster: np.ndarray, rng: np.random.Generator,
              n_boot: int = 200) -> tuple[float, float, float]:
    """Same-group rate of paired occurrences with a 95 % bootstrap interval resampling ``cluster`` (persons)."""
    hit = (g1 == g2).astype(float)
    rate = float(hit.mean())
    ids, inv = np.unique(cluster, return_inverse=True)
    sums = np.bincount(inv, weights=hit)
    cnts = np.bincount(inv).astype(float)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, ids.shape[0], ids.shape[0])
        boots.append(sums[pick].sum() / cnts[pick].sum())
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return rate, float(lo), float(hi)


def cell_k_fraction(published: np.ndarray, cam: np.ndarray, win: np.ndarray, grp: np.ndarray, k: int = 3) -> float:
    """Share of real occurrences whose published (camera, window, group) count is at least ``k``.

    The count is the occurrence's anonymity set in the seed's "microaggregation"
    sense: that many occurrences share every published attribute of it.
    """
    return float(np.mean(published[cam, win, grp] >= k))


def rest_pmf(params: PrivacyParams | None, background: float, n_max: int) -> np.ndarray:
    """Distribution of everything-but-the-target in one group count: fictitious (+ floor) plus Poisson background.

    ``params=None`` means no fictitious persons (only the background).
    """
    n = np.arange(n_max + 1)
    lam = max(background, 1e-9)
    logp = n * math.log(lam) - lam - np.array([math.lgamma(i + 1) for i in n])
    pois = np.exp(logp)
    if params is None:
        return pois
    r = params.fictitious_ratio
    fict = np.zeros(n_max + 1)
    m = n - params.fictitious_floor
    ok = m >= 0
    fict[ok] = (1 - r) * r ** m[ok] if r > 0 else (m[ok] == 0).astype(float)
    return np.convolve(fict, pois)[: n_max + 1]


def presence_likelihood_ratio(target_dist: np.ndarray, counts: np.ndarray, pmf: np.ndarray) -> float:
    """Likelihood ratio P(counts | target present) / P(counts | absent) for one (camera, window).

    ``target_dist[g]``: the adversary's probability that the target lands in g;
    ``counts[g]``: published counts; ``pmf``: distribution of the rest of a count.
    Exact for independent groups: sum_g P(g) * pmf(n_g - 1) / pmf(n_g).
    """
    n = np.minimum(counts, pmf.shape[0] - 1)
    prev = np.where(n >= 1, pmf[np.maximum(n - 1, 0)], 0.0)
    ratio = np.where(pmf[n] > 0, prev / np.maximum(pmf[n], 1e-300), 0.0)
    return float(np.sum(target_dist * ratio))


def posterior(prior: float, lr: np.ndarray) -> np.ndarray:
    """Bayes: posterior probability of presence from a prior and likelihood ratios."""
    return prior * lr / (prior * lr + 1 - prior)


def best_advantage(lr_present: np.ndarray, lr_absent: np.ndarray) -> float:
    """Max over thresholds of TPR - FPR of the test "LR > threshold" (0 = useless, 1 = perfect)."""
    thr = np.unique(np.concatenate([lr_present, lr_absent]))
    tpr = (lr_present[None, :] > thr[:, None]).mean(axis=1)
    fpr = (lr_absent[None, :] > thr[:, None]).mean(axis=1)
    return float(np.max(tpr - fpr)) if thr.size else 0.0


def auc(lr_present: np.ndarray, lr_absent: np.ndarray) -> float:
    """Probability that a present case scores above an absent one (ties count half)."""
    a = lr_present[:, None]
    b = lr_absent[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def attribute_advantage(g_train: np.ndarray, y_train: np.ndarray, g_test: np.ndarray, y_test: np.ndarray,
                        n_groups: int, n_classes: int) -> tuple[float, float, float]:
    """Accuracy of "predict the majority attribute of the group" minus the majority baseline, on held-out data.

    Returns (advantage, group_accuracy, baseline_accuracy). Groups unseen in
    training fall back to the overall majority.
    """
    table = np.zeros((n_groups, n_classes))
    np.add.at(table, (g_train, y_train), 1)
    overall = int(np.argmax(np.bincount(y_train, minlength=n_classes)))
    pred_g = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), overall)
    acc = float(np.mean(pred_g[g_test] == y_test))
    base = float(np.mean(y_test == overall))
    return acc - base, acc, base


def count_errors(published: np.ndarray, real: np.ndarray, params: PrivacyParams) -> np.ndarray:
    """Per (camera, window): estimated real count (published total minus expected fictitious) minus truth."""
    est = published.sum(axis=2) - params.fictitious_per_window
    return (est - real.sum(axis=2)).ravel()


def flow_estimates(counts: np.ndarray, p: float, lags: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Estimated number of people seen at camera A in window w and at B in window w + lag, per (A, B).

    Co-occurrences of the same group minus what chance produces with equally
    filled groups, divided by the same-group rate p (the estimator of
    DESIGN.md, "Flow analytics").
    """
    c, w, k = counts.shape
    x = counts.astype(np.float64)
    tot = x.sum(axis=2)
    out = np.zeros((c, c))
    for lag in lags:
        a = x[:, : w - lag, :]
        b = x[:, lag:, :]
        co = np.einsum("awg,bwg->ab", a, b)
        chance = np.einsum("aw,bw->ab", tot[:, : w - lag], tot[:, lag:]) / k
        out += (co - chance) / p
    return out
