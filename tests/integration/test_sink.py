"""The sink commits offsets only after inserting, and a crash between the two counts nothing twice."""
import pytest
from confluent_kafka import Producer

from pipeline import serde
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.test_end_to_end import read_all
from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration


def produce_counts(s, n, start=0):
    """Deletion receipts: an append-only table whose rows carry their source offsets."""
    p = Producer({**client_config(s, "admin"), "enable.idempotence": True})
    for i in range(start, start + n):
        t = 1_790_000_000_000 + 500 * i
        rec = dict(frame_id=f"{i:032x}", site_id="snk", camera_id=f"c{i % 3}", captured_at=t, deleted_at=t + 40,
                   outcome="DELETED", deleted_by="processor")
        p.produce(s.kafka.receipts_topic, key=rec["camera_id"].encode(), value=serde.encode("DeletionReceipt", rec))
    p.flush(10)


def total(s):
    """(rows, distinct frames): equal when nothing was inserted twice."""
    return ServerWarehouse(s.clickhouse, role="admin").rows(
        f"SELECT count(), uniqExact(frame_id) FROM {s.clickhouse.database}.deletion_receipts")[0]


def test_crash_between_insert_and_commit_does_not_double_count(env):
    s = env
    produce_counts(s, 300)

    crashed = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink"))

    def crash(offsets):
        raise RuntimeError("simulated crash after insert, before commit")
    crashed._commit = crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.run(idle_timeout=3, max_seconds=60)
    inserted_before_crash = total(s)[0]
    assert inserted_before_crash > 0

    produce_counts(s, 200, start=300)
    again = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink"))
    st = again.run(idle_timeout=3, max_seconds=60)
    assert st.resumed_from_warehouse, "restart should resume from offsets stored in ClickHouse"
    assert total(s) == (500, 500)

    # and a third run with nothing new inserts nothing
    st3 = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=2, max_seconds=30)
    assert st3.inserted == {} and total(s) == (500, 500)


def test_malformed_records_are_dead_lettered_not_inserted(env):
    s = env
    p = Producer({**client_config(s, "admin")})
    p.produce(s.kafka.receipts_topic, value=b"not avro at all")
    p.produce(s.kafka.ledger_topic, value=serde.encode("GroupOccurrence", dict(
        site_id="x", camera_id="y", window_start=0, window_seconds=60, group_id=1, occurrences=1, params_version="v")))
    p.flush(10)
    produce_counts(s, 5)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert st.dead_letters == 2 and total(s) == (5, 5)
    reasons = sorted(serde.decode("DeadLetter", m.value())["reason"] for m in read_all(s, s.kafka.dead_letter_topic))
    assert reasons == ["malformed_record", "wrong_record_type"]


def test_bad_records_inside_a_batch_are_dead_lettered_one_by_one_and_the_rest_land_from_the_batch(env):
    """The sink decodes a poll's records of one topic as one batch (pipeline/sink/batch.py). A
    record with a trailing byte (which would shift every record after it if the batch were
    trusted), one with an id the warehouse must not show and one of the wrong type, among 300
    good receipts: the batch is refused or screened, exactly those three are dead-lettered with
    their reasons, every good receipt lands once, and the good ones of a clean batch come
    through the batch path."""
    s = env
    p = Producer({**client_config(s, "admin"), "enable.idempotence": True})
    bad = {50: lambda v: v + b"\x00", 120: None, 200: "wrong_type"}
    for i in range(303):
        t = 1_790_000_000_000 + 500 * i
        rec = dict(frame_id=f"{i:032x}", site_id="snk", camera_id="c\u202e1" if i == 120 else f"c{i % 3}",
                   captured_at=t, deleted_at=t + 40, outcome="DELETED", deleted_by="processor")
        value = serde.encode("DeletionReceipt", rec)
        if bad.get(i) == "wrong_type":
            value = serde.encode("FrameIssued", dict(frame_id=rec["frame_id"], site_id="snk", camera_id="c0",
                                                     captured_at=t, expires_at=t + 30_000))
        elif callable(bad.get(i)):
            value = bad[i](value)
        p.produce(s.kafka.receipts_topic, key=b"c", value=value)   # one partition: one batch
    p.flush(10)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert total(s) == (300, 300) and st.dead_letters == 3
    letters = sorted((serde.decode("DeadLetter", m.value()) for m in read_all(s, s.kafka.dead_letter_topic)),
                     key=lambda d: d["source_offset"])
    assert [d["reason"] for d in letters] == ["malformed_record", "invalid_value", "wrong_record_type"]
    assert "\u202e" not in str(letters)
    # The batch with the trailing byte was decoded one by one; other polls came as batches.
    produce_counts(s, 400, start=1000)
    st2 = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert total(s) == (700, 700) and st2.dead_letters == 0 and st2.batch_decoded >= 300


def test_batched_components_land_every_row_and_a_bad_row_alone_is_dead_lettered(env):
    """The aggregator sends a camera's published rows many to a message. 40 messages of 9 flow
    rows land as a batch; one message carries a row with an identifier the warehouse must not
    show: that row alone is dead-lettered, the message's other rows land (the exact path), and
    so do single-record messages from an older aggregator on the same topic."""
    from pipeline.aggregator.model import FlowComponent

    s = env

    def row(i: int, dest: str) -> dict:
        return FlowComponent("v", 60, 1_790_002_800_000 + 3_600_000 * (i // 9), "a", "x", "a", dest, "lag", 3, 3,
                             i, 100, 120, 900, 4000, 1_790_010_000_000, 5300).to_record()

    p = Producer({**client_config(s, "admin")})
    for m in range(40):
        rows = [row(9 * m + j, f"d{j}") for j in range(9)]
        if m == 17:
            rows[4]["dest_camera"] = "d\u202e4"
        p.produce(s.kafka.flow_components_topic, key=b"a/x", value=serde.encode_batch("FlowComponent", rows))
    for i in range(3):
        p.produce(s.kafka.flow_components_topic, key=b"a/x", value=serde.encode("FlowComponent", row(1000 + i, f"z{i}")))
    p.flush(10)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert st.consumed == 43 and st.rows == 363 and st.dead_letters == 1
    assert st.inserted == {"flow_components": 362} and st.batch_decoded >= 300
    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
    want = sum(range(360)) - (9 * 17 + 4) + 1000 + 1001 + 1002
    assert wh.rows(f"SELECT count(), sum(s) FROM {db}.flow_components FINAL")[0] == (362, want)
    (letter,) = [serde.decode("DeadLetter", m.value()) for m in read_all(s, s.kafka.dead_letter_topic)]
    assert letter["reason"] == "invalid_value" and letter["source_topic"] == s.kafka.flow_components_topic
    assert "\u202e" not in str(letter)


def test_published_components_redelivered_count_once(env):
    """Component tables have no offsets: a redelivered row (an aggregator replay, or the sink
    reading the topic again) replaces itself under FINAL."""
    from pipeline.aggregator.model import FlowComponent, FootfallComponent

    s = env
    flow = FlowComponent("v", 60, 1_790_002_800_000, "a", "x", "a", "y", "lag", 3, 3, 7, 100, 120, 900, 4000, 1_790_010_000_000, 5300)
    foot = FootfallComponent("v", 60, 1_790_002_800_000, "a", "x", 140, 60, 1_790_006_400_000, 127833)
    p = Producer({**client_config(s, "admin")})
    for _ in range(2):
        p.produce(s.kafka.flow_components_topic, value=serde.encode("FlowComponent", flow.to_record()))
        p.produce(s.kafka.footfall_components_topic, value=serde.encode("FootfallComponent", foot.to_record()))
    p.flush(10)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert st.inserted == {"flow_components": 2, "footfall_components": 2}
    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
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
    p = Producer({**client_config(s, "admin")})
    for _ in range(2):
        p.produce(s.kafka.demographic_components_topic, value=serde.encode("CountComponent", demo.to_record()))
        p.produce(s.kafka.crossing_components_topic, value=serde.encode("CountComponent", cross.to_record()))
    p.produce(s.kafka.demographic_components_topic, value=serde.encode("CountComponent", cross.to_record()))
    p.flush(10)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert st.inserted == {"demographic_components": 2, "crossing_components": 2} and st.dead_letters == 1
    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
    assert wh.rows(f"SELECT count(), sum(persons), sum(noise_var_milli), any(age_band) "
                   f"FROM {db}.demographic_components FINAL")[0] == (1, 12, 127000, "28-37")
    assert wh.rows(f"SELECT count(), sum(crossings), any(line), any(direction) "
                   f"FROM {db}.crossing_components FINAL")[0] == (1, 5, "door", "in")
    (letter,) = [serde.decode("DeadLetter", m.value()) for m in read_all(s, s.kafka.dead_letter_topic)]
    assert letter["reason"] == "invalid_value" and "door" not in str(letter)


def test_a_row_the_server_rejects_is_dead_lettered_and_the_sink_moves_on(env):
    """A record that decodes and passes the sink's own checks but that ClickHouse refuses used to
    fail its batch five times and stop the sink, on every restart. Here the server refuses one
    receipt (a throwIf guard column, as a deployment on 18.16 would emulate a CHECK constraint):
    the batch is halved until that row stands alone, it goes to the dead-letter topic with the
    server's reason, and every other row lands."""
    s = env
    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
    wh.execute(f"ALTER TABLE {db}.deletion_receipts ADD COLUMN guard UInt8 DEFAULT throwIf(camera_id = 'c1' "
               f"AND captured_at_ms = 1790000000500)")
    produce_counts(s, 40)   # receipt 1 is camera c1 at 1_790_000_000_500
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert total(s) == (39, 39) and st.dead_letters == 1
    assert wh.rows(f"SELECT count() FROM {db}.deletion_receipts WHERE frame_id = %(f)s", {"f": f"{1:032x}"}) == [(0,)]
    (letter,) = [serde.decode("DeadLetter", m.value()) for m in read_all(s, s.kafka.dead_letter_topic)]
    assert letter["reason"] == "rejected_by_warehouse" and letter["stage"] == "sink"
    assert "395" in letter["detail"] and letter["source_topic"] == s.kafka.receipts_topic
    # nothing is stuck: the next run starts after the batch and lands new rows
    produce_counts(s, 5, start=40)
    st2 = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert st2.dead_letters == 0 and total(s) == (44, 44)


def test_an_insert_applied_on_the_server_but_timed_out_on_the_client_is_not_repeated(env):
    """The insert succeeds server-side and fails client-side: a materialised view that sleeps 2 s
    makes the server finish after the client's 1-s timeout (a real socket timeout, nothing
    patched). Retrying blindly would land every row twice; the sink waits for the query to leave
    system.processes, finds the batch's offsets in the table and does not insert again."""
    s = env
    db = s.clickhouse.database
    admin = ServerWarehouse(s.clickhouse, role="admin")
    admin.execute(f"CREATE TABLE {db}.slow_sink (frame_id String) ENGINE = Null")
    admin.execute(f"CREATE MATERIALIZED VIEW {db}.slow_mv TO {db}.slow_sink AS "
                  f"SELECT frame_id FROM {db}.deletion_receipts WHERE sleep(2) = 0")
    produce_counts(s, 50)
    impatient = s.clickhouse.model_copy(update={"send_receive_timeout_seconds": 1.0})
    st = ClickHouseSink(s, ServerWarehouse(impatient, role="sink")).run(idle_timeout=4, max_seconds=90)
    admin.execute(f"DROP TABLE {db}.slow_mv")
    assert st.ambiguous_landed >= 1, "the client-side timeout did not happen; the test proves nothing"
    assert total(s) == (50, 50)
    assert st.dead_letters == 0


def test_an_insert_process_killed_mid_stream_stops_the_sink_and_a_restart_lands_every_row_once(env):
    """The inserts run in a process of their own (pipeline/sink/inserter.py). Killed while the
    sink streams, it takes the flushes in flight with it: the sink stops with their offsets
    uncommitted instead of going on without its inserts, and the next run lands every row
    exactly once."""
    import os
    import signal

    s = env
    produce_counts(s, 3000)
    small = s.model_copy(update={"sink": s.sink.model_copy(update={"batch_max_rows": 200})})
    sink = ClickHouseSink(small, ServerWarehouse(s.clickhouse, role="sink"))
    sink.wait_ready()
    pid = sink._inserter.pid

    def kill_after_first_flush(stats):
        if stats.batches >= 1 and sink._inserter is not None and sink._inserter.pid == pid:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(RuntimeError, match="insert process ended"):
        sink.run(idle_timeout=3, max_seconds=60, on_progress=kill_after_first_flush)
    landed, distinct = total(s)
    assert landed == distinct and 200 <= landed < 3000, landed   # some flushes landed, not all
    produce_counts(s, 100, start=3000)
    st = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=60)
    assert total(s) == (3100, 3100) and st.dead_letters == 0


def test_a_wrong_warehouse_password_is_reported_before_the_sink_consumes(env, tmp_path):
    """The insert process connects when it starts: a wrong password is an error the sink raises
    at once, with the server's reason, not after it has consumed and decoded a batch."""
    import shutil

    from pipeline.sink.inserter import InsertFailed

    s = env
    creds = tmp_path / "creds"
    shutil.copytree(s.clickhouse.credentials_dir, creds)
    (creds / "sink.password").write_text("not-the-password\n")
    (creds / "sink.password").chmod(0o600)
    wrong = s.clickhouse.model_copy(update={"credentials_dir": str(creds)})
    sink = ClickHouseSink(s, ServerWarehouse(wrong, role="sink"))
    with pytest.raises(InsertFailed) as e:   # raised by the insert process itself
        sink.wait_ready()
    assert e.value.kind == "fatal" and "password" in str(e.value).lower(), str(e.value)
    with pytest.raises(InsertFailed, match="(?i)password"):   # and again by run(), before consuming
        sink.run(idle_timeout=3, max_seconds=30)
    assert sink.stats.consumed == 0
    with pytest.raises(RuntimeError, match="runs once"):
        sink.run(idle_timeout=3, max_seconds=30)


def test_the_insert_process_ends_with_the_sink_process(env):
    """A sink killed outright must not leave its inserts running behind it (another sink may
    take its partitions and land the same rows): its insert process dies with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipeline.settings import settings_as_env

    code = ("import time\n"
            "from pipeline.settings import load_settings\n"
            "from pipeline.sink.inserter import InsertProcess\n"
            "s = load_settings()\n"
            "p = InsertProcess(s.clickhouse, s.clickhouse.database, 'sink', retry_seconds=5, batch_max_rows=10)\n"
            "p.wait_ready()\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], env=settings_as_env(env), stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the insert process outlived its sink"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("column_type, value", [("Int16", 70_000), ("UInt8", -1), ("Int64", "12"), ("UInt32", 2**32)])
def test_a_value_that_does_not_fit_its_column_is_refused_not_wrapped(env, column_type, value):
    """The warehouse insert refuses a value outside its column's range or of the wrong type as
    ``rejected`` (so the sink isolates and dead-letters its row) and writes nothing of the block;
    clickhouse-driver's own type check would have masked 70000 into an Int16 as 4464."""
    from pipeline.sink.clickhouse import WarehouseError

    s = env
    db = s.clickhouse.database
    wh = ServerWarehouse(s.clickhouse, role="admin")
    wh.execute(f"CREATE TABLE {db}.fits (k UInt32, v {column_type}) ENGINE = MergeTree ORDER BY k")
    with pytest.raises(WarehouseError) as e:
        wh.insert("fits", ("k", "v"), [[1, 2], [0, value]])
    assert e.value.kind == "rejected"
    assert wh.rows(f"SELECT count() FROM {db}.fits") == [(0,)]
    assert wh.insert("fits", ("k", "v"), [[1, 2], [0, 7]]) == 2
    assert wh.rows(f"SELECT sum(v) FROM {db}.fits") == [(7,)]
