"""Decode a consumed batch of one record type at once, in Rust, and prove it decoded each message alone.

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

Published components arrive many rows to a message (pipeline.serde.BATCHED): a message's body is
then the Avro array encoding of its rows, one block (row count, rows, a 0), which the aggregator
and fastavro always write. The block's rows join the container block as they are, and the check
becomes per message: its rows' recomputed lengths must add up to its rows' bytes. Why that
suffices: polars never reads past a block (a block too short for its rows fails), so the bytes
all rows consumed are at most the block's size, which is the sum of the messages' row bytes;
each row consumed at least its recomputed length (a minimal varint is the shortest); the sums
being equal, every row consumed exactly its recomputed length, so message i's rows end where
its bytes end, by induction from the first.
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
class Decoded:
    """A batch's rows as columns, in message order, and how many rows each message gave."""

    frame: pl.DataFrame
    rows: np.ndarray   # rows per message, >= 1 each


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """Avro's zig-zag long at ``pos``: (value, position after it), None if it runs off the end."""
    z = shift = 0
    for i in range(pos, min(len(data), pos + 10)):
        b = data[i]
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1), i + 1
        shift += 7
    return None


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
        batch = reg.current.get(name + serde.BATCH_SUFFIX)
        self.batch_prefix = serde.MAGIC + batch.fp if batch is not None else None
        # The parsing canonical form drops doc, default and logicalType (polars refuses field
        # defaults; timestamps stay longs of milliseconds, which is what the sink's checks and
        # columns want) and keeps everything that decides the bytes.
        canonical = json.loads(to_parsing_canonical_form(schema.parsed))
        self.fields: tuple[_Field, ...] | None = _fields(canonical)
        head = io.BytesIO()
        fastavro.writer(head, fastavro.parse_schema(canonical), [])
        self._header = head.getvalue()
        self._sync = self._header[-16:]

    def decode(self, values: list[bytes], *, min_rows: int = 1) -> Decoded | None:
        """The rows of ``values`` as columns (in order), or ``None`` when any value is not
        provably a current-schema message of this type (every value one record, or every value
        one batch; see the module doc), or when they hold fewer than ``min_rows`` rows."""
        if self.fields is None or not values:
            return None
        split = self._bodies(values)
        if split is None:
            return None
        bodies, rows = split
        total = int(rows.sum())
        if total < min_rows:
            return None
        body = b"".join(bodies)
        container = b"".join((self._header, _zz(total), _zz(len(body)), body, self._sync))
        try:
            df = pl.read_avro(io.BytesIO(container))
        except (Exception, pl.exceptions.PanicException):   # corrupt input: several error types, or a panic
            return None
        if df.height != total:
            return None
        lengths = self._encoded_lengths(df)
        if len(rows) != total:
            lengths = np.add.reduceat(lengths, np.concatenate(([0], np.cumsum(rows[:-1]))))
        if not np.array_equal(lengths, np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))):
            return None
        return Decoded(df, rows)

    def _bodies(self, values: list[bytes]) -> tuple[list[bytes], np.ndarray] | None:
        """Each value's row bytes and row count; None unless all are single records or all are
        one-block batches."""
        n = len(self.prefix)
        head = values[0][:n]
        if head == self.prefix:
            if any(v[:n] != head for v in values):
                return None
            return [v[n:] for v in values], np.ones(len(values), dtype=np.int64)
        if head != self.batch_prefix or any(v[:n] != head for v in values):
            return None
        bodies, rows = [], []
        for v in values:
            block = _varint(v, n)
            # One block of at least one row (every field takes a byte at least), then the
            # array's terminating 0.
            if block is None or block[0] < 1 or v[-1] != 0 or block[0] * len(self.fields) > len(v) - 1 - block[1]:
                return None
            bodies.append(v[block[1]:-1])
            rows.append(block[0])
        return bodies, np.array(rows, dtype=np.int64)

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
