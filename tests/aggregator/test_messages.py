"""Published components leave the aggregator many rows to a message, one camera per message."""
from __future__ import annotations

import pytest

from pipeline import serde
from pipeline.aggregator.counts import CountComponent
from pipeline.aggregator.messages import component_messages
from pipeline.aggregator.model import FlowComponent, FootfallComponent
from pipeline.settings import load_settings

H = 1_790_002_800_000


def _flow(origin: str, dest: str, s: int) -> FlowComponent:
    return FlowComponent("v", 60, H, "a", origin, "a", dest, "lag", 3, 3, s, 100, 120, 900, 4000, 1_790_010_000_000, 5300)


def test_rows_go_one_camera_to_a_message_in_order_and_nothing_is_lost_or_added():
    k = load_settings().kafka
    rows = ([_flow("x", f"d{i % 7}", i) for i in range(23)] + [_flow("y", "d1", 100 + i) for i in range(4)]
            + [_flow("x", "d9", 200)]
            + [FootfallComponent("v", 60, H, "a", "x", 140, 60, 1_790_006_400_000, 127833)]
            + [CountComponent("demographics", "v", "a", "x", H, "28-37", "female", 12, 127000, 9),
               CountComponent("crossings", "v", "a", "y", H, "door", "in", 5, 509000, 9)])
    msgs = list(component_messages(rows, k, max_rows=10))
    flows = [m for m in msgs if m.topic == k.flow_components_topic]
    # 24 rows of camera x in messages of 10, 10 and 4; camera y's 4 in one.
    assert [(m.key, m.rows) for m in flows] == [(b"a/x", 10), (b"a/x", 10), (b"a/x", 4), (b"a/y", 4)]
    got = [r["s"] for m in flows if m.key == b"a/x" for r in serde.decode_rows("FlowComponent", m.value)]
    assert got == [*range(23), 200]
    for m in flows:
        assert len(serde.decode_rows("FlowComponent", m.value)) == m.rows
    by_topic = {m.topic: m for m in msgs if m.topic != k.flow_components_topic}
    assert set(by_topic) == {k.footfall_components_topic, k.demographic_components_topic, k.crossing_components_topic}
    assert serde.decode_rows("CountComponent", by_topic[k.crossing_components_topic].value)[0]["key1"] == "door"
    assert by_topic[k.crossing_components_topic].key == b"a/y"
    assert sum(m.rows for m in msgs) == len(rows)


def test_a_row_that_is_not_a_published_component_and_a_bad_size_are_refused():
    k = load_settings().kafka
    with pytest.raises(TypeError):
        list(component_messages([object()], k, 10))
    with pytest.raises(ValueError):
        list(component_messages([_flow("x", "y", 1)], k, 0))
