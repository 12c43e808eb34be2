"""Ordered ClickHouse migrations from schemas/clickhouse/NNNN_name.sql, recorded in
<db>.schema_migrations with a checksum so an edited, already-applied migration is caught.

On a cluster (``clickhouse.cluster``) the same files are applied to every replica: each DDL
statement runs ``ON CLUSTER`` (ClickHouse's distributed DDL queue in ZooKeeper), every
``*MergeTree`` engine becomes its ``Replicated*MergeTree`` twin at
``/clickhouse/tables/{shard}/<db>/<table>`` with the server's ``{replica}`` macro, and data
statements (INSERT ... SELECT) run once, on the replica the migration is connected to, from
where replication copies their parts. Why rewrite rather than keep a second set of files: one
schema history, so a single server and a cluster can never drift apart. After the migrations,
each replicated table gets a ``<table>_all`` Distributed table over the cluster (rebuilt on
every run, so it follows ALTERs): reads through it go to any live replica.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import REPO_ROOT
from pipeline.sink.clickhouse import Warehouse, WarehouseError

MIGRATIONS_DIR = REPO_ROOT / "schemas" / "clickhouse"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, db: str, cluster: str = "") -> list[str]:
        body = "\n".join(l for l in self.sql.splitlines() if not l.strip().startswith("--"))
        out = [s.strip().replace("{db}", db) for s in body.split(";") if s.strip()]
        return [on_cluster(s, db, cluster) for s in out] if cluster else out


_DDL = re.compile(r"^(CREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW|DATABASE)\s+IF\s+NOT\s+EXISTS"
                  r"|DROP\s+(?:TABLE|VIEW|DATABASE)\s+IF\s+EXISTS|ALTER\s+TABLE)\s+([A-Za-z0-9_.]+)", re.I)
_RENAME = re.compile(r"^RENAME\s+TABLE\s+[A-Za-z0-9_.]+\s+TO\s+[A-Za-z0-9_.]+"
                     r"(\s*,\s*[A-Za-z0-9_.]+\s+TO\s+[A-Za-z0-9_.]+)*$", re.I)
_ENGINE = re.compile(r"ENGINE\s*=\s*(Replacing|Summing|Aggregating|Collapsing|)MergeTree\s*\(", re.I)


def on_cluster(stmt: str, db: str, cluster: str) -> str:
    """``stmt`` for every replica of ``cluster``: DDL gets ON CLUSTER, MergeTree engines their
    replicated twins; anything else (data statements) is returned unchanged."""
    if _RENAME.match(stmt):
        # RENAME has no IF EXISTS form; on a cluster it is queued for every replica like the rest
        # (a replicated table keeps its ZooKeeper path under its new name).
        return f"{stmt} ON CLUSTER {cluster}"
    m = _DDL.match(stmt)
    if not m:
        if re.match(r"^(CREATE|DROP|ALTER|RENAME|TRUNCATE)\b", stmt, re.I):
            raise MigrationError(f"cannot apply on a cluster (no IF [NOT] EXISTS form): {stmt[:80]}")
        return stmt
    name = m.group(2)
    out = stmt[:m.end()] + f" ON CLUSTER {cluster}" + stmt[m.end():]
    e = _ENGINE.search(out)
    if e:
        # the engine's own arguments, up to the parenthesis that closes them
        depth, i = 1, e.end()
        while depth:
            if i >= len(out):
                raise MigrationError(f"unbalanced engine arguments: {stmt[:80]}")
            depth += {"(": 1, ")": -1}.get(out[i], 0)
            i += 1
        args = out[e.end():i - 1].strip()
        table = name.split(".")[-1]
        path = f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'"
        out = out[:e.start()] + f"ENGINE = Replicated{e.group(1)}MergeTree({path}{', ' + args if args else ''})" + out[i:]
    return out


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise MigrationError(f"{p.name}: migration files must be named NNNN_snake_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migrations share a version number")
    return out


def migrate(wh: Warehouse, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order; returns the names applied."""
    db = wh.database
    cluster = getattr(wh, "cluster", "")
    for stmt in (f"CREATE DATABASE IF NOT EXISTS {db}",
                 f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
                 f"checksum String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY version"):
        wh.execute(on_cluster(stmt, db, cluster) if cluster else stmt)
    applied = {int(v): c for v, c in wh.rows(f"SELECT version, checksum FROM {db}.schema_migrations")}
    done = []
    for m in discover(directory):
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(f"migration {m.version:04d}_{m.name} was edited after it was applied; "
                                     "add a new migration instead")
            continue
        for stmt in m.statements(db, cluster):
            try:
                wh.execute(stmt)
            except WarehouseError as e:
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {e}") from e
        wh.insert("schema_migrations", ["version", "name", "checksum"], [[m.version], [m.name], [m.checksum]])
        done.append(f"{m.version:04d}_{m.name}")
    if cluster:
        distributed_tables(wh, cluster)
    return done


def distributed_tables(wh: Warehouse, cluster: str) -> list[str]:
    """``<table>_all`` (Distributed over ``cluster``) for each replicated table of the database,
    dropped and created again so its columns follow the table's (it holds no data)."""
    db = wh.database
    names = [r[0] for r in wh.rows(
        "SELECT name FROM system.tables WHERE database = %(db)s AND engine LIKE 'Replicated%%MergeTree' "
        "ORDER BY name", {"db": db})]
    for t in names:
        wh.execute(f"DROP TABLE IF EXISTS {db}.{t}_all ON CLUSTER {cluster}")
        wh.execute(f"CREATE TABLE {db}.{t}_all ON CLUSTER {cluster} AS {db}.{t} "
                   f"ENGINE = Distributed({cluster}, {db}, {t}, rand())")
    return [f"{t}_all" for t in names]
