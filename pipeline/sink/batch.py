"""Decode a consumed batch of one record type at once, in Rust, and prove it decoded each record alone.

Why: decoding records one by one with fastavro cost the sink more than ClickHouse's insert of
the same rows (about 8 µs a record against 7.5 µs a row, docs/SCALING.md), and a sink on two
cores cannot hide that behind a second thread. Avro datums of one schema concatenate into a
valid Avro object-container block, so a batch of single-object-encoded records becomes one
in-memory container file that polars' Avro reader (Rust) decodes into columns at well under a
microsecond a record.

Why the lengths are checked: concatenated datums have no boundaries. A record with trailing
bytes, or one cut short, would shift every record after it, and the shifted bytes can still
decode. So after decoding, each record's encoded length is recomputed from its decoded values
(Avro's binary encoding is a pure function of the values when varints are minimal, as every
encoder writes them) and compared with its message's length. When all match, record i was
decoded from exactly its own message's bytes (by induction from the first). Any mismatch, any
decode error, a writer schema other than the current one or a field type this module does not
measure: the caller decodes that batch one record at a time, as before, and dead-letters
exactly the records that path refuses.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import fastavro
import numpy as np
import polars as pl
from fastavro.schema import to_parsing_canonical_form

from pipeline import serde

# Avro primitive types whose encoded length this module computes from the decoded value.
_VARINT = ("int", "long")
_FIXED_SIZE = {"boolean": 1, "float": 4, "double": 8}
# z >= 2^(7k) needs more than k bytes of varint.
_VARINT_STEPS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _zz(n: int) -> bytes:
    """Avro's zig-zag varint of a long (block headers only)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b, z = z & 0x7F, z >> 7
        if not z:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _varint_bytes(z: np.ndarray) -> np.ndarray:
    """Bytes of a minimal varint for each unsigned value of ``z``."""
    return 1 + np.searchsorted(_VARINT_STEPS, z, side="right")


def _long_bytes(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.int64, copy=False)
    return _varint_bytes(((v << 1) ^ (v >> 63)).view(np.uint64))


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str                        # "varint", "string", "enum" or a _FIXED_SIZE key
    symbols: tuple[str, ...] = ()    # enum symbols, in index order


class BatchDecoder:
    """Batch decoding of one record type written with its current schema; ``None`` from
    :meth:`decode` means "decode this batch one record at a time"."""

    def __init__(self, name: str, registry: serde.Registry | None = None) -> None:
        reg = registry or serde.registry()
        schema = reg.current[name]
        self.prefix = serde.MAGIC + schema.fp
        # The parsing canonical form drops doc, default and logicalType (polars refuses field
        # defaults; timestamps stay longs of milliseconds, which is what the sink's checks and
        # columns want) and keeps everything that decides the bytes.
        canonical = json.loads(to_parsing_canonical_form(schema.parsed))
        self.fields: tuple[_Field, ...] | None = _fields(canonical)
        head = io.BytesIO()
        fastavro.writer(head, fastavro.parse_schema(canonical), [])
        self._header = head.getvalue()
        self._sync = self._header[-16:]

    def decode(self, values: list[bytes]) -> pl.DataFrame | None:
        """The records of ``values`` as columns (one row per value, in order), or ``None`` when
        any value is not provably a current-schema record of this type (see the module doc)."""
        if self.fields is None or not values:
            return None
        n = len(self.prefix)
        prefix = self.prefix
        if any(v[:n] != prefix for v in values):
            return None
        body = b"".join(v[n:] for v in values)
        container = b"".join((self._header, _zz(len(values)), _zz(len(body)), body, self._sync))
        try:
            df = pl.read_avro(io.BytesIO(container))
        except Exception:   # polars reports corrupt input as several error types
            return None
        if df.height != len(values):
            return None
        lengths = np.fromiter((len(v) - n for v in values), dtype=np.int64, count=len(values))
        if not np.array_equal(self._encoded_lengths(df), lengths):
            return None
        return df

    def _encoded_lengths(self, df: pl.DataFrame) -> np.ndarray:
        total = np.zeros(df.height, dtype=np.int64)
        for f in self.fields or ():
            col = df.get_column(f.name)
            if f.kind == "varint":
                total += _long_bytes(col.to_numpy())
            elif f.kind == "string":
                nbytes = col.str.len_bytes().to_numpy().astype(np.int64)
                total += nbytes + _long_bytes(nbytes)
            elif f.kind == "enum":
                index = col.cast(pl.String).replace_strict(list(f.symbols), list(range(len(f.symbols))),
                                                           return_dtype=pl.Int64)
                total += _long_bytes(index.to_numpy())
            else:
                total += _FIXED_SIZE[f.kind]
        return total


def _fields(canonical: dict) -> tuple[_Field, ...] | None:
    """The record's fields with how to measure them; None if any field's type is not a
    primitive, a string or an enum (unions, arrays, maps, bytes, nested records)."""
    out = []
    for f in canonical["fields"]:
        t = f["type"]
        if isinstance(t, str) and t in _VARINT:
            out.append(_Field(f["name"], "varint"))
        elif t == "string":
            out.append(_Field(f["name"], "string"))
        elif isinstance(t, str) and t in _FIXED_SIZE:
            out.append(_Field(f["name"], t))
        elif isinstance(t, dict) and t.get("type") == "enum":
            out.append(_Field(f["name"], "enum", tuple(t["symbols"])))
        else:
            return None
    return tuple(out)
