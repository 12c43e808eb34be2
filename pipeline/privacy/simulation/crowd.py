"""A simulated day at one site: visitors walking between cameras, with ground truth.

Why: the privacy figures depend on how many people share a (camera, window)
and on how often the same person is seen again, so the evaluation needs a
crowd whose sizes and paths look like a shopping centre, not a uniform cloud.

Stated assumptions (see :class:`SiteModel`): a site with ``n_entrances``
entrance cameras and ``n_stores`` store cameras; visitors arrive over the
opening hours with a midday peak; each visit passes its entrance camera, 1 to
3 stores, then an entrance camera again; walking times between cameras are
log-normal (median 3 minutes). Each pass of a camera yields exactly one
occurrence: the processor is assumed to track a person within one camera
pass and emit one descriptor per pass (several per pass would weaken the
linkage bound, see docs/PRIVACY.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SiteModel", "Passes"]


@dataclass(frozen=True)
class Passes:
    """One row per camera pass (= one real occurrence)."""

    person: np.ndarray   # (m,) index into the day's People
    camera: np.ndarray   # (m,)
    minute: np.ndarray   # (m,) minutes after opening
    window: np.ndarray   # (m,) window index
    order: np.ndarray    # (m,) position of the pass within the visit (0, 1, ...)

    def __len__(self) -> int:
        return int(self.person.shape[0])


@dataclass
class SiteModel:
    n_entrances: int = 2
    n_stores: int = 4
    open_hours: float = 12.0
    visitors: int = 6000
    window_minutes: float = 15.0
    transit_median_min: float = 3.0
    transit_log_sd: float = 0.6

    @property
    def n_cameras(self) -> int:
        return self.n_entrances + self.n_stores

    @property
    def n_windows(self) -> int:
        return int(np.ceil(self.open_hours * 60 / self.window_minutes)) + 2

    def day(self, rng: np.random.Generator) -> Passes:
        """Simulate all camera passes of ``visitors`` visits."""
        n = self.visitors
        day_min = self.open_hours * 60
        # arrival density: a midday peak (beta-shaped) plus a flat part
        arrive = np.where(rng.random(n) < 0.7, rng.beta(2.5, 2.5, n), rng.random(n)) * day_min * 0.92
        # popularity of stores is unequal
        store_p = rng.dirichlet(np.full(self.n_stores, 2.0))
        rows_person, rows_cam, rows_min, rows_order = [], [], [], []
        n_stores_visited = rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.20])
        entrance_in = rng.integers(0, self.n_entrances, n)
        entrance_out = np.where(rng.random(n) < 0.7, entrance_in, rng.integers(0, self.n_entrances, n))
        for i in range(n):
            stores = rng.choice(self.n_stores, size=n_stores_visited[i], replace=False, p=store_p)
            cams = [entrance_in[i], *(self.n_entrances + stores), entrance_out[i]]
            t = arrive[i]
            for k, c in enumerate(cams):
                rows_person.append(i)
                rows_cam.append(int(c))
                rows_min.append(t)
                # walk to the next camera; in a store, also shop (dwell)
                walk = np.exp(np.log(self.transit_median_min) + self.transit_log_sd * rng.standard_normal())
                dwell = rng.exponential(8.0) if c >= self.n_entrances else 0.0
                t = t + walk + dwell
                rows_order.append(k)
        minute = np.array(rows_min)
        return Passes(person=np.array(rows_person), camera=np.array(rows_cam), minute=minute,
                      window=(minute // self.window_minutes).astype(np.int64), order=np.array(rows_order))
