"""Person detector latency on this machine: OpenCV HOG vs the SSDLite and Open Model Zoo ONNX
models, per 640x480 frame of real footage (vtest.avi sampled at 2 fps and downscaled as the edge
does); and the re-identification models' latency per person crop.

    .venv/bin/python bench/vision/bench_detector.py [--frames 40] [--runs 3] [--threads 1 2]
    .venv/bin/python bench/vision/bench_detector.py --skip-hog --skip-ssdlite --threads 1 --reid

``omz-0200`` / ``omz-0201`` (person-detection-0200/-0201, pipeline.vision.detector.OmzPersonDetector)
are timed whole (resize, inference, numpy decoding + NMS) and as the bare session.run on inputs
prepared beforehand. ``--reid`` times pipeline.vision.reid.ReidEmbedder (0288 and 0286) per crop at
batch 1 and batch 16 on the person boxes omz-0200 finds in the same frames (crop + resize +
inference + normalisation).

For each detector (and onnxruntime intra-op thread count): median and p95 latency per frame over
all runs, frames/s (median over runs of frames / wall time), people found per frame, and the
load time (session + warm-up). "ssdlite model only" is the bare session.run on the same frames
already resized to 300x300 RGB: the pure-inference bound. Machine: 2 cores shared with whatever else runs; rerun
on an idle machine for clean figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import cv2
import numpy as np

from pipeline.edge.sources import open_source
from pipeline.settings import REPO_ROOT
from pipeline.vision.detector import HogPeopleDetector, OmzPersonDetector, SsdLitePersonDetector, omz_blob
from pipeline.vision.models import load_onnx_model
from pipeline.vision.reid import REID_MODELS, ReidEmbedder


def _prepare(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    _, h, w, _ = shape
    return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1])[None]


def _measure(fn, images, runs: int) -> tuple[list[float], list[float], list[int]]:
    lat, fps, found = [], [], []
    fn(images[0])  # one untimed call
    for _ in range(runs):
        t_run = time.perf_counter()
        for img in images:
            t = time.perf_counter()
            n = fn(img)
            lat.append((time.perf_counter() - t) * 1000)
            found.append(n)
        fps.append(len(images) / (time.perf_counter() - t_run))
    return lat, fps, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime intra-op threads")
    ap.add_argument("--skip-hog", action="store_true")
    ap.add_argument("--skip-ssdlite", action="store_true")
    ap.add_argument("--skip-omz", action="store_true", help="skip the Open Model Zoo detectors")
    ap.add_argument("--reid", action="store_true", help="also time the re-id models per crop")
    args = ap.parse_args()

    footage = subprocess.check_output(["bash", str(REPO_ROOT / "infra/local/footage.sh")], text=True).strip()
    images = [f.image for f in open_source(footage, 2.0, 640, 480)][: args.frames]
    h, w = images[0].shape[:2]
    print(f"{len(images)} frames {w}x{h} from {os.path.basename(footage)}, {args.runs} runs, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    rows = []
    if not args.skip_hog:
        t = time.perf_counter()
        hog = HogPeopleDetector()
        load = (time.perf_counter() - t) * 1000
        rows.append(("hog (OpenCV)", "-", load, *_measure(lambda im: len(hog.detect(im)), images, args.runs)))
    for th in args.threads if not args.skip_ssdlite else []:
        t = time.perf_counter()
        model = load_onnx_model(SsdLitePersonDetector.model_name, threads=th)
        load = (time.perf_counter() - t) * 1000
        for views in ("full", "split"):
            det = SsdLitePersonDetector(views=views, model=model)
            rows.append((f"ssdlite {views}", str(th), load,
                         *_measure(lambda im: len(det.detect(im)), images, args.runs)))
        prepared = {id(im): _prepare(im, model.input_shape) for im in images}
        rows.append(("ssdlite model only", str(th), load,
                     *_measure(lambda im: model.run(prepared[id(im)]) and 0, images, args.runs)))
    for th in args.threads if not args.skip_omz else []:
        for short, name in OmzPersonDetector.MODELS.items():
            t = time.perf_counter()
            model = load_onnx_model(name, threads=th)
            load = (time.perf_counter() - t) * 1000
            det = OmzPersonDetector(name, model=model)
            rows.append((short, str(th), load, *_measure(lambda im: len(det.detect(im)), images, args.runs)))
            _, _, ih, iw = model.input_shape
            prepared = {id(im): omz_blob(im, ih, iw) for im in images}
            rows.append((f"{short} model only", str(th), load,
                         *_measure(lambda im: model.run(prepared[id(im)]) and 0, images, args.runs)))

    print()
    print(f"{'detector':<20} {'threads':>7} {'load ms':>8} {'median ms':>10} {'p95 ms':>8} {'frames/s':>9} "
          f"{'people/frame':>13}")
    for name, th, load, lat, fps, found in rows:
        people = f"{statistics.mean(found):.2f}" if "model only" not in name else "-"
        print(f"{name:<20} {th:>7} {load:>8.0f} {statistics.median(lat):>10.1f} "
              f"{float(np.percentile(lat, 95)):>8.1f} {statistics.median(fps):>9.1f} {people:>13}")
    if args.reid:
        _bench_reid(images, args.threads, args.runs)


def _bench_reid(images: list[np.ndarray], threads: list[int], runs: int) -> None:
    det = OmzPersonDetector("person-detection-0200")
    frames = [(im, det.detect(im)) for im in images]
    frames = [(im, boxes) for im, boxes in frames if boxes]
    crops = sum(len(b) for _, b in frames)
    print(f"\nre-id: {crops} person crops in {len(frames)} frames (omz-0200 boxes >= 0.5)")
    print(f"{'model':<38} {'threads':>7} {'batch':>6} {'ms/crop':>8} {'ms/frame':>9}")
    for th in threads:
        for name in REID_MODELS:
            model = load_onnx_model(name, threads=th)
            for bs in (1, 16):
                emb = ReidEmbedder(name, batch_size=bs, model=model)
                emb.embed(*frames[0])  # one untimed call
                per_run = []
                for _ in range(runs):
                    t = time.perf_counter()
                    for im, boxes in frames:
                        emb.embed(im, boxes)
                    per_run.append(time.perf_counter() - t)
                best = statistics.median(per_run)
                print(f"{name:<38} {th:>7} {bs:>6} {1000 * best / crops:>8.2f} {1000 * best / len(frames):>9.1f}")


if __name__ == "__main__":
    main()
