"""The attacked world: simulated truth, restricted cells, and the published tiers built from them.

A :class:`World` holds everything the attacks of :mod:`pipeline.redteam.attacks` need, as plain
arrays and the published row types, so a test can build a tiny one by hand:

* ``captures`` (:class:`CaptureTable`): the truth, one row per capture with its person, camera,
  time, group and demographic labels. No attacker ever reads it; attacks use it only to score
  their guesses (and to pick targets, which stands for "the analyst saw the target").
* ``cells`` (:class:`Cells`): the restricted tier, per (camera, window, group) occurrences, real
  and fictitious, exactly what the processor sends to ``flow.group-occurrences``.
* ``tiers``: what analysts read, produced from ``cells`` and the per-window demographic counts by
  the project's own cores (:func:`pipeline.aggregator.batch.aggregate_cells` and
  :func:`pipeline.aggregator.counts.publish_hourly_counts`): ``analyst`` with the deployment's
  keyed noise, ``unprotected`` the same rows with every noise scale at 0 (what the published shape
  alone would give away, for comparison).

:func:`simulated_world` builds one from the project's simulator. By default it pads every
window of every camera over the whole run with fictitious persons, as the processor does for a
camera that streams (the simulator pads only opening hours and windows with a capture, which
would make "a cell exists after closing" mean "someone passed"; ``padding="simulator"`` keeps
the simulator's cells as they are, to see that).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from pipeline.aggregator.batch import aggregate_cells
from pipeline.aggregator.counts import CountCell, CountComponent, CountsSpec, demographic_grid, publish_hourly_counts
from pipeline.aggregator.model import AggregatorSpec, FlowComponent, FootfallComponent, OccurrenceCell
from pipeline.privacy import PrivacyParams, pad_with_fictitious
from pipeline.simulator.truth import OBS_BANDS, OBS_GENDERS

__all__ = ["ANALYST", "UNPROTECTED", "RESTRICTED", "HOUR", "CaptureTable", "Cells", "Tier", "World",
           "build_tiers", "demographic_cells", "publish_demographics", "simulated_world", "noise_key_for",
           "demographics_spec", "OBS_BANDS", "OBS_GENDERS"]

HOUR = 3600
DAY = 86400
ANALYST, UNPROTECTED, RESTRICTED = "analyst", "unprotected", "restricted"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CaptureTable:
    """The truth: one row per capture, sorted by (person, time). ``camera`` indexes
    ``World.cameras``; ``time`` is seconds since the world's start midnight; ``band``/``gender``
    are the observed labels (indices into OBS_BANDS / OBS_GENDERS, "unknown" when the face was
    unusable); ``true_band``/``true_gender`` the person's own."""

    person: np.ndarray
    camera: np.ndarray
    time: np.ndarray
    group: np.ndarray
    band: np.ndarray
    gender: np.ndarray
    true_band: np.ndarray
    true_gender: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.person)
        for k in ("camera", "time", "group", "band", "gender", "true_band", "true_gender"):
            if len(getattr(self, k)) != n:
                raise ValueError(f"captures.{k} has {len(getattr(self, k))} rows, person has {n}")
        if n > 1:
            order = np.lexsort((self.time, self.person))
            if not np.array_equal(order, np.arange(n)):
                raise ValueError("captures must be sorted by (person, time)")

    def __len__(self) -> int:
        return int(len(self.person))

    def window(self, window_seconds: int) -> np.ndarray:
        return np.floor(self.time / window_seconds).astype(np.int64)

    def hour(self) -> np.ndarray:
        return np.floor(self.time / HOUR).astype(np.int64)

    @classmethod
    def simple(cls, person, camera, time, group=None, band=None, gender=None) -> "CaptureTable":
        """For hand-made worlds: labels default to the person's own, groups to 0."""
        person = np.asarray(person, dtype=np.int64)
        n = len(person)
        o = np.lexsort((np.asarray(time, float), person))
        z = np.zeros(n, dtype=np.int64)

        def arr(x, default):
            return (default if x is None else np.asarray(x, dtype=np.int64))[o]

        band_a, gender_a = arr(band, z), arr(gender, z)
        return cls(person[o], np.asarray(camera, dtype=np.int64)[o], np.asarray(time, float)[o], arr(group, z),
                   band_a, gender_a, band_a, gender_a)


@dataclass(frozen=True)
class Cells:
    """The restricted tier: occurrences (real + fictitious) per (camera, window, group)."""

    camera: np.ndarray
    window: np.ndarray
    group: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return int(len(self.camera))

    def lookup(self) -> dict[tuple[int, int], dict[int, int]]:
        """(camera, window) -> {group: count}."""
        out: dict[tuple[int, int], dict[int, int]] = {}
        for c, w, g, n in zip(self.camera.tolist(), self.window.tolist(), self.group.tolist(), self.count.tolist()):
            d = out.setdefault((c, w), {})
            d[g] = d.get(g, 0) + n
        return out


@dataclass
class Tier:
    """One set of analyst-readable rows and the noise scales they were made with."""

    name: str
    flow: list[FlowComponent]
    footfall: list[FootfallComponent]
    demographics: list[CountComponent]
    flow_scale: float = 0.0
    total_scale: float = 0.0
    footfall_scale: float = 0.0
    demographics_scale: float = 0.0


@dataclass
class World:
    cameras: tuple[tuple[str, str], ...]      # (site_id, camera_id), index = camera code
    params_version: str
    start_epoch: int                          # the start midnight, epoch seconds (UTC)
    window_seconds: int
    spec: AggregatorSpec
    same_group_rate: float                    # p: a re-capture lands in the same group
    n_groups: int
    open_hours: np.ndarray                    # (C, 24) bool: the camera's site is open in that clock hour
    captures: CaptureTable
    cells: Cells
    tiers: dict[str, Tier] = field(default_factory=dict)
    unknown_face_rate: float = 0.0
    label: str = ""

    @property
    def n_cameras(self) -> int:
        return len(self.cameras)

    def camera_code(self, site_id: str, camera_id: str) -> int:
        idx = self.__dict__.get("_cam_idx")
        if idx is None:
            idx = self.__dict__["_cam_idx"] = {c: i for i, c in enumerate(self.cameras)}
        return idx[(site_id, camera_id)]

    def hour_index(self, hour_ms: int) -> int:
        """Hours since the start midnight of a published row's hour."""
        return (hour_ms // 1000 - self.start_epoch) // HOUR

    def cam_key(self, code: int) -> tuple[str, str, str]:
        site, cam = self.cameras[code]
        return (self.params_version, site, cam)


# ---- publishing -------------------------------------------------------------------------------------

def demographics_spec(epsilon: float = 1.0, per_person_day: int = 8, window_seconds: int = 60) -> CountsSpec:
    """The published demographics: every (band, gender) cell of every camera-hour, keyed discrete
    Laplace of scale per_person_day / epsilon (pipeline/aggregator/counts.py)."""
    return CountsSpec("demographics", window_seconds=window_seconds, epsilon=epsilon, per_person_day=per_person_day,
                      grid=demographic_grid())


def demographic_cells(world: World, window_seconds: int = 60) -> list[CountCell]:
    """The processor's per-window (age band, gender) counts (restricted input of the counts core),
    from the captures' observed labels."""
    c = world.captures
    if not len(c):
        return []
    NB, NG = len(OBS_BANDS), len(OBS_GENDERS)
    win = c.window(window_seconds)
    key = ((c.camera.astype(np.int64) * (int(win.max()) + 1) + win) * NB + c.band) * NG + c.gender
    uk, n = np.unique(key, return_counts=True)
    W = int(win.max()) + 1
    out = []
    for k, cnt in zip(uk.tolist(), n.tolist()):
        cw, g = divmod(k, NG)
        cw, b = divmod(cw, NB)
        cam, w = divmod(cw, W)
        site, camera = world.cameras[cam]
        out.append(CountCell(world.params_version, site, camera, (world.start_epoch + w * window_seconds) * 1000,
                             window_seconds, (OBS_BANDS[b], OBS_GENDERS[g]), int(cnt)))
    return out


def publish_demographics(cells: Iterable[CountCell], spec: CountsSpec, noise_key: bytes | None) -> list[CountComponent]:
    """The published demographic counts: the project's counts core (noise_key None: exact, the
    restricted/unprotected comparison). The one line to change if the publishing function moves."""
    return publish_hourly_counts(cells, spec, noise_key=noise_key, exact=noise_key is None)


def _occurrence_cells(world: World) -> list[OccurrenceCell]:
    cl = world.cells
    ws = world.window_seconds
    out = []
    for c, w, g, n in zip(cl.camera.tolist(), cl.window.tolist(), cl.group.tolist(), cl.count.tolist()):
        site, cam = world.cameras[c]
        out.append(OccurrenceCell(world.params_version, site, cam, (world.start_epoch + w * ws) * 1000, ws, g, n))
    return out


def build_tiers(world: World, noise_key: bytes, demo_spec: CountsSpec | None = None,
                progress: Progress | None = None) -> World:
    """Fill ``world.tiers`` with the analyst tier (the spec's noise, keyed by ``noise_key``) and
    the unprotected tier (every scale 0), both made by the project's own cores."""
    demo_spec = demo_spec or demographics_spec(window_seconds=world.window_seconds)
    spec = world.spec
    occ = _occurrence_cells(world)
    dem = demographic_cells(world, demo_spec.window_seconds)
    if progress:
        progress("aggregate (noised)")
    flow, foot = aggregate_cells(occ, spec, noise_key=noise_key)
    demo = publish_demographics(dem, demo_spec, noise_key)
    world.tiers[ANALYST] = Tier(ANALYST, flow, foot, demo, spec.flow_noise_scale, spec.total_noise_scale,
                                spec.footfall_noise_scale, demo_spec.noise_scale)
    if progress:
        progress("aggregate (no noise)")
    bare = replace(spec, flow_noise_scale=0.0, total_noise_scale=0.0, footfall_noise_scale=0.0)
    flow0, foot0 = aggregate_cells(occ, bare)
    demo0 = publish_demographics(dem, demo_spec, None)
    world.tiers[UNPROTECTED] = Tier(UNPROTECTED, flow0, foot0, demo0)
    return world


def noise_key_for(seed: int) -> bytes:
    """A release key for a simulated run. The attacks never read it; deriving it from the seed
    only makes a run reproducible."""
    return hashlib.sha256(f"flowpipe-redteam-release-key|{seed}".encode()).digest()


# ---- from the simulator ---------------------------------------------------------------------------------

def simulated_world(scenario: str, days: int, seed: int, spec: AggregatorSpec, *, padding: str = "stream",
                    demo_spec: CountsSpec | None = None, noise_key: bytes | None = None,
                    params: PrivacyParams | None = None, progress: Progress | None = None) -> World:
    """One simulated run of ``scenario`` and everything published from it.

    ``padding``: "stream" (default) adds fictitious persons to every window of every camera over
    the whole run, as the processor does for a camera that streams; "simulator" keeps the
    simulator's cells (opening hours and capture windows only)."""
    from pipeline.simulator import load_scenario, simulate
    from pipeline.simulator.publish import published_windows

    if padding not in ("stream", "simulator"):
        raise ValueError("padding must be 'stream' or 'simulator'")
    sc = load_scenario(scenario).with_overrides(days=days, group_mode="fast")
    if sc.window_seconds != spec.window_seconds:
        raise ValueError(f"scenario windows are {sc.window_seconds} s, the aggregator's {spec.window_seconds} s")
    params = params or PrivacyParams.profile("flow").with_changes(version=f"redteam-{seed}")
    if progress:
        progress(f"simulate {scenario}, {days} day(s), seed {seed}")
    rng = np.random.default_rng(seed)
    sim = simulate(sc, params, rng, days=days, mode="fast", keep_captures=True)
    pub, cap = sim.published, sim.captures
    assert cap is not None and sim.groups is not None
    cam, win, grp, cnt = (pub.occ_camera.astype(np.int64), pub.occ_window.astype(np.int64),
                          pub.occ_group.astype(np.int64), pub.occ_count.astype(np.int64))
    if padding == "stream":
        ws = sc.window_seconds
        last = max(sc.days * DAY // ws, int(cap.window(ws).max()) + 1 if len(cap) else 0)
        pad_rng = np.random.default_rng([seed, 7])
        extra = ([], [], [], [])
        for ci, have in enumerate(published_windows(sc, cap)):
            for w in np.setdiff1d(np.arange(last), have).tolist():
                for g, n in pad_with_fictitious({}, sim.params, pad_rng).items():
                    for lst, v in zip(extra, (ci, w, g, n)):
                        lst.append(v)
        if extra[0]:
            cam, win, grp, cnt = (np.concatenate([a, np.asarray(b, dtype=np.int64)])
                                  for a, b in zip((cam, win, grp, cnt), extra))
    open_hours = np.zeros((len(sc.camera_ids), 24), dtype=bool)
    for ci, cid in enumerate(sc.camera_ids):
        oh = sc.site_of(cid).opening_hours
        for h in range(24):
            open_hours[ci, h] = oh.open < (h + 1) * HOUR and h * HOUR < oh.close
    captures = CaptureTable(person=cap.person.astype(np.int64), camera=cap.camera.astype(np.int64),
                            time=cap.time.astype(float), group=sim.groups.astype(np.int64),
                            band=cap.band.astype(np.int64), gender=cap.gender.astype(np.int64),
                            true_band=cap.true_band.astype(np.int64), true_gender=cap.true_gender.astype(np.int64))
    world = World(cameras=tuple((sc.site_ids[sc.camera_site[i]], c) for i, c in enumerate(sc.camera_ids)),
                  params_version=sim.params.version, start_epoch=sc.start_epoch, window_seconds=sc.window_seconds,
                  spec=spec, same_group_rate=float(sim.params.same_group_rate), n_groups=sim.params.n_groups,
                  open_hours=open_hours, captures=captures, cells=Cells(cam, win, grp, cnt),
                  unknown_face_rate=float(sc.demographics.unknown_face_rate),
                  label=f"{scenario} seed {seed}, {days} day(s), padding {padding}")
    return build_tiers(world, noise_key if noise_key is not None else noise_key_for(seed), demo_spec, progress)


def hour_types(world: World, tier: str = ANALYST) -> dict[int, str]:
    """Clock hour (0-23) -> "busy" / "quiet" / "after-close", as an analyst would split them: open
    hours whose published footfall (summed over cameras and days) is at least the median of the
    open hours are busy. A clock hour is open when any camera's site is open in it."""
    open_any = world.open_hours.any(axis=0)
    hourly = np.zeros(24)
    for r in world.tiers[tier].footfall:
        hourly[world.hour_index(r.hour_ms) % 24] += r.occurrences
    open_h = [h for h in range(24) if open_any[h]]
    med = float(np.median(hourly[open_h])) if open_h else 0.0
    return {h: ("after-close" if not open_any[h] else "busy" if hourly[h] >= med else "quiet") for h in range(24)}


def real_persons_per_camera_hour(world: World) -> dict[tuple[int, int], int]:
    """(camera, hour index) -> distinct real persons captured there."""
    c = world.captures
    if not len(c):
        return {}
    h = c.hour()
    k = np.unique(np.stack([c.camera, h, c.person], axis=1), axis=0)
    ch, n = np.unique(k[:, :2], axis=0, return_counts=True)
    return {(int(a), int(b)): int(m) for (a, b), m in zip(ch, n)}


def movers(world: World, max_lag: int) -> tuple[np.ndarray, ...]:
    """(index, A, window, B, lag) for every capture followed by the same person's next capture at
    another camera within ``max_lag`` windows."""
    c = world.captures
    w = c.window(world.window_seconds)
    if len(c) < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e, e, e
    same = c.person[1:] == c.person[:-1]
    lag = w[1:] - w[:-1]
    ok = same & (c.camera[1:] != c.camera[:-1]) & (lag >= 0) & (lag <= max_lag)
    idx = np.nonzero(ok)[0]
    return idx, c.camera[idx], w[idx], c.camera[idx + 1], lag[idx]


def dp_gain_bound(prior: float, epsilon: float) -> float:
    """The largest posterior-minus-prior an epsilon-DP release allows on a binary hypothesis."""
    if not math.isfinite(epsilon):
        return 1.0 - prior
    e = math.exp(epsilon)
    return prior * e / (prior * e + 1 - prior) - prior
