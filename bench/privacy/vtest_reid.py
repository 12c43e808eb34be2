"""Real re-identification embeddings of tracked people on vtest.avi, for bench/privacy/quantizer.py.

    .venv/bin/python bench/privacy/vtest_reid.py [--detector omz-0200] [--model person-reidentification-retail-0288]

Why its own script: the quantizer bench needs real 0288 embeddings of the same person far apart in
time, and computing them (detector on 795 frames, re-id on every clean crop) takes about a minute on
one core, so the result is cached in .cache/privacy/ and the bench reads the cache.

What it does: every frame of vtest.avi (10 fps, downscaled to <= 640x480 as the edge does) goes
through ``pipeline.vision.detector.make_detector``; boxes are linked by the strict IoU tracker of
``pipeline/vision/tracking.py`` (ambiguous crossings end a track instead of swapping identities);
crops that touch the frame border or overlap another box (``pipeline.vision.crops.crop_weights``)
are marked unclean; every crop is embedded with ``ReidEmbedder``. Output arrays, one row per
detection: embedding (n, 256) float32, track (n,), frame (n,), clean (n,) bool, box (n, 4).

Limits: one camera, 80 s, about 19 people; a "track" is a tracker piece, so one person can be
several tracks (which only makes some different-track pairs same-person, never the reverse:
the strict tracker ends tracks rather than swap, so same-track pairs are nearly always one person).
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.edge.sources import downscale
from pipeline.settings import REPO_ROOT

CACHE = REPO_ROOT / ".cache" / "privacy"


def footage_path() -> Path:
    out = subprocess.run(["bash", str(REPO_ROOT / "infra" / "local" / "footage.sh")], check=True,
                         capture_output=True, text=True, timeout=300).stdout.strip()
    return Path(out.splitlines()[-1])


def cache_path(detector: str, model: str) -> Path:
    return CACHE / f"vtest-{detector}-{model.rsplit('-', 1)[-1]}.npz"


def extract(detector: str = "omz-0200", model: str = "person-reidentification-retail-0288",
            threads: int = 1) -> Path:
    """Run detector, tracker and embedder over the clip; write and return the cache file."""
    from pipeline.vision.detector import make_detector
    from pipeline.vision.crops import crop_weights
    from pipeline.vision.reid import ReidEmbedder
    from pipeline.vision.tracking import IouTracker

    out = cache_path(detector, model)
    if out.exists():
        return out
    det = make_detector(detector, threads=threads)
    emb = ReidEmbedder(model, threads=threads)
    tracker = IouTracker(iou_threshold=0.3, max_missed=2, min_length=5, strict=True)
    cap = cv2.VideoCapture(str(footage_path()))
    rows: dict[str, list] = {k: [] for k in ("embedding", "frame", "clean", "box", "tid")}
    f, t0 = 0, time.perf_counter()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        img = downscale(img, 640, 480)
        boxes = det.detect(img)
        ids = tracker.update(f, boxes)
        if boxes:
            e = emb.embed(img, boxes)
            q = crop_weights(boxes, img.shape[1], img.shape[0])
            for i, b in enumerate(boxes):
                rows["embedding"].append(e[i])
                rows["frame"].append(f)
                rows["clean"].append(q[i] > 0)
                rows["box"].append((b.x, b.y, b.w, b.h))
                rows["tid"].append(ids[i])
        f += 1
    tracks = tracker.finish()
    kept = {t.track_id for t in tracks}
    tid = np.array(rows["tid"], dtype=np.int64)
    track = np.where(np.isin(tid, list(kept)), tid, -1)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, embedding=np.array(rows["embedding"], np.float32), track=track.astype(np.int32),
                        frame=np.array(rows["frame"], np.int32), clean=np.array(rows["clean"], bool),
                        box=np.array(rows["box"], np.float32))
    print(f"{f} frames, {len(tid)} detections, {len(kept)} tracks in {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", default="omz-0200")
    ap.add_argument("--model", default="person-reidentification-retail-0288")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(extract(a.detector, a.model, a.threads))


if __name__ == "__main__":
    main()
