"""Same-person vs different-person similarity of the appearance descriptor on REAL footage, and a
privacy parameter set calibrated from it.

    timeout 500 .venv/bin/python bench/vision/reid_pairs.py            # detect + track + pairs + calibrate
    timeout 500 .venv/bin/python bench/vision/reid_pairs.py --no-calibrate
    timeout 900 .venv/bin/python bench/vision/reid_pairs.py --descriptor embedding --sweep 1000 100
    timeout 300 .venv/bin/python bench/vision/reid_pairs.py --descriptor hsv+lbp --no-write

``--descriptor`` picks one of the candidates in DESCRIPTORS (hsv = pipeline.vision.descriptor,
embedding = pipeline.vision.embedding, and colour/texture/CNN variants and combinations); their raw
feature blocks (LBP, HOG, CNN stripe means) are computed once per clip and cached in .cache/reid/.
Non-hsv descriptors write their files with a _NAME suffix (models/privacy/vtest_pairs_embedding.npz,
pp-2026.11-vtest-embedding.json, ...). bench/vision/evaluate.py compares all candidates.

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


# ---- candidate descriptors ------------------------------------------------------------------------
# Raw per-detection features ("kinds") are computed once over the clip and cached next to the
# detections; a descriptor ("--descriptor") is a weighted concatenation of L2-normalised raw blocks,
# so candidates and combinations cost nothing to add once the kinds exist.

LBP_PARTS = ((0.0, 0.2), (0.2, 0.55), (0.55, 1.0))


def _uniform_lbp_table() -> np.ndarray:
    """8-neighbour LBP code -> 59 bins (58 uniform patterns + one bin for all others)."""
    table = np.full(256, 58, dtype=np.int32)
    k = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            table[code] = k
            k += 1
    return table


_LBP_TABLE = _uniform_lbp_table()
_HOG = None


def _crop(image: np.ndarray, b, trim_sides: bool = False) -> np.ndarray:
    x, y, w, h = (int(b.x), int(b.y), int(b.w), int(b.h)) if hasattr(b, "x") else (int(v) for v in b[:4])
    if trim_sides:
        x, w = x + w // 8, max(1, w - 2 * (w // 8))
    ih, iw = image.shape[:2]
    x0, y0 = min(max(x, 0), iw - 1), min(max(y, 0), ih - 1)
    return image[y0:max(min(y + h, ih), y0 + 1), x0:max(min(x + w, iw), x0 + 1)]


def lbp_parts(image: np.ndarray, boxes) -> np.ndarray:
    """Uniform LBP (radius 1, 8 neighbours) histograms of the grey crop (128x64) over three body parts."""
    out = np.zeros((len(boxes), 59 * len(LBP_PARTS)), np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for i, b in enumerate(boxes):
        g = cv2.resize(_crop(grey, b, trim_sides=True), (64, 128), interpolation=cv2.INTER_AREA).astype(np.int16)
        c = g[1:-1, 1:-1]
        code = np.zeros_like(c, dtype=np.int32)
        for k, (dy, dx) in enumerate(((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))):
            code |= (g[1 + dy:g.shape[0] - 1 + dy, 1 + dx:g.shape[1] - 1 + dx] >= c).astype(np.int32) << k
        lab = _LBP_TABLE[code]
        feats = []
        for top, bottom in LBP_PARTS:
            r0 = int(top * lab.shape[0])
            h = np.bincount(lab[r0:max(r0 + 1, int(bottom * lab.shape[0]))].ravel(), minlength=59).astype(np.float32)
            feats.append(h / max(h.sum(), 1.0))
        out[i] = np.concatenate(feats)
    return out


def hog_coarse(image: np.ndarray, boxes) -> np.ndarray:
    """HOG of the crop resized to 64x128: 16x16 cells, 32x32 blocks, stride 16, 9 bins (756 floats)."""
    global _HOG
    if _HOG is None:
        _HOG = cv2.HOGDescriptor((64, 128), (32, 32), (16, 16), (16, 16), 9)
    out = np.zeros((len(boxes), 756), np.float32)
    for i, b in enumerate(boxes):
        out[i] = _HOG.compute(cv2.resize(_crop(image, b), (64, 128), interpolation=cv2.INTER_AREA)).reshape(-1)
    return out


CNN_FULL_MODEL = "open-nsfw-resnet50-s3s4-features"  # bench-only model with both stages (see evaluate.py)
CNN_COMMITTED_MODEL = "open-nsfw-resnet50-features"   # stage 4 only: pipeline.vision.embedding's model


def cnn_pooled(embedder, image: np.ndarray, boxes) -> dict[str, np.ndarray]:
    """Raw (unnormalised) mean-pooled stage-3 / stage-4 features: global and per body stripe."""
    from pipeline.vision.embedding import STRIPES

    maps = embedder.feature_maps(image, boxes)
    names = [o.name for o in embedder.model.session.get_outputs()]
    out = {}
    for name, fmap in zip(names, maps):
        stage = "s3" if fmap.shape[-1] == 512 else "s4" if fmap.shape[-1] == 1024 else f"c{fmap.shape[-1]}"
        h = fmap.shape[1]
        out[f"cnn_{stage}_mean"] = fmap.mean(axis=(1, 2))
        out[f"cnn_{stage}_max"] = fmap.max(axis=(1, 2))
        parts = []
        for top, bottom in STRIPES:
            r0 = int(round(top * h))
            parts.append(fmap[:, r0:max(r0 + 1, int(round(bottom * h)))].mean(axis=(1, 2)))
        out[f"cnn_{stage}_stripes"] = np.concatenate(parts, axis=1)
    return out


def compute_kinds(path: Path, data: dict[str, np.ndarray], kinds: set[str], detector_name: str,
                  max_frames: int | None, cnn_model: str, threads: int) -> dict[str, np.ndarray]:
    """Raw feature blocks for every detection (cached per kind); also per-kind median ms per frame."""
    feats = {"hsv": data["desc"]}
    timing: dict[str, float] = {}
    todo = []
    for kind in sorted(kinds - {"hsv"}):
        key = "cnn-" + cnn_model if kind == "cnn" else kind
        cache = CACHE_DIR / f"{path.stem}-{path.stat().st_size}-{detector_name}-{max_frames or 'all'}-{key}.npz"
        if cache.exists():
            with np.load(cache) as z:
                feats.update({k: z[k] for k in z.files})
        else:
            todo.append((kind, cache))
    if not todo:
        return feats
    embedder = None
    if any(k == "cnn" for k, _ in todo):
        from pipeline.vision.embedding import CnnEmbedder
        embedder = CnnEmbedder(model_name=cnn_model, threads=threads)
    fns = {"lbp": lambda img, bx: {"lbp": lbp_parts(img, bx)}, "hog": lambda img, bx: {"hog": hog_coarse(img, bx)},
           "cnn": lambda img, bx: cnn_pooled(embedder, img, bx)}
    by_frame: dict[int, list[int]] = {}
    for i, f in enumerate(data["frame"]):
        by_frame.setdefault(int(f), []).append(i)
    acc: dict[str, dict[str, np.ndarray]] = {k: {} for k, _ in todo}
    ms: dict[str, list[float]] = {k: [] for k, _ in todo}
    cap = cv2.VideoCapture(str(path))
    n = 0
    while n < int(data["n_frames"]):
        ok, img = cap.read()
        if not ok:
            break
        idx = by_frame.get(n, [])
        if idx:
            small = downscale(img, 640, 480)
            bx = [tuple(data["box"][i]) for i in idx]
            for kind, _ in todo:
                t = time.perf_counter()
                res = fns[kind](small, bx)
                ms[kind].append((time.perf_counter() - t) * 1000)
                for name, v in res.items():
                    if name not in acc[kind]:
                        acc[kind][name] = np.zeros((len(data["frame"]), v.shape[1]), np.float32)
                    acc[kind][name][idx] = v
        n += 1
    cap.release()
    for kind, cache in todo:
        np.savez(cache, **acc[kind])
        feats.update(acc[kind])
        print(f"feature {kind}: {np.median(ms[kind]):.1f} ms per frame median "
              f"({len(data['frame']) / max(len(ms[kind]), 1):.1f} crops/frame)", file=sys.stderr)
    return feats


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def _sqrt_l2(x: np.ndarray) -> np.ndarray:
    return _l2(np.sign(x) * np.sqrt(np.abs(x)))


def _stripes_l2(x: np.ndarray, parts: int = 3) -> np.ndarray:
    return _l2(np.concatenate([_sqrt_l2(p) for p in np.split(x, parts, axis=1)], axis=1))


def _s4_embedding_half(x: np.ndarray) -> np.ndarray:
    """The CNN half of pipeline.vision.embedding from cached stripe means: sqrt, L2 per stripe, projection, L2."""
    from pipeline.vision.embedding import PROJECTION

    return _l2(_stripes_l2(x) @ PROJECTION)


# name -> [(raw block, transform, weight)]; the blocks are concatenated as sqrt(weight) * block, then L2-normalised.
DESCRIPTORS: dict[str, list[tuple[str, object, float]]] = {
    "hsv": [("hsv", _l2, 1.0)],
    "lbp": [("lbp", _sqrt_l2, 1.0)],
    "hsv+lbp": [("hsv", _l2, 1.0), ("lbp", _sqrt_l2, 1.0)],
    "hsv+hog": [("hsv", _l2, 1.0), ("hog", _l2, 1.0)],
    "hsv+lbp+hog": [("hsv", _l2, 1.0), ("lbp", _sqrt_l2, 1.0), ("hog", _l2, 1.0)],
    "cnn-s4": [("cnn_s4_mean", _l2, 1.0)],              # the pooled penultimate layer, as shipped
    "cnn-s4-sqrt": [("cnn_s4_mean", _sqrt_l2, 1.0)],
    "cnn-s4-stripes": [("cnn_s4_stripes", _stripes_l2, 1.0)],
    "cnn-s3": [("cnn_s3_mean", _sqrt_l2, 1.0)],
    "cnn-s3-max": [("cnn_s3_max", _sqrt_l2, 1.0)],
    "cnn-s3-stripes": [("cnn_s3_stripes", _stripes_l2, 1.0)],
    "hsv+cnn-s3-stripes": [("hsv", _l2, 1.0), ("cnn_s3_stripes", _stripes_l2, 1.0)],
    "hsv+cnn-s4-stripes": [("hsv", _l2, 1.0), ("cnn_s4_stripes", _stripes_l2, 1.0)],
    "hsv+lbp+cnn-s3-stripes": [("hsv", _l2, 1.0), ("lbp", _sqrt_l2, 0.5), ("cnn_s3_stripes", _stripes_l2, 1.0)],
    "hsv+cnn-s4-stripes-w2": [("hsv", _l2, 1.0), ("cnn_s4_stripes", _stripes_l2, 2.0)],
    # pipeline.vision.embedding.embed: HSV + projected stage-4 stripes (384 + 384), weights 1 : 2
    "embedding": [("hsv", _l2, 1.0), ("cnn_s4_stripes", _s4_embedding_half, 2.0)],
}
BLOCK_KIND = {"hsv": "hsv", "lbp": "lbp", "hog": "hog"}


def kinds_of(name: str) -> set[str]:
    return {BLOCK_KIND.get(block, "cnn") for block, _, _ in DESCRIPTORS[name]}


def compose(name: str, feats: dict[str, np.ndarray]) -> np.ndarray:
    blocks = [np.sqrt(w) * fn(feats[block].astype(np.float32)) for block, fn, w in DESCRIPTORS[name]]
    return _l2(np.concatenate(blocks, axis=1)).astype(np.float32)


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
                 da: np.ndarray, db: np.ndarray, sizes: tuple[int, ...], seeds: int,
                 quiet: bool = False) -> dict[int, dict[str, float]]:
    """What this descriptor supports: noise-free same-group rate of real re-captures vs number of groups.

    Two measurements per size: the calibrate command's own (random half of the pairs fitted, the
    other half measured: the same people on both sides, optimistic), and a person-disjoint one
    (reference fitted on the pairs and crops of half the tracks, rate measured on the other tracks).
    Repeated over ``seeds`` deployment seeds / track splits; mean and range are printed and returned.
    """
    import logging

    from pipeline.privacy import Anonymizer, PrivacyParams
    from pipeline.privacy.calibration import calibrate

    logging.getLogger("pipeline.privacy").setLevel(logging.ERROR)
    ids = np.unique(pair_track)
    if not quiet:
        print(f"\ngroups sweep (noise-free rates unless noise was needed; {seeds} seeds; person-disjoint: half of "
              f"the {len(ids)} tracks with pairs fit, the other half measured)")
    result = {}
    for k in sizes:
        base = PrivacyParams.default().with_changes(n_groups=k)
        own, held, diff, noise, dims = [], [], [], [], []
        for s in range(seeds):
            rng = np.random.default_rng(1000 + s)
            fit_ids = set(rng.permutation(ids)[:len(ids) // 2].tolist())
            fm = np.isin(pair_track, list(fit_ids))
            em = np.isin(emb_track, list(fit_ids))
            r = calibrate(emb, version="sweep", pairs=(sa, sb), base=base, seed=s + 1)
            own.append(r.params.same_group_rate)
            noise.append(r.params.noise_scale)
            r2 = calibrate(emb[em], version="sweep", pairs=(sa[fm], sb[fm]), base=base, seed=s + 1)
            dims.append(r2.params.reference.reduced_dim)
            a = Anonymizer(r2.params, sa.shape[1])
            held.append(float(np.mean(a.assign_groups(sa[~fm]) == a.assign_groups(sb[~fm]))))
            diff.append(float(np.mean(a.assign_groups(da) == a.assign_groups(db))))
        result[k] = {"own": float(np.mean(own)), "held": float(np.mean(held)), "held_min": float(np.min(held)),
                     "held_max": float(np.max(held)), "diff": float(np.mean(diff)), "noise": float(np.mean(noise)),
                     "dims": float(np.median(dims))}
        if not quiet:
            fmt = lambda v: f"{np.mean(v):.3f} [{np.min(v):.3f}-{np.max(v):.3f}]"  # noqa: E731
            print(f"  {k:5d} groups: calibrate's rate {fmt(own)} (noise {np.mean(noise):.4f}); person-disjoint "
                  f"same {fmt(held)}, different {np.mean(diff):.4f} (1/groups {1 / k:.4f}; reduced dims "
                  f"{np.median(dims):.0f})")
    return result


def d_prime(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos.mean() - neg.mean()) / np.sqrt(0.5 * (pos.var() + neg.var()) + 1e-12))


def measure(desc: np.ndarray, data: dict[str, np.ndarray], tracks: list[Track], clean: np.ndarray, min_gap: int,
            per_track: int, per_track_pair: int, emb_per_track: int, seed: int,
            groups: tuple[int, ...] = (), group_seeds: int = 3) -> dict:
    """Every accuracy figure of one descriptor on one clip; the same seed gives the same pairs for all descriptors."""
    rng = np.random.default_rng(seed)
    frame = data["frame"]
    same, diff, crops, coexist = build_pairs(tracks, clean, frame, min_gap, per_track, per_track_pair, rng)
    sa, sb = desc[[a for a, _, _ in same]], desc[[b for _, b, _ in same]]
    da, db = desc[[a for a, _ in diff]], desc[[b for _, b in diff]]
    s_same, s_diff = cos(sa, sb), cos(da, db)
    same_frame = np.array([frame[a] == frame[b] for a, b in diff])
    r1, nq, gs = rank1(desc, crops, frame, coexist, min_gap, rng)
    emb_idx = np.concatenate([rng.choice(v, size=min(emb_per_track, len(v)), replace=False) for v in crops.values()])
    emb_track = np.array([t for t, v in crops.items() for _ in range(min(emb_per_track, len(v)))], dtype=np.int32)
    out = {"dim": desc.shape[1], "same": same, "diff": diff, "crops": crops, "coexist": coexist,
           "sa": sa, "sb": sb, "da": da, "db": db, "s_same": s_same, "s_diff": s_diff,
           "s_diff_same_frame": s_diff[same_frame], "s_diff_other_frame": s_diff[~same_frame],
           "gaps": np.array([frame[b] - frame[a] for a, b, _ in same]) / FPS,
           "auc": auc(s_same, s_diff), "d_prime": d_prime(s_same, s_diff), "rank1": r1, "rank1_queries": nq,
           "gallery": gs, "emb_idx": emb_idx, "emb_track": emb_track,
           "same_track": np.array([t for *_, t in same], dtype=np.int32)}
    if groups:
        out["groups"] = groups_sweep(sa, sb, out["same_track"], desc[emb_idx], emb_track, da, db, groups,
                                     group_seeds, quiet=True)
    return out


def load_clip(detector: str, threads: int, max_frames: int | None, iou_thr: float, min_track: int,
              min_height: int):
    path = footage_path()
    data = detect_all(path, detector, threads, max_frames)
    tracks = run_tracker(data, iou_threshold=iou_thr, max_missed=2, min_length=min_track, strict=True)
    return path, data, tracks, clean_mask(data, min_height)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", default="ssdlite")
    ap.add_argument("--descriptor", default="hsv", choices=sorted(DESCRIPTORS),
                    help="appearance descriptor measured (hsv = pipeline.vision.descriptor; embedding = "
                         "pipeline.vision.embedding); outputs of non-hsv descriptors get a _NAME suffix")
    ap.add_argument("--cnn-model", default=None, help="manifest model for the CNN features (default: the "
                    "committed stage-4 model; the *-s3* candidates need the bench model, see "
                    "bench/vision/evaluate.py --build-bench-model)")
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
    ap.add_argument("--no-write", action="store_true", help="print the figures only (implies --no-calibrate)")
    ap.add_argument("--repeats", type=int, default=20, help="noise draws for the group-rate check")
    ap.add_argument("--sweep", type=int, nargs="*", default=None, metavar="GROUPS",
                    help="also measure the same-group rate for these numbers of groups (e.g. 1000 300 100 30 10)")
    ap.add_argument("--sweep-seeds", type=int, default=5)
    args = ap.parse_args()
    min_gap = int(round(args.min_gap_s * FPS))

    path, data, tracks, clean = load_clip(args.detector, args.threads, args.max_frames, args.iou, args.min_track,
                                          args.min_height)
    cnn_model = args.cnn_model or (CNN_FULL_MODEL if "s3" in args.descriptor else CNN_COMMITTED_MODEL)
    feats = compute_kinds(path, data, kinds_of(args.descriptor), args.detector, args.max_frames, cnn_model,
                          args.threads)
    desc = compose(args.descriptor, feats)
    n_frames, n_det = int(data["n_frames"]), len(data["frame"])
    m = measure(desc, data, tracks, clean, min_gap, args.per_track, args.per_track_pair, args.emb_per_track,
                args.seed)
    sa, sb, da, db, crops, same = m["sa"], m["sb"], m["da"], m["db"], m["crops"], m["same"]
    emb_idx, emb_track = m["emb_idx"], m["emb_track"]
    lengths = np.array([len(t) for t in tracks])
    print(f"footage {path.name}: {n_frames} frames, {n_det} detections ({n_det / max(n_frames, 1):.1f}/frame), "
          f"detector {args.detector}")
    print(f"tracks (strict IoU >= {args.iou}, min {args.min_track} frames): {len(tracks)}, length median "
          f"{np.median(lengths):.0f} frames, max {lengths.max()}; ended as ambiguous: "
          f"{sum(t.end_reason == 'ambiguous' for t in tracks)}")
    print(f"clean crops (h >= {args.min_height}px, inside frame, no overlap): {int(clean.sum())} of {n_det}; "
          f"tracks with clean crops {len(crops)}; with a same pair >= {args.min_gap_s:g}s apart "
          f"{len({t for *_, t in same})}; coexisting track pairs {len(m['coexist'])}")
    s_same, s_diff, gaps = m["s_same"], m["s_diff"], m["gaps"]
    print(f"\ncosine similarity of the {desc.shape[1]}-d {args.descriptor} descriptor (same pairs: gap median "
          f"{np.median(gaps):.1f} s, max {gaps.max():.1f} s)")
    print(describe_dist("same person", s_same))
    print(describe_dist("different person", s_diff))
    if len(m["s_diff_same_frame"]):
        print(describe_dist("  same frame", m["s_diff_same_frame"]))
    if len(m["s_diff_other_frame"]):
        print(describe_dist("  other frames", m["s_diff_other_frame"]))
    gs = m["gallery"]
    print(f"  ROC AUC same vs different: {m['auc']:.3f}; d' {m['d_prime']:.2f}; rank-1 re-id {m['rank1']:.3f} over "
          f"{m['rank1_queries']} queries (gallery {gs:.1f} crops on average, chance "
          f"{1 / gs if gs else float('nan'):.3f})")
    for thr in (0.7, 0.8, 0.9):
        print(f"  at cosine >= {thr}: same accepted {np.mean(s_same >= thr):.3f}, different accepted "
              f"{np.mean(s_diff >= thr):.3f}")
    if args.sweep:
        groups_sweep(sa, sb, m["same_track"], desc[emb_idx], emb_track, da, db, tuple(args.sweep), args.sweep_seeds)
    if args.no_write:
        return

    # Embeddings: a few clean crops per track (the population sample), subsampled.
    suffix = "" if args.descriptor == "hsv" else "_" + args.descriptor.replace("+", "_")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    pairs_path, emb_path = OUT_DIR / f"vtest_pairs{suffix}.npz", OUT_DIR / f"vtest_embeddings{suffix}.npz"
    np.savez_compressed(pairs_path, same_a=sa.astype(np.float32), same_b=sb.astype(np.float32),
                        diff_a=da.astype(np.float32), diff_b=db.astype(np.float32),
                        same_track=m["same_track"], same_gap_s=gaps.astype(np.float32))
    np.savez_compressed(emb_path, embeddings=desc[emb_idx].astype(np.float32), track=emb_track)
    size = (pairs_path.stat().st_size + emb_path.stat().st_size) / 1e6
    print(f"\nwrote {pairs_path.relative_to(REPO_ROOT)} ({len(sa)} same, {len(da)} different pairs) and "
          f"{emb_path.relative_to(REPO_ROOT)} ({len(emb_idx)} crops of {len(crops)} tracks); {size:.1f} MB")
    if args.no_calibrate:
        return
    version = args.version + suffix.replace("_", "-")
    params_path = OUT_DIR / f"{version}.json"
    cmd = [sys.executable, "-m", "pipeline.privacy.cli", "calibrate", "--embeddings", str(emb_path.relative_to(REPO_ROOT)),
           "--pairs", str(pairs_path.relative_to(REPO_ROOT)), "--version", version,
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
