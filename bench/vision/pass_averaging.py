"""Does grouping a pass by its mean descriptor (pipeline/processor/passes.py) beat its first crop?

    timeout 1200 .venv/bin/python bench/vision/pass_averaging.py [--seeds 3] [--crops 4]

Real footage (vtest.avi, SSDLite, IoU tracker (not strict, for long tracks), clean crops, as
bench/vision/reid_pairs.py). Each long track is cut into two "passes" of ``--crops`` crops at 2 fps (every
5th frame, as the edge samples), at least ``--gap`` s apart. Compared: the same-group rate at 1,000
groups of (first crop, first crop) against (pass mean, pass mean), both judged by the same
vtest-calibrated parameter set (models/privacy/pp-2026.11-vtest.json), over several noise draws.
Caveat: that set was calibrated on single-crop pairs of the same footage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "vision"))

from reid_pairs import clean_mask, detect_all, footage_path, run_tracker  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="noise draws")
    ap.add_argument("--crops", type=int, default=3, help="crops per pass (at 2 fps)")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--gap", type=float, default=2.0, help="seconds between the two passes of a track")
    args = ap.parse_args()
    data = detect_all(footage_path(), "ssdlite", 1, None)
    # Not the strict tracker: passes need tracks several seconds long (strict tracks: median 1.4 s).
    tracks = run_tracker(data, iou_threshold=0.3, max_missed=2, min_length=8, strict=False)
    clean = clean_mask(data, 40)
    desc, frame_of = data["desc"], data["frame"]
    first_a, first_b, mean_a, mean_b, track_of = [], [], [], [], []
    step = 5  # 10 fps footage sampled at 2 fps
    for t in tracks:
        idx = np.array([int(b.score) for b in t.boxes], dtype=np.int64)
        idx = idx[clean[idx]]
        picked, last = [], -10**9
        for i in idx[np.argsort(frame_of[idx], kind="stable")]:
            if frame_of[i] - last >= step:  # the edge's 2 fps: crops at least 0.5 s apart
                picked.append(i)
                last = frame_of[i]
        idx = np.array(picked, dtype=np.int64)
        # every pair of non-overlapping passes of the track that are far enough apart
        n = args.crops
        for i in range(0, len(idx) - n + 1, n):
            for j in range(i + n, len(idx) - n + 1, n):
                if frame_of[idx[j]] - frame_of[idx[i + n - 1]] < 10 * args.gap:
                    continue
                a, b = idx[i:i + n], idx[j:j + n]
                first_a.append(desc[a[0]])
                first_b.append(desc[b[0]])
                mean_a.append(desc[a].mean(axis=0))
                mean_b.append(desc[b].mean(axis=0))
                track_of.append(t.track_id)
    if len(track_of) < 20:
        print(f"only {len(track_of)} tracks are long enough; lower --crops")
        return 1
    from pipeline.privacy import Anonymizer, PrivacyParams

    # The vtest calibration (bench/vision/reid_pairs.py: reference statistics, offsets and noise
    # fitted on single-crop pairs of these tracks): the same parameters judge both methods.
    params = PrivacyParams.load(ROOT / "models" / "privacy" / "pp-2026.11-vtest.json")
    anon = Anonymizer(params, desc.shape[1])
    print(f"{len(track_of)} pass pairs from {len(set(track_of))} tracks ({args.crops} crops per pass at 2 fps, "
          f">= {args.gap:g} s apart); parameters {params.version} ({params.n_groups} groups, noise "
          f"{params.noise_scale:g}); {args.seeds} noise draws")
    out = {}
    for name, (sa, sb) in {"first crop": (first_a, first_b), "pass mean": (mean_a, mean_b)}.items():
        sa, sb = np.array(sa, dtype=np.float32), np.array(sb, dtype=np.float32)
        rates = [float(np.mean(anon.assign_groups(sa) == anon.assign_groups(sb))) for _ in range(args.seeds)]
        out[name] = float(np.mean(rates))
        print(f"  {name:<10}: same-group rate {out[name]:.3f} (draws {min(rates):.3f}-{max(rates):.3f})")
    print(f"pass mean / first crop: {out['pass mean'] / max(out['first crop'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
