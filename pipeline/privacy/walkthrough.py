"""Cross-camera same-person pairs from a documented staff walk-through.

Why: the flow estimator divides by p, the probability that one person seen at two cameras
lands in the same group, and only the deployment's own cameras can tell it (within-camera
pairs are far easier: same light, same angle). Labelled multi-camera data of customers does
not exist and must not be made; instead a few consenting staff walk a recorded route past the
cameras and note when they pass each one. Their passes are found by time window: for each
noted sighting, the pass of that camera whose time span agrees best with the window (largest
intersection over union in time, so a long pass of someone loitering does not win over the
walker's own short one). A sighting is skipped (and reported) when no pass overlaps it, or
when a second pass agrees almost as well (someone else walked by at the same moment): a wrong
match would bias p downwards. Walk when the cameras are quiet, and note windows to the second.

The schedule (YAML)::

    walkers:
      - name: staff-a                  # a label for the report, not a person's name
        sightings:
          - {camera: entrance, from: 12.0, to: 19.5}   # seconds into that camera's footage
          - {camera: plaza, from: 61, to: 70}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Sighting", "Walker", "Schedule", "load_schedule", "match_walkthrough", "WalkthroughMatch"]

AMBIGUITY = 0.5   # a second pass agreeing at least this well relative to the best makes a sighting ambiguous


class Sighting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    camera: str = Field(min_length=1, max_length=128)
    start: float = Field(alias="from", ge=0)
    end: float = Field(alias="to", ge=0)

    @model_validator(mode="after")
    def _order(self) -> "Sighting":
        if self.end <= self.start:
            raise ValueError(f"sighting at {self.camera}: 'to' ({self.end}) must be after 'from' ({self.start})")
        return self


class Walker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    sightings: tuple[Sighting, ...] = Field(min_length=2)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    walkers: tuple[Walker, ...] = Field(min_length=1)


def load_schedule(path: Path | str) -> Schedule:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return Schedule.model_validate(data)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"walk-through schedule {p}: {e}") from None
    except ValidationError as e:
        lines = [f"  {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ValueError(f"walk-through schedule {p} is invalid:\n" + "\n".join(lines)) from None


@dataclass
class WalkthroughMatch:
    pairs: list[tuple[int, int]] = field(default_factory=list)   # indices into the passes, different cameras
    matched: int = 0
    unmatched: list[str] = field(default_factory=list)           # "walker@camera[from-to]: why"


def _time_iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def match_walkthrough(schedule: Schedule, passes: Sequence[tuple[str, float, float]]) -> WalkthroughMatch:
    """``passes``: (camera, start seconds, end seconds) of every pass found in the footage."""
    res = WalkthroughMatch()
    cameras = {c for c, _, _ in passes}
    for w in schedule.walkers:
        found: list[tuple[str, int]] = []
        for s in w.sightings:
            where = f"{w.name}@{s.camera}[{s.start:g}-{s.end:g}]"
            if s.camera not in cameras:
                res.unmatched.append(f"{where}: no footage for camera {s.camera!r}")
                continue
            ov = sorted(((_time_iou(s.start, s.end, a, b), i) for i, (c, a, b) in enumerate(passes)
                         if c == s.camera), reverse=True)
            if not ov or ov[0][0] <= 0:
                res.unmatched.append(f"{where}: no pass overlaps the window")
                continue
            if len(ov) > 1 and ov[1][0] >= AMBIGUITY * ov[0][0]:
                res.unmatched.append(f"{where}: ambiguous (another pass agrees with the window almost as well)")
                continue
            found.append((s.camera, ov[0][1]))
            res.matched += 1
        for i in range(len(found)):
            for j in range(i + 1, len(found)):
                if found[i][0] != found[j][0]:
                    res.pairs.append((found[i][1], found[j][1]))
    return res
