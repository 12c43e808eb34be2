"""The streaming flow aggregator: restricted per-(camera, window, group) occurrences in,
published flow and footfall components out (docs/AGGREGATOR.md).

Two pure stages, so that the faust app only wires topics to them:

* :class:`GroupPartitionAggregator` (``components.py``): one per partition of the occurrences
  topic, which is keyed by group id. Keeps each group's recent window counts per camera (a ring
  over the longest lag, within the 2 h bound), forms the co-occurrence sums of its groups, and
  sends additive per-window shares of the totals.
* :class:`Combiner` (``combiner.py``): adds the partitions' shares, forms the window-total
  products behind chance and the standard error, and emits one published row per component and
  hour, deterministically, so a replayed hour replaces its rows.
"""
from pipeline.aggregator.combiner import Combiner
from pipeline.aggregator.components import GroupPartitionAggregator
from pipeline.aggregator.model import (AggregatorSpec, ComponentOverflow, FlowComponent, FootfallComponent,
                                       OccurrenceCell, Partial, SpecError)

__all__ = ["AggregatorSpec", "Combiner", "ComponentOverflow", "FlowComponent", "FootfallComponent",
           "GroupPartitionAggregator", "OccurrenceCell", "Partial", "SpecError"]
