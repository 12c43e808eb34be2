"""Detector proposals for the vtest.avi annotation (the `propose` step of bench/vision/annotate.py).

Runs an Open Model Zoo person detector (OpenVINO IR from ../shared/models/openvino/) with the
`openvino` runtime from PyPI on EVERY frame of the video at its full resolution (768x576, read
with OpenCV, no JPEG, no downscale; the model stretches the frame to its square input itself as
OMZ prescribes), keeping every detection the IR's own DetectionOutput emits (its built-in
confidence floor 0.02, NMS 0.45) above --min-score.

This script deliberately depends only on openvino, numpy and opencv so that it can run in a
throwaway virtual environment; the project's .venv does not carry openvino:

    python3 -m venv /tmp/ov-venv
    /tmp/ov-venv/bin/pip install openvino numpy opencv-python-headless
    /tmp/ov-venv/bin/python bench/vision/annotate_ov.py VIDEO --out .var/annotate/proposals-0202.csv

Output CSV columns: frame,x,y,w,h,score (pixels of the original video, float with 1 decimal),
plus a `# ` comment header recording the model file's sha256 and the runtime version.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import cv2
import numpy as np

MODELS = Path(__file__).resolve().parents[3] / "shared" / "models" / "openvino"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--model", default="person-detection-0202")
    ap.add_argument("--models-dir", default=str(MODELS))
    ap.add_argument("--min-score", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import openvino as ov

    xml = Path(args.models_dir) / f"{args.model}.xml"
    binf = xml.with_suffix(".bin")
    core = ov.Core()
    model = core.read_model(str(xml))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": args.threads})
    _, _, ih, iw = compiled.inputs[0].shape
    out_port = compiled.outputs[0]
    req = compiled.create_infer_request()

    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        print(f"cannot open {args.video}", file=sys.stderr)
        return 2
    rows = []
    n = 0
    t0 = time.time()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        H, W = img.shape[:2]
        blob = cv2.resize(img, (int(iw), int(ih)), interpolation=cv2.INTER_LINEAR)
        blob = blob.transpose(2, 0, 1)[None].astype(np.float32)  # BGR, 0-255
        res = req.infer({0: blob})[out_port].reshape(-1, 7)
        for _img_id, label, conf, x0, y0, x1, y1 in res:
            if _img_id < 0 or conf < args.min_score:
                continue
            x0, x1 = np.clip([x0 * W, x1 * W], 0, W)
            y0, y1 = np.clip([y0 * H, y1 * H], 0, H)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            rows.append((n, x0, y0, x1 - x0, y1 - y0, conf))
        n += 1
    dt = time.time() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        f.write(f"# model={args.model} xml_sha256={sha256(xml)} bin_sha256={sha256(binf)}\n")
        f.write(f"# openvino={ov.__version__} opencv={cv2.__version__} numpy={np.__version__} "
                f"frames={n} min_score={args.min_score} full_resolution=1\n")
        f.write("frame,x,y,w,h,score\n")
        for r in rows:
            f.write(f"{r[0]},{r[1]:.1f},{r[2]:.1f},{r[3]:.1f},{r[4]:.1f},{r[5]:.4f}\n")
    print(f"{args.model}: {n} frames, {len(rows)} proposals >= {args.min_score}, "
          f"{1000 * dt / max(n, 1):.1f} ms/frame -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
