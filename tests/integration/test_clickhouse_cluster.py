"""A replicated ClickHouse: ZooKeeper and two replicas of one shard on loopback
(infra/local/chcluster.sh), the project's migrations applied ON CLUSTER, and the sink failing
over when the replica it writes to is killed mid-run.

What must hold: every table the migrations create is a Replicated*MergeTree on both replicas,
with a Distributed ``<table>_all`` over them; the replication metadata in ZooKeeper is not open
to an anonymous client; and with one replica killed (kill -9) while the sink inserts, every row
lands exactly once on both replicas: with ``insert_quorum`` 2 the sink waits while a replica is
down (its records stay in Kafka) rather than acknowledging rows only the dead replica holds.
"""
import subprocess
import threading
import time

import pytest

from pipeline.settings import REPO_ROOT, VAR_DIR
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from pipeline.sink.migrations import discover, migrate
from tests.integration.test_faults import _produce_receipts, _wait

pytestmark = pytest.mark.integration

CLUSTER_SH = str(REPO_ROOT / "infra" / "local" / "chcluster.sh")
PORTS = (19201, 19202)


@pytest.fixture(scope="module")
def ch_cluster(stack):
    assert subprocess.call(["bash", CLUSTER_SH, "up"]) == 0
    yield
    subprocess.call(["bash", CLUSTER_SH, "down"])


@pytest.fixture()
def cl_env(env, ch_cluster):
    """The test's Kafka topics, and database ``flow`` of the cluster (the sink's own database
    there), migrated afresh and dropped on every replica afterwards."""
    ch = env.clickhouse.model_copy(update={"port": PORTS[0], "alt_hosts": f"127.0.0.1:{PORTS[1]}",
                                           "cluster": "flow", "database": "flow", "insert_quorum": 2})
    s = env.model_copy(update={"clickhouse": ch})
    admin = ServerWarehouse(ch, role="admin")
    admin.execute("DROP DATABASE IF EXISTS flow ON CLUSTER flow")
    migrate(admin)
    yield s
    ServerWarehouse(ch, role="admin").execute("DROP DATABASE IF EXISTS flow ON CLUSTER flow")


def _replica(s, i: int, role: str = "admin") -> ServerWarehouse:
    return ServerWarehouse(s.clickhouse.model_copy(update={"port": PORTS[i], "alt_hosts": ""}), role=role)


def test_the_migrations_make_every_table_replicated_on_both_replicas_with_a_distributed_twin(cl_env):
    s = cl_env
    tables = []
    for i in range(2):
        rows = _replica(s, i).rows("SELECT name, engine FROM system.tables WHERE database = 'flow' ORDER BY name")
        engines = dict(rows)
        stored = sorted(n for n, e in engines.items() if "MergeTree" in e)
        assert stored and all(engines[n].startswith("Replicated") for n in stored), engines
        assert all(engines.get(f"{n}_all") == "Distributed" for n in stored), engines
        (applied,), = _replica(s, i).rows("SELECT count() FROM flow.schema_migrations")
        assert applied == len(discover())
        tables.append(rows)
    assert tables[0] == tables[1]
    # A later ALTER reached both replicas (0008 made nn signed).
    for i in range(2):
        assert _replica(s, i).rows("SELECT type FROM system.columns WHERE database = 'flow' "
                                   "AND table = 'flow_components' AND name = 'nn'") == [("Int64",)]
    # Running the migrations again changes nothing and rebuilds the Distributed tables.
    assert migrate(ServerWarehouse(s.clickhouse, role="admin")) == []
    # Replication metadata is not readable without the replicas' ZooKeeper identity (the path
    # the table was created with: flow_components was re-created under another name by 0012).
    (zk_path,) = _replica(s, 0).rows("SELECT zookeeper_path FROM system.replicas "
                                     "WHERE database = 'flow' AND table = 'flow_components'")[0]
    assert zk_path.startswith("/clickhouse/tables/01/flow/")
    out = subprocess.run(["/usr/share/zookeeper/bin/zkCli.sh", "-server", "127.0.0.1:19181", "ls", zk_path],
                         capture_output=True, text=True, timeout=60)
    assert "Insufficient permission" in out.stdout + out.stderr, out.stdout[-500:]


def test_a_replica_killed_while_the_sink_inserts_loses_and_duplicates_nothing(cl_env):
    s = cl_env.model_copy(update={"sink": cl_env.sink.model_copy(update={"batch_max_rows": 2000})})
    m = 30_000
    _produce_receipts(s, m)
    landed = lambda i: _replica(s, i).rows("SELECT count(), uniqExact(frame_id) FROM flow.deletion_receipts")[0]
    sink = ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink"))   # writes to r1, fails over to r2
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("st", sink.run(idle_timeout=5, max_seconds=240)))
    t.start()
    try:
        _wait(lambda: landed(0)[0] > 0, 60, "the sink's first insert")
        pid = (VAR_DIR / "chcluster" / "r1" / "clickhouse.pid").read_text().strip()
        subprocess.run(["kill", "-9", pid], check=True)
        killed_at = landed(1)[0]
        assert killed_at < m, "the sink finished before the kill; the test proves nothing"
        # With one of two replicas down no insert reaches its quorum: the sink waits (its
        # records stay in Kafka) instead of acknowledging rows only the dead replica held.
        time.sleep(10)
        assert t.is_alive(), "the sink finished while a replica was down"
        stalled_at = landed(1)[0]
        assert stalled_at < m
    finally:
        assert subprocess.call(["bash", CLUSTER_SH, "replica", "1", "up"]) == 0
    t.join(240)
    assert not t.is_alive(), "the sink did not finish"
    # Every row once, on both replicas, once the killed one is back and has caught up.
    for i in range(2):
        deadline = time.monotonic() + 120
        while True:
            try:
                _replica(s, i).execute("SYSTEM SYNC REPLICA flow.deletion_receipts")
                break
            except Exception:  # noqa: BLE001 - the restarted replica reconnects to ZooKeeper first
                assert time.monotonic() < deadline, f"replica {i + 1} did not sync"
                time.sleep(1)
        assert landed(i) == (m, m), (i, landed(i), result)
    st = result["st"]
    print(f"\nreplica killed mid-run: {killed_at} of {m} rows on the survivor at the kill, {stalled_at} after 10 s "
          f"down (inserts wait for their quorum); {m} landed once on both replicas; {st.batches} batches, "
          f"{st.ambiguous_landed} interrupted inserts found applied")
