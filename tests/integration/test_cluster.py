"""A three-node Kafka cluster on loopback (FLOW_KAFKA_BROKERS=3, started by the project's own
script on its own ports and state directory): topics get 3 replicas and min.insync.replicas 2,
the audit checks replication, and a broker killed with kill -9 during production loses and
duplicates nothing."""
import os
import subprocess
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from pipeline.ops.kafka_clients import client_config
from pipeline.ops.topics import admin_client, apply_policy, audit, policy_for_settings
from pipeline.settings import REPO_ROOT, load_settings
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration

KAFKA_SH = str(REPO_ROOT / "infra" / "local" / "kafka.sh")
BASE = 29092


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, stack):
    var = tmp_path_factory.mktemp("kafka-cluster")
    env = dict(os.environ, FLOW_VAR_DIR=str(var), FLOW_KAFKA_BROKERS="3", FLOW_KAFKA_PORT=str(BASE),
               FLOW_KAFKA_CONTROLLER_PORT=str(BASE + 1), FLOW_KAFKA_INTERNAL_PORT=str(BASE + 2))
    subprocess.run(["bash", KAFKA_SH, "up"], env=env, check=True, timeout=300)
    s = load_settings(kafka={"bootstrap": ",".join(f"127.0.0.1:{BASE + 100 * i}" for i in range(3)),
                             "ca_file": var / "security" / "ca.crt", "credentials_dir": var / "security" / "kafka",
                             "replication_factor": 3, "min_insync_replicas": 2})
    try:
        yield s, env
    finally:
        subprocess.run(["bash", KAFKA_SH, "down"], env=env, timeout=120)


def test_topics_are_replicated_and_the_audit_checks_it(cluster):
    s, _ = cluster
    admin = admin_client(s)
    pol = policy_for_settings(s)
    apply_policy(admin, pol)
    deadline = time.monotonic() + 30
    while True:   # new topics reach each broker's metadata asynchronously
        md = admin.list_topics(timeout=10)
        if all(t.name in md.topics and md.topics[t.name].partitions for t in pol.topics) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for t in pol.topics:
        for part in md.topics[t.name].partitions.values():
            assert len(part.replicas) == 3, (t.name, part)
    ours = {t.name for t in pol.topics}
    assert [f for f in audit(admin, pol).findings if f.topic in ours and f.severity == "violation"] == []
    # a topic created behind the policy's back with one replica is a violation
    lone = pol.topics[0].name
    admin.delete_topics([lone], operation_timeout=30)[lone].result()

    deadline = time.monotonic() + 30
    while True:
        try:
            admin.create_topics([NewTopic(lone, 4, 1, config=pol.config_of(pol.topics[0]))])[lone].result()
            break
        except Exception:   # deletion still propagating
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while True:   # until every broker's metadata shows the recreated topic (asynchronous in KRaft)
        found = [f for f in audit(admin, pol).findings if f.topic == lone and f.severity == "violation"]
        if found or time.monotonic() > deadline + 30:
            break
        time.sleep(0.5)
    parts = admin.list_topics(lone, timeout=10).topics[lone].partitions
    assert any("1 replica(s), policy says 3" in f.message for f in found), (found, parts)


def test_a_broker_killed_during_production_loses_and_duplicates_nothing(cluster):
    s, env = cluster
    admin = admin_client(s)
    pol = policy_for_settings(s)
    apply_policy(admin, pol)
    topic = s.kafka.dead_letter_topic   # any replicated topic of the policy
    n = 30_000
    p = Producer(client_config(s, "admin", **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                               "message.timeout.ms": 60000}))
    errors, delivered = [], [0]

    def on_delivery(err, _m):
        if err is not None:
            errors.append(err)
        else:
            delivered[0] += 1
    killed = False
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=f"record-{i}".encode(), on_delivery=on_delivery)
        p.poll(0)
        if i == n // 3:
            p.flush(30)
            subprocess.run(["bash", KAFKA_SH, "kill", "2"], env=env, check=True, timeout=30)
            killed = True
    assert p.flush(120) == 0
    assert killed and errors == [] and delivered[0] == n
    got = [m.value() for m in read_topic(s, topic, max_wait=120)]
    assert len(got) == n and len(set(got)) == n   # nothing lost, nothing twice
    # the audit sees the dead broker's replicas out of sync: drift, not a violation
    notes = [f for f in audit(admin, pol).findings if f.topic == topic]
    assert notes and all(f.severity == "drift" and "in sync" in f.message for f in notes), notes
