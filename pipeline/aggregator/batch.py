"""Run a bounded sequence of occurrence cells through the aggregator in one process: every
partition's core, then the combiner, as the streaming app would, with the same outputs.

For backfills, benchmarks and tests (no Kafka). Cells are routed to partitions by group id
(``group_id % partitions``; the app's Kafka partitioner differs, which changes nothing: any
assignment of whole groups to partitions gives the same components).
"""
from __future__ import annotations

from typing import Iterable

from pipeline.aggregator.combiner import Combiner
from pipeline.aggregator.components import GroupPartitionAggregator
from pipeline.aggregator.model import AggregatorSpec, FlowComponent, FootfallComponent, OccurrenceCell, Partial


def aggregate_cells(cells: Iterable[OccurrenceCell], spec: AggregatorSpec, partitions: int = 4, *,
                    in_arrival_order: bool = False, noise_key: bytes | None = None) -> tuple[list[FlowComponent], list[FootfallComponent]]:
    """Published rows for ``cells``, every hour closed at the end.

    By default the cells are first put in the order processors emit them (by window), because
    the streaming cores drop a window's records once the clock is past its lateness: a batch in
    camera-major order (like ``Published.occurrence_records()``) would otherwise lose all but
    the first camera. ``in_arrival_order=True`` feeds them as given, late drops included.
    """
    if not in_arrival_order:
        cells = sorted(cells, key=lambda c: (c.window_start_ms, c.params_version, c.site_id, c.camera_id, c.group_id))
    cores = [GroupPartitionAggregator(spec, p, partitions) for p in range(partitions)]
    partials: list[Partial] = []
    last = None
    for c in cells:
        partials += cores[c.group_id % partitions].add(c)
        last = c.window_start_ms if last is None else max(last, c.window_start_ms)
    for core in cores:
        partials += core.flush(last)
    comb = Combiner(spec, partitions, noise_key=noise_key)
    rows = comb.add_many(partials) + comb.flush()
    return ([r for r in rows if isinstance(r, FlowComponent)], [r for r in rows if isinstance(r, FootfallComponent)])
