"""Simulation scenarios: sites, cameras, opening hours, arrivals, routes, demographics (YAML).

A scenario describes *how people move*, never who they are: it is the input of the
simulator, whose persons exist only inside :mod:`pipeline.simulator.journeys`.

Conventions (all stated here once):

* Times are UTC. ``start`` is a date; the simulation covers ``days`` whole days from its
  midnight. Opening hours are UTC clock times on each day (no opening across midnight).
* ``window_seconds`` must divide a day, so windows align with the processor's epoch-aligned
  tumbling windows (``ts - ts % window``).
* Arrivals: each entry camera receives a Poisson number of new persons per day
  (``arrivals_per_day``), spread over its site's opening hours by the optional hourly
  profile (relative weights per UTC clock hour; hours not listed get weight 0), flat by
  default.
* Routes: a Markov chain over cameras. From camera A a person goes to B with the route's
  probability; the probability left over is "leave". Transit times are log-normal with the
  given median and sigma, clipped to ``[min_seconds, max_seconds]``. Routes may cross sites.
* Each pass of a camera (a *visit*) yields a capture (one descriptor, one group occurrence)
  with the camera's ``capture_probability``; a captured person's face is unusable (age band
  and gender "unknown") with ``demographics.unknown_face_rate``, independently per capture.
* ``group_mode``: ``fast`` draws group ids from the parameter set's same-group rate;
  ``core`` runs simulated appearance descriptors through the real Anonymizer.
* ``realism`` (all off by default, which is the simulator's original world): departures from
  that world that a deployment meets, each a knob of its own (:class:`Realism`):

  - ``popularity``: log-normal group popularity (``sigma`` of log popularity) that changes with
    the hour of day (``hour_drift``) and by camera (``camera_drift``); fast mode only.
  - ``same_group``: per-person same-group rate drawn from a Beta distribution with the
    parameter set's rate as its population mean (``concentration``); fast mode only.
  - ``long_transits``: a ``share`` of route transits takes a long log-normal time instead
    (beyond the lag range: a coffee, a film).
  - ``detection``: a capture probability per pass for every camera (missed detections),
    multiplying the camera's own ``capture_probability``.
  - ``staff``: per site, ``count`` persons present every day who pass their few cameras
    ``passes_per_day`` times a day.
  - ``onward``: a ``share`` of visitors, when leaving a site, go on to another site's entry.
  - ``closing``: at closing time walks end, except a share of ``stragglers`` who keep
    walking for up to ``straggle_seconds``.

:func:`load_scenario` turns every validation problem into one :class:`ScenarioError` whose
message lists each problem with its path in the file.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from pipeline.privacy.demographics import AGE_BANDS

__all__ = ["Scenario", "Site", "Camera", "OpeningHours", "Entry", "Route", "Transit", "Demographics",
           "Realism", "Popularity", "SameGroup", "LongTransits", "Detection", "Staff", "Onward", "Closing",
           "ScenarioError", "load_scenario", "parse_scenario", "SCENARIO_DIR", "GENDER_NAMES"]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
GENDER_NAMES: tuple[str, str] = ("female", "male")
DAY = 86_400
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_TOL = 1e-6


class ScenarioError(ValueError):
    """A scenario file is unreadable or invalid; the message names every problem and where."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _clock(v: Any) -> int:
    """'HH:MM' (or 'HH:MM:SS', or an int hour) -> seconds after midnight."""
    if isinstance(v, bool):
        raise ValueError("a clock time must look like 'HH:MM'")
    if isinstance(v, int):
        h, m, s = v, 0, 0
    elif isinstance(v, str) and re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", v.strip()):
        parts = [int(p) for p in v.strip().split(":")]
        h, m, s = (parts + [0])[:3]
    else:
        raise ValueError(f"clock time {v!r} must look like 'HH:MM'")
    if not (0 <= h <= 24 and 0 <= m < 60 and 0 <= s < 60) or h * 3600 + m * 60 + s > DAY:
        raise ValueError(f"clock time {v!r} is not between 00:00 and 24:00")
    return h * 3600 + m * 60 + s


class OpeningHours(_Model):
    """Opening hours of a site on every simulated day (UTC): ``{open: "09:00", close: "21:00"}``
    or the string ``"09:00-21:00"``."""

    open: int = Field(description="seconds after midnight (UTC)")
    close: int = Field(description="seconds after midnight (UTC), after open")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if isinstance(v, str):
            if "-" not in v:
                raise ValueError(f"opening hours {v!r} must look like '09:00-21:00'")
            a, b = v.split("-", 1)
            return {"open": a.strip(), "close": b.strip()}
        return v

    @field_validator("open", "close", mode="before")
    @classmethod
    def _time(cls, v: Any) -> int:
        return _clock(v)

    @field_serializer("open", "close")
    def _dump(self, v: int) -> str:
        return f"{v // 3600:02d}:{v % 3600 // 60:02d}:{v % 60:02d}"

    @model_validator(mode="after")
    def _order(self) -> "OpeningHours":
        if self.close <= self.open:
            raise ValueError("close must be after open on the same day (opening across midnight is not supported)")
        return self

    @property
    def seconds(self) -> int:
        return self.close - self.open


class Camera(_Model):
    camera_id: str = Field(pattern=_ID, max_length=64)
    zone: str | None = Field(default=None, max_length=64, description="label, e.g. entrance, plaza, store")
    store: str | None = Field(default=None, max_length=64, description="label of the store it watches, if any")
    capture_probability: float = Field(default=1.0, ge=0.0, le=1.0,
                                       description="probability that a pass of this camera yields a capture")


class Site(_Model):
    site_id: str = Field(pattern=_ID, max_length=64)
    opening_hours: OpeningHours = OpeningHours(open="09:00", close="21:00")
    cameras: list[Camera] = Field(min_length=1)


class Entry(_Model):
    """New persons appearing first at ``camera``: Poisson(arrivals_per_day) per day."""

    camera: str
    arrivals_per_day: float = Field(ge=0.0)
    hourly_profile: dict[int, float] | None = Field(
        default=None, description="relative arrival weight per UTC clock hour (0-23); hours not listed get 0")

    @field_validator("hourly_profile")
    @classmethod
    def _profile(cls, v: dict[int, float] | None) -> dict[int, float] | None:
        if v is None:
            return v
        for h, w in v.items():
            if not 0 <= h <= 23:
                raise ValueError(f"hour {h} is not a clock hour 0-23")
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"weight of hour {h} must be a finite number >= 0")
        if sum(v.values()) <= 0:
            raise ValueError("the hourly profile has no positive weight")
        return v


class Transit(_Model):
    """Log-normal transit time between two captures: median and sigma (of log seconds), clipped."""

    median_seconds: float = Field(gt=0)
    sigma: float = Field(default=0.5, ge=0, le=5)
    min_seconds: float = Field(default=0.0, ge=0)
    max_seconds: float = Field(default=1800.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "Transit":
        if not self.min_seconds <= self.median_seconds <= self.max_seconds:
            raise ValueError(f"need min_seconds <= median_seconds <= max_seconds, got "
                             f"{self.min_seconds} <= {self.median_seconds} <= {self.max_seconds}")
        return self


class Route(_Model):
    """From camera ``from`` a person next passes camera ``to`` with ``probability``."""

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    probability: float = Field(gt=0.0, le=1.0)
    transit: Transit | None = Field(default=None, description="default: the scenario's default_transit")


class Demographics(_Model):
    """Independent age-band and gender mix of the persons, plus the per-capture unusable-face rate."""

    age_bands: dict[str, float] = Field(
        default_factory=lambda: dict(zip(AGE_BANDS, (0.18, 0.20, 0.18, 0.16, 0.13, 0.10, 0.05))))
    genders: dict[str, float] = Field(default_factory=lambda: {"female": 0.5, "male": 0.5})
    unknown_face_rate: float = Field(default=0.1, ge=0.0, le=1.0)

    @field_validator("age_bands")
    @classmethod
    def _bands(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(AGE_BANDS))
        if bad:
            raise ValueError(f"unknown age band(s) {bad}; the bands are {list(AGE_BANDS)}")
        return _probabilities(v, "age band")

    @field_validator("genders")
    @classmethod
    def _genders(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(GENDER_NAMES))
        if bad:
            raise ValueError(f"unknown gender(s) {bad}; use {list(GENDER_NAMES)} (unknown comes from unknown_face_rate)")
        return _probabilities(v, "gender")

    def age_probabilities(self) -> np.ndarray:
        p = np.array([self.age_bands.get(b, 0.0) for b in AGE_BANDS])
        return p / p.sum()

    def gender_probabilities(self) -> np.ndarray:
        p = np.array([self.genders.get(g, 0.0) for g in GENDER_NAMES])
        return p / p.sum()


def _probabilities(v: dict[str, float], what: str) -> dict[str, float]:
    for k, p in v.items():
        if not (0 <= p <= 1):
            raise ValueError(f"{what} probability of {k!r} must be between 0 and 1, got {p}")
    s = sum(v.values())
    if abs(s - 1.0) > 1e-3:
        raise ValueError(f"{what} probabilities must sum to 1, they sum to {s:.4f}")
    return v


# ---- realism knobs (issue 12): all off by default ------------------------------------------

class Popularity(_Model):
    """Group popularity (fast mode): the probability that a capture lands in group g follows
    log-normal weights instead of being uniform, log w_g(camera, hour) = sigma * (a z_g +
    sqrt(hour_drift) (cos(theta_h) x_g + sin(theta_h) y_g) + sqrt(camera_drift) u_{camera, g}) with
    standard normal z, x, y, u per group, theta_h = 2 pi (h + 1/2) / 24 for UTC clock hour h and
    a = sqrt(1 - hour_drift - camera_drift). So log popularity has SD ``sigma`` at every camera
    and hour; its correlation between hours h and h' of one camera is
    1 - hour_drift (1 - cos(theta_h - theta_h')) and between two cameras at one hour
    1 - camera_drift. A person's home group is drawn from the popularity where and when they are
    first captured, every other capture from the popularity of its camera and hour."""

    sigma: float = Field(default=0.0, ge=0.0, le=3.0, description="SD of log group popularity; 0 = uniform")
    hour_drift: float = Field(default=0.0, ge=0.0, le=1.0,
                              description="share of log-popularity variance that follows the hour of day")
    camera_drift: float = Field(default=0.0, ge=0.0, le=1.0,
                                description="share of log-popularity variance that differs by camera")

    @model_validator(mode="after")
    def _shares(self) -> "Popularity":
        if self.hour_drift + self.camera_drift > 1.0 + _TOL:
            raise ValueError(f"hour_drift + camera_drift must be at most 1 (shares of one variance), got "
                             f"{self.hour_drift} + {self.camera_drift}")
        if self.sigma == 0 and (self.hour_drift or self.camera_drift):
            raise ValueError("hour_drift and camera_drift need sigma > 0 (uniform popularity cannot drift)")
        return self

    @property
    def on(self) -> bool:
        return self.sigma > 0


class SameGroup(_Model):
    """Per-person same-group rate (fast mode). Each person's rate p_i = kappa + (1 - kappa) r_i with
    r_i ~ Beta(r concentration, (1 - r) concentration), kappa the chance that two unrelated captures
    share a group and r = (p - kappa) / (1 - kappa) for the parameter set's rate p: the population mean
    of p_i is p, which is what a calibration on separate people (one pair of captures per person)
    measures. ``concentration`` null: every person has rate p (the original simulator)."""

    concentration: float | None = Field(default=None, gt=0.0, le=1e6,
                                        description="Beta concentration; smaller = more heterogeneous people")

    @property
    def on(self) -> bool:
        return self.concentration is not None


class LongTransits(Transit):
    """A ``share`` of route transits (each step of a walk independently) takes this log-normal time
    instead of the route's own, typically beyond the lag range."""

    share: float = Field(ge=0.0, le=1.0, description="probability that a route transit is long")
    median_seconds: float = Field(default=3600.0, gt=0)
    sigma: float = Field(default=0.5, ge=0, le=5)
    min_seconds: float = Field(default=0.0, ge=0)
    max_seconds: float = Field(default=4 * 3600.0, gt=0)


class Detection(_Model):
    """Missed detections: every pass of every camera is captured with ``capture_probability``
    (independently per pass), on top of the camera's own ``capture_probability``."""

    capture_probability: float = Field(default=1.0, gt=0.0, le=1.0)


class Staff(_Model):
    """``count`` staff of ``site``, present every simulated day (the same persons all period). Each
    works at ``cameras_per_person`` cameras drawn from ``cameras`` (default: all of the site's) and
    passes them ``passes_per_day`` times a day on average (Poisson), at uniform times over the
    opening hours, each pass at one of their cameras chosen uniformly. Staff passes are not
    route walks: ``max_visits_per_person`` does not cap them."""

    site: str
    count: int = Field(ge=0, le=10_000)
    passes_per_day: float = Field(gt=0.0, le=10_000.0)
    cameras: list[str] | None = Field(default=None, min_length=1)
    cameras_per_person: int = Field(default=2, ge=1, le=1000)


class Onward(Transit):
    """When a visitor's walk ends (they leave), with probability ``share`` they go on to another site:
    they reappear after this log-normal transit at an entry camera of another site (sites and
    entries in proportion to their arrivals) and walk there. At most once per person, and only
    if the other site is open when they arrive."""

    share: float = Field(ge=0.0, le=1.0, description="probability that a leaving visitor goes on")
    median_seconds: float = Field(default=2400.0, gt=0)
    sigma: float = Field(default=0.4, ge=0, le=5)
    min_seconds: float = Field(default=600.0, ge=0)
    max_seconds: float = Field(default=7200.0, gt=0)


class Closing(_Model):
    """Closing time ends walks: a pass that would fall after its site's closing time does not
    happen (the walk ends), except for stragglers, a share of visitors who keep walking for up to
    ``straggle_seconds`` after closing. Without this section walks ignore closing time."""

    stragglers: float = Field(default=0.1, ge=0.0, le=1.0, description="share of visitors who straggle")
    straggle_seconds: float = Field(default=1200.0, gt=0.0, le=6 * 3600.0)


class Realism(_Model):
    """Departures from the simulator's original world (issue 12); each off by default."""

    popularity: Popularity = Popularity()
    same_group: SameGroup = SameGroup()
    long_transits: LongTransits | None = None
    detection: Detection = Detection()
    staff: list[Staff] = Field(default_factory=list)
    onward: Onward | None = None
    closing: Closing | None = None

    @property
    def groups_on(self) -> bool:
        """Whether the fast group model departs from uniform groups and one rate for all."""
        return self.popularity.on or self.same_group.on

    def knobs_on(self) -> list[str]:
        """Names of the knobs that are on (for notes and reports)."""
        on = [k for k, v in (("popularity", self.popularity.on), ("same_group", self.same_group.on),
                             ("long_transits", bool(self.long_transits and self.long_transits.share > 0)),
                             ("detection", self.detection.capture_probability < 1.0),
                             ("staff", any(s.count for s in self.staff)),
                             ("onward", bool(self.onward and self.onward.share > 0)),
                             ("closing", self.closing is not None)) if v]
        return on


class Scenario(_Model):
    name: str = Field(default="scenario", max_length=64)
    description: str = ""
    start: dt.date = Field(description="first simulated day (UTC); the simulation starts at its midnight")
    days: int = Field(default=1, ge=1, le=366)
    window_seconds: int = Field(default=60, ge=1, le=3600)
    # Demographic counts are emitted per this longer window, as the processor does
    # (processor.demographics_window_seconds); the aggregator's demographics stage sums them per
    # camera-hour and publishes the hour's cells with noise, so the window must divide an hour.
    demographics_window_seconds: int = Field(default=900, ge=1, le=86400)
    seed: int = Field(default=0, ge=0)
    group_mode: Literal["fast", "core"] = "fast"
    max_lag_windows: int = Field(default=30, ge=0, le=10_000,
                                 description="ground-truth pair counts cover lags 0..max_lag_windows windows")
    max_visits_per_person: int = Field(default=20, ge=1, le=1000,
                                       description="route walks stop after this many camera passes")
    sites: list[Site] = Field(min_length=1)
    entries: list[Entry] = Field(min_length=1)
    routes: list[Route] = Field(default_factory=list)
    default_transit: Transit = Transit(median_seconds=180.0, sigma=0.5, min_seconds=10.0, max_seconds=1800.0)
    demographics: Demographics = Demographics()
    realism: Realism = Realism()

    @field_validator("window_seconds")
    @classmethod
    def _window(cls, v: int) -> int:
        if DAY % v:
            raise ValueError(f"window_seconds must divide a day (86400 s) so windows align across days; {v} does not")
        return v

    @model_validator(mode="after")
    def _references(self) -> "Scenario":
        problems: list[str] = []
        seen_sites: set[str] = set()
        cams: dict[str, Site] = {}
        for s in self.sites:
            if s.site_id in seen_sites:
                problems.append(f"site {s.site_id!r} is defined twice")
            seen_sites.add(s.site_id)
            for c in s.cameras:
                if c.camera_id in cams:
                    problems.append(f"camera {c.camera_id!r} is defined twice (camera ids must be unique across sites)")
                cams[c.camera_id] = s
        known = ", ".join(sorted(cams))
        seen_entries: set[str] = set()
        for i, e in enumerate(self.entries):
            if e.camera not in cams:
                problems.append(f"entries[{i}]: unknown camera {e.camera!r} (known: {known})")
                continue
            if e.camera in seen_entries:
                problems.append(f"entries[{i}]: camera {e.camera!r} has two entries")
            seen_entries.add(e.camera)
            if e.hourly_profile:
                oh = cams[e.camera].opening_hours
                outside = [h for h, w in e.hourly_profile.items()
                           if w > 0 and ((h + 1) * 3600 <= oh.open or h * 3600 >= oh.close)]
                if outside:
                    problems.append(f"entries[{i}] ({e.camera}): hourly_profile gives weight to hour(s) "
                                    f"{sorted(outside)} outside the site's opening hours")
                elif _profile_mass(e.hourly_profile, oh) <= 0:
                    problems.append(f"entries[{i}] ({e.camera}): hourly_profile has no weight inside opening hours")
        out_sum: dict[str, float] = {}
        pairs: set[tuple[str, str]] = set()
        for i, r in enumerate(self.routes):
            where = f"routes[{i}] ({r.source} -> {r.target})"
            for end in (r.source, r.target):
                if end not in cams:
                    problems.append(f"{where}: unknown camera {end!r} (known: {known})")
            if r.source == r.target:
                problems.append(f"{where}: a route must go to another camera")
            if (r.source, r.target) in pairs:
                problems.append(f"{where}: route defined twice")
            pairs.add((r.source, r.target))
            out_sum[r.source] = out_sum.get(r.source, 0.0) + r.probability
        for c, s in sorted(out_sum.items()):
            if s > 1.0 + _TOL:
                listed = ", ".join(f"{r.target} {r.probability:g}" for r in self.routes if r.source == c)
                problems.append(f"routes from {c!r} have probabilities summing to {s:.4f} > 1 ({listed}); "
                                "the probability left over is 'leave', so the sum must be at most 1")
        problems += self._realism_problems(cams, known)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _realism_problems(self, cams: dict[str, Site], known: str) -> list[str]:
        problems: list[str] = []
        sites = {s.site_id: s for s in self.sites}
        for i, st in enumerate(self.realism.staff):
            where = f"realism.staff[{i}]"
            if st.site not in sites:
                problems.append(f"{where}: unknown site {st.site!r} (known: {', '.join(sorted(sites))})")
                continue
            own = [c.camera_id for c in sites[st.site].cameras]
            chosen = st.cameras if st.cameras is not None else own
            bad = [c for c in chosen if cams.get(c) is None or cams[c].site_id != st.site]
            if bad:
                problems.append(f"{where}: camera(s) {bad} are not cameras of site {st.site!r} (its cameras: "
                                f"{', '.join(own)})")
            elif len(set(chosen)) != len(chosen):
                problems.append(f"{where}: a camera is listed twice")
            elif st.cameras_per_person > len(chosen):
                problems.append(f"{where}: cameras_per_person {st.cameras_per_person} is more than the "
                                f"{len(chosen)} camera(s) staff can work at")
        on = self.realism.onward
        if on is not None and on.share > 0:
            entry_sites = {cams[e.camera].site_id for e in self.entries if e.camera in cams and e.arrivals_per_day > 0}
            if len(entry_sites) < 2:
                problems.append("realism.onward: going on to another site needs entries with arrivals at two or "
                                f"more sites; entries are at {sorted(entry_sites) or 'none'}")
        return problems

    # ---- derived views used by the simulator ----------------------------------------------

    @property
    def camera_ids(self) -> tuple[str, ...]:
        return tuple(c.camera_id for s in self.sites for c in s.cameras)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(s.site_id for s in self.sites)

    @property
    def camera_site(self) -> np.ndarray:
        """Site index of every camera (in :attr:`camera_ids` order)."""
        return np.array([i for i, s in enumerate(self.sites) for _ in s.cameras], dtype=np.int64)

    @property
    def capture_probabilities(self) -> np.ndarray:
        return np.array([c.capture_probability for s in self.sites for c in s.cameras])

    def camera_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.camera_ids)}

    @property
    def start_datetime(self) -> dt.datetime:
        return dt.datetime(self.start.year, self.start.month, self.start.day, tzinfo=dt.timezone.utc)

    @property
    def start_epoch(self) -> int:
        return int(self.start_datetime.timestamp())

    def transition_matrix(self) -> np.ndarray:
        """(C, C) route probabilities; 1 - row sum is the probability to leave."""
        idx = self.camera_index()
        p = np.zeros((len(idx), len(idx)))
        for r in self.routes:
            p[idx[r.source], idx[r.target]] = r.probability
        return p

    def transit_table(self) -> dict[str, np.ndarray]:
        """(C, C) arrays median_seconds, sigma, min_seconds, max_seconds (default transit where no route)."""
        idx = self.camera_index()
        n = len(idx)
        d = self.default_transit
        out = {k: np.full((n, n), getattr(d, k), dtype=float)
               for k in ("median_seconds", "sigma", "min_seconds", "max_seconds")}
        for r in self.routes:
            t = r.transit or d
            for k in out:
                out[k][idx[r.source], idx[r.target]] = getattr(t, k)
        return out

    def expected_visits_per_day(self) -> np.ndarray:
        """Expected camera passes per camera per day of visitors' walks (ignores the
        max_visits_per_person cap and the realism knobs: staff, onward visits, closing)."""
        idx = self.camera_index()
        e = np.zeros(len(idx))
        for en in self.entries:
            e[idx[en.camera]] += en.arrivals_per_day
        p = self.transition_matrix()
        return np.linalg.solve((np.eye(len(idx)) - p).T, e)

    def expected_captures_per_day(self) -> np.ndarray:
        return self.expected_visits_per_day() * self.capture_probabilities

    def site_of(self, camera_id: str) -> Site:
        for s in self.sites:
            if any(c.camera_id == camera_id for c in s.cameras):
                return s
        raise KeyError(camera_id)

    def with_overrides(self, *, days: int | None = None, group_mode: str | None = None,
                       seed: int | None = None) -> "Scenario":
        """A validated copy with some run settings replaced (CLI flags)."""
        data = self.model_dump(by_alias=True)
        if days is not None:
            data["days"] = days
        if group_mode is not None:
            data["group_mode"] = group_mode
        if seed is not None:
            data["seed"] = seed
        return parse_scenario(data, source=self.name)


def _profile_mass(profile: dict[int, float], oh: OpeningHours) -> float:
    return sum(w * max(0, min((h + 1) * 3600, oh.close) - max(h * 3600, oh.open)) for h, w in profile.items())


def arrival_segments(entry: Entry, oh: OpeningHours) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start_s, end_s, probability) of the pieces of a day over which the entry's arrivals are uniform."""
    if not entry.hourly_profile:
        return np.array([oh.open], float), np.array([oh.close], float), np.array([1.0])
    starts, ends, mass = [], [], []
    for h, w in sorted(entry.hourly_profile.items()):
        a, b = max(h * 3600, oh.open), min((h + 1) * 3600, oh.close)
        if b > a and w > 0:
            starts.append(a)
            ends.append(b)
            mass.append(w * (b - a))
    m = np.array(mass, float)
    return np.array(starts, float), np.array(ends, float), m / m.sum()


def _format_errors(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed; check the spelling)"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate a scenario from a mapping (e.g. parsed YAML); raises :class:`ScenarioError`."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: top level must be a mapping")
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(f"{source}: invalid scenario:\n{_format_errors(e)}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML file. A bare name (``reference``, ``small``) means a shipped scenario."""
    p = Path(path)
    if not p.exists() and not p.suffix and (SCENARIO_DIR / f"{p}.yaml").exists():
        p = SCENARIO_DIR / f"{p}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read scenario: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"{p}: not valid YAML: {e}") from None
    return parse_scenario(data, source=str(p))
