"""A learned, balanced, secret quantizer onto exactly ``n_groups`` groups (issue 10, item 5).

Why learn the groups at all: the seeded hash (lsh.py) cuts the working space with 1,000 random
directions that know nothing about where people are. Re-identification embeddings are not
uniform: people lie on a few dense, curved sheets (clothing styles, body shapes, viewpoints).
Random cuts run through the middle of those sheets, so a person seen twice falls on two sides of
a cut far more often than cells that follow the data would allow (across two real cameras with
OMZ 0288 embeddings: p = 0.078 with the hash, 0.172 with plain k-means). Plain k-means, though,
puts its cells where the data is dense *and* small, and leaves large cells in sparse regions:
its groups fill very unequally (effective number of groups 240-390 of 1,000), and unequal
groups are both a privacy problem (a small group singles people out, a big one is a crowd) and
a statistics problem (the flow estimator assumes groups of similar size).

What this module fits: a codebook of exactly ``n_groups`` unit centroids ``v_j`` in the
*reduced* space of the parameter set (after the reference centring and whitening/PCA, before
the projection to the working size), with a **capacity-constrained (balanced) spherical
k-means**: Lloyd iterations whose assignment step is a power diagram ``argmax_j <v_j, y> + b_j``
with per-centroid offsets ``b_j`` re-fitted at every iteration until every centroid receives the
same share (the same semi-discrete balancing as calibration.fit_offsets, shared code:
:func:`balance_offsets`). The centroids therefore move to where the data is while each keeps
1/n_groups of it. Alternatives implemented for measurement (bench/privacy/quantizer.py):
``kmeans`` (plain, unbalanced) and ``sinkhorn-balanced`` (entropic optimal-transport assignment
with uniform group marginals, annealed; soft during training, hard with offsets at the end).

Why the codebook lives in the reduced space: every working vector is ``M y / |y|`` with ``M`` the
seeded projection (orthonormal columns), so the working vectors span only the reduced space;
centroids outside it would only collect noise. A (n_groups, reduced_dim) codebook is also 1,000 x
64 floats instead of 1,000 x 1,024 in the parameter file. The score of group j for a (noisy)
working vector z is ``<M R^T v_j, z>``; the noise is isotropic in the working space, so its
component in the reduced space is isotropic too and the noise scale keeps its meaning.

Why a seeded secret rotation ``R``: the stored codebook is expressed in coordinates rotated by a
Haar-random orthogonal matrix derived from the parameter set's secret seed (seeding.py, its own
domain). Without the seed the codebook's rows say nothing about where the groups lie relative
to the embedding space; the seed and the codebook together (the whole, secret parameter set)
fix the groups. The rotation hides the codebook's orientation, not its internal shape (the
angles between centroids); see docs/PRIVACY.md, "Learned quantizer".

Rotation of parameters (``PrivacyParams.rotated``) drops the codebook with the offsets: a new
hash family must be fitted again (``flowctl privacy calibrate``), with a new seed and
initialisation. Unlike random hashes, refitted codebooks are not unrelated: they follow the same
data, so two people who share a group before a rotation share one after it more often than
1/n_groups. The bench measures this ("re-fit agreement").
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline.privacy.seeding import DOMAIN_QUANTIZER, random_partial_isometry, seeded_rng

if TYPE_CHECKING:  # params imports nothing from here, but keep the runtime import graph one-way
    from pipeline.privacy.params import PrivacyParams

__all__ = ["QUANTIZER_METHODS", "QuantizerFit", "balance_offsets", "fill_stats", "fit_codebook",
           "quantizer_rotation", "rotated_unit_vectors", "fit_quantizer"]

log = logging.getLogger(__name__)

QUANTIZER_METHODS = ("kmeans-balanced", "sinkhorn-balanced", "kmeans")
_CHUNK = 8192
_EPS = 1e-12


def quantizer_rotation(seed: int, dim: int) -> np.ndarray:
    """The secret (dim, dim) Haar-random rotation of a parameter set's codebook coordinates."""
    return random_partial_isometry(seeded_rng(seed, DOMAIN_QUANTIZER, 0, dim), dim, dim)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def rotated_unit_vectors(standardised: np.ndarray, seed: int) -> np.ndarray:
    """Reduced-space vectors as the codebook sees them: unit length, rotated by the secret rotation.

    Equal to ``R M^T z`` for the noise-free working vector ``z`` (``M`` has orthonormal columns).
    """
    r = quantizer_rotation(seed, standardised.shape[1])
    return _unit(np.asarray(standardised, dtype=np.float64) @ r.T).astype(np.float32)


def balance_offsets(idx: np.ndarray, val: np.ndarray, n_groups: int, iters: int = 300,
                    beta: np.ndarray | None = None, eta0: float = 0.08, eta_min: float = 0.01,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Offsets ``b`` that make ``argmax_j val[i, j] + b[idx[i, j]]`` give every group the same share.

    ``idx``/``val``: each sample's best-scoring candidate groups and their scores (only the
    candidates are kept: the offsets stay small, so the winner is always among them; callers
    check). Semi-discrete optimal transport by dual ascent on the power diagram: lower the
    offset of groups that receive too many samples, raise the others,
    ``b_j -= eta * log(share_j / target)``, with a decaying step. ``beta``: warm start.
    """
    n = idx.shape[0]
    rows = np.arange(n)
    b = np.zeros(n_groups, dtype=np.float32) if beta is None else beta.astype(np.float32).copy()
    target = n / n_groups
    for it in range(iters):
        win = idx[rows, np.argmax(val + b[idx], axis=1)]
        counts = np.bincount(win, minlength=n_groups)
        eta = eta0 * (0.985 ** it) + eta_min
        b -= np.float32(eta) * np.log((counts + 1.0) / (target + 1.0)).astype(np.float32)
        b -= b.mean()
        if progress is not None:
            progress(it + 1, iters)
    return b


def fill_stats(groups: np.ndarray, n_groups: int) -> dict[str, float]:
    """How equally the groups fill.

    ``effective_groups_simpson`` = 1 / sum(share^2) is the figure the targets use: it is also
    1 / (chance that two random people share a group), i.e. what the different-person collision
    rate would be if n_groups were that number. ``effective_groups_entropy`` = exp(entropy of the
    shares) is reported alongside. min/max are relative to the mean fill (all groups counted,
    empty ones too). Both effective numbers are lowered by sampling noise: with m samples per
    group on average even perfectly equal groups give about n_groups / (1 + 1/m).
    """
    c = np.bincount(np.asarray(groups, dtype=np.int64), minlength=n_groups).astype(np.float64)
    total = max(c.sum(), 1.0)
    s = c / total
    nz = s[s > 0]
    mean = total / n_groups
    return {"samples": int(total), "per_group_mean": float(mean),
            "min_over_mean": float(c.min() / mean), "max_over_mean": float(c.max() / mean),
            "effective_groups_simpson": float(1.0 / np.sum(s ** 2)),
            "effective_groups_entropy": float(math.exp(-np.sum(nz * np.log(nz)))),
            "empty_groups": int(np.sum(c == 0)),
            "within_third_to_three": float(np.mean((c >= mean / 3) & (c <= 3 * mean)))}


def _candidates(x: np.ndarray, c: np.ndarray, t: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-``t`` centroids per row by scaled cosine, in chunks (the full n x k matrix can be large)."""
    idx_parts, val_parts = [], []
    for lo in range(0, x.shape[0], _CHUNK):
        s = (x[lo:lo + _CHUNK] @ c.T) * np.float32(scale)
        i = np.argpartition(-s, t - 1, axis=1)[:, :t]
        idx_parts.append(i.astype(np.int32))
        val_parts.append(np.take_along_axis(s, i, axis=1))
    return np.concatenate(idx_parts), np.concatenate(val_parts)


def _group_means(x: np.ndarray, assign: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=k)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    nonempty = counts > 0
    sums[nonempty] = np.add.reduceat(x[order].astype(np.float64), starts[nonempty], axis=0)
    return sums, counts


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, sample: int = 20000) -> np.ndarray:
    """k-means++ seeding on a subsample (cosine distance 1 - <x, c>): spread-out, seeded starting centroids."""
    pool = x if x.shape[0] <= sample else x[rng.choice(x.shape[0], sample, replace=False)]
    n = pool.shape[0]
    first = int(rng.integers(n))
    chosen = [first]
    d = np.maximum(1.0 - pool @ pool[first], 0.0).astype(np.float64)
    for _ in range(1, k):
        tot = d.sum()
        j = int(rng.integers(n)) if tot <= 0 else int(rng.choice(n, p=d / tot))
        chosen.append(j)
        d = np.minimum(d, np.maximum(1.0 - pool @ pool[j], 0.0))
    return pool[np.array(chosen)].astype(np.float32)


@dataclass(frozen=True)
class QuantizerFit:
    """A fitted codebook and how it was obtained (figures go into the calibration record)."""
    codebook: np.ndarray          # (n_groups, dim) unit rows, in the rotated coordinates of the input
    offsets: np.ndarray           # (n_groups,) balancing offsets on the training data (noise-free)
    method: str
    iterations: int
    seconds: float
    train_fill: dict[str, float] = field(default_factory=dict)


def fit_codebook(vectors: np.ndarray, n_groups: int, method: str = "kmeans-balanced",
                 rng: np.random.Generator | None = None, iters: int = 25, candidates: int = 32,
                 tol: float = 0.002, progress: Callable[[int, int], None] | None = None) -> QuantizerFit:
    """Fit ``n_groups`` unit centroids to unit ``vectors`` (n, d) with one of QUANTIZER_METHODS.

    ``kmeans-balanced``: Lloyd's algorithm on the sphere whose assignment is the balanced power
    diagram (offsets refitted, warm-started, every iteration), so each centroid is the mean of
    an equal share of the data. ``sinkhorn-balanced``: the same with soft, entropy-regularised
    assignments whose group marginals are forced uniform (log-domain Sinkhorn on each row's
    candidate groups); the temperature is annealed so the end is nearly hard. ``kmeans``: plain
    spherical k-means (nearest centroid, no balance; empty centroids are re-seeded).

    Deterministic given ``vectors`` and ``rng``'s state. Stops when fewer than ``tol`` of the
    assignments change. Needs at least ``n_groups`` vectors; for balance that generalises, tens
    per group (tens of thousands for 1,000 groups).
    """
    if method not in QUANTIZER_METHODS:
        raise ValueError(f"unknown quantizer method {method!r}; choose one of {', '.join(QUANTIZER_METHODS)}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError("vectors must be a finite 2-D array")
    n, d = x.shape
    if n < n_groups:
        raise ValueError(f"need at least n_groups={n_groups} vectors to fit a codebook, got {n}")
    x = _unit(x).astype(np.float32)
    rng = rng or np.random.default_rng(0)
    t0 = time.perf_counter()
    c = _kmeans_pp(x, n_groups, rng)
    t = min(candidates, n_groups)
    # Scores in units of the spread of a random unit vector's cosine, as GroupHash standardises them,
    # so the offsets fitted here have the scale the anonymizer uses.
    scale = math.sqrt(d)
    rows = np.arange(n)
    beta = np.zeros(n_groups, dtype=np.float32)
    prev = None
    it = 0
    for it in range(1, iters + 1):
        idx, val = _candidates(x, c, t, scale)
        if method == "kmeans":
            assign = idx[rows, np.argmax(val, axis=1)].astype(np.int64)
            sums, counts = _group_means(x, assign, n_groups)
        elif method == "kmeans-balanced":
            beta = balance_offsets(idx, val, n_groups, iters=60 if it > 1 else 200, beta=beta,
                                   eta0=0.08 if it == 1 else 0.03)
            assign = idx[rows, np.argmax(val + beta[idx], axis=1)].astype(np.int64)
            sums, counts = _group_means(x, assign, n_groups)
        else:  # sinkhorn-balanced
            # Temperature relative to how far apart a row's best candidates score, so that the
            # softness means the same in a narrow cone as on the whole sphere; annealed towards hard.
            spread = float(np.mean(val.max(axis=1) - np.median(val, axis=1)))
            tau = spread * max(0.06 * (0.8 ** (it - 1)), 0.01)
            w, beta = _sinkhorn_weights(idx, val, n_groups, tau, beta)
            assign = idx[rows, np.argmax(w, axis=1)].astype(np.int64)
            sums = _soft_sums(x, idx, w, n_groups)
            counts = np.bincount(idx.ravel(), weights=w.ravel(), minlength=n_groups)
        empty = np.flatnonzero(counts <= 0)
        if empty.size:
            # A centroid without data would never win again: restart it on a random sample.
            sums[empty] = x[rng.choice(n, empty.size, replace=False)]
        c = _unit(sums).astype(np.float32)
        changed = 1.0 if prev is None else float(np.mean(assign != prev))
        prev = assign
        if progress is not None:
            progress(it, iters)
        if changed < tol:
            break
    # Final hard assignment: balanced methods get offsets fitted to convergence on the final codebook.
    idx, val = _candidates(x, c, t, scale)
    if method == "kmeans":
        beta = np.zeros(n_groups, dtype=np.float32)
    else:
        beta = balance_offsets(idx, val, n_groups, iters=300, beta=beta, eta0=0.03)
    groups = idx[rows, np.argmax(val + beta[idx], axis=1)]
    return QuantizerFit(codebook=c, offsets=beta, method=method, iterations=it,
                        seconds=time.perf_counter() - t0, train_fill=fill_stats(groups, n_groups))


def _sinkhorn_weights(idx: np.ndarray, val: np.ndarray, k: int, tau: float, beta: np.ndarray,
                      rounds: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Soft assignments over each row's candidates with (nearly) uniform group totals.

    Log-domain Sinkhorn: rows sum to one by the softmax; the group potentials ``beta`` are
    moved by ``-tau * log(total_j / target)`` until every group's total is the target.
    """
    n = idx.shape[0]
    target = n / k
    b = beta.astype(np.float64).copy()
    v = val.astype(np.float64)
    for _ in range(rounds):
        logits = (v + b[idx]) / tau
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        tot = np.bincount(idx.ravel(), weights=w.ravel(), minlength=k)
        b -= tau * np.log((tot + 1e-3) / target)
        b -= b.mean()
    logits = (v + b[idx]) / tau
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32), b.astype(np.float32)


def _soft_sums(x: np.ndarray, idx: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """sum_i w[i, j] x_i per group, through a sparse (n x k) weight matrix."""
    from scipy.sparse import csr_matrix

    n, t = idx.shape
    m = csr_matrix((w.ravel().astype(np.float64), idx.ravel(), np.arange(0, n * t + 1, t)), shape=(n, k))
    return np.asarray(m.T @ x.astype(np.float64))


def fit_quantizer(params: "PrivacyParams", embeddings: np.ndarray, method: str = "kmeans-balanced",
                  iters: int = 25, progress: Callable[[int, int], None] | None = None
                  ) -> tuple["PrivacyParams", QuantizerFit]:
    """Fit a codebook for ``params`` (which must have reference statistics) on unlabelled ``embeddings``.

    Returns the parameter set with the codebook (offsets cleared: the caller balances them with
    noise, calibration.fit_all_offsets) and the fit. The k-means initialisation is seeded from
    the parameter set's secret seed, so the result is deterministic given seed and data.
    """
    from pipeline.privacy.projection import Projector, validate_embeddings

    if params.reference is None:
        raise ValueError("a quantizer is fitted in the reduced space of the reference statistics: "
                         "the parameter set needs a reference (calibration.fit_reference) first")
    x = validate_embeddings(np.asarray(embeddings), params.reference.input_dim)
    base = params.with_changes(codebook=None, hash_offsets=None, strata=(), stratum_offsets=None)
    y = Projector(base, x.shape[1]).standardise(x)
    fit = fit_codebook(rotated_unit_vectors(y, params.seed), params.n_groups, method,
                       rng=seeded_rng(params.seed, DOMAIN_QUANTIZER, 1), iters=iters, progress=progress)
    return base.with_changes(codebook=fit.codebook), fit
