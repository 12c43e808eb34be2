"""The sink commits offsets only after inserting, and a crash between the two counts nothing twice."""
import pytest
from confluent_kafka import Producer

from pipeline import serde
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.test_end_to_end import read_all

pytestmark = pytest.mark.integration


def produce_occurrences(s, n, start=0):
    p = Producer({"bootstrap.servers": s.kafka.bootstrap, "enable.idempotence": True})
    for i in range(start, start + n):
        rec = dict(site_id="snk", camera_id=f"c{i % 3}", window_start=1_790_000_000_000 + 60_000 * (i // 50),
                   window_seconds=60, group_id=i % 1000, occurrences=1, params_version="v")
        p.produce(s.kafka.occurrences_topic, key=rec["camera_id"].encode(), value=serde.encode("GroupOccurrence", rec))
    p.flush(10)


def total(s):
    return ServerWarehouse(s.clickhouse).rows(
        f"SELECT count(), sum(occurrences) FROM {s.clickhouse.database}.group_occurrences")[0]


def test_crash_between_insert_and_commit_does_not_double_count(env):
    s = env
    produce_occurrences(s, 300)

    crashed = ClickHouseSink(s, ServerWarehouse(s.clickhouse))

    def crash(offsets):
        raise RuntimeError("simulated crash after insert, before commit")
    crashed._commit = crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.run(idle_timeout=3, max_seconds=60)
    inserted_before_crash = total(s)[0]
    assert inserted_before_crash > 0

    produce_occurrences(s, 200, start=300)
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
    p.produce(s.kafka.occurrences_topic, value=b"not avro at all")
    p.produce(s.kafka.receipts_topic, value=serde.encode("GroupOccurrence", dict(
        site_id="x", camera_id="y", window_start=0, window_seconds=60, group_id=1, occurrences=1, params_version="v")))
    p.flush(10)
    produce_occurrences(s, 5)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse)).run(idle_timeout=3, max_seconds=60)
    assert st.dead_letters == 2 and total(s) == (5, 5)
    reasons = sorted(serde.decode("DeadLetter", m.value())["reason"] for m in read_all(s, s.kafka.dead_letter_topic, 3))
    assert reasons == ["malformed_record", "wrong_record_type"]

