"""ClickHouse access behind one small interface, so migrations and queries run unchanged on a
real server (clickhouse-driver, native protocol) and on the embedded current engine (chdb).
"""
from __future__ import annotations

import csv
import io
import struct
from pathlib import Path
from typing import Any, Protocol, Sequence

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as DriverError
from clickhouse_driver.errors import (NetworkError, ServerException, SocketTimeoutError, TooLargeStringSize,
                                      TypeMismatchError, UnexpectedPacketFromServerError)

from pipeline.settings import ClickHouseRole, ClickHouseSettings, ConfigError


def role_password(cfg: ClickHouseSettings, role: str) -> str:
    """The role's password from its private file, or a message that says how to get one."""
    path = Path(cfg.credentials_dir) / f"{role}.password"
    try:
        mode = path.stat().st_mode
        secret = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"clickhouse: no password for user {role!r} at {path} ({e.strerror}); "
                          f"`flowctl stack up` creates it on the local stack") from None
    if mode & 0o077:
        raise ConfigError(f"clickhouse: {path} is readable by other users; chmod 600 it")
    return secret


class WarehouseError(RuntimeError):
    """``kind`` says what a writer may do next:

    - ``rejected``: the rows themselves were refused (a value the column or a server-side check
      does not accept, or one the driver cannot encode). Nothing was written; the same rows fail
      again, so a writer isolates them (dead letter) instead of retrying.
    - ``transient``: the server refused for now (too many parts, memory, timeouts on its side).
      Nothing was written; retry later.
    - ``ambiguous``: the connection failed mid-request; the insert may or may not have been
      applied. A writer must find out before it retries (pipeline.sink.consumer).
    - ``fatal``: configuration or rights (unknown table, access denied, bad password): retrying
      cannot help and no row is to blame.
    """

    def __init__(self, message: str, kind: str = "fatal", code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


# ClickHouse error codes (src/Common/ErrorCodes.cpp) that no row causes.
_FATAL_CODES = frozenset({16, 47, 60, 81, 164, 192, 193, 194, 195, 291, 497, 516})
# 285/286: fewer live replicas than insert_quorum, or an earlier quorum insert not yet
# satisfied (a replica is down: wait for it, the records stay in Kafka).
_TRANSIENT_CODES = frozenset({159, 202, 203, 209, 210, 236, 241, 242, 252, 285, 286, 394, 425, 999})
_AMBIGUOUS_CODES = frozenset({319})   # UNKNOWN_STATUS_OF_INSERT


def classify(e: BaseException) -> str:
    """The :class:`WarehouseError` kind of a driver or socket error."""
    if isinstance(e, ServerException):
        code = getattr(e, "code", None)
        if code in _FATAL_CODES:
            return "fatal"
        if code in _TRANSIENT_CODES:
            return "transient"
        if code in _AMBIGUOUS_CODES:
            return "ambiguous"
        return "rejected"
    if isinstance(e, (NetworkError, SocketTimeoutError, OSError, EOFError, UnexpectedPacketFromServerError)):
        return "ambiguous"
    if isinstance(e, (TypeMismatchError, TooLargeStringSize, ValueError, TypeError, OverflowError, struct.error)):
        return "rejected"
    return "fatal"


class Warehouse(Protocol):
    database: str

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None: ...
    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]: ...
    def insert(self, table: str, columns: Sequence[str], data: list[list[Any]], query_id: str | None = None) -> int: ...
    def server_version(self) -> str: ...


class ServerWarehouse:
    """A ClickHouse server over the native protocol."""

    def __init__(self, cfg: ClickHouseSettings, database: str | None = None, *, role: ClickHouseRole) -> None:
        """``role``: the ClickHouse user to connect as (admin, sink or analyst); the server
        enforces what it may do (read-only analysts, no DDL for the sink)."""
        self.cfg = cfg   # a second connection with the same settings (the sink's insert process)
        self.database = database or cfg.database
        self.role = role
        self.cluster = cfg.cluster
        # Replicas to fail over to: the driver tries the hosts in turn whenever it (re)connects.
        extra = {"alt_hosts": cfg.alt_hosts} if cfg.alt_hosts else {}
        self.client = Client(host=cfg.host, port=cfg.port, user=role, **extra,
                             password=role_password(cfg, role), connect_timeout=5,
                             send_receive_timeout=cfg.send_receive_timeout_seconds,
                             settings={"use_numpy": False,
                                       "max_memory_usage": int(cfg.max_query_memory_gb * 2**30),
                                       **({"insert_quorum": cfg.insert_quorum} if cfg.insert_quorum else {})})
        self._where = f"{cfg.host}:{cfg.port}" + (f" (or {cfg.alt_hosts})" if cfg.alt_hosts else "")

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.rows(sql, params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        try:
            return self.client.execute(sql, params)
        except (DriverError, OSError, EOFError) as e:
            raise WarehouseError(f"ClickHouse at {self._where}: {_brief(e)}", classify(e),
                                 getattr(e, "code", None)) from e

    def insert(self, table: str, columns: Sequence[str], data: list[list[Any]], query_id: str | None = None) -> int:
        """Columnar batch insert (one block: applied entirely or not at all); returns rows
        written. ``query_id`` lets a writer find the insert in ``system.processes`` after a
        connection failure (pipeline.sink.consumer).

        Why ``types_check=False``: clickhouse-driver's check does not refuse an int outside its
        column's range, it masks it into range (70000 lands in an Int16 as 4464), and it was
        three quarters of the insert's client CPU (docs/SCALING.md §6). Without it, the struct
        packing refuses such a value or a value of the wrong type (``struct.error``: the rows
        are ``rejected``, isolated and dead-lettered by the sink); the sink checks every value
        before it gets here anyway."""
        sql = f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) VALUES"
        try:
            return self.client.execute(sql, data, columnar=True, types_check=False, query_id=query_id) or 0
        except (DriverError, OSError, EOFError, ValueError, TypeError, OverflowError, struct.error) as e:
            raise WarehouseError(f"insert into {table} at {self._where}: {_brief(e)}", classify(e),
                                 getattr(e, "code", None)) from e

    def server_version(self) -> str:
        return str(self.rows("SELECT version()")[0][0])

    def close(self) -> None:
        self.client.disconnect()


class ChdbWarehouse:
    """The current ClickHouse engine embedded via chdb: keeps the SQL honest on modern releases."""

    def __init__(self, path: str, database: str = "flow") -> None:
        from chdb import session  # optional: only the test extra installs chdb

        self.database = database
        self.sess = session.Session(path)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.rows(sql, params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
        if params:
            sql = substitute(sql, params)
        try:
            out = str(self.sess.query(sql, "TabSeparated"))
        except Exception as e:
            raise WarehouseError(f"chdb: {str(e).splitlines()[0][:500]}") from e
        return [tuple(r) for r in csv.reader(io.StringIO(out), delimiter="\t")] if out.strip() else []

    def insert(self, table: str, columns: Sequence[str], data: list[list[Any]], query_id: str | None = None) -> int:
        """Columnar data, as for the server; sent as a VALUES literal (``query_id`` unused)."""
        n = len(data[0]) if data else 0
        if n == 0:
            return 0
        values = ", ".join("(" + ", ".join(quote(col[i]) for col in data) + ")" for i in range(n))
        self.execute(f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) VALUES {values}")
        return n

    def server_version(self) -> str:
        return self.rows("SELECT version()")[0][0]

    def close(self) -> None:
        self.sess.close()


def _brief(e: BaseException) -> str:
    """The server's own message (DB::Exception line), without its stack trace."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    msg = next((l for l in lines if "Exception" in l), lines[0] if lines else "")
    msg = msg.split(" Stack trace:")[0]
    if isinstance(e, (OSError, EOFError)) or "Connection refused" in msg:
        msg += " (is the server up? `flowctl stack up`)"
    code = getattr(e, "code", None)
    return f"{type(e).__name__}{f' (code {code})' if code else ''}: {msg[:500]}"


def quote(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{s}'"


def substitute(sql: str, params: dict[str, Any]) -> str:
    """clickhouse-driver's %(name)s substitution, for engines without server-side parameters."""
    return sql % {k: quote(v) for k, v in params.items()}
