"""The sink commits offsets only after inserting, and a crash between the two counts nothing twice."""
import pytest
from confluent_kafka import Producer

from pipeline import serde
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.test_end_to_end import read_all

pytestmark = pytest.mark.integration


def produce_counts(s, n, start=0):
    """Demographic counts: an append-only table whose rows carry their source offsets."""
    p = Producer({"bootstrap.servers": s.kafka.bootstrap, "enable.idempotence": True})
    for i in range(start, start + n):
        rec = dict(site_id="snk", camera_id=f"c{i % 3}", window_start=1_790_000_000_000 + 900_000 * i,
                   window_seconds=900, age_band="28-37", gender="female", persons=1, params_version="v")
        p.produce(s.kafka.demographics_topic, key=rec["camera_id"].encode(), value=serde.encode("DemographicCount", rec))
    p.flush(10)


def total(s):
    return ServerWarehouse(s.clickhouse).rows(
        f"SELECT count(), sum(persons) FROM {s.clickhouse.database}.demographic_counts")[0]


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
    p.produce(s.kafka.demographics_topic, value=b"not avro at all")
    p.produce(s.kafka.receipts_topic, value=serde.encode("GroupOccurrence", dict(
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
