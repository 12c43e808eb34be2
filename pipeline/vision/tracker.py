"""Multi-person tracker for low frame rates: motion prediction, two-stage association, appearance.

Why not the IoU tracker (``tracking.py``) or ByteTrack: at the edge's 2 frames/s a walking
person moves more than their own width between frames, so boxes of consecutive frames rarely
overlap and IoU association breaks every track (measured: ByteTrack from ``supervision`` falls
apart at 2 fps, issue 10). What holds at low rates:

- **Motion prediction.** A constant-velocity Kalman filter per track over (centre x, centre y,
  height), with time in seconds (frames need not be evenly spaced) and every noise scaled by
  the person's height, so near and far people are treated alike. Association distance is the
  Mahalanobis distance of a detection from the prediction: the gate widens by itself while a
  person is unseen and narrows once their velocity is known.
- **Two stages (ByteTrack's idea).** Confident detections are associated first, on motion and
  appearance; low-confidence detections (partly occluded people, which a single threshold would
  drop) may only continue a track that lost its match, on motion alone, and never start one.
- **Appearance.** When detections carry re-identification embeddings (L2-normalised), each
  track keeps an exponential moving average of them, and the cost adds the cosine distance,
  with a gate: two people crossing at the same place stay apart because they look different.

Assignment is optimal per stage (Hungarian, ``scipy.optimize.linear_sum_assignment``) on a
cost that is gated to infinity outside the motion and appearance gates.

A track is *confirmed* once it has ``min_hits`` detections; a track unseen for ``max_gap_s``
seconds dies. The caller decides what a dead track means (the pass counter counts a confirmed
track as one person pass). Pure logic: boxes, scores and optional embeddings in, track events
out; no images, no I/O, unit-tested on synthetic walks and measured on labelled footage
(bench/vision/perception.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["TrackerConfig", "TrackState", "Tracker", "Association"]

_INF = 1e9


@dataclass(frozen=True)
class TrackerConfig:
    """Defaults chosen on the project's labelled vtest set (bench/vision/perception.py)."""

    high_score: float = 0.5        # detections at or above start and continue tracks (stage 1)
    low_score: float = 0.3         # [low, high): may only continue an unmatched track (stage 2)
    max_gap_s: float = 2.0         # a track unseen this long ends
    min_hits: int = 2              # detections before a track counts as a person
    gate_chi2: float = 16.27       # Mahalanobis gate, chi-square 3 dof at 99.9 %
    low_gate_chi2: float = 7.81    # stricter gate for low-confidence detections (95 %)
    app_gate: float = 0.6          # max cosine distance between a track's appearance and a detection
    app_weight: float = 0.5        # share of appearance in the stage-1 cost (0 = motion only)
    app_momentum: float = 0.8      # EMA of a track's embedding
    accel_noise: float = 0.5       # random acceleration, body heights / s^2 (about 0.85 m/s^2)
    height_noise: float = 0.1      # random height change rate, relative / s^1.5
    meas_noise: float = 0.08       # measurement std of the centre, in body heights
    init_speed: float = 1.0        # prior std of a new track's speed, body heights / s

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError("0 <= low_score <= high_score <= 1 is required")
        if self.max_gap_s <= 0 or self.min_hits < 1:
            raise ValueError("max_gap_s > 0 and min_hits >= 1 are required")
        if self.gate_chi2 <= 0 or self.low_gate_chi2 <= 0 or not 0.0 < self.app_gate <= 2.0:
            raise ValueError("gates must be positive (app_gate in (0, 2])")
        if not 0.0 <= self.app_weight < 1.0 or not 0.0 <= self.app_momentum < 1.0:
            raise ValueError("app_weight and app_momentum must be in [0, 1)")
        if min(self.accel_noise, self.height_noise, self.meas_noise, self.init_speed) <= 0:
            raise ValueError("noise figures must be positive")


@dataclass
class TrackState:
    """One person being followed: Kalman state, appearance, and bookkeeping (no image)."""

    track_id: int
    x: np.ndarray                  # [cx, cy, h, vx, vy, vh]
    P: np.ndarray                  # 6x6 covariance
    aspect: float                  # w / h, smoothed
    t_s: float                     # time of the state
    last_seen_s: float
    first_seen_s: float
    hits: int = 1
    feature: np.ndarray | None = None

    def box(self) -> tuple[float, float, float, float]:
        cx, cy, h = self.x[:3]
        w = self.aspect * h
        return cx - w / 2, cy - h / 2, w, h


@dataclass
class Association:
    """What one frame did: for each detection index, the track it joined (or None)."""

    track_of: list[int | None] = field(default_factory=list)
    new_tracks: list[int] = field(default_factory=list)
    ended: list[TrackState] = field(default_factory=list)


_H = np.hstack([np.eye(3), np.zeros((3, 3))])


class Tracker:
    """Feed frames in time order with :meth:`update`; tracks that end are returned there."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.cfg = config or TrackerConfig()
        self.tracks: list[TrackState] = []
        self._next_id = 1
        self._t: float | None = None

    # -- Kalman -----------------------------------------------------------------------------
    def _predict(self, tr: TrackState, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        dt = max(0.0, t_s - tr.t_s)
        F = np.eye(6)
        F[:3, 3:] = np.eye(3) * dt
        h = max(tr.x[2], 1.0)
        qa = np.array([self.cfg.accel_noise * h, self.cfg.accel_noise * h, self.cfg.height_noise * h]) ** 2
        Q = np.zeros((6, 6))
        Q[:3, :3] = np.diag(qa * dt ** 3 / 3)
        Q[:3, 3:] = Q[3:, :3] = np.diag(qa * dt ** 2 / 2)
        Q[3:, 3:] = np.diag(qa * dt)
        return F @ tr.x, F @ tr.P @ F.T + Q

    def _R(self, h: float) -> np.ndarray:
        r = self.cfg.meas_noise * max(h, 1.0)
        return np.diag([r * r, r * r, (1.5 * r) ** 2])

    def _new(self, z: np.ndarray, aspect: float, t_s: float, feature: np.ndarray | None) -> TrackState:
        h = max(z[2], 1.0)
        P = np.diag(np.r_[np.diag(self._R(h)), (self.cfg.init_speed * h) ** 2, (self.cfg.init_speed * h) ** 2,
                          (0.2 * h) ** 2])
        usable = feature is not None and not np.isnan(feature).any()
        tr = TrackState(self._next_id, np.r_[z, 0.0, 0.0, 0.0], P, aspect, t_s, t_s, t_s, 1,
                        feature.copy() if usable else None)
        self._next_id += 1
        return tr

    # -- association ----------------------------------------------------------------------------
    def _costs(self, preds: list[tuple[np.ndarray, np.ndarray]], Z: np.ndarray, feats: np.ndarray | None,
               tracks: list[TrackState], gate: float, use_app: bool) -> np.ndarray:
        C = np.full((len(tracks), len(Z)), _INF)
        for i, (tr, (x, P)) in enumerate(zip(tracks, preds)):
            S = _H @ P @ _H.T + self._R(x[2])
            y = Z - x[:3]
            d2 = np.einsum("ij,jk,ik->i", y, np.linalg.inv(S), y)
            ok = d2 <= gate
            cost = d2 / gate
            if use_app and feats is not None and tr.feature is not None:
                da = 1.0 - feats @ tr.feature
                seen = ~np.isnan(da)  # rows of NaN: no usable appearance (cut or occluded crop)
                ok &= ~seen | (da <= self.cfg.app_gate)
                w = self.cfg.app_weight
                cost = np.where(seen, (1 - w) * cost + w * np.nan_to_num(da) / self.cfg.app_gate, cost)
            C[i, ok] = cost[ok]
        return C

    @staticmethod
    def _solve(C: np.ndarray) -> list[tuple[int, int]]:
        if C.size == 0:
            return []
        rows, cols = linear_sum_assignment(C)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if C[r, c] < _INF]

    def _correct(self, tr: TrackState, pred: tuple[np.ndarray, np.ndarray], z: np.ndarray, aspect: float,
                 t_s: float, feature: np.ndarray | None) -> None:
        x, P = pred
        S = _H @ P @ _H.T + self._R(x[2])
        K = P @ _H.T @ np.linalg.inv(S)
        tr.x = x + K @ (z - x[:3])
        tr.P = (np.eye(6) - K @ _H) @ P
        tr.t_s = tr.last_seen_s = t_s
        tr.aspect = 0.7 * tr.aspect + 0.3 * aspect
        tr.hits += 1
        if feature is not None and not np.isnan(feature).any():
            if tr.feature is None:
                tr.feature = feature.copy()
            else:
                f = self.cfg.app_momentum * tr.feature + (1 - self.cfg.app_momentum) * feature
                tr.feature = f / max(float(np.linalg.norm(f)), 1e-12)

    def is_confirmed(self, tr: TrackState) -> bool:
        return tr.hits >= self.cfg.min_hits

    def update(self, t_s: float, boxes: Sequence[tuple[float, float, float, float]], scores: Sequence[float],
               features: np.ndarray | None = None) -> Association:
        """One frame: boxes (x, y, w, h) with detector scores, optional (n, d) unit embeddings
        (a row of NaN: this detection's appearance is not usable, match it on motion alone)."""
        n = len(boxes)
        if len(scores) != n or (features is not None and len(features) != n):
            raise ValueError("boxes, scores and features must be aligned")
        if self._t is not None and t_s < self._t:
            raise ValueError(f"frames must arrive in time order ({t_s} < {self._t})")
        self._t = t_s
        out = Association(track_of=[None] * n)
        # End tracks unseen for too long, before associating (they may not come back).
        alive = []
        for tr in self.tracks:
            (out.ended if t_s - tr.last_seen_s > self.cfg.max_gap_s else alive).append(tr)
        self.tracks = alive
        if n == 0:
            return out
        b = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
        Z = np.c_[b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2, b[:, 3]]
        aspects = b[:, 2] / np.maximum(b[:, 3], 1.0)
        s = np.asarray(scores, dtype=np.float64)
        feats = None if features is None else np.asarray(features, dtype=np.float64)
        preds = [self._predict(tr, t_s) for tr in self.tracks]

        high = np.flatnonzero(s >= self.cfg.high_score)
        low = np.flatnonzero((s >= self.cfg.low_score) & (s < self.cfg.high_score))
        # Stage 1: confident detections, motion + appearance, confirmed tracks before tentative
        # ones (a fresh, unconfirmed track must not steal a detection from an established one).
        free_t = list(range(len(self.tracks)))
        free_d = list(high)
        for group in (lambda tr: self.is_confirmed(tr), lambda tr: not self.is_confirmed(tr)):
            ts = [i for i in free_t if group(self.tracks[i])]
            if not ts or not free_d:
                continue
            C = self._costs([preds[i] for i in ts], Z[free_d], None if feats is None else feats[free_d],
                            [self.tracks[i] for i in ts], self.cfg.gate_chi2, self.cfg.app_weight > 0)
            pairs = self._solve(C)
            for r, c in pairs:
                ti, dj = ts[r], free_d[c]
                self._correct(self.tracks[ti], preds[ti], Z[dj], aspects[dj], t_s,
                              None if feats is None else feats[dj])
                out.track_of[dj] = self.tracks[ti].track_id
            taken = {ts[r] for r, _ in pairs}
            free_t = [i for i in free_t if i not in taken]
            free_d = [d for d in free_d if out.track_of[d] is None]
        # Stage 2: low-confidence detections may only continue an unmatched, confirmed track.
        ts = [i for i in free_t if self.is_confirmed(self.tracks[i])]
        if ts and len(low):
            C = self._costs([preds[i] for i in ts], Z[low], None, [self.tracks[i] for i in ts],
                            self.cfg.low_gate_chi2, False)
            for r, c in self._solve(C):
                ti, dj = ts[r], int(low[c])
                self._correct(self.tracks[ti], preds[ti], Z[dj], aspects[dj], t_s,
                              None if feats is None else feats[dj])
                out.track_of[dj] = self.tracks[ti].track_id
        # Unmatched confident detections start tracks.
        for dj in free_d:
            if out.track_of[dj] is None:
                tr = self._new(Z[dj], float(aspects[dj]), t_s, None if feats is None else feats[dj])
                self.tracks.append(tr)
                out.track_of[dj] = tr.track_id
                out.new_tracks.append(tr.track_id)
        return out

    def flush(self) -> list[TrackState]:
        """End every track (end of a bounded run)."""
        done, self.tracks = self.tracks, []
        return done
