"""Test tiers: tests marked ``integration`` (all of tests/integration, and the server tests of
tests/analytics and tests/simulator) run against the real Kafka broker and ClickHouse server
that infra/local/stack.sh starts; it is started here if it is not running, whichever directory
runs first, so `pytest` alone is enough. The other tests need no services."""
import contextlib
import subprocess
import time
import uuid

import pytest

from pipeline.settings import REPO_ROOT


@pytest.fixture(scope="session")
def stack():
    """The real local stack; started by the project's own script, never mocked."""
    rc = subprocess.call(["bash", str(REPO_ROOT / "infra" / "local" / "stack.sh"), "up"])
    assert rc == 0, "infra/local/stack.sh up failed"
    return True


@pytest.fixture(autouse=True)
def _stack_for_integration_tests(request):
    """Any test marked integration, in any directory, gets the stack (module fixtures that need
    it before the first test ask for ``stack`` themselves)."""
    if request.node.get_closest_marker("integration"):
        request.getfixturevalue("stack")


@contextlib.contextmanager
def clickhouse_grants(*databases: str):
    """Let the ``sink`` and ``analyst`` users into test databases for the duration.

    The local server names the databases each user may open in users.xml (18.16 has no SQL
    grants); files in ``users.d`` add to them and are reloaded within seconds. The tests run
    the sink and the analysis commands as those users, on databases of their own."""
    from pipeline.settings import VAR_DIR, load_settings
    from pipeline.sink.clickhouse import ServerWarehouse, WarehouseError

    d = VAR_DIR / "clickhouse" / "users.d"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"test-grant-{uuid.uuid4().hex[:8]}.xml"
    entries = "".join(f"<db_{db}>{db}</db_{db}>" for db in databases)
    path.write_text(f"<?xml version=\"1.0\"?>\n<yandex><users><sink><allow_databases>{entries}</allow_databases></sink>"
                    f"<analyst><allow_databases>{entries}</allow_databases></analyst></users></yandex>\n")
    analyst = ServerWarehouse(load_settings().clickhouse, role="analyst")
    deadline = time.monotonic() + 30
    for db in databases:
        # Access is checked before existence: 291 (DATABASE_ACCESS_DENIED) until the server has
        # reloaded the grant, then 60 or 81 (no such table or database). SHOW TABLES checks nothing.
        while True:
            try:
                analyst.rows(f"SELECT * FROM {db}.__grant_probe__")
            except WarehouseError as e:
                if e.code in (60, 81):
                    break
                if e.code != 291 or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
