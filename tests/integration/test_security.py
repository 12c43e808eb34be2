"""The default local stack refuses the unauthenticated and holds every role to its rights.

Each check is an operation that must fail on the real broker, next to one the same role may do,
so a refusal cannot come from a broken connection."""
import uuid
from datetime import datetime

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.ops.kafka_clients import client_config

pytestmark = pytest.mark.integration


def _produce(s, role, topic):
    """The delivery error of one record produced as ``role`` (None: delivered)."""
    p = Producer(client_config(s, role, **{"enable.idempotence": True, "message.timeout.ms": 10000}))
    out = []
    p.produce(topic, b"probe", on_delivery=lambda err, _m: out.append(err))
    p.flush(15)
    return out[0] if out else "undelivered"


def _read_error(s, role, topic, group=None):
    """The error a consumer of ``role`` gets when it reads ``topic`` (None: it could read)."""
    c = Consumer(client_config(s, role, **{"group.id": group or f"probe-{uuid.uuid4().hex[:8]}",
                                           "auto.offset.reset": "earliest", "enable.partition.eof": True}))
    try:
        c.subscribe([topic])
        for _ in range(60):
            m = c.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                return None
            return err
        return "no answer"
    finally:
        c.close()


def test_a_client_without_credentials_or_tls_is_refused(env):
    s = env
    assert s.kafka.security_protocol == "SASL_SSL"   # the default, not a test setting
    anon = AdminClient({"bootstrap.servers": s.kafka.bootstrap, "socket.timeout.ms": 3000, "log_level": 0})
    with pytest.raises(KafkaException):
        anon.list_topics(timeout=5)
    wrong = dict(client_config(s, "edge"), **{"sasl.password": "not-the-password", "log_level": 0})
    with pytest.raises(KafkaException):
        AdminClient(wrong).list_topics(timeout=5)
    # the same client with the role's credentials is let in
    assert s.kafka.frame_refs_topic in AdminClient(client_config(s, "edge")).list_topics(timeout=10).topics


def test_each_role_may_do_its_job_and_nothing_else(env):
    s = env
    k = s.kafka
    # the edge writes frame references and the ledger, and reads nothing
    assert _produce(s, "edge", k.frame_refs_topic) is None
    assert _produce(s, "edge", k.ledger_topic) is None
    assert _produce(s, "edge", k.occurrences_topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    err = _read_error(s, "edge", k.frame_refs_topic)
    assert err is not None and err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)
    # the processor reads frame references (in its group), and cannot write published components
    assert _read_error(s, "processor", k.frame_refs_topic, group=s.processor.app_id) is None
    assert _produce(s, "processor", k.flow_components_topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # the sink reads what it lands, not the restricted group cells or frame references
    assert _read_error(s, "sink", k.flow_components_topic, group=s.sink.group_id) is None
    for topic in (k.occurrences_topic, k.frame_refs_topic):
        err = _read_error(s, "sink", topic, group=s.sink.group_id)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic
    # no client role may create or delete topics
    for role in ("edge", "processor", "sink", "exporter", "aggregator"):
        admin = AdminClient(client_config(s, role))
        fut = admin.create_topics([NewTopic(f"{k.frame_refs_topic}.{role}-probe", 1, 1)], operation_timeout=10)
        with pytest.raises(KafkaException) as e:
            next(iter(fut.values())).result(timeout=15)
        assert e.value.args[0].code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)
        fut = admin.delete_topics([k.dead_letter_topic], operation_timeout=10)
        with pytest.raises(KafkaException):
            next(iter(fut.values())).result(timeout=15)


def test_credentials_and_keys_are_private_files(env):
    s = env
    for p in list(s.kafka.credentials_dir.iterdir()) + [s.kafka.ca_file]:
        assert p.stat().st_mode & 0o077 == 0, p


def test_clickhouse_refuses_the_passwordless_default_user_and_holds_each_role_to_its_rights(env):
    from clickhouse_driver import Client

    from pipeline.sink.clickhouse import ServerWarehouse, WarehouseError

    s = env
    db = s.clickhouse.database
    ch = s.clickhouse
    with pytest.raises(Exception) as e:   # no 'default' user at all, with or without a password
        Client(host=ch.host, port=ch.port, connect_timeout=5).execute("SELECT 1")
    assert "192" in str(e.value) or "516" in str(e.value) or "Unknown user" in str(e.value)
    with pytest.raises(Exception):
        Client(host=ch.host, port=ch.port, user="analyst", password="guess", connect_timeout=5).execute("SELECT 1")

    admin = ServerWarehouse(ch, role="admin")
    admin.execute(f"CREATE DATABASE IF NOT EXISTS {db}_restricted")
    admin.execute(f"CREATE TABLE IF NOT EXISTS {db}_restricted.secrets (x UInt8) ENGINE = Memory")
    try:
        analyst = ServerWarehouse(ch, role="analyst")
        assert analyst.rows(f"SELECT count() FROM {db}.footfall_components") == [(0,)]   # may read its tables
        refused = {
            "insert": f"INSERT INTO {db}.footfall_components (params_version) VALUES ('x')",
            "drop": f"DROP TABLE {db}.footfall_components",
            "create": f"CREATE TABLE {db}.mine (x UInt8) ENGINE = Memory",
            "read restricted": f"SELECT count() FROM {db}_restricted.secrets",
        }
        for what, sql in refused.items():
            with pytest.raises(WarehouseError) as e:
                analyst.execute(sql)
            assert e.value.code in (164, 291, 497), (what, e.value)   # READONLY, DATABASE_ACCESS_DENIED
        # `flowctl query sql` runs as the analyst: the server refuses what the prefix check lets by
        from tests.integration.conftest import flowctl
        p = flowctl(s, "query", "sql", f"SELECT count() FROM {db}_restricted.secrets", check=False)
        assert p.returncode != 0 and "291" in p.stderr + p.stdout

        sink = ServerWarehouse(ch, role="sink")
        sink.insert("deletion_receipts", ["frame_id", "site_id", "camera_id", "captured_at", "captured_at_ms",
                                          "deleted_at_ms", "latency_ms", "outcome", "deleted_by", "kafka_partition",
                                          "kafka_offset"],
                    [["f"], ["s"], ["c"], [datetime(2026, 1, 1)], [1], [2], [1], ["DELETED"], ["processor"], [0], [0]])
        for sql in (f"DROP TABLE {db}.deletion_receipts", f"ALTER TABLE {db}.deletion_receipts DELETE WHERE 1",
                    f"CREATE TABLE {db}.mine (x UInt8) ENGINE = Memory", f"INSERT INTO {db}_restricted.secrets VALUES (1)"):
            with pytest.raises(WarehouseError) as e:
                sink.execute(sql)
            assert e.value.code in (164, 291, 392, 497), (sql, e.value)
        assert admin.rows(f"SELECT count() FROM {db}.deletion_receipts") == [(1,)]
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db}_restricted")
