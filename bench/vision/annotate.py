"""Semi-automatic ground truth of person boxes and identities for vtest.avi (bench/data/vtest-gt/).

Procedure (bench/data/vtest-gt/README.md has the rules and the record of the manual review):

    # 1. detector proposals on every frame at full resolution (OpenVINO runtime, throwaway venv)
    python3 -m venv /tmp/ov-venv && /tmp/ov-venv/bin/pip install openvino numpy opencv-python-headless
    .venv/bin/python bench/vision/annotate.py propose --ov-python /tmp/ov-venv/bin/python
    # 2. automatic linking at 10 fps into tracklets T1, T2, ... (IoU + constant velocity, Hungarian)
    .venv/bin/python bench/vision/annotate.py link
    # 3. review images under .var/annotate/sheets/ (tracklet strips, every-5th-frame overlay grids)
    .venv/bin/python bench/vision/annotate.py sheets
    # 4. write corrections in bench/data/vtest-gt/corrections.yaml, then apply them
    .venv/bin/python bench/vision/annotate.py apply
    .venv/bin/python bench/vision/annotate.py sheets --final     # check the result visually
    # 5. figures
    .venv/bin/python bench/vision/annotate.py stats

The proposals of step 1 are committed (bench/data/vtest-gt/proposals-0202.csv), so steps 2 and 4
reproduce annotations.csv exactly without openvino. `link` is deterministic.

Corrections file (YAML, applied in order to the linked tracklets; tracklet names are "T<n>" from
`link`, a split tail is named "<name>@<frame>", added people any new name):

    - {op: delete, tracklets: [T7, T12], note: "shadow on the sign post"}
    - {op: delete_boxes, tracklet: T3, frames: [120, 131], note: "box drifts onto neighbour"}
    - {op: split, tracklet: T5, frame: 320, note: "switch to the man in black at the crossing"}
    - {op: merge, tracklets: [T5, T9@410], note: "same woman after occlusion"}
           # optional bridge: N interpolates gaps of at most N frames between the merged pieces
           # (never across an exit and re-entry), bridge_flag: ignore marks those boxes ignore
    - {op: add, tracklet: N1, keys: [[100, x, y, w, h], [140, x, y, w, h]], note: "missed child"}
           # boxes at the keyframes, linear interpolation for the frames between consecutive keys;
           # replaces any box of that tracklet in [first key, last key]
    - {op: interpolate, tracklet: T5, frames: [300, 330], note: "occluded: bridge the gap"}
           # replaces the boxes strictly between the two frames by linear interpolation of the
           # boxes at the two ends (both must exist)
    - {op: ignore, tracklet: T5, frames: [300, 330], note: "behind the post"}   # frames optional
    - {op: ignore_region, rect: [x0, y0, x1, y1], frames: [a, b], note: "..."}  # box centre inside
    - {op: set_box, tracklet: T5, frame: 311, box: [x, y, w, h], note: "..."}

A merge fails if its tracklets share a frame (delete or split first), so every final person has at
most one box per frame. Persons are numbered 1..N by first appearance (then by tracklet name).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GT_DIR = ROOT / "bench" / "data" / "vtest-gt"
WORK = ROOT / ".var" / "annotate"
W_IMG, H_IMG, N_FRAMES = 768, 576, 795
MODEL = "person-detection-0202"

# linking parameters (documented in the README)
LINK_MIN_SCORE = 0.2      # proposals below this are not linked (shown as grey in the sheets)
START_MIN_SCORE = 0.5     # a new tracklet needs a proposal at least this confident
HIGH_SCORE = 0.5          # two-stage association: confident proposals first, then the rest
MATCH_MIN_IOU = 0.3       # with the constant-velocity prediction
MAX_GAP = 5               # frames a tracklet survives without a match (gaps are interpolated)
MIN_LEN = 3               # tracklets shorter than this are dropped unless their best score >= 0.8


# ----------------------------------------------------------------------------- io

def footage() -> Path:
    out = subprocess.run(["bash", str(ROOT / "infra" / "local" / "footage.sh")], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout.strip().splitlines()
    return Path(out[-1])


def read_proposals(path: Path) -> list[tuple[int, float, float, float, float, float]]:
    rows = []
    with path.open() as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    for r in csv.DictReader(lines):
        rows.append((int(r["frame"]), float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"]),
                     float(r["score"])))
    return rows


# A tracklet: name -> {frame: Box}
@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float
    score: float = 0.0
    source: str = "det"      # det | interp | manual
    flag: str = "ok"         # ok | ignore

    def xyxy(self) -> np.ndarray:
        return np.array([self.x, self.y, self.x + self.w, self.y + self.h], float)


Tracks = dict[str, dict[int, Box]]


def write_tracks(path: Path, tracks: Tracks) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["frame", "tracklet", "x", "y", "w", "h", "score", "source"])
        for name in sorted(tracks, key=_name_key):
            for fr in sorted(tracks[name]):
                b = tracks[name][fr]
                wr.writerow([fr, name, f"{b.x:.1f}", f"{b.y:.1f}", f"{b.w:.1f}", f"{b.h:.1f}",
                             f"{b.score:.4f}", b.source])


def read_tracks(path: Path) -> Tracks:
    tracks: Tracks = defaultdict(dict)
    with path.open() as f:
        for r in csv.DictReader(f):
            tracks[r["tracklet"]][int(r["frame"])] = Box(float(r["x"]), float(r["y"]), float(r["w"]),
                                                         float(r["h"]), float(r["score"]), r["source"])
    return dict(tracks)


def _name_key(name: str):
    head, _, tail = name.partition("@")
    digits = "".join(c for c in head if c.isdigit())
    return (head.rstrip("0123456789"), int(digits) if digits else 0, int(tail) if tail else -1, name)


# ----------------------------------------------------------------------------- geometry

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (n,4) xyxy, b: (m,4) xyxy -> (n,m)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    bb = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + bb[None, :] - inter, 1e-9)


def assign(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Minimum-cost assignment (Hungarian, scipy) keeping pairs with cost <= max_cost."""
    if cost.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment
    r, c = linear_sum_assignment(cost)
    return [(i, j) for i, j in zip(r, c) if cost[i, j] <= max_cost]


def lerp_box(a: Box, b: Box, t: float) -> Box:
    return Box(a.x + t * (b.x - a.x), a.y + t * (b.y - a.y), a.w + t * (b.w - a.w), a.h + t * (b.h - a.h),
               0.0, "interp", a.flag if a.flag == b.flag else "ignore")


def clip_box(b: Box) -> Box:
    x0, y0 = max(0.0, b.x), max(0.0, b.y)
    x1, y1 = min(float(W_IMG), b.x + b.w), min(float(H_IMG), b.y + b.h)
    return Box(x0, y0, max(1.0, x1 - x0), max(1.0, y1 - y0), b.score, b.source, b.flag)


# ----------------------------------------------------------------------------- link

@dataclass
class _Live:
    name: str
    boxes: dict[int, Box] = field(default_factory=dict)
    last: int = 0
    vel: np.ndarray = field(default_factory=lambda: np.zeros(4))   # per frame, on (cx, cy, w, h)

    def state(self) -> np.ndarray:
        b = self.boxes[self.last]
        return np.array([b.x + b.w / 2, b.y + b.h / 2, b.w, b.h])

    def predict(self, frame: int) -> np.ndarray:
        cx, cy, w, h = self.state() + self.vel * (frame - self.last)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    def add(self, frame: int, box: Box) -> None:
        if self.boxes:
            prev, gap = self.state(), frame - self.last
            self.boxes[frame] = box
            self.last = frame
            v = (self.state() - prev) / gap
            v[2:] *= 0.5                                        # sizes change slowly
            self.vel = v if len(self.boxes) == 2 else 0.6 * self.vel + 0.4 * v
        else:
            self.boxes[frame] = box
            self.last = frame


def link(proposals, n_frames: int = N_FRAMES, min_score: float = LINK_MIN_SCORE,
         start_score: float = START_MIN_SCORE, high: float = HIGH_SCORE, min_iou: float = MATCH_MIN_IOU,
         max_gap: int = MAX_GAP, min_len: int = MIN_LEN) -> Tracks:
    """Greedy-free online linking at the video's full rate: per frame, Hungarian assignment on
    1 - IoU between constant-velocity predictions and proposals, confident proposals first
    (score >= high), then the remaining ones to the still unmatched tracklets; unmatched confident
    proposals start tracklets. Gaps up to max_gap frames inside a tracklet are filled by linear
    interpolation (source 'interp')."""
    by_frame: dict[int, list] = defaultdict(list)
    for fr, x, y, w, h, s in proposals:
        if s >= min_score:
            by_frame[fr].append(Box(x, y, w, h, s, "det"))
    live: list[_Live] = []
    done: list[_Live] = []
    counter = 0
    for fr in range(n_frames):
        dets = sorted(by_frame.get(fr, []), key=lambda b: -b.score)
        live_now = [t for t in live if fr - t.last <= max_gap]
        done += [t for t in live if fr - t.last > max_gap]
        live = live_now
        unmatched_t = list(range(len(live)))
        unmatched_d = list(range(len(dets)))
        for stage in (0, 1):
            d_idx = [j for j in unmatched_d if (dets[j].score >= high) == (stage == 0)]
            if not d_idx or not unmatched_t:
                continue
            pred = np.array([live[i].predict(fr) for i in unmatched_t])
            db = np.array([dets[j].xyxy() for j in d_idx])
            cost = 1.0 - iou_matrix(pred, db)
            for a, b in assign(cost, 1.0 - min_iou):
                live[unmatched_t[a]].add(fr, dets[d_idx[b]])
            matched_t = {unmatched_t[a] for a, _ in assign(cost, 1.0 - min_iou)}
            matched_d = {d_idx[b] for _, b in assign(cost, 1.0 - min_iou)}
            unmatched_t = [i for i in unmatched_t if i not in matched_t]
            unmatched_d = [j for j in unmatched_d if j not in matched_d]
        for j in unmatched_d:
            if dets[j].score < start_score:
                continue
            # do not start a tracklet on top of one that was just extended (duplicate proposal)
            cur = [t.boxes[fr].xyxy() for t in live if t.last == fr]
            if cur and iou_matrix(np.array([dets[j].xyxy()]), np.array(cur)).max() > 0.5:
                continue
            counter += 1
            t = _Live(f"T{counter}")
            t.add(fr, dets[j])
            live.append(t)
    done += live
    tracks: Tracks = {}
    for t in sorted(done, key=lambda t: int(t.name[1:])):
        if len(t.boxes) < min_len and max(b.score for b in t.boxes.values()) < 0.8:
            continue
        tracks[t.name] = fill_gaps(t.boxes)
    # renumber densely, in order of first frame
    ordered = sorted(tracks.items(), key=lambda kv: (min(kv[1]), int(kv[0][1:])))
    return {f"T{i + 1}": boxes for i, (_, boxes) in enumerate(ordered)}


def fill_gaps(boxes: dict[int, Box], max_gap: int | None = None) -> dict[int, Box]:
    out = dict(boxes)
    frames = sorted(boxes)
    for a, b in zip(frames, frames[1:]):
        if b - a > 1 and (max_gap is None or b - a - 1 <= max_gap):
            for f in range(a + 1, b):
                out[f] = lerp_box(boxes[a], boxes[b], (f - a) / (b - a))
    return out


# ----------------------------------------------------------------------------- apply

class CorrectionError(ValueError):
    pass


def apply_corrections(tracks: Tracks, corrections: list[dict]) -> tuple[Tracks, dict[str, int]]:
    """Apply the corrections in order; returns the corrected tracklets and a count per op."""
    tr: Tracks = {k: {f: Box(**vars(b)) for f, b in v.items()} for k, v in tracks.items()}
    counts: dict[str, int] = defaultdict(int)

    def get(name: str) -> dict[int, Box]:
        if name not in tr:
            raise CorrectionError(f"unknown tracklet {name!r}")
        return tr[name]

    for i, c in enumerate(corrections):
        op = c.get("op")
        where = f"correction #{i + 1} ({op}, {c.get('note', '')!r})"
        try:
            if op == "delete":
                for name in c["tracklets"]:
                    get(name)
                    del tr[name]
            elif op == "delete_boxes":
                t = get(c["tracklet"])
                a, b = c["frames"]
                for f in [f for f in t if a <= f <= b]:
                    del t[f]
                if not t:
                    del tr[c["tracklet"]]
            elif op == "split":
                name, at = c["tracklet"], int(c["frame"])
                t = get(name)
                tail = {f: b for f, b in t.items() if f >= at}
                if not tail or len(tail) == len(t):
                    raise CorrectionError(f"split of {name} at {at} leaves an empty part")
                tr[name] = {f: b for f, b in t.items() if f < at}
                tail_name = f"{name.partition('@')[0]}@{at}"   # T5@300 split at 400 -> T5@400
                if tail_name in tr:
                    raise CorrectionError(f"{tail_name} exists already")
                tr[tail_name] = tail
            elif op == "merge":
                names = c["tracklets"]
                dest = get(names[0])
                for name in names[1:]:
                    src = get(name)
                    clash = sorted(set(src) & set(dest))
                    if clash:
                        raise CorrectionError(f"{name} and {names[0]} share frames {clash[:5]}...")
                    dest.update(src)
                    del tr[name]
                if c.get("bridge"):          # interpolate the gaps between the merged pieces
                    before = set(dest)
                    tr[names[0]] = fill_gaps(dest, None if c["bridge"] is True else int(c["bridge"]))
                    for f in set(tr[names[0]]) - before:
                        tr[names[0]][f].flag = c.get("bridge_flag", tr[names[0]][f].flag)
            elif op == "add":
                name = c["tracklet"]
                t = tr.setdefault(name, {})
                keys = sorted((int(k[0]), Box(*map(float, k[1:5]), 0.0, "manual", c.get("flag", "ok")))
                              for k in c["keys"])
                for f in [f for f in t if keys[0][0] <= f <= keys[-1][0]]:
                    del t[f]
                for (fa, ba), (fb, bb) in zip(keys, keys[1:]):
                    for f in range(fa + 1, fb):
                        t[f] = lerp_box(ba, bb, (f - fa) / (fb - fa))
                for f, b in keys:
                    t[f] = b
            elif op == "interpolate":
                t = get(c["tracklet"])
                a, b = map(int, c["frames"])
                if a not in t or b not in t:
                    raise CorrectionError(f"interpolate needs boxes at both {a} and {b}")
                for f in range(a + 1, b):
                    t[f] = lerp_box(t[a], t[b], (f - a) / (b - a))
                    if c.get("flag"):
                        t[f].flag = c["flag"]
            elif op == "ignore":
                t = get(c["tracklet"])
                a, b = c.get("frames", [min(t), max(t)])
                for f in t:
                    if a <= f <= b:
                        t[f].flag = "ignore"
            elif op == "ignore_region":
                x0, y0, x1, y1 = c["rect"]
                a, b = c.get("frames", [0, 10 ** 9])
                for t in tr.values():
                    for f, bx in t.items():
                        cx, cy = bx.x + bx.w / 2, bx.y + bx.h / 2
                        if a <= f <= b and x0 <= cx <= x1 and y0 <= cy <= y1:
                            bx.flag = "ignore"
            elif op == "set_box":
                t = get(c["tracklet"])
                t[int(c["frame"])] = Box(*map(float, c["box"]), 0.0, "manual", c.get("flag", "ok"))
            else:
                raise CorrectionError(f"unknown op {op!r}")
        except (KeyError, TypeError) as e:
            raise CorrectionError(f"{where}: malformed ({e})") from e
        except CorrectionError as e:
            raise CorrectionError(f"{where}: {e}") from e
        counts[op] += 1
    return {k: v for k, v in tr.items() if v}, dict(counts)


def to_annotations(tracks: Tracks) -> list[tuple]:
    """Number persons 1..N by first frame; rows (frame, person_id, x, y, w, h, flag, source)."""
    order = sorted(tracks, key=lambda n: (min(tracks[n]), _name_key(n)))
    rows = []
    for pid, name in enumerate(order, 1):
        for f in sorted(tracks[name]):
            b = clip_box(tracks[name][f])
            rows.append((f, pid, round(b.x, 1), round(b.y, 1), round(b.w, 1), round(b.h, 1), b.flag, b.source))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


ANN_COLUMNS = ["frame", "person_id", "x", "y", "w", "h", "flag", "source"]


def write_annotations(path: Path, rows: list[tuple]) -> None:
    with path.open("w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(ANN_COLUMNS)
        for r in rows:
            wr.writerow([r[0], r[1], f"{r[2]:.1f}", f"{r[3]:.1f}", f"{r[4]:.1f}", f"{r[5]:.1f}", r[6], r[7]])


def read_annotations(path: Path) -> list[dict]:
    with path.open() as f:
        return [dict(frame=int(r["frame"]), person_id=int(r["person_id"]), x=float(r["x"]), y=float(r["y"]),
                     w=float(r["w"]), h=float(r["h"]), flag=r["flag"], source=r["source"])
                for r in csv.DictReader(f)]


def load_corrections(path: Path) -> list[dict]:
    import yaml
    data = yaml.safe_load(path.read_text()) or {}
    return list(data.get("corrections", []) if isinstance(data, dict) else data)


# ----------------------------------------------------------------------------- sheets

def _palette(i: int) -> tuple[int, int, int]:
    import colorsys
    h = (i * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.9, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def read_frames(video: Path) -> list[np.ndarray]:
    import cv2
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    return frames


def render_sheets(tracks: Tracks, frames: list[np.ndarray], out: Path, proposals=None, every: int = 5,
                  start: int = 0, grid: tuple[int, int] = (2, 3), scale: float = 0.5, strips_per_page: int = 6,
                  thumbs: int = 20, label=lambda n: n) -> None:
    import cv2
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob("*.png"):
        p.unlink()
    names = sorted(tracks, key=lambda n: (min(tracks[n]), _name_key(n)))
    color = {n: _palette(i) for i, n in enumerate(names)}
    by_frame: dict[int, list] = defaultdict(list)
    for n in names:
        for f, b in tracks[n].items():
            by_frame[f].append((n, b))
    props = defaultdict(list)
    for fr, x, y, w, h, s in proposals or []:
        props[fr].append((x, y, w, h, s))

    # per-frame overlays, rows x cols per page, every `every`-th frame
    rows_, cols = grid
    sel = list(range(start, len(frames), every))
    per = rows_ * cols
    for p0 in range(0, len(sel), per):
        tiles = []
        for f in sel[p0:p0 + per]:
            img = frames[f].copy()
            for x, y, w, h, s in props.get(f, []):
                # unlinked or low proposals in grey (thin), with score
                if not any(iou_matrix(np.array([[x, y, x + w, y + h]]), np.array([b.xyxy()]))[0, 0] > 0.7
                           for _, b in by_frame.get(f, [])):
                    cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), (160, 160, 160), 1)
                    cv2.putText(img, f"{s:.2f}", (int(x), int(y + h) + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                                (200, 200, 200), 1)
            for n, b in by_frame.get(f, []):
                c = color[n]
                th = 1 if b.source == "interp" else 2
                x0, y0, x1, y1 = map(int, b.xyxy())
                if b.flag == "ignore":
                    c = (128, 128, 128)
                cv2.rectangle(img, (x0, y0), (x1, y1), c, th)
                txt = str(label(n))
                cv2.rectangle(img, (x0, y0 - 16), (x0 + 10 * len(txt) + 4, y0), (0, 0, 0), -1)
                cv2.putText(img, txt, (x0 + 2, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1)
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.rectangle(img, (0, 0), (70, 20), (0, 0, 0), -1)
            cv2.putText(img, f"f{f}", (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
            tiles.append(img)
        while len(tiles) < per:
            tiles.append(np.zeros_like(tiles[0]))
        page = np.vstack([np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows_)])
        cv2.imwrite(str(out / f"frames_{sel[p0]:03d}.png"), page)

    # per-tracklet strips: `thumbs` crops spread evenly over its life
    th_h, th_w = 96, 48
    strips = []
    for n in names:
        fs = sorted(tracks[n])
        pick = [fs[int(round(i))] for i in np.linspace(0, len(fs) - 1, min(thumbs, len(fs)))]
        row = np.zeros((th_h + 14, 130 + thumbs * th_w, 3), np.uint8)
        cv2.putText(row, f"{label(n)}", (3, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color[n], 2)
        cv2.putText(row, f"{fs[0]}-{fs[-1]}", (3, 55), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        cv2.putText(row, f"n={len(fs)}", (3, 75), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        for k, f in enumerate(pick):
            b = tracks[n][f]
            x0, y0, x1, y1 = map(int, clip_box(b).xyxy())
            crop = frames[f][y0:y1, x0:x1]
            if crop.size == 0:
                continue
            s = min(th_h / crop.shape[0], th_w / crop.shape[1])
            crop = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))))
            ox = 130 + k * th_w
            row[:crop.shape[0], ox:ox + crop.shape[1]] = crop
            col = (0, 200, 255) if b.source == "interp" else (128, 128, 128) if b.flag == "ignore" else (255, 255, 255)
            cv2.putText(row, str(f), (ox, th_h + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, col, 1)
        strips.append(row)
    for p0 in range(0, len(strips), strips_per_page):
        page = np.vstack(strips[p0:p0 + strips_per_page])
        cv2.imwrite(str(out / f"strips_{p0 // strips_per_page:02d}.png"), page)


def render_zoom(tracks: Tracks, frames: list[np.ndarray], out_file: Path, rect, sel: list[int], scale: float = 1.5,
                cols: int = 4, proposals=None, label=lambda n: n) -> None:
    """A grid of the same image region in chosen frames, enlarged: for crossings and the sign post."""
    import cv2
    x0, y0, x1, y1 = rect
    names = sorted(tracks, key=lambda n: (min(tracks[n]), _name_key(n)))
    color = {n: _palette(i) for i, n in enumerate(names)}
    props = defaultdict(list)
    for fr, x, y, w, h, s in proposals or []:
        props[fr].append((x, y, w, h, s))
    tiles = []
    for f in sel:
        img = frames[f].copy()
        boxes = [(n, tracks[n][f]) for n in names if f in tracks[n]]
        for x, y, w, h, s in props.get(f, []):
            if not any(iou_matrix(np.array([[x, y, x + w, y + h]]), np.array([b.xyxy()]))[0, 0] > 0.7
                       for _, b in boxes):
                cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), (170, 170, 170), 1)
                cv2.putText(img, f"{s:.2f}", (int(x), int(y + h) + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                            (220, 220, 220), 1)
        for n, b in boxes:
            c = (128, 128, 128) if b.flag == "ignore" else color[n]
            bx0, by0, bx1, by1 = map(int, b.xyxy())
            cv2.rectangle(img, (bx0, by0), (bx1, by1), c, 1)
        crop = cv2.resize(img[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        for n, b in boxes:   # labels after scaling, readable
            bx0, by0 = (b.x - x0) * scale, (b.y - y0) * scale
            if -20 < bx0 < crop.shape[1] and -20 < by0 < crop.shape[0]:
                txt = str(label(n)) + ("'" if b.source == "interp" else "")
                p = (int(max(0, bx0)), int(max(12, by0)))
                cv2.putText(crop, txt, p, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
                cv2.putText(crop, txt, p, cv2.FONT_HERSHEY_SIMPLEX, 0.45, color[n], 1)
        cv2.rectangle(crop, (0, 0), (48, 16), (0, 0, 0), -1)
        cv2.putText(crop, str(f), (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(crop)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    page = np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_file), page)


# ----------------------------------------------------------------------------- stats & evaluation

def evaluate_proposals(proposals, ann: list[dict], min_score: float, iou: float = 0.5) -> dict:
    """Precision/recall of raw proposals (score >= min_score) against the annotation, per frame
    greedy-by-score matching at IoU >= iou; proposals matched to `ignore` boxes are not counted."""
    gt = defaultdict(list)
    for r in ann:
        gt[r["frame"]].append(r)
    pr = defaultdict(list)
    for fr, x, y, w, h, s in proposals:
        if s >= min_score:
            pr[fr].append((s, np.array([x, y, x + w, y + h])))
    tp = fp = fn = 0
    frames = sorted(set(gt) | set(pr))
    for f in frames:
        g = gt.get(f, [])
        gb = np.array([[r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]] for r in g]).reshape(-1, 4)
        used = np.zeros(len(g), bool)
        for s, b in sorted(pr.get(f, []), key=lambda t: -t[0]):
            m = iou_matrix(b[None], gb)[0] if len(g) else np.zeros(0)
            m[used] = 0
            j = int(np.argmax(m)) if len(m) else -1
            if j >= 0 and m[j] >= iou:
                used[j] = True
                if g[j]["flag"] == "ok":
                    tp += 1
            else:
                fp += 1
        fn += sum(1 for k, r in enumerate(g) if not used[k] and r["flag"] == "ok")
    return dict(min_score=min_score, tp=tp, fp=fp, fn=fn, precision=tp / max(tp + fp, 1),
                recall=tp / max(tp + fn, 1))


def stats(ann: list[dict]) -> str:
    ok = [r for r in ann if r["flag"] == "ok"]
    people = sorted({r["person_id"] for r in ann})
    per = defaultdict(list)
    for r in ann:
        per[r["person_id"]].append(r)
    lines = [f"persons {len(people)}, boxes {len(ann)} (ok {len(ok)}, ignore {len(ann) - len(ok)}), "
             f"frames with a box {len({r['frame'] for r in ann})} of {N_FRAMES}, "
             f"max persons in a frame {max(np.bincount([r['frame'] for r in ann]))}",
             "source: " + ", ".join(f"{k} {v}" for k, v in sorted(_count(r["source"] for r in ann).items()))]
    hs = np.array([r["h"] for r in ok])
    lines.append("ok box height px: p5 %.0f, p25 %.0f, median %.0f, p75 %.0f, p95 %.0f" %
                 tuple(np.percentile(hs, [5, 25, 50, 75, 95])))
    bins = [0, 40, 55, 70, 90, 120, 1000]
    hist = np.histogram(hs, bins)[0]
    lines.append("ok boxes by height: " + ", ".join(f"{a}-{b}: {n}" for a, b, n in zip(bins, bins[1:], hist)))
    lines.append("person  first  last  frames  boxes  ok  ignore  segments  median_h")
    for p in people:
        rs = per[p]
        fs = sorted(r["frame"] for r in rs)
        segs = 1 + sum(1 for a, b in zip(fs, fs[1:]) if b != a + 1)
        lines.append(f"{p:6d} {fs[0]:6d} {fs[-1]:5d} {fs[-1] - fs[0] + 1:7d} {len(rs):6d} "
                     f"{sum(r['flag'] == 'ok' for r in rs):4d} {sum(r['flag'] == 'ignore' for r in rs):7d} "
                     f"{segs:9d} {np.median([r['h'] for r in rs]):9.0f}")
    for step in (2, 4, 5):
        sub = [r for r in ok if r["frame"] % step == 0]
        lines.append(f"every {step}th frame ({10 / step:g} fps): {len({r['frame'] for r in ann if r['frame'] % step == 0})} "
                     f"frames, {len(sub)} ok boxes, {len({r['person_id'] for r in sub})} persons")
    return "\n".join(lines)


def _count(it):
    d = defaultdict(int)
    for x in it:
        d[x] += 1
    return d


# ----------------------------------------------------------------------------- cli

def _final_tracks(path: Path = GT_DIR / "annotations.csv") -> Tracks:
    tracks: Tracks = defaultdict(dict)
    for r in read_annotations(path):
        tracks[f"P{r['person_id']}"][r["frame"]] = Box(r["x"], r["y"], r["w"], r["h"], 1.0, r["source"], r["flag"])
    return dict(tracks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("propose", help="run the detector on every frame (throwaway openvino venv)")
    p.add_argument("--ov-python", default="/tmp/ov-venv/bin/python")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--out", default=str(GT_DIR / "proposals-0202.csv"))
    p = sub.add_parser("link", help="link proposals into tracklets at 10 fps")
    p.add_argument("--proposals", default=str(GT_DIR / "proposals-0202.csv"))
    p.add_argument("--out", default=str(WORK / "tracklets.csv"))
    p = sub.add_parser("sheets", help="render review images under .var/annotate/sheets*")
    p.add_argument("--final", action="store_true", help="render the final annotation instead of the tracklets")
    p.add_argument("--tracklets", default=str(WORK / "tracklets.csv"))
    p.add_argument("--proposals", default=str(GT_DIR / "proposals-0202.csv"))
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--frames", help="comma list or a-b range: one grid per 6 of exactly these frames")
    p.add_argument("--out")
    p = sub.add_parser("zoom", help="enlarged region over chosen frames (crossings)")
    p.add_argument("rect", help="x0,y0,x1,y1 in video pixels")
    p.add_argument("frames", help="a-b[:step] or comma list")
    p.add_argument("--final", action="store_true")
    p.add_argument("--scale", type=float, default=1.5)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--tracklets", default=str(WORK / "tracklets.csv"))
    p.add_argument("--proposals", default=str(GT_DIR / "proposals-0202.csv"))
    p.add_argument("--out")
    p = sub.add_parser("apply", help="apply corrections.yaml and write annotations.csv")
    p.add_argument("--tracklets", default=str(WORK / "tracklets.csv"))
    p.add_argument("--proposals", default=str(GT_DIR / "proposals-0202.csv"))
    p.add_argument("--corrections", default=str(GT_DIR / "corrections.yaml"))
    p.add_argument("--out", default=str(GT_DIR / "annotations.csv"))
    p.add_argument("--relink", action="store_true", help="run `link` first (from the committed proposals)")
    p = sub.add_parser("stats", help="figures of the annotation file (+ raw proposal precision/recall)")
    p.add_argument("--annotations", default=str(GT_DIR / "annotations.csv"))
    p.add_argument("--proposals", default=str(GT_DIR / "proposals-0202.csv"))
    args = ap.parse_args(argv)

    if args.cmd == "propose":
        cmd = [args.ov_python, str(Path(__file__).with_name("annotate_ov.py")), str(footage()),
               "--model", args.model, "--out", args.out]
        return subprocess.call(cmd, cwd=ROOT)
    if args.cmd == "link":
        tracks = link(read_proposals(Path(args.proposals)))
        write_tracks(Path(args.out), tracks)
        print(f"{len(tracks)} tracklets, {sum(len(v) for v in tracks.values())} boxes -> {args.out}")
        return 0
    if args.cmd == "sheets":
        frames = read_frames(footage())
        props = read_proposals(Path(args.proposals))
        if args.final:
            tracks = _final_tracks()
            out = Path(args.out or WORK / "sheets-final")
        else:
            tracks = read_tracks(Path(args.tracklets))
            out = Path(args.out or WORK / "sheets")
        if args.frames:
            if "-" in args.frames:
                a, b = map(int, args.frames.split("-"))
                sel = list(range(a, b + 1))
            else:
                sel = [int(x) for x in args.frames.split(",")]
            sub_tr = {k: {f: v[f] for f in sel if f in v} for k, v in tracks.items()}
            sub_tr = {k: v for k, v in sub_tr.items() if v}
            # frames only: pad by selecting via 'every' on a re-indexed list
            fr_sel = [frames[f] for f in sel]
            re_tr = {k: {sel.index(f): b for f, b in v.items()} for k, v in sub_tr.items()}
            re_pr = [(sel.index(p[0]),) + tuple(p[1:]) for p in props if p[0] in set(sel)]
            render_sheets(re_tr, fr_sel, Path(args.out or WORK / "look"), proposals=re_pr, every=1,
                          strips_per_page=100)
            # rename pages to real frame numbers
            for pth in sorted(Path(args.out or WORK / "look").glob("frames_*.png")):
                k = int(pth.stem.split("_")[1])
                pth.rename(pth.with_name(f"look_{sel[k]:03d}.png"))
            print(f"rendered {len(sel)} frames -> {args.out or WORK / 'look'}")
            return 0
        render_sheets(tracks, frames, out, proposals=props, every=args.every, start=args.start)
        print(f"sheets -> {out}")
        return 0
    if args.cmd == "zoom":
        frames = read_frames(footage())
        tracks = _final_tracks() if args.final else read_tracks(Path(args.tracklets))
        rect = [int(v) for v in args.rect.split(",")]
        if "," in args.frames:
            sel = [int(v) for v in args.frames.split(",")]
        else:
            rng, _, step = args.frames.partition(":")
            a, b = map(int, rng.split("-"))
            sel = list(range(a, b + 1, int(step or 1)))
        out = Path(args.out or WORK / "zoom" / f"zoom_{sel[0]:03d}_{sel[-1]:03d}.png")
        render_zoom(tracks, frames, out, rect, sel, args.scale, args.cols, read_proposals(Path(args.proposals)))
        print(out)
        return 0
    if args.cmd == "apply":
        if args.relink or not Path(args.tracklets).exists():
            tracks = link(read_proposals(Path(args.proposals)))
            write_tracks(Path(args.tracklets), tracks)
        tracks = read_tracks(Path(args.tracklets))
        corr = load_corrections(Path(args.corrections)) if Path(args.corrections).exists() else []
        final, counts = apply_corrections(tracks, corr)
        rows = to_annotations(final)
        write_annotations(Path(args.out), rows)
        print(f"{len(corr)} corrections {dict(sorted(counts.items()))} -> {len(final)} persons, "
              f"{len(rows)} boxes -> {args.out}")
        return 0
    if args.cmd == "stats":
        ann = read_annotations(Path(args.annotations))
        print(stats(ann))
        props = read_proposals(Path(args.proposals))
        for t in (0.1, 0.2, 0.3, 0.5, 0.7):
            e = evaluate_proposals(props, ann, t)
            print(f"raw proposals score >= {t}: precision {e['precision']:.3f} recall {e['recall']:.3f} "
                  f"(tp {e['tp']}, fp {e['fp']}, fn {e['fn']})")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
