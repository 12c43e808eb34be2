"""Quantizers onto 1,000 groups compared: the seeded hash, plain k-means, balanced k-means (issue 10, item 5).

    .venv/bin/python bench/privacy/quantizer.py                     # synthetic population (~4 min, 2 cores)
    .venv/bin/python bench/privacy/quantizer.py --quick             # smaller population (~1 min)
    .venv/bin/python bench/privacy/quantizer.py --dims 32,64,128    # reduced-space sweep
    .venv/bin/python bench/privacy/quantizer.py --vtest             # real 0288 embeddings of vtest.avi

Prints, per quantizer: p (same person, two cameras, same group) without noise and with the noise
scale ``--noise`` (offsets re-balanced with that noise, as calibration does), the different-person
collision rate, the effective number of groups (1/sum share^2, and exp entropy), the smallest and
largest group relative to the mean fill, and the fit time. Every figure is measured on people not
used for fitting, through ``Anonymizer`` (the production path).

Synthetic (default): bench/privacy/synthetic_reid.py, a generator that does not share the
quantizer's assumptions (Zipf-sized appearance modes, heavy tails, a curved population sheet,
per-camera distortions, per-person stability), with its one free number fitted so that the
cross-camera rank-1 among 486 people is OMZ 0288's measured 0.745. 40,000 unlabelled people fit
(one pass each, any of 4 cameras), 20,000 other people give cross-camera pairs (cameras 0 and
1), 60,000 further passes measure the fill.

vtest (``--vtest``): real OMZ 0288 embeddings of tracked people on vtest.avi (one camera, 80 s,
about 19 people; bench/privacy/vtest_reid.py). 19 people cannot fill 1,000 groups: the figures
there are the same-camera stability of real embeddings and a smoke test of the pipeline on real
vectors, at group counts the clip can fill; they say nothing about 1,000 groups.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.privacy import Anonymizer, PrivacyParams  # noqa: E402
from pipeline.privacy.calibration import fit_offsets, fit_reference  # noqa: E402
from pipeline.privacy.quantizer import fill_stats, fit_quantizer  # noqa: E402


@dataclass
class Data:
    fit: np.ndarray        # unlabelled passes for fitting
    a: np.ndarray          # same person: camera 0
    b: np.ndarray          # same person: camera 1
    fill: np.ndarray       # more passes of other people, to measure how groups fill
    note: str
    diff: tuple[np.ndarray, np.ndarray] | None = None  # different-person pairs (default: a[i] vs b[i-1])


def synthetic(n_fit: int, n_pairs: int, n_fill: int, seed: int) -> Data:
    from synthetic_reid import World, capture, fit_view_scale, people, rank1_auc

    rng = np.random.default_rng(seed)
    world = World.make(seed=seed)
    scale = fit_view_scale(world, rng)
    who = people(world, 486, rng)
    r1, auc = rank1_auc(capture(world, who, 0, rng), capture(world, who, 1, rng), rng)
    fitp = people(world, n_fit, rng)
    fit = capture(world, fitp, rng.integers(0, 4, n_fit), rng)
    ev = people(world, n_pairs, rng)
    a, b = capture(world, ev, 0, rng), capture(world, ev, 1, rng)
    fp = people(world, n_fill, rng)
    fill = capture(world, fp, rng.integers(0, 4, n_fill), rng)
    note = (f"synthetic world seed {seed}: view scale {scale:.3f} fitted to rank-1 0.745 among 486; check on fresh "
            f"people: rank-1 {r1:.3f}, ROC AUC {auc:.3f} (0288 measured: 0.745, 0.990); "
            f"{n_fit} fit people, {n_pairs} cross-camera pairs, {n_fill} fill passes")
    return Data(fit, a, b, fill, note)


def evaluate(params: PrivacyParams, d: Data, rng: np.random.Generator) -> dict[str, float]:
    anon = Anonymizer(params, d.a.shape[1])
    wa, wb = anon.working_vectors(d.a), anon.working_vectors(d.b)
    ga, gb = anon.groups_of_working(wa, rng), anon.groups_of_working(wb, rng)
    if d.diff is None:  # person i at camera 0 against person i-1 at camera 1
        diff = float(np.mean(ga == gb[np.roll(np.arange(len(gb)), 1)]))
    else:
        diff = float(np.mean(anon.assign_groups(d.diff[0]) == anon.assign_groups(d.diff[1])))
    gf = anon.groups_of_working(anon.working_vectors(d.fill), rng)
    out = {"p": float(np.mean(ga == gb)), "diff": diff}
    out.update(fill_stats(gf, params.n_groups))
    return out


def run_candidate(name: str, base: PrivacyParams, d: Data, noise: float, method: str | None,
                  balance: bool, rng: np.random.Generator, iters: int) -> dict[str, float | str]:
    t0 = time.perf_counter()
    p = base
    fit_info = ""
    if method is not None:
        p, fit = fit_quantizer(base, d.fit, method=method, iters=iters)
        fit_info = f"{fit.iterations} it"
    if balance:
        p = p.with_changes(hash_offsets=fit_offsets(p, d.fit, rng))
    t_fit = time.perf_counter() - t0
    res0 = evaluate(p, d, rng)
    row: dict[str, float | str] = {"name": name, "fit_s": t_fit, "info": fit_info, **{f"{k}": v for k, v in res0.items()}}
    if noise > 0:
        pn = p.with_changes(noise_scale=noise)
        if balance:  # calibration re-balances with the noise it adds
            pn = pn.with_changes(hash_offsets=fit_offsets(pn, d.fit, rng))
        resn = evaluate(pn, d, rng)
        row.update({"p_noise": resn["p"], "diff_noise": resn["diff"], "eff_noise": resn["effective_groups_simpson"],
                    "min_noise": resn["min_over_mean"], "max_noise": resn["max_over_mean"]})
    return row


def co_membership_kept(g1: np.ndarray, g2: np.ndarray) -> float:
    """Of the pairs of people who share a group under one fit, the share who also share one under the other."""
    pairs_1 = np.bincount(g1).astype(np.float64)
    both = np.unique(g1.astype(np.int64) * (int(g2.max()) + 1) + g2, return_counts=True)[1].astype(np.float64)
    return float(np.sum(both * (both - 1)) / max(np.sum(pairs_1 * (pairs_1 - 1)), 1.0))


def refit_agreement(pca: PrivacyParams, white: PrivacyParams, d: Data, iters: int) -> None:
    """Does a re-fit under a new seed (a parameter rotation) give unrelated groups? Hash vs learned codebook."""
    p1, _ = fit_quantizer(pca, d.fit, method="kmeans-balanced", iters=iters)
    p2, _ = fit_quantizer(pca.with_changes(seed=pca.seed + 1), d.fit, method="kmeans-balanced", iters=iters)
    rng = np.random.default_rng(0)
    out = []
    for a, b in ((p1, p2), (white, white.with_changes(seed=white.seed + 1))):
        a = a.with_changes(hash_offsets=fit_offsets(a, d.fit, rng))
        b = b.with_changes(hash_offsets=fit_offsets(b, d.fit, rng))
        ga = Anonymizer(a, d.fill.shape[1]).assign_groups(d.fill)
        gb = Anonymizer(b, d.fill.shape[1]).assign_groups(d.fill)
        out.append(co_membership_kept(ga, gb))
    print(f"re-fit under a new seed (rotation): of the pairs of people sharing a group, {out[0]:.3f} still share "
          f"one with balanced k-means, {out[1]:.4f} with the hash (chance: {1 / pca.n_groups:.4f})")


def print_rows(rows: list[dict], noise: float) -> None:
    hdr = (f"{'quantizer':34s} {'p':>6s} {'p@' + format(noise, 'g'):>7s} {'diff':>7s} {'eff(1/Σs²)':>10s} "
           f"{'eff(expH)':>9s} {'min/mean':>8s} {'max/mean':>8s} {'in[1/3,3]':>9s} {'fit s':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['name']:34s} {r['p']:6.3f} {r.get('p_noise', float('nan')):7.3f} {r['diff']:7.4f} "
              f"{r['effective_groups_simpson']:10.0f} {r['effective_groups_entropy']:9.0f} {r['min_over_mean']:8.2f} "
              f"{r['max_over_mean']:8.2f} {r['within_third_to_three']:9.3f} {r['fit_s']:6.0f}")
    if noise > 0:
        print(f"\nwith noise {noise:g} (offsets re-balanced with it): effective groups / min / max fill, different-person rate")
        for r in rows:
            print(f"  {r['name']:34s} eff {r['eff_noise']:5.0f}  min {r['min_noise']:.2f}  max {r['max_noise']:.2f}  "
                  f"diff {r['diff_noise']:.4f}")


def synthetic_main(a: argparse.Namespace) -> None:
    n_fit, n_pairs, n_fill = (15000, 8000, 30000) if a.quick else (40000, 20000, 60000)
    n_fit = a.fit_people or n_fit
    t0 = time.perf_counter()
    d = synthetic(n_fit, n_pairs, n_fill, a.seed)
    print(d.note, f"({time.perf_counter() - t0:.0f} s)\n")
    base = PrivacyParams.default().with_changes(version="pp-bench", seed=a.seed + 1000, noise_scale=0.0,
                                                n_groups=a.groups)
    rng = np.random.default_rng(a.seed)
    methods = a.methods.split(",")
    for k in [int(v) for v in a.dims.split(",")]:
        rows = []
        if "hash" in methods:
            ref = fit_reference(d.fit, dims=k)  # today's unlabelled path: population whitening
            rows.append(run_candidate(f"hash, whitened {k}d (today)", base.with_changes(reference=ref), d,
                                      a.noise, None, True, rng, a.iters))
        pca = base.with_changes(reference=fit_reference(d.fit, dims=k, whiten=False))
        if "kmeans" in methods:
            rows.append(run_candidate(f"k-means, pca {k}d", pca, d, a.noise, "kmeans", False, rng, a.iters))
        if "kmeans+offsets" in methods:
            rows.append(run_candidate(f"k-means + offsets, pca {k}d", pca, d, a.noise, "kmeans", True, rng, a.iters))
        if "kmeans-balanced" in methods:
            rows.append(run_candidate(f"balanced k-means, pca {k}d", pca, d, a.noise, "kmeans-balanced", True, rng,
                                      a.iters))
        if "sinkhorn-balanced" in methods:
            rows.append(run_candidate(f"sinkhorn-balanced, pca {k}d", pca, d, a.noise, "sinkhorn-balanced", True,
                                      rng, a.iters))
        if "kmeans-balanced-white" in methods:
            white = base.with_changes(reference=fit_reference(d.fit, dims=k))
            rows.append(run_candidate(f"balanced k-means, whitened {k}d", white, d, a.noise, "kmeans-balanced", True,
                                      rng, a.iters))
        print_rows(rows, a.noise)
        print()
    if a.refit:
        k = int(a.dims.split(",")[0])
        refit_agreement(base.with_changes(reference=fit_reference(d.fit, dims=k, whiten=False)),
                        base.with_changes(reference=fit_reference(d.fit, dims=k)), d, a.iters)


def vtest_main(a: argparse.Namespace) -> None:
    from vtest_reid import cache_path, extract

    path = cache_path("omz-0200", "person-reidentification-retail-0288")
    if not path.exists():
        extract()
    z = np.load(path)
    e, track, frame, clean = z["embedding"], z["track"], z["frame"], z["clean"]
    keep = clean & (track >= 0)
    e, track, frame = e[keep], track[keep], frame[keep]
    # Same-track pairs at least --gap seconds apart (10 fps): re-captures of one person by one camera.
    ia, ib = [], []
    for t in np.unique(track):
        idx = np.flatnonzero(track == t)
        for i in idx:
            far = idx[frame[idx] >= frame[i] + 10 * a.gap]
            if far.size:
                ia.append(i)
                ib.append(far[-1])
    ia, ib = np.array(ia), np.array(ib)
    print(f"vtest.avi, OMZ 0288: {len(e)} clean crops in {np.unique(track).size} track pieces; {len(ia)} same-track pairs "
          f">= {a.gap:g} s apart from {np.unique(track[ia]).size} pieces (one camera; about 19 people)")
    sims = np.sum(e[ia] * e[ib], axis=1)
    print(f"same-person cosine: median {np.median(sims):.3f}, p5 {np.percentile(sims, 5):.3f}")
    # Different people: clean crops of two tracks in the same frame (certainly two people).
    da, db = [], []
    for f in np.unique(frame):
        idx = np.flatnonzero(frame == f)
        da += [i for i in idx for j in idx if i < j]
        db += [j for i in idx for j in idx if i < j]
    d = Data(e, e[ia], e[ib], e, "vtest", diff=(e[np.array(da)], e[np.array(db)]))
    print(f"{len(da)} different-person pairs (two tracks in one frame)")
    rng = np.random.default_rng(a.seed)
    for groups in [int(v) for v in a.vtest_groups.split(",")]:
        base = PrivacyParams.default().with_changes(version="pp-bench", seed=a.seed + 1000, noise_scale=0.0,
                                                    n_groups=groups)
        k = min(int(a.dims.split(",")[0]), 64)
        rows = [run_candidate(f"hash, whitened {k}d (today)", base.with_changes(reference=fit_reference(e, dims=k)),
                              d, a.noise, None, True, rng, a.iters)]
        pca = base.with_changes(reference=fit_reference(e, dims=k, whiten=False))
        rows.append(run_candidate(f"k-means, pca {k}d", pca, d, a.noise, "kmeans", False, rng, a.iters))
        rows.append(run_candidate(f"balanced k-means, pca {k}d", pca, d, a.noise, "kmeans-balanced", True, rng,
                                  a.iters))
        print(f"\n{groups} groups (fitted and measured on the same clip: in-sample, {len(e) / groups:.0f} crops per group)")
        print_rows(rows, a.noise)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller synthetic population")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--dims", default="64", help="reduced dimensions to try (comma-separated)")
    ap.add_argument("--noise", type=float, default=0.03, help="noise scale for the 'with noise' column (default: "
                                                              "the parameter-set default)")
    ap.add_argument("--iters", type=int, default=25, help="k-means iterations at most")
    ap.add_argument("--methods", default="hash,kmeans,kmeans+offsets,kmeans-balanced,sinkhorn-balanced")
    ap.add_argument("--refit", action="store_true", help="also measure how related re-fits under new seeds are")
    ap.add_argument("--fit-people", type=int, default=None, help="unlabelled people to fit on (default 40,000)")
    ap.add_argument("--vtest", action="store_true", help="real 0288 embeddings of vtest.avi instead of synthetic")
    ap.add_argument("--vtest-groups", default="10,30")
    ap.add_argument("--gap", type=float, default=3.0, help="vtest: seconds between the two crops of a pair")
    a = ap.parse_args()
    vtest_main(a) if a.vtest else synthetic_main(a)


if __name__ == "__main__":
    main()
