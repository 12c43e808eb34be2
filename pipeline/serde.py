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


def _load(path: Path) -> _Schema:
    raw = json.loads(path.read_text())
    parsed = parse_schema(raw, _write_hint=False)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return _Schema(raw["name"], parse_schema(raw), fp)


class Registry:
    """Current (reader) schemas by name, and every known writer schema by fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self.current: dict[str, _Schema] = {}
        self.writers: dict[bytes, _Schema] = {}
        for p in sorted(schema_dir.glob("*.avsc")):
            s = _load(p)
            self.current[s.name] = s
            self.writers[s.fp] = s
        hist = schema_dir / "history"
        if hist.is_dir():
            for p in sorted(hist.glob("*.avsc")):
                s = _load(p)
                self.writers.setdefault(s.fp, s)
        missing = [n for n in RECORD_NAMES if n not in self.current]
        if missing:
            raise SerdeError("schema_missing", f"schemas {missing} not found in {schema_dir}")

    def add_writer(self, raw_schema: dict) -> bytes:
        """Register an extra writer schema (e.g. from an older producer); returns its fingerprint."""
        parsed = parse_schema(raw_schema, _write_hint=False)
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        self.writers[fp] = _Schema(raw_schema["name"], parse_schema(raw_schema), fp)
        return fp

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

    def decode(self, name: str, data: bytes | None) -> dict[str, Any]:
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
            rec = fastavro.schemaless_reader(buf, writer.parsed, None if writer is reader else reader.parsed)
        except Exception as e:  # fastavro raises many types on truncated/corrupt input
            raise SerdeError("malformed_record", f"{name}: cannot decode body ({type(e).__name__})") from None
        if buf.tell() != len(data) - HEADER_LEN:
            raise SerdeError("malformed_record", f"{name}: {len(data) - HEADER_LEN - buf.tell()} trailing bytes")
        return rec


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


__all__ = ["SerdeError", "Registry", "registry", "encode", "decode", "RECORD_NAMES", "epoch_ms"]


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def valid_identifier(value: object) -> bool:
    """Site and camera ids: 1-64 characters of A-Z a-z 0-9 . _ : - (first alphanumeric). They are
    shown in reports, dashboards and logs and used as metric labels: control characters, NUL,
    newlines or bidirectional overrides would forge or hide lines there."""
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None
