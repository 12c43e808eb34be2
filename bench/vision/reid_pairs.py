"""Same-person vs different-person similarity of the appearance descriptor on REAL footage, and a
privacy parameter set calibrated from it.

    timeout 500 .venv/bin/python bench/vision/reid_pairs.py            # detect + track + pairs + calibrate
    timeout 500 .venv/bin/python bench/vision/reid_pairs.py --no-calibrate

What it does:
1. Reads every frame of vtest.avi (infra/local/footage.sh; Debian opencv-doc, 768x576, 795 frames at
   10 fps), downscales to 640x480 as the edge does, runs the SSDLite person detector and
   ``pipeline.vision.descriptor.describe`` on every frame (cached in .cache/reid/ by file size).
2. Links detections into tracks with the strict IoU tracker (pipeline/vision/tracking.py).
3. Keeps "clean" crops only: box at least --min-height px tall, not cut by the frame border, not
   overlapping another detection (occluded crops mix two people's colours).
4. Same-person pairs: two clean crops of the same track at least --min-gap-s apart (re-capture
   rather than adjacent frames). Different-person pairs: clean crops of two tracks present in the
   same frame (certainly two people, even if the tracker fragmented someone), at any time.
   Per track / track pair the number of pairs is capped so that a few long tracks do not dominate.
5. Prints the cosine similarity distributions (median, p5, p95), ROC AUC same-vs-different, and
   rank-1 re-identification (query crop vs one gallery crop per other track, >= --min-gap-s away).
6. Writes models/privacy/vtest_pairs.npz (same_a, same_b, diff_a, diff_b; float32) and
   models/privacy/vtest_embeddings.npz ('embeddings': a subsample of clean crops, a few per track),
   runs ``python -m pipeline.privacy.cli calibrate`` on them, and measures the calibrated and the
   default parameter sets on the measured same-person pairs with Anonymizer.assign_groups.

Limits (stated in the printout): one camera, one 80 s clip, a few dozen people; same-person
pairs are same-camera re-captures seconds apart, far easier than the cross-camera re-capture the
privacy core is meant for; tracker identity switches can contaminate same-person pairs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.edge.sources import downscale
from pipeline.settings import REPO_ROOT
from pipeline.vision.descriptor import describe
from pipeline.vision.detector import Box, make_detector
from pipeline.vision.tracking import IouTracker, Track, iou

FPS = 10.0
OUT_DIR = REPO_ROOT / "models" / "privacy"
CACHE_DIR = REPO_ROOT / ".cache" / "reid"


def footage_path() -> Path:
    out = subprocess.run(["bash", str(REPO_ROOT / "infra" / "local" / "footage.sh")], check=True,
                         capture_output=True, text=True, timeout=300).stdout.strip()
    return Path(out)


def detect_all(path: Path, detector_name: str, threads: int, max_frames: int | None) -> dict[str, np.ndarray]:
    """Per detection: frame, box (x, y, w, h), score, descriptor. Cached by clip size and detector."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cache = CACHE_DIR / f"{path.stem}-{path.stat().st_size}-{detector_name}-{max_frames or 'all'}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    det = make_detector(detector_name, threads=threads)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    frames, boxes, scores, descs = [], [], [], []
    n_frames, t0, t_det = 0, time.perf_counter(), 0.0
    shape = None
    while max_frames is None or n_frames < max_frames:
        ok, img = cap.read()
        if not ok:
            break
        small = downscale(img, 640, 480)
        shape = small.shape
        t = time.perf_counter()
        found = det.detect(small)
        t_det += time.perf_counter() - t
        d = describe(small, found)
        for b, v in zip(found, d):
            frames.append(n_frames)
            boxes.append((b.x, b.y, b.w, b.h))
            scores.append(b.score)
            descs.append(v)
        n_frames += 1
    cap.release()
    out = {"frame": np.array(frames, dtype=np.int32), "box": np.array(boxes, dtype=np.int32).reshape(-1, 4),
           "score": np.array(scores, dtype=np.float32), "desc": np.array(descs, dtype=np.float32).reshape(-1, 384),
           "n_frames": np.array(n_frames), "frame_shape": np.array(shape[:2] if shape else (0, 0))}
    np.savez_compressed(cache, **out)
    print(f"detected {len(frames)} people in {n_frames} frames in {time.perf_counter() - t0:.0f} s "
          f"(detector {1000 * t_det / max(n_frames, 1):.0f} ms/frame)", file=sys.stderr)
    return out


def run_tracker(data: dict[str, np.ndarray], **kwargs) -> list[Track]:
    tr = IouTracker(**kwargs)
    frame_of = data["frame"]
    order = np.argsort(frame_of, kind="stable")
    by_frame: dict[int, list[int]] = {}
    for i in order:
        by_frame.setdefault(int(frame_of[i]), []).append(int(i))
    for f in range(int(data["n_frames"])):
        idx = by_frame.get(f, [])
        # Boxes carry their global detection index as 5th field, so tracks map back to descriptors.
        tr.update(f, [Box(*map(int, data["box"][i]), score=float(i)) for i in idx])
    return tr.finish()


def clean_mask(data: dict[str, np.ndarray], min_height: int, border: int = 2) -> np.ndarray:
    """True for crops usable as appearance samples: tall enough, inside the frame, not overlapping others."""
    h_img, w_img = (int(v) for v in data["frame_shape"])
    box = data["box"]
    ok = box[:, 3] >= min_height
    ok &= (box[:, 0] > border) & (box[:, 1] > border)
    ok &= (box[:, 0] + box[:, 2] < w_img - border) & (box[:, 1] + box[:, 3] < h_img - border)
    frame = data["frame"]
    for f in np.unique(frame):
        idx = np.flatnonzero(frame == f)
        for a in idx:
            for b in idx:
                if a != b and iou(box[a], box[b]) > 0.0:
                    ok[a] = False
    return ok


def build_pairs(tracks: list[Track], clean: np.ndarray, frame_of: np.ndarray, min_gap: int, per_track: int,
                per_track_pair: int, rng: np.random.Generator):
    """Index pairs (global detection indices) for same-person and different-person pairs."""
    crops = {t.track_id: np.array([int(b.score) for b in t.boxes], dtype=np.int64) for t in tracks}
    crops = {k: v[clean[v]] for k, v in crops.items()}
    crops = {k: v for k, v in crops.items() if len(v)}
    same: list[tuple[int, int, int]] = []  # (a, b, track)
    for tid, idx in crops.items():
        fr = frame_of[idx]
        cand = [(idx[i], idx[j]) for i in range(len(idx)) for j in range(i + 1, len(idx)) if fr[j] - fr[i] >= min_gap]
        if not cand:
            continue
        pick = rng.choice(len(cand), size=min(per_track, len(cand)), replace=False)
        same += [(cand[k][0], cand[k][1], tid) for k in pick]
    # Different people: tracks that share at least one frame (two people visible at once).
    spans = {t.track_id: set(t.frames) for t in tracks if t.track_id in crops}
    ids = sorted(spans)
    diff: list[tuple[int, int]] = []
    coexist: set[tuple[int, int]] = set()
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if spans[a] & spans[b]:
                coexist.add((a, b))
                ca, cb = crops[a], crops[b]
                for _ in range(per_track_pair):
                    diff.append((int(rng.choice(ca)), int(rng.choice(cb))))
    return same, diff, crops, coexist


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(similarity of a same pair > that of a different pair), ties counting half (Mann-Whitney)."""
    allv = np.concatenate([pos, neg])
    ranks = np.empty(len(allv))
    order = np.argsort(allv, kind="mergesort")
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def rank1(desc: np.ndarray, crops: dict[int, np.ndarray], frame_of: np.ndarray, coexist: set[tuple[int, int]],
          min_gap: int, rng: np.random.Generator, queries_per_track: int = 5) -> tuple[float, int, float]:
    """Re-identification among people known to be different: for a query crop of track A, the gallery
    holds one crop of A at least min_gap frames away and one random crop of every track that coexists
    with A. Returns (rank-1 rate, number of queries, mean gallery size)."""
    hits, n, gsize = 0, 0, 0
    for tid, idx in crops.items():
        others = [b if a == tid else a for a, b in coexist if tid in (a, b)]
        if not others:
            continue
        for _ in range(queries_per_track):
            q = int(rng.choice(idx))
            far = idx[np.abs(frame_of[idx] - frame_of[q]) >= min_gap]
            if not len(far):
                break
            gallery = [int(rng.choice(far))] + [int(rng.choice(crops[o])) for o in others]
            s = desc[gallery] @ desc[q]
            hits += int(np.argmax(s) == 0)
            n += 1
            gsize += len(gallery)
    return (hits / n if n else float("nan")), n, (gsize / n if n else 0.0)


def describe_dist(name: str, s: np.ndarray) -> str:
    p5, p25, med, p75, p95 = np.percentile(s, [5, 25, 50, 75, 95])
    return (f"  {name:<16} n={len(s):5d}  median {med:.3f}  p5 {p5:.3f}  p25 {p25:.3f}  p75 {p75:.3f}  "
            f"p95 {p95:.3f}  mean {s.mean():.3f}")


def group_check(params_path: Path | None, same_a: np.ndarray, same_b: np.ndarray, diff_a: np.ndarray,
                diff_b: np.ndarray, population: np.ndarray, repeats: int) -> dict[str, float]:
    from pipeline.privacy import Anonymizer, PrivacyParams

    p = PrivacyParams.default() if params_path is None else PrivacyParams.load(params_path)
    anon = Anonymizer(p, input_dim=same_a.shape[1])
    rates, drates, fill = [], [], []
    for _ in range(repeats):  # the noise is fresh on every call: average over draws
        rates.append(np.mean(anon.assign_groups(same_a) == anon.assign_groups(same_b)))
        drates.append(np.mean(anon.assign_groups(diff_a) == anon.assign_groups(diff_b)))
        g = anon.assign_groups(population)
        counts = np.bincount(g, minlength=p.n_groups)
        fill.append(((counts > 0).sum(), counts.max(), np.sort(counts)[::-1][:10].sum() / len(g)))
    used, mx, top10 = (float(np.mean([f[k] for f in fill])) for k in range(3))
    return {"version": p.version, "noise": p.noise_scale, "same": float(np.mean(rates)),
            "same_sd": float(np.std(rates)), "diff": float(np.mean(drates)), "used": used, "max": mx,
            "top10": top10, "n_pop": len(population), "n_groups": p.n_groups, "dims":
            (p.reference.reduced_dim if p.reference else 0)}


def groups_sweep(sa: np.ndarray, sb: np.ndarray, pair_track: np.ndarray, emb: np.ndarray, emb_track: np.ndarray,
                 da: np.ndarray, db: np.ndarray, sizes: tuple[int, ...], seeds: int) -> None:
    """What this descriptor supports: noise-free same-group rate of real re-captures vs number of groups.

    Two measurements per size: the calibrate command's own (random half of the pairs fitted, the
    other half measured: the same people on both sides, optimistic), and a person-disjoint one
    (reference fitted on the pairs and crops of half the tracks, rate measured on the other tracks).
    Repeated over ``seeds`` deployment seeds / track splits; mean and range are printed.
    """
    import logging

    from pipeline.privacy import Anonymizer, PrivacyParams
    from pipeline.privacy.calibration import calibrate

    logging.getLogger("pipeline.privacy").setLevel(logging.ERROR)
    ids = np.unique(pair_track)
    print(f"\ngroups sweep (noise-free rates unless noise was needed; {seeds} seeds; person-disjoint: half of the "
          f"{len(ids)} tracks with pairs fit, the other half measured)")
    for k in sizes:
        base = PrivacyParams.default().with_changes(n_groups=k)
        own, held, diff, noise = [], [], [], []
        for s in range(seeds):
            rng = np.random.default_rng(1000 + s)
            fit_ids = set(rng.permutation(ids)[:len(ids) // 2].tolist())
            fm = np.isin(pair_track, list(fit_ids))
            em = np.isin(emb_track, list(fit_ids))
            r = calibrate(emb, version="sweep", pairs=(sa, sb), base=base, seed=s + 1)
            own.append(r.params.same_group_rate)
            noise.append(r.params.noise_scale)
            r2 = calibrate(emb[em], version="sweep", pairs=(sa[fm], sb[fm]), base=base, seed=s + 1)
            a = Anonymizer(r2.params, sa.shape[1])
            held.append(float(np.mean(a.assign_groups(sa[~fm]) == a.assign_groups(sb[~fm]))))
            diff.append(float(np.mean(a.assign_groups(da) == a.assign_groups(db))))
        fmt = lambda v: f"{np.mean(v):.3f} [{np.min(v):.3f}-{np.max(v):.3f}]"  # noqa: E731
        print(f"  {k:5d} groups: calibrate's rate {fmt(own)} (noise {np.mean(noise):.4f}); person-disjoint "
              f"same {fmt(held)}, different {np.mean(diff):.4f} (1/groups {1 / k:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", default="ssdlite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-frames", type=int, default=None, help="only the first N frames (quick check)")
    ap.add_argument("--min-gap-s", type=float, default=2.0, help="same-person pairs at least this far apart")
    ap.add_argument("--min-height", type=int, default=40, help="smallest box height (px at 640x480) kept")
    ap.add_argument("--min-track", type=int, default=10, help="shortest track kept (frames)")
    ap.add_argument("--iou", type=float, default=0.3, help="tracker IoU threshold")
    ap.add_argument("--per-track", type=int, default=60, help="same-person pairs per track at most")
    ap.add_argument("--per-track-pair", type=int, default=20, help="different-person pairs per track pair")
    ap.add_argument("--emb-per-track", type=int, default=40, help="crops per track in the embeddings file")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (pairs, subsamples)")
    ap.add_argument("--version", default="pp-2026.11-vtest")
    ap.add_argument("--calib-seed", type=int, default=None, help="deployment seed for calibrate (default: fresh)")
    ap.add_argument("--no-calibrate", action="store_true")
    ap.add_argument("--repeats", type=int, default=20, help="noise draws for the group-rate check")
    ap.add_argument("--sweep", type=int, nargs="*", default=None, metavar="GROUPS",
                    help="also measure the same-group rate for these numbers of groups (e.g. 1000 300 100 30 10)")
    ap.add_argument("--sweep-seeds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    min_gap = int(round(args.min_gap_s * FPS))

    path = footage_path()
    data = detect_all(path, args.detector, args.threads, args.max_frames)
    n_frames, n_det = int(data["n_frames"]), len(data["frame"])
    tracks = run_tracker(data, iou_threshold=args.iou, max_missed=2, min_length=args.min_track, strict=True)
    clean = clean_mask(data, args.min_height)
    same, diff, crops, coexist = build_pairs(tracks, clean, data["frame"], min_gap, args.per_track,
                                             args.per_track_pair, rng)
    desc = data["desc"]
    lengths = np.array([len(t) for t in tracks])
    print(f"footage {path.name}: {n_frames} frames, {n_det} detections ({n_det / max(n_frames, 1):.1f}/frame), "
          f"detector {args.detector}")
    print(f"tracks (strict IoU >= {args.iou}, min {args.min_track} frames): {len(tracks)}, length median "
          f"{np.median(lengths):.0f} frames, max {lengths.max()}; ended as ambiguous: "
          f"{sum(t.end_reason == 'ambiguous' for t in tracks)}")
    print(f"clean crops (h >= {args.min_height}px, inside frame, no overlap): {int(clean.sum())} of {n_det}; "
          f"tracks with clean crops {len(crops)}; with a same pair >= {args.min_gap_s:g}s apart "
          f"{len({t for *_, t in same})}; coexisting track pairs {len(coexist)}")
    sa, sb = desc[[a for a, _, _ in same]], desc[[b for _, b, _ in same]]
    da, db = desc[[a for a, _ in diff]], desc[[b for _, b in diff]]
    s_same, s_diff = cos(sa, sb), cos(da, db)
    gaps = np.array([data["frame"][b] - data["frame"][a] for a, b, _ in same]) / FPS
    print(f"\ncosine similarity of the {desc.shape[1]}-d HSV descriptor (same pairs: gap median {np.median(gaps):.1f} s, "
          f"max {gaps.max():.1f} s)")
    print(describe_dist("same person", s_same))
    print(describe_dist("different person", s_diff))
    r1, nq, gs = rank1(desc, crops, data["frame"], coexist, min_gap, rng)
    print(f"  ROC AUC same vs different: {auc(s_same, s_diff):.3f}; rank-1 re-id {r1:.3f} over {nq} queries "
          f"(gallery {gs:.1f} crops on average, chance {1 / gs if gs else float('nan'):.3f})")
    for thr in (0.7, 0.8, 0.9):
        print(f"  at cosine >= {thr}: same accepted {np.mean(s_same >= thr):.3f}, different accepted "
              f"{np.mean(s_diff >= thr):.3f}")

    # Embeddings: a few clean crops per track (the population sample), subsampled.
    emb_idx = np.concatenate([rng.choice(v, size=min(args.emb_per_track, len(v)), replace=False)
                              for v in crops.values()])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    pairs_path, emb_path = OUT_DIR / "vtest_pairs.npz", OUT_DIR / "vtest_embeddings.npz"
    np.savez_compressed(pairs_path, same_a=sa.astype(np.float32), same_b=sb.astype(np.float32),
                        diff_a=da.astype(np.float32), diff_b=db.astype(np.float32),
                        same_track=np.array([t for *_, t in same], dtype=np.int32),
                        same_gap_s=gaps.astype(np.float32))
    np.savez_compressed(emb_path, embeddings=desc[emb_idx].astype(np.float32),
                        track=np.array([t for t, v in crops.items() for _ in range(min(args.emb_per_track, len(v)))],
                                       dtype=np.int32))
    size = (pairs_path.stat().st_size + emb_path.stat().st_size) / 1e6
    print(f"\nwrote {pairs_path.relative_to(REPO_ROOT)} ({len(sa)} same, {len(da)} different pairs) and "
          f"{emb_path.relative_to(REPO_ROOT)} ({len(emb_idx)} crops of {len(crops)} tracks); {size:.1f} MB")
    if args.sweep:
        groups_sweep(sa, sb, np.array([t for *_, t in same]), desc[emb_idx],
                     np.array([t for t, v in crops.items() for _ in range(min(args.emb_per_track, len(v)))]),
                     da, db, tuple(args.sweep), args.sweep_seeds)
    if args.no_calibrate:
        return
    params_path = OUT_DIR / f"{args.version}.json"
    cmd = [sys.executable, "-m", "pipeline.privacy.cli", "calibrate", "--embeddings", str(emb_path.relative_to(REPO_ROOT)),
           "--pairs", str(pairs_path.relative_to(REPO_ROOT)), "--version", args.version,
           "--out", str(params_path.relative_to(REPO_ROOT))]
    if args.calib_seed is not None:
        cmd += ["--seed", str(args.calib_seed)]
    print("\n$ " + " ".join(["python"] + cmd[1:]))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    print(f"  (calibration took {time.perf_counter() - t0:.0f} s)")
    print(f"\nAnonymizer.assign_groups on the measured pairs (mean over {args.repeats} noise draws); group filling "
          f"over the {len(emb_idx)}-crop population sample:")
    for pp in (params_path, None):
        r = group_check(pp, sa, sb, da, db, desc[emb_idx], args.repeats)
        print(f"  {r['version']:<20} dims {r['dims']}, noise {r['noise']:.4f}: same-person same-group "
              f"{r['same']:.3f} (sd {r['same_sd']:.3f}), different-person {r['diff']:.4f}; groups used "
              f"{r['used']:.0f}/{r['n_groups']}, largest group {r['max']:.0f} crops "
              f"({r['max'] / r['n_pop'] * r['n_groups']:.1f}x mean), top-10 groups hold {100 * r['top10']:.1f}%")


if __name__ == "__main__":
    main()
