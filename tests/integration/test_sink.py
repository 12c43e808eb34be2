"""The sink commits offsets only after inserting, and a crash between the two counts nothing twice."""
import pytest
from confluent_kafka import Producer

from pipeline import serde
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.test_end_to_end import read_all

pytestmark = pytest.mark.integration


def produce_counts(s, n, start=0):
    """Deletion receipts: an append-only table whose rows carry their source offsets."""
    p = Producer({"bootstrap.servers": s.kafka.bootstrap, "enable.idempotence": True})
    for i in range(start, start + n):
        t = 1_790_000_000_000 + 500 * i
        rec = dict(frame_id=f"{i:032x}", site_id="snk", camera_id=f"c{i % 3}", captured_at=t, deleted_at=t + 40,
                   outcome="DELETED", deleted_by="processor")
        p.produce(s.kafka.receipts_topic, key=rec["camera_id"].encode(), value=serde.encode("DeletionReceipt", rec))
    p.flush(10)


def total(s):
    """(rows, distinct frames): equal when nothing was inserted twice."""
    return ServerWarehouse(s.clickhouse).rows(
        f"SELECT count(), uniqExact(frame_id) FROM {s.clickhouse.database}.deletion_receipts")[0]


def test_crash_between_insert_and_commit_does_not_double_count(env):
    s = env
    produce_counts(s, 300)

    crashed = ClickHouseSink(s, ServerWarehouse(s.clickhouse))

    def crash(offsets):
        raise RuntimeError("simulated crash after insert, before commit")
    crashed._commit = crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.run(idle_timeout=3, max_seconds=60)
    inserted_before_crash = total(s)[0]
    assert inserted_before_crash > 0

    produce_counts(s, 200, start=300)
    again = ClickHouseSink(s, ServerWarehouse(s.clickhouse))
    st = again.run(idle_timeout=3, max_seconds=60)
    assert st.resumed_from_warehouse, "restart should resume from offsets stored in ClickHouse"
    assert total(s) == (500, 500)

    # and a third run with nothing new inserts nothing
    st3 = ClickHouseSink(s, ServerWarehouse(s.clickhouse)).run(idle_timeout=2, max_seconds=30)
    assert st3.inserted == {} and total(s) == (500, 500)


def test_malformed_records_are_dead_lettered_not_inserted(env):
    s = env
    p = Producer({"bootstrap.servers": s.kafka.bootstrap})
    p.produce(s.kafka.receipts_topic, value=b"not avro at all")
    p.produce(s.kafka.ledger_topic, value=serde.encode("GroupOccurrence", dict(
        site_id="x", camera_id="y", window_start=0, window_seconds=60, group_id=1, occurrences=1, params_version="v")))
    p.flush(10)
    produce_counts(s, 5)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse)).run(idle_timeout=3, max_seconds=60)
    assert st.dead_letters == 2 and total(s) == (5, 5)
    reasons = sorted(serde.decode("DeadLetter", m.value())["reason"] for m in read_all(s, s.kafka.dead_letter_topic, 3))
    assert reasons == ["malformed_record", "wrong_record_type"]



def test_published_components_redelivered_count_once(env):
    """Component tables have no offsets: a redelivered row (an aggregator replay, or the sink
    reading the topic again) replaces itself under FINAL."""
    from pipeline.aggregator.model import FlowComponent, FootfallComponent

    s = env
    flow = FlowComponent("v", 60, 1_790_002_800_000, "a", "x", "a", "y", "lag", 3, 3, 7, 100, 120, 900, 4000, 1_790_010_000_000, 5300)
    foot = FootfallComponent("v", 60, 1_790_002_800_000, "a", "x", 140, 60, 1_790_006_400_000, 127833)
    p = Producer({"bootstrap.servers": s.kafka.bootstrap})
    for _ in range(2):
        p.produce(s.kafka.flow_components_topic, value=serde.encode("FlowComponent", flow.to_record()))
        p.produce(s.kafka.footfall_components_topic, value=serde.encode("FootfallComponent", foot.to_record()))
    p.flush(10)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse)).run(idle_timeout=3, max_seconds=60)
    assert st.inserted == {"flow_components": 2, "footfall_components": 2}
    wh, db = ServerWarehouse(s.clickhouse), s.clickhouse.database
    assert wh.rows(f"SELECT count(), sum(s), sum(noise_var_milli) FROM {db}.flow_components FINAL")[0] == (1, 7, 5300)
    assert wh.rows(f"SELECT count(), sum(occurrences) FROM {db}.footfall_components FINAL")[0] == (1, 140)


def test_protected_count_cells_land_in_their_table_once_and_a_misrouted_kind_is_refused(env):
    """Demographic and crossing cells (pipeline/aggregator/counts.py) land in their own
    ReplacingMergeTree tables; a redelivered cell replaces itself; a crossings cell on the
    demographics topic is dead-lettered, never landed in the wrong table."""
    from pipeline.aggregator.counts import CountComponent

    s = env
    demo = CountComponent("demographics", "v", "a", "x", 1_790_002_800_000, "28-37", "female", 12, 127000, 9)
    cross = CountComponent("crossings", "v", "a", "x", 1_790_002_800_000, "door", "in", 5, 509000, 9)
    p = Producer({"bootstrap.servers": s.kafka.bootstrap})
    for _ in range(2):
        p.produce(s.kafka.demographic_components_topic, value=serde.encode("CountComponent", demo.to_record()))
        p.produce(s.kafka.crossing_components_topic, value=serde.encode("CountComponent", cross.to_record()))
    p.produce(s.kafka.demographic_components_topic, value=serde.encode("CountComponent", cross.to_record()))
    p.flush(10)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse)).run(idle_timeout=3, max_seconds=60)
    assert st.inserted == {"demographic_components": 2, "crossing_components": 2} and st.dead_letters == 1
    wh, db = ServerWarehouse(s.clickhouse), s.clickhouse.database
    assert wh.rows(f"SELECT count(), sum(persons), sum(noise_var_milli), any(age_band) "
                   f"FROM {db}.demographic_components FINAL")[0] == (1, 12, 127000, "28-37")
    assert wh.rows(f"SELECT count(), sum(crossings), any(line), any(direction) "
                   f"FROM {db}.crossing_components FINAL")[0] == (1, 5, "door", "in")
    (letter,) = [serde.decode("DeadLetter", m.value()) for m in read_all(s, s.kafka.dead_letter_topic, 1)]
    assert letter["reason"] == "invalid_value" and "door" not in str(letter)
