"""Perception on the project's labelled clip: detector, tracker (passes) and their cost.

    .venv/bin/python bench/vision/perception.py [--labels bench/data/vtest-gt/annotations.csv]
        [--detector omz-0200] [--descriptor reid-0288] [--fps 2,4,5] [--line x1,y1,x2,y2] [--throughput]
        [--out .var/reports/perception]

Frames are prepared as the edge prepares them (sampled at each rate by the edge's own source,
downscaled to <= 640x480, JPEG q80) and the labels are scaled to match. Prints, per rate:
detector precision/recall at IoU 0.5 (overall and by person height), passes per true person,
false passes, links that jump to another person, and the same tracker on the labelled boxes
themselves (which separates tracker errors from detector errors); how well pass embeddings
tell the labelled people apart; line crossings against the labelled people's; the cost per
frame of detection and per crop of the embedding (with --throughput, the processor's frames/s
per worker thread); and writes a plot of passes counted against true visits over time. The scoring is pipeline/vision/evaluation.py (unit-tested).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from collections import Counter

from pipeline.edge.sources import open_source
from pipeline.layout import CountLine
from pipeline.processor.passes import PassCounter
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.vision import evaluation as ev
from pipeline.vision.detector import Box, make_detector
from pipeline.vision.crops import appearance_features, crop_weights
from pipeline.vision.lines import LineCounter
from pipeline.vision.tracker import Tracker, TrackerConfig

DEFAULT_LABELS = REPO_ROOT / "bench" / "data" / "vtest-gt" / "annotations.csv"
VIDEO_FPS = 10.0


def footage() -> Path:
    import subprocess

    out = subprocess.run(["bash", str(REPO_ROOT / "infra/local/footage.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def edge_frames(path: Path, fps: float) -> list[tuple[int, np.ndarray]]:
    """(video frame index, image) as the edge would send them at ``fps``."""
    out = []
    for f in open_source(str(path), fps, 640, 480):
        ok, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        out.append((int(round(f.offset_seconds * VIDEO_FPS)), cv2.imdecode(buf, cv2.IMREAD_COLOR)))
    return out


def make_embedder(name: str):
    """(image, boxes) -> (n, d) descriptors, or None for no appearance."""
    if name == "none":
        return None
    if name == "hsv":
        from pipeline.vision.descriptor import describe

        return describe
    if name.startswith("reid"):
        from pipeline.vision.reid import ReidEmbedder

        model = {"reid-0288": "person-reidentification-retail-0288",
                 "reid-0286": "person-reidentification-retail-0286"}[name]
        emb = ReidEmbedder(model)
        return emb.embed
    raise SystemExit(f"unknown descriptor {name!r}")


def track(frames: list[tuple[int, list[Box], np.ndarray | None, list[float]]], cfg: TrackerConfig,
          appearance: bool) -> dict[int, list[tuple[int, int]]]:
    """The processor's tracker over the frames: each confirmed track's (frame, detection index)
    list (PassCounter = this tracker + what it keeps per pass; tests/unit/test_passes.py)."""
    tracker = Tracker(cfg)
    seq: dict[int, list[tuple[int, int]]] = {}
    for fr, boxes, desc, quality in frames:
        feats = appearance_features(desc, quality) if appearance and desc is not None else None
        a = tracker.update(fr / VIDEO_FPS, [(b.x, b.y, b.w, b.h) for b in boxes], [b.score for b in boxes], feats)
        for j, tid in enumerate(a.track_of):
            if tid is not None:
                seq.setdefault(tid, []).append((fr, j))
    return {t: v for t, v in seq.items() if len(v) >= cfg.min_hits}


def _line(text: str) -> CountLine:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
        return CountLine(name="bench", a=(x1, y1), b=(x2, y2))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--line wants x1,y1,x2,y2 in 0..1 ({e})") from None


def crossings(frames, labels, cfg: TrackerConfig, appearance: bool, line: CountLine) -> tuple[Counter, Counter]:
    """Line crossings by direction from the labelled people's feet, and as the processor counts
    them (PassCounter with the line): the cross-check a people counter offers for footfall."""
    truth, counted = Counter(), Counter()
    gt = LineCounter(line)
    pc = PassCounter(cfg, appearance=appearance, lines={("s", "c"): line})
    for fr, boxes, desc, q in frames:
        for l in labels.get(fr, []):
            if not l.ignore:
                x, y, w, h = l.box
                d = gt.update(l.person, (x + w / 2) / 640, (y + h) / 480)
                truth[d] += d is not None
        d = desc if desc is not None else np.zeros((len(boxes), 1), np.float32)
        for c in pc.update("s", "c", int(fr * 100), boxes, d, None, q, (640, 480)):
            counted.update({k[1]: v for k, v in c.crossings.items()})
    return truth, counted


def pass_appearance(tracks, frames, person_at):
    """Each pass's clean-crop mean embedding (as the processor forms it) and its labelled person."""
    by_frame = {fr: (desc, q) for fr, _, desc, q in frames}
    means, who, start = [], [], []
    for v in tracks.values():
        ids = [person_at[(fr, j)] for fr, j in v if person_at[(fr, j)] is not None]
        crops = [by_frame[fr][0][j] for fr, j in v if by_frame[fr][1][j] > 0] or [by_frame[fr][0][j] for fr, j in v]
        if not ids:
            continue
        m = np.mean(crops, axis=0)
        means.append(m / max(float(np.linalg.norm(m)), 1e-12))
        who.append(Counter(ids).most_common(1)[0][0])
        start.append(v[0][0])
    return np.asarray(means), np.asarray(who), np.asarray(start)


def print_appearance(means: np.ndarray, who: np.ndarray, start: np.ndarray, fps: float) -> None:
    """Pairs of passes of the same labelled person (mostly different visits: someone who left and
    came back, another pose and place in the view) against passes of different people: how well the embedding tells them apart, and
    how often two visits of one person share a group under the public development hash (noise 0).
    One camera and 13 people: a sanity figure, not the cross-camera p the estimator needs."""
    from pipeline.privacy import Anonymizer, PrivacyParams

    n = len(means)
    iu = np.triu_indices(n, 1)
    same = who[iu[0]] == who[iu[1]]
    sims = (means @ means.T)[iu]
    if not same.any() or same.all():
        print("appearance: not enough same-person pass pairs on this clip")
        return
    # ROC AUC: probability a same-person pair is more similar than a different-person pair
    pos, neg = sims[same], sims[~same]
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    params = PrivacyParams.default().with_changes(noise_scale=0.0)
    groups = Anonymizer(params, means.shape[1]).assign_groups(means.astype(np.float32))
    p = float(np.mean(groups[iu[0]][same] == groups[iu[1]][same]))
    q = float(np.mean(groups[iu[0]][~same] == groups[iu[1]][~same]))
    print(f"appearance at {fps:g} fps ({n} passes, {int(same.sum())} same-person pass pairs, "
          f"{int((~same).sum())} different-person pairs): ROC AUC {auc:.3f}; same group at 1,000 groups "
          f"(development hash, no noise) {p:.3f} same person vs {q:.4f} different")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    ap.add_argument("--detector", default=None, help="default: the processor's setting")
    ap.add_argument("--descriptor", default="reid-0288", help="reid-0288, reid-0286, hsv or none")
    ap.add_argument("--fps", default="2,4,5")
    ap.add_argument("--threshold", type=float, default=None, help="detector score threshold for P/R")
    ap.add_argument("--line", type=_line, default=_line("0.5,0,0.5,1"),
                    help="counting line x1,y1,x2,y2 in fractions of the image, for the line-crossing cross-check")
    ap.add_argument("--throughput", action="store_true",
                    help="also run bench/processor_throughput.py (frames/s per worker thread, ratio to the inference bound)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / ".var" / "reports" / "perception")
    args = ap.parse_args()
    if not args.labels.is_file():
        print(f"labels {args.labels} not found (bench/data/vtest-gt/README.md says how they are made)", file=sys.stderr)
        return 2
    settings = load_settings()
    ps = settings.processor
    det_name = args.detector or ps.detector
    cfg = TrackerConfig(high_score=ps.track_high_score, low_score=ps.track_low_score, max_gap_s=ps.pass_max_gap_seconds,
                        min_hits=ps.pass_min_hits, app_gate=ps.track_appearance_gate)
    thr = args.threshold if args.threshold is not None else cfg.low_score  # the boxes the tracker gets
    video = footage()
    probe = cv2.VideoCapture(str(video))
    vw = probe.get(cv2.CAP_PROP_FRAME_WIDTH)
    probe.release()
    scale = 640.0 / vw
    labels = ev.load_labels(args.labels, scale)
    detector = make_detector(det_name, score_threshold=min(cfg.low_score, thr))
    embed = make_embedder(args.descriptor)
    appearance = args.descriptor.startswith("reid")
    cache: dict[int, tuple[list[Box], np.ndarray | None, list[float]]] = {}
    det_ms: list[float] = []
    emb_ms: list[float] = []
    rates = [float(x) for x in args.fps.split(",")]
    plot_series = {}
    line_rows = []
    appearance_rows = None
    print(f"labels: {args.labels} ({sum(len(v) for v in labels.values())} boxes, "
          f"{len({l.person for v in labels.values() for l in v})} people)   detector: {det_name}   "
          f"descriptor: {args.descriptor}   tracker: {cfg}")
    print(f"{'fps':>4} {'frames':>6} {'prec':>5} {'rec':>5} {'rec<55':>6} {'55-100':>6} {'>=100':>6} | "
          f"{'passes':>6} {'/person':>7} {'/visit':>6} {'false':>5} {'jumps':>9} {'missed':>6} | GT boxes: {'passes':>6} "
          f"{'/person':>7} {'/visit':>6} {'jumps':>9}")
    for fps in rates:
        frames = edge_frames(video, fps)
        score = ev.DetectionScore()
        seq_in, gt_in = [], []
        people_seen: set[int] = set()
        for fr, img in frames:
            if fr not in cache:
                t = time.perf_counter()
                boxes = detector.detect(img)
                det_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                desc = embed(img, boxes) if (embed and boxes) else None
                if boxes and embed:
                    emb_ms.append((time.perf_counter() - t) * 1000 / len(boxes))
                cache[fr] = (boxes, desc, crop_weights(boxes, img.shape[1], img.shape[0]))
            boxes, desc, q = cache[fr]
            labs = labels.get(fr, [])
            people_seen |= {l.person for l in labs if not l.ignore}
            m = ev.match_frame([(b.x, b.y, b.w, b.h) for b in boxes if b.score >= thr], labs)
            score.add(m)
            seq_in.append((fr, boxes, desc, q))
            # The same tracker on the labelled boxes (score 1), appearance from the same model.
            ok = [l for l in labs if not l.ignore]
            gboxes = [Box(int(l.box[0]), int(l.box[1]), max(1, int(l.box[2])), max(1, int(l.box[3])), 1.0) for l in ok]
            gdesc = embed(img, gboxes) if (embed and gboxes) else None
            gt_in.append((fr, gboxes, gdesc, crop_weights(gboxes, img.shape[1], img.shape[0]), ok))
        tracks = track(seq_in, cfg, appearance)
        person_at = {}
        for fr, boxes, _, _ in seq_in:
            m = ev.match_frame([(b.x, b.y, b.w, b.h) for b in boxes], labels.get(fr, []))
            for j, p in enumerate(m.person_of):
                person_at[(fr, j)] = p
        ps_ = ev.score_passes({t: [(fr, person_at[(fr, j)]) for fr, j in v] for t, v in tracks.items()}, people_seen)
        if fps == rates[0] and embed is not None:
            appearance_rows = pass_appearance(tracks, seq_in, person_at)
        gtracks = track([(fr, b, d, q) for fr, b, d, q, _ in gt_in], cfg, appearance)
        gperson = {(fr, j): ok[j].person for fr, _, _, _, ok in gt_in for j in range(len(ok))}
        gs = ev.score_passes({t: [(fr, gperson[(fr, j)]) for fr, j in v] for t, v in gtracks.items()}, people_seen)
        vis = ev.visits(labels, int(round(cfg.max_gap_s * VIDEO_FPS)), frames=[fr for fr, _ in frames])
        n_vis = sum(vis.values())
        rs = score.recall_by_size()
        r = [v[0] for v in rs.values()]
        print(f"{fps:4.0f} {len(frames):6d} {score.precision:5.2f} {score.recall:5.2f} {r[0]:6.2f} {r[1]:6.2f} {r[2]:6.2f} | "
              f"{ps_.passes:6d} {ps_.per_person:7.2f} {ps_.passes / max(n_vis, 1):6.2f} {ps_.false_passes:5d} "
              f"{ps_.jumps:3d}/{ps_.links:<4d}{ps_.jump_rate:5.1%} {ps_.people_without_pass:6d} | {gs.passes:6d} "
              f"{gs.per_person:7.2f} {gs.passes / max(n_vis, 1):6.2f} {gs.jumps:3d}/{gs.links:<4d}{gs.jump_rate:5.1%}"
              f" | visits {n_vis}")
        line_gt, line_counted = crossings(seq_in, labels, cfg, appearance, args.line)
        line_rows.append((fps, line_gt, line_counted))
        # counted against true visits over time: passes started vs visits begun
        runs = ev.visit_runs(labels, int(round(cfg.max_gap_s * VIDEO_FPS)), frames=[fr for fr, _ in frames])
        starts = sorted(v[0][0] for v in tracks.values())
        plot_series[fps] = (sorted(lo for r in runs.values() for lo, _ in r), starts)
    if appearance_rows:
        print_appearance(*appearance_rows, rates[0])
    for fps, g, c in line_rows:
        print(f"line {args.line.a}->{args.line.b} at {fps:g} fps: crossings in/out labelled {g['in']}/{g['out']}, "
              f"counted {c['in']}/{c['out']}")
    print(f"people in the sampled frames: {len(people_seen)}; size bins (px, 640x480): "
          + ", ".join(f"{k}: n={v[1]}" for k, v in score.recall_by_size().items()))
    print(f"cost, 1 thread: detect {statistics.median(det_ms):.1f} ms/frame (median of {len(det_ms)})"
          + (f", embed {statistics.median(emb_ms):.1f} ms/crop (median)" if emb_ms else ""))
    _plot(plot_series, args.out, det_name, args.descriptor)
    if args.throughput:
        import subprocess

        subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "processor_throughput.py"), "--detector", det_name,
                        "--descriptor", args.descriptor, "--runs", "3"], check=True)
    return 0


def _plot(series, out: Path, det: str, desc: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    truth_done = False
    for fps, (truth, starts) in series.items():
        if not truth_done:
            ax.step([t / VIDEO_FPS for t in truth], range(1, len(truth) + 1), where="post", color="k", lw=2,
                    label="true visits (labelled persons entering the view)")
            truth_done = True
        ax.step([t / VIDEO_FPS for t in starts], range(1, len(starts) + 1), where="post", label=f"passes counted, {fps:g} fps")
    ax.set_xlabel("seconds into vtest.avi")
    ax.set_ylabel("cumulative count")
    ax.set_title(f"Passes counted against true visits, vtest.avi ({det}, {desc})")
    ax.legend()
    fig.tight_layout()
    path = out / "counted_vs_true.png"
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
