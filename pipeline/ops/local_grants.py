"""Throwaway databases on the local stack's ClickHouse for the sink and analyst users.

The local server (infra/local/security.sh) names the databases each user may open in
users.xml: 18.16 has no SQL grants. Tests and benches that run the sink or the analysis
commands as those users, each on a database of its own, add a ``users.d`` file for the
duration; the server reloads it within seconds.
"""
from __future__ import annotations

import contextlib
import time
import uuid


@contextlib.contextmanager
def clickhouse_grants(*databases: str):
    """Let the ``sink`` and ``analyst`` users into ``databases`` for the duration (once the
    server has reloaded the grant)."""
    from pipeline.settings import VAR_DIR, load_settings
    from pipeline.sink.clickhouse import ServerWarehouse, WarehouseError

    d = VAR_DIR / "clickhouse" / "users.d"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"grant-{uuid.uuid4().hex[:8]}.xml"
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
