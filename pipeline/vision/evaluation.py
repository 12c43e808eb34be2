"""Scoring perception against a labelled clip: detector precision/recall by person size, and
what the tracker makes of people (passes per true person, links that jump to another person).

Why here and not in a bench script: the numbers decide the processor's defaults and are quoted
to users, so the scoring itself is unit-tested (tests/vision/test_evaluation.py); the bench
(bench/vision/perception.py) only runs models and prints.

Conventions (the usual ones for pedestrian benchmarks, stated so the figures can be checked):
- a detection matches a labelled person at IoU >= 0.5, one-to-one per frame, by maximum total
  IoU (Hungarian);
- labelled boxes flagged ``ignore`` (mostly outside the frame, hidden behind something) are
  neither missed when undetected nor false when detected: a detection that is unmatched after
  the one-to-one step and overlaps an ignore box (IoU >= 0.5 or half its area inside) is
  dropped from the count;
- a pass is one tracker track; its identity is the labelled person most of its matched
  detections belong to; a *link* is two consecutive matched detections of one pass, and it
  *jumps* when they belong to different people.
"""
from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

Rect = tuple[float, float, float, float]

SIZE_BINS = ((0, 55), (55, 100), (100, 10_000))  # box height in px of the processed frame


@dataclass(frozen=True)
class Label:
    frame: int
    person: int
    box: Rect
    ignore: bool = False


def load_labels(path: Path | str, scale: float = 1.0) -> dict[int, list[Label]]:
    """Annotations CSV (frame, person_id, x, y, w, h, flag) -> labels per frame, boxes scaled."""
    out: dict[int, list[Label]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            try:
                fr, pid = int(row["frame"]), int(row["person_id"])
                box = tuple(float(row[k]) * scale for k in ("x", "y", "w", "h"))
                flag = row.get("flag", "ok").strip()
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: bad annotation row {row}: {e}") from None
            if flag not in ("ok", "ignore"):
                raise ValueError(f"{path}: unknown flag {flag!r} (ok or ignore)")
            out[fr].append(Label(fr, pid, box, flag == "ignore"))  # type: ignore[arg-type]
    return dict(out)


def iou_matrix(a: Sequence[Rect], b: Sequence[Rect]) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    A, B = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ax2, ay2 = A[:, 0] + A[:, 2], A[:, 1] + A[:, 3]
    bx2, by2 = B[:, 0] + B[:, 2], B[:, 1] + B[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(A[:, 0:1], B[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(A[:, 1:2], B[None, :, 1]), 0, None)
    inter = iw * ih
    union = (A[:, 2] * A[:, 3])[:, None] + (B[:, 2] * B[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _inside_share(det: Rect, region: Rect) -> float:
    x1, y1 = max(det[0], region[0]), max(det[1], region[1])
    x2, y2 = min(det[0] + det[2], region[0] + region[2]), min(det[1] + det[3], region[1] + region[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / max(det[2] * det[3], 1e-12)


@dataclass
class FrameMatch:
    """Per detection: the labelled person it matched (None: false or ignored), and whether it
    counts as a false positive; per labelled person: matched or missed."""

    person_of: list[int | None]
    false_positive: list[bool]
    matched_people: set[int]
    missed: list[Label]
    counted: list[Label]


def match_frame(dets: Sequence[Rect], labels: Sequence[Label], iou_min: float = 0.5) -> FrameMatch:
    ok = [l for l in labels if not l.ignore]
    ign = [l for l in labels if l.ignore]
    person_of: list[int | None] = [None] * len(dets)
    M = iou_matrix(dets, [l.box for l in ok])
    matched = set()
    if M.size:
        r, c = linear_sum_assignment(-M)
        for i, j in zip(r, c):
            if M[i, j] >= iou_min:
                person_of[i] = ok[j].person
                matched.add(j)
    fp = [False] * len(dets)
    MI = iou_matrix(dets, [l.box for l in ign])
    for i, d in enumerate(dets):
        if person_of[i] is not None:
            continue
        near_ignore = any(MI[i, k] >= iou_min or _inside_share(d, l.box) >= 0.5 for k, l in enumerate(ign))
        fp[i] = not near_ignore
    return FrameMatch(person_of, fp, {ok[j].person for j in matched}, [ok[j] for j in range(len(ok)) if j not in matched],
                      ok)


@dataclass
class DetectionScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    by_size: dict[tuple[int, int], list[int]] = field(default_factory=lambda: {b: [0, 0] for b in SIZE_BINS})

    def add(self, m: FrameMatch) -> None:
        self.tp += sum(p is not None for p in m.person_of)
        self.fp += sum(m.false_positive)
        self.fn += len(m.missed)
        missed = {id(l) for l in m.missed}
        for l in m.counted:
            for b in SIZE_BINS:
                if b[0] <= l.box[3] < b[1]:
                    self.by_size[b][0] += id(l) not in missed
                    self.by_size[b][1] += 1

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    def recall_by_size(self) -> dict[str, tuple[float, int]]:
        return {f"{lo}-{hi if hi < 10_000 else ''}px": (hit / max(n, 1), n) for (lo, hi), (hit, n) in self.by_size.items()}


@dataclass
class PassScore:
    passes: int                  # confirmed tracks
    people: int                  # labelled people seen in the sampled frames
    false_passes: int            # passes none of whose detections match a labelled person
    links: int
    jumps: int
    passes_per_person: Counter   # person -> passes whose identity is that person
    people_without_pass: int

    @property
    def per_person(self) -> float:
        return self.passes / max(self.people, 1)

    @property
    def jump_rate(self) -> float:
        return self.jumps / max(self.links, 1)


def score_passes(tracks: dict[int, list[tuple[int, int | None]]], people: Iterable[int]) -> PassScore:
    """``tracks``: per confirmed track, its detections in time order as (frame, matched person or
    None). ``people``: the labelled (non-ignored) people present in the sampled frames."""
    people = set(people)
    links = jumps = false = 0
    per_person: Counter = Counter()
    for dets in tracks.values():
        ids = [p for _, p in dets if p is not None]
        if not ids:
            false += 1
            continue
        per_person[Counter(ids).most_common(1)[0][0]] += 1
        for a, b in zip(ids, ids[1:]):
            links += 1
            jumps += a != b
    return PassScore(len(tracks), len(people), false, links, jumps, per_person,
                     len(people - set(per_person)))


def visit_runs(labels: dict[int, list[Label]], max_gap_frames: int,
               frames: Iterable[int] | None = None) -> dict[int, list[tuple[int, int]]]:
    """Per labelled person, their separate visits to the view as (first frame, last frame): runs
    of labelled frames (``ok`` or ``ignore``, so time hidden behind something stays inside a
    visit) split where the person is absent from more than ``max_gap_frames`` consecutive frames.
    Someone who leaves and comes back is two passes for any counter, and should be: a visit is
    what a pass is meant to count. With ``frames`` (the sampled frame indices), only visits with
    an ``ok`` box in a sampled frame are kept (a visit no sampled frame shows cannot be counted)."""
    present: dict[int, list[int]] = defaultdict(list)
    shown: dict[int, set[int]] = defaultdict(set)
    sampled = None if frames is None else set(frames)
    for fr, ls in labels.items():
        for l in ls:
            present[l.person].append(fr)
            if not l.ignore and (sampled is None or fr in sampled):
                shown[l.person].add(fr)
    out: dict[int, list[tuple[int, int]]] = {}
    for person, frs in present.items():
        frs.sort()
        runs, start = [], frs[0]
        for a, b in zip(frs, frs[1:]):
            if b - a > max_gap_frames + 1:
                runs.append((start, a))
                start = b
        runs.append((start, frs[-1]))
        kept = [(lo, hi) for lo, hi in runs if any(lo <= f <= hi for f in shown[person])]
        if kept:
            out[person] = kept
    return out


def visits(labels: dict[int, list[Label]], max_gap_frames: int, frames: Iterable[int] | None = None) -> dict[int, int]:
    """Per labelled person, how many visits :func:`visit_runs` finds."""
    return {p: len(r) for p, r in visit_runs(labels, max_gap_frames, frames).items()}


__all__ = ["visits", "visit_runs", "Label", "load_labels", "iou_matrix", "match_frame", "FrameMatch", "DetectionScore", "PassScore",
           "score_passes", "SIZE_BINS"]
