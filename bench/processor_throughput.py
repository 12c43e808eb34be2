"""Per-frame cost of the processor's work (fetch, verify, decrypt, detect, describe, anonymise,
delete) on real footage, without Kafka: the upper bound a worker core can reach.

    .venv/bin/python bench/processor_throughput.py [--frames 60] [--runs 3] [--detector omz-0200]
        [--descriptor reid-0288|reid-0286|hsv|hsv-cnn] [--no-demographics] [--blas-threads 1]

Prints the median and p95 per stage and frames/second, as medians over runs, and the ratio to the
pure-inference bound (the detector and re-id model runs alone on the same frames).
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from pipeline import serde
from pipeline.edge.sources import open_source
from pipeline.envelope import Sealer, associated_data, ensure_keypair, load_keyring, load_public_key
from pipeline.framestore import LocalDirFrameStore
from pipeline.privacy import Anonymizer, PrivacyParams
from pipeline.processor.frames import FrameProcessor
from pipeline.settings import REPO_ROOT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--detector", default="omz-0200", help="omz-0200, omz-0201, ssdlite, ssdlite-split or hog")
    ap.add_argument("--descriptor", default="reid-0288", choices=["reid-0288", "reid-0286", "hsv", "hsv-cnn"])
    ap.add_argument("--no-demographics", action="store_true", help="skip face, age and gender models")
    ap.add_argument("--blas-threads", type=int, default=1, help="the processor runs with 1 (0: library default)")
    args = ap.parse_args()
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    from pipeline.processor.app import pass_counter
    from pipeline.vision.factory import descriptor_for, detector_for
    from pipeline.settings import load_settings

    ps = load_settings().processor.model_copy(update={"descriptor": args.descriptor, "detector": args.detector})
    from pipeline.vision.age_gender import DemographicEstimator

    describe, dim = descriptor_for(args.descriptor)
    footage = subprocess.check_output(["bash", str(REPO_ROOT / "infra/local/footage.sh")], text=True).strip()
    images = [f.image for f in open_source(footage, 2.0, 640, 480)][: args.frames]
    tmp = Path(tempfile.mkdtemp())
    ensure_keypair(tmp / "keys")
    store = LocalDirFrameStore(tmp / "frames", ttl_seconds=600)
    sealer = Sealer(load_public_key(tmp / "keys"))
    proc = FrameProcessor(store, load_keyring(tmp / "keys"), detector_for(ps),
                          Anonymizer(PrivacyParams.default(), input_dim=dim), 4_000_000, describe=describe,
                          demographics=None if args.no_demographics else DemographicEstimator())
    fps_runs, stage_runs, persons = [], {}, 0
    for run in range(args.runs):
        refs = []
        for img in images:
            ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
            fid, cap = str(uuid.uuid4()), int(time.time() * 1000)
            sealed = sealer.seal(jpeg.tobytes(), associated_data(fid, "b", "c", cap))
            uri = store.put(fid, sealed.ciphertext)

            refs.append(serde.encode("FrameRef", dict(
                frame_id=fid, site_id="b", camera_id="c", captured_at=cap, expires_at=cap + 600_000, blob_uri=uri,
                blob_sha256=hashlib.sha256(sealed.ciphertext).hexdigest(), blob_size=len(sealed.ciphertext),
                nonce=sealed.nonce, key_id=sealed.key_id, wrapped_key=sealed.wrapped_key, width=img.shape[1],
                height=img.shape[0])))
        t0 = time.perf_counter()
        per_stage: dict[str, list[float]] = {}
        persons = passes = 0
        counter = pass_counter(ps)
        for i, v in enumerate(refs):
            r = proc.process(v)
            persons += r.persons
            # frames are 0.5 s apart in the footage (2 fps); the pass counter sees capture times
            ended = counter.update("b", "c", i * 500, r.scored_boxes, r.descriptors, r.labels, r.quality)
            t1 = time.perf_counter()
            for c in ended:
                passes += len(proc.assign_groups(c.descriptors))
            r.timings_ms["passes+anonymise"] = (time.perf_counter() - t1) * 1000
            for k, ms in r.timings_ms.items():
                per_stage.setdefault(k, []).append(ms)
        passes += sum(len(proc.assign_groups(c.descriptors)) for _, _, c in counter.flush())
        elapsed = time.perf_counter() - t0
        fps_runs.append(len(refs) / elapsed)
        for k, xs in per_stage.items():
            stage_runs.setdefault(k, []).append((statistics.median(xs), float(np.percentile(xs, 95))))
    print(f"detector {args.detector}; frames per run: {len(images)} (vtest.avi at 2 fps, 640x480), "
          f"runs: {args.runs}, detections/run: {persons}, person passes/run: {passes}")
    print(f"{'stage':<16}{'median ms':>12}{'p95 ms':>10}")
    for k, vals in stage_runs.items():
        print(f"{k:<16}{statistics.median(v[0] for v in vals):>12.1f}{statistics.median(v[1] for v in vals):>10.1f}")
    fps = statistics.median(fps_runs)
    print(f"throughput: {fps:.1f} frames/s on one worker thread (median of {args.runs} runs)")
    bound = inference_bound(proc, images)
    if bound:
        print(f"pure-inference bound: {bound:.1f} frames/s (detector and re-id model runs alone, same frames); "
              f"throughput / bound = {fps / bound:.2f}")


def inference_bound(proc: FrameProcessor, images: list) -> float | None:
    """Frames/s if a worker did nothing but run the person detector and the re-id model on the
    frames' people (no decrypt, decode, pre/post-processing, faces, tracking): the ceiling the
    processor's own overhead is measured against. None for detectors or descriptors without a
    separable model run."""
    from pipeline.vision.detector import OmzPersonDetector, omz_blob
    from pipeline.vision.reid import ReidEmbedder

    det = proc.detector
    emb = getattr(proc.describe, "__self__", None)
    if not isinstance(det, OmzPersonDetector) or not isinstance(emb, ReidEmbedder):
        return None
    inputs = []
    for img in images:
        boxes = det.detect(img)
        inputs.append((omz_blob(img, det.in_h, det.in_w), emb.blobs(img, boxes) if boxes else None))
    best = 0.0
    for _ in range(3):  # the best of three passes: a bound, so the least disturbed measurement
        t = time.perf_counter()
        for x, crops in inputs:
            det.model.run(x)
            if crops is not None:
                for i in range(0, len(crops), emb.batch_size):
                    emb.model.run(crops[i:i + emb.batch_size])
        best = max(best, len(inputs) / (time.perf_counter() - t))
    return best


if __name__ == "__main__":
    main()
