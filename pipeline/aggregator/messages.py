"""Published components as Kafka messages: a camera's rows from one emission, many to a message.

Why batches: one message per row made the sink spend more CPU in the Kafka client (fetching,
TLS, one Python message object per row) than ClickHouse's driver spends inserting the rows, so
the sink could never approach the driver's bound (docs/SCALING.md §6). The key stays the
camera's, so a camera's rows keep their partition and order; a message holds rows of one key
only, in the order they were emitted. The aggregator and the simulator's publisher both send
through here, so a bench measures the messages the product sends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Union

from pipeline import serde
from pipeline.aggregator.counts import CountComponent
from pipeline.aggregator.model import FlowComponent, FootfallComponent
from pipeline.settings import KafkaSettings

Component = Union[FlowComponent, FootfallComponent, CountComponent]


@dataclass(frozen=True)
class ComponentMessage:
    topic: str
    key: bytes
    value: bytes
    record: str      # the row's Avro record name
    rows: int


def _route(r: Component, k: KafkaSettings) -> tuple[str, str, str]:
    """(record name, topic, key) of a published row."""
    if isinstance(r, FlowComponent):
        return "FlowComponent", k.flow_components_topic, f"{r.origin_site}/{r.origin_camera}"
    if isinstance(r, FootfallComponent):
        return "FootfallComponent", k.footfall_components_topic, f"{r.site_id}/{r.camera_id}"
    if isinstance(r, CountComponent):
        topic = k.demographic_components_topic if r.kind == "demographics" else k.crossing_components_topic
        return "CountComponent", topic, f"{r.site_id}/{r.camera_id}"
    raise TypeError(f"not a published component: {type(r).__name__}")


def component_messages(rows: Iterable[Component], kafka: KafkaSettings, max_rows: int) -> Iterator[ComponentMessage]:
    """``rows`` grouped by topic and key (first appearance first, emission order within a key)
    into messages of at most ``max_rows`` rows."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows}")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault(_route(r, kafka), []).append(r.to_record())
    for (record, topic, key), recs in groups.items():
        kb = key.encode()
        for i in range(0, len(recs), max_rows):
            chunk = recs[i:i + max_rows]
            yield ComponentMessage(topic, kb, serde.encode_batch(record, chunk), record, len(chunk))
