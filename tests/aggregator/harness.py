"""Test helpers: run cells through partitions and the combiner, and a brute-force reference.

The reference computes every published component straight from its definition over a dense
(camera, window, group) array, independently of the streaming cores' ring buffers, sliding sums
and completeness logic, so agreement checks the bookkeeping, not just the algebra.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from pipeline.aggregator import AggregatorSpec, Combiner, GroupPartitionAggregator, OccurrenceCell
from pipeline.aggregator.model import FAR, HOUR_MS, LAG, RANGE, SITE_CAMERA, FlowComponent, FootfallComponent, Partial


def partition_of(group_id: int, partitions: int) -> int:
    return group_id % partitions


def run_partitions(cells: Iterable[OccurrenceCell], spec: AggregatorSpec, partitions: int) -> list[list[Partial]]:
    """Each partition's output, in its own order; every core flushed at the end."""
    cores = [GroupPartitionAggregator(spec, p, partitions) for p in range(partitions)]
    outs: list[list[Partial]] = [[] for _ in range(partitions)]
    last = None
    for c in cells:
        p = partition_of(c.group_id, partitions)
        outs[p] += cores[p].add(c)
        last = c.window_start_ms if last is None else max(last, c.window_start_ms)
    for p, core in enumerate(cores):
        outs[p] += core.flush(last)
    return outs


def interleave(streams: Sequence[list[Partial]], seed: int | None) -> list[Partial]:
    """A random merge that keeps each partition's order (what one combiner topic partition sees)."""
    if seed is None:
        return [p for s in streams for p in s]
    rng = random.Random(seed)
    idx = [0] * len(streams)
    out = []
    live = [i for i, s in enumerate(streams) if s]
    while live:
        i = rng.choice(live)
        out.append(streams[i][idx[i]])
        idx[i] += 1
        if idx[i] == len(streams[i]):
            live.remove(i)
    return out


def run_pipeline(cells: Iterable[OccurrenceCell], spec: AggregatorSpec, partitions: int = 4,
                 seed: int | None = 0) -> tuple[list[FlowComponent], list[FootfallComponent]]:
    partials = interleave(run_partitions(cells, spec, partitions), seed)
    comb = Combiner(spec, partitions)
    rows = comb.add_many(partials) + comb.flush()
    return ([r for r in rows if isinstance(r, FlowComponent)], [r for r in rows if isinstance(r, FootfallComponent)])


def processor_order(cells: Sequence[OccurrenceCell]) -> list[OccurrenceCell]:
    """Cells in the order processors emit them: window by window, cameras interleaved."""
    return sorted(cells, key=lambda c: (c.window_start_ms, c.site_id, c.camera_id, c.group_id))


def brute_force(cells: Sequence[OccurrenceCell], spec: AggregatorSpec) -> tuple[dict, dict]:
    """{row key: (s, nn, qq, qn, nn2)} and {footfall key: (occurrences, windows)} by definition.
    With cross_site "site", each site's pseudo-camera holds the site's occurrences (every cell
    again, camera id empty) and publishes no footfall."""
    if spec.site_pairs:
        cells = list(cells) + [OccurrenceCell(c.params_version, c.site_id, SITE_CAMERA, c.window_start_ms,
                                              c.window_seconds, c.group_id, c.occurrences) for c in cells]
    w = spec.window_ms
    cams = sorted({c.cam for c in cells})
    groups = sorted({c.group_id for c in cells})
    gi = {g: i for i, g in enumerate(groups)}
    ci = {c: i for i, c in enumerate(cams)}
    t_min = min(c.window_start_ms for c in cells)
    t_max = max(c.window_start_ms for c in cells)
    pad = spec.horizon + 1
    n_t = (t_max - t_min) // w + 1 + 2 * pad
    X = np.zeros((len(cams), n_t, len(groups)), dtype=object)
    X[...] = 0
    for c in cells:
        X[ci[c.cam], (c.window_start_ms - t_min) // w + pad, gi[c.group_id]] += c.occurrences
    N = X.sum(axis=2)
    Q = (X * X).sum(axis=2)
    times = [t_min + (i - pad) * w for i in range(n_t)]
    rows: dict = {}
    foot: dict = defaultdict(lambda: [0, 0])
    for a in cams:
        for i, t in enumerate(times):
            if N[ci[a], i] and a[2] != SITE_CAMERA:
                f = foot[(a[0], spec.window_seconds, a[1], a[2], spec.hour_of(t))]
                f[0] += int(N[ci[a], i])
                f[1] += 1
    for a in cams:
        for b in cams:
            if not spec.allows(a, b):
                continue
            A, B = X[ci[a]], X[ci[b]]
            for i in range(pad, n_t - pad):
                if not N[ci[a], i]:
                    continue
                h = spec.hour_of(times[i])
                base = (a[0], spec.window_seconds, a[1], a[2], b[1], b[2], h)

                def add(kind, lo, hi, terms):
                    k = base + (kind, lo, hi)
                    cur = rows.get(k, (0, 0, 0, 0, 0))
                    rows[k] = tuple(x + y for x, y in zip(cur, terms))

                na, qa = N[ci[a], i], Q[ci[a], i]
                for d in range(spec.max_lag + 1):
                    nb, qb = N[ci[b], i + d], Q[ci[b], i + d]
                    add(LAG, d, d, (int((A[i] * B[i + d]).sum()), na * nb, qa * qb, qa * nb * nb + na * na * qb,
                                    (na * nb) ** 2))
                for lo, hi in spec.ranges:
                    bstar = B[i + lo:i + hi + 1].sum(axis=0)
                    nb, qb = bstar.sum(), (bstar * bstar).sum()
                    add(RANGE, lo, hi, (int((A[i] * bstar).sum()), na * nb, qa * qb, qa * nb * nb + na * na * qb,
                                        (na * nb) ** 2))
                for lo, hi in spec.far_bands:
                    s_far = nn_far = 0
                    for d in list(range(lo, hi + 1)) + list(range(-hi, -lo + 1)):
                        s_far += int((A[i] * B[i + d]).sum())
                        nn_far += na * N[ci[b], i + d]
                    add(FAR, lo, hi, (s_far, nn_far, 0, 0, 0))
    rows = {k: tuple(int(x) for x in v) for k, v in rows.items()}
    return rows, {k: tuple(v) for k, v in foot.items()}


def as_dicts(flow: Sequence[FlowComponent], foot: Sequence[FootfallComponent]) -> tuple[dict, dict]:
    f = {}
    for r in flow:
        assert r.key not in f, f"duplicate row {r.key}"
        f[r.key] = (r.s, r.nn, r.qq, r.qn, r.nn2)
    ff = {}
    for r in foot:
        assert r.key not in ff
        ff[r.key] = (r.occurrences, r.windows)
    return f, ff


def same_components(got: dict, want: dict) -> list[str]:
    """Differences, ignoring rows that are all zero on one side and absent on the other."""
    diffs = []
    for k in sorted(set(got) | set(want), key=str):
        g, e = got.get(k), want.get(k)
        if g is None and e is not None and not any(e):
            continue
        if e is None and g is not None and not any(g):
            continue
        if g != e:
            diffs.append(f"{k}: got {g} want {e}")
    return diffs


def random_cells(rng: np.random.Generator, *, cams: Sequence[tuple[str, str]] = (("s1", "a"), ("s1", "b"), ("s2", "c")),
                 groups: int = 12, windows: int = 150, start_ms: int = 1_793_577_600_000 + 9 * HOUR_MS,
                 window_seconds: int = 60, density: float = 0.15, version: str = "v1") -> list[OccurrenceCell]:
    out = []
    for site, cam in cams:
        for i in range(windows):
            for g in range(groups):
                if rng.random() < density:
                    out.append(OccurrenceCell(version, site, cam, start_ms + i * window_seconds * 1000, window_seconds,
                                              g, int(rng.integers(1, 4))))
    return out
