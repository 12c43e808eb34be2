"""Ordered ClickHouse migrations from schemas/clickhouse/NNNN_name.sql, recorded in
<db>.schema_migrations with a checksum so an edited, already-applied migration is caught.
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

    def statements(self, db: str) -> list[str]:
        body = "\n".join(l for l in self.sql.splitlines() if not l.strip().startswith("--"))
        return [s.strip().replace("{db}", db) for s in body.split(";") if s.strip()]


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
    wh.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    wh.execute(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
               f"checksum String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY version")
    applied = {int(v): c for v, c in wh.rows(f"SELECT version, checksum FROM {db}.schema_migrations")}
    done = []
    for m in discover(directory):
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(f"migration {m.version:04d}_{m.name} was edited after it was applied; "
                                     "add a new migration instead")
            continue
        for stmt in m.statements(db):
            try:
                wh.execute(stmt)
            except WarehouseError as e:
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {e}") from e
        wh.insert("schema_migrations", ["version", "name", "checksum"], [[m.version], [m.name], [m.checksum]])
        done.append(f"{m.version:04d}_{m.name}")
    return done
