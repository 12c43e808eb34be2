"""The one place records become bytes and back.

Records travel as Avro single-object encoding (Avro spec: 0xC3 0x01, the writer schema's
8-byte CRC-64-AVRO fingerprint, then the binary body). The fingerprint lets a reader decode
any writer schema it knows (current schemas in ``schemas/avro``, earlier versions in
``schemas/avro/history``) into the current reader schema, so producers and consumers can be
upgraded independently. Every failure surfaces as :class:`SerdeError` with a reason code.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from pipeline.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schemas" / "avro"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10

RECORD_NAMES = ("FrameRef", "GroupOccurrence", "DemographicCount", "DeletionReceipt", "DeadLetter", "FrameIssued")
# Published components travel many rows to a message (``encode_batch``): one Kafka message per
# record cost the sink more CPU in the Kafka client than ClickHouse's insert of the same rows
# (docs/SCALING.md). A batch's schema is derived from its row schema, for the current row schema
# and every historical one, so a row schema change versions its batches with it.
BATCHED = ("FlowComponent", "FootfallComponent", "CountComponent")
BATCH_SUFFIX = "Batch"


class SerdeError(ValueError):
    """A record could not be encoded or decoded. ``reason`` is stable and safe to log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Schema:
    name: str
    parsed: Any
    fp: bytes
    plain: Any   # the same schema without logical types: timestamps stay longs


def _without_logical_types(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _without_logical_types(v) for k, v in raw.items() if k != "logicalType"}
    if isinstance(raw, list):
        return [_without_logical_types(v) for v in raw]
    return raw


def _from_raw(raw: dict) -> _Schema:
    parsed = parse_schema(raw, _write_hint=False)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return _Schema(raw["name"], parse_schema(raw), fp, parse_schema(_without_logical_types(raw)))


def _with_batch(raw: dict) -> list[_Schema]:
    """A schema, and the schema of its batches when its records travel in batches."""
    s = _from_raw(raw)
    return [s, _from_raw(batch_schema(raw))] if s.name in BATCHED else [s]


def batch_schema(row_schema: dict) -> dict:
    """The schema of a message of many ``row_schema`` rows: a record with one array field, so its
    body is the Avro array encoding of the rows (count, rows, 0; pipeline/sink/batch.py relies
    on that layout)."""
    return {"type": "record", "name": row_schema["name"] + BATCH_SUFFIX, "namespace": row_schema.get("namespace"),
            "doc": f"Many {row_schema['name']} rows in one message (pipeline.serde.BATCHED).",
            "fields": [{"name": "rows", "type": {"type": "array", "items": row_schema}}]}


class Registry:
    """Current (reader) schemas by name, and every known writer schema by fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self.current: dict[str, _Schema] = {}
        self.writers: dict[bytes, _Schema] = {}
        for p in sorted(schema_dir.glob("*.avsc")):
            for s in _with_batch(json.loads(p.read_text())):
                self.current[s.name] = s
                self.writers[s.fp] = s
        hist = schema_dir / "history"
        if hist.is_dir():
            for p in sorted(hist.glob("*.avsc")):
                for s in _with_batch(json.loads(p.read_text())):
                    self.writers.setdefault(s.fp, s)
        missing = [n for n in RECORD_NAMES if n not in self.current]
        if missing:
            raise SerdeError("schema_missing", f"schemas {missing} not found in {schema_dir}")

    def add_writer(self, raw_schema: dict) -> bytes:
        """Register an extra writer schema (e.g. from an older producer), and its batch schema
        for a batched record; returns its fingerprint."""
        schemas = _with_batch(raw_schema)
        for s in schemas:
            self.writers[s.fp] = s
        return schemas[0].fp

    def encode(self, name: str, record: dict[str, Any], *, schema: _Schema | None = None) -> bytes:
        s = schema or self.current.get(name)
        if s is None:
            raise SerdeError("unknown_schema", f"no schema named {name!r}")
        buf = io.BytesIO()
        buf.write(MAGIC + s.fp)
        try:
            fastavro.schemaless_writer(buf, s.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # fastavro's message names the field; it never contains the field's value.
            raise SerdeError("invalid_record", f"{name}: {_field_error(e)}") from None
        return buf.getvalue()

    def decode(self, name: str, data: bytes | None, *, plain: bool = False) -> dict[str, Any]:
        """``plain``: timestamps as the longs they are on the wire (a time outside Python's
        datetime range is then a value the caller can refuse, not an undecodable record)."""
        reader = self.current.get(name)
        if reader is None:
            raise SerdeError("unknown_schema", f"no schema named {name!r}")
        if not data:
            raise SerdeError("malformed_record", f"{name}: empty value")
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SerdeError("malformed_record", f"{name}: not Avro single-object encoding (bad magic)")
        writer = self.writers.get(data[2:HEADER_LEN])
        if writer is None:
            raise SerdeError("unknown_writer_schema", f"{name}: writer schema fingerprint {data[2:HEADER_LEN].hex()} is unknown")
        if writer.name != name:
            raise SerdeError("wrong_record_type", f"expected {name}, got {writer.name}")
        buf = io.BytesIO(data[HEADER_LEN:])
        try:
            # Same schema on both sides (the usual case): no resolution step, which costs about
            # as much as the decoding itself.
            w, r = (writer.plain, reader.plain) if plain else (writer.parsed, reader.parsed)
            rec = fastavro.schemaless_reader(buf, w, None if writer is reader else r)
        except Exception as e:  # fastavro raises many types on truncated/corrupt input
            raise SerdeError("malformed_record", f"{name}: cannot decode body ({type(e).__name__})") from None
        if buf.tell() != len(data) - HEADER_LEN:
            raise SerdeError("malformed_record", f"{name}: {len(data) - HEADER_LEN - buf.tell()} trailing bytes")
        return rec

    def encode_batch(self, name: str, records: list[dict[str, Any]]) -> bytes:
        """Many ``name`` records (one of ``BATCHED``) as one message."""
        if name not in BATCHED:
            raise SerdeError("unknown_schema", f"{name} records are not sent in batches")
        if not records:
            raise SerdeError("invalid_record", f"{name}: an empty batch")
        return self.encode(name + BATCH_SUFFIX, {"rows": records})

    def decode_rows(self, name: str, data: bytes | None, *, plain: bool = False) -> list[dict[str, Any]]:
        """The ``name`` rows of a message: one for a single record, all of a batch's. ``plain``:
        as for :meth:`decode` (one row's odd timestamp must not make its batch undecodable)."""
        writer = self.writers.get(data[2:HEADER_LEN]) if data and len(data) >= HEADER_LEN else None
        if name in BATCHED and writer is not None and writer.name == name + BATCH_SUFFIX:
            return self.decode(name + BATCH_SUFFIX, data, plain=plain)["rows"]
        return [self.decode(name, data, plain=plain)]


def _field_error(e: Exception) -> str:
    msg = str(e)
    # strict-mode messages look like "Field(name) ... is not ..." with the value; keep the field only.
    if "Field(" in msg:
        field = msg.split("Field(", 1)[1].split(")", 1)[0]
        return f"field {field} is missing or has the wrong type ({type(e).__name__})"
    return f"{type(e).__name__}"


def epoch_ms(v: Any) -> int:
    """A timestamp-millis field as an int, whether decoded (datetime) or given as millis."""
    return int(v.timestamp() * 1000) if hasattr(v, "timestamp") else int(v)


@lru_cache(maxsize=1)
def registry() -> Registry:
    return Registry()


def encode(name: str, record: dict[str, Any]) -> bytes:
    return registry().encode(name, record)


def decode(name: str, data: bytes | None) -> dict[str, Any]:
    return registry().decode(name, data)


def encode_batch(name: str, records: list[dict[str, Any]]) -> bytes:
    return registry().encode_batch(name, records)


def decode_rows(name: str, data: bytes | None, *, plain: bool = False) -> list[dict[str, Any]]:
    return registry().decode_rows(name, data, plain=plain)


__all__ = ["SerdeError", "Registry", "registry", "encode", "decode", "encode_batch", "decode_rows", "RECORD_NAMES",
           "BATCHED", "epoch_ms"]


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def valid_identifier(value: object) -> bool:
    """Site and camera ids: 1-64 characters of A-Z a-z 0-9 . _ : - (first alphanumeric). They are
    shown in reports, dashboards and logs and used as metric labels: control characters, NUL,
    newlines or bidirectional overrides would forge or hide lines there."""
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None
