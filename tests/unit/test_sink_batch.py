"""The sink's batch path (pipeline/sink/batch.py and consumer.batch_rows) against its exact
one-record path, through real serde: every record the exact path refuses is referred back to
it, every record the batch lands gets exactly the exact path's row, and a batch whose bytes
are not provably one record per message is not decoded at all."""
from __future__ import annotations

import random
from datetime import datetime

import pytest

from pipeline import serde
from pipeline.sink.batch import BatchDecoder
from pipeline.sink.consumer import (CROSSING_COMPONENTS, DEMOGRAPHIC_COMPONENTS, FLOW_COMPONENTS,
                                    FOOTFALL_COMPONENTS, LEDGER, RECEIPTS, InvalidRecord, batch_rows,
                                    check_record)

MAX_MS = (1 << 32) * 1000
LONG = 1 << 63


def _id(rng: random.Random) -> str:
    """Mostly valid ids; sometimes one the warehouse must not show (empty, too long, a control
    character, a bidirectional override, a leading dot, non-ASCII)."""
    return rng.choice(["s1", "cam-07", "A.b_c:d-9", "x" * 64] * 6 +
                      ["", "x" * 65, "c\n1", "c\u202e1", ".c1", "café", " c1"])


def _ms(rng: random.Random) -> int:
    return rng.choice([1_790_002_800_000 + rng.randrange(10**9)] * 8 + [0, -1, MAX_MS - 1, MAX_MS, -LONG, LONG - 1])


def _long(rng: random.Random) -> int:
    return rng.choice([rng.randrange(-1000, 1000), rng.randrange(-LONG, LONG), 0, -1, LONG - 1, -LONG, 63, 64, -65])


def _flow(rng: random.Random) -> dict:
    site_pair = rng.random() < 0.1
    return {"params_version": rng.choice(["pp-x", "", "pp-\u00e9"]), "window_seconds": rng.choice([60, 10, -1, 2**31 - 1]),
            "hour": _ms(rng), "origin_site": _id(rng), "origin_camera": "" if site_pair else _id(rng),
            "dest_site": _id(rng), "dest_camera": "" if site_pair else _id(rng),
            "kind": rng.choice(["lag", "range", "far"]), "lag_lo": rng.randrange(-3, 100), "lag_hi": rng.randrange(100),
            "s": _long(rng), "nn": _long(rng), "qq": _long(rng), "qn": _long(rng),
            "nn2_hi": _long(rng), "nn2_lo": rng.choice([rng.randrange(1 << 32), -1, 1 << 32, _long(rng)]),
            "version": _long(rng), "noise_var_milli": _long(rng)}


def _footfall(rng: random.Random) -> dict:
    return {"params_version": "pp-x", "window_seconds": rng.choice([60, -5]), "hour": _ms(rng), "site_id": _id(rng),
            "camera_id": _id(rng), "occurrences": _long(rng), "windows": rng.randrange(-2**31, 2**31),
            "version": _long(rng), "noise_var_milli": _long(rng)}


def _count(rng: random.Random) -> dict:
    return {"kind": rng.choice(["demographics", "crossings"]), "params_version": "pp-x", "site_id": _id(rng),
            "camera_id": _id(rng), "hour_start": _ms(rng), "key1": rng.choice(["18-29", "", "in"]), "key2": "f",
            "count": _long(rng), "noise_var_milli": _long(rng), "version": _long(rng)}


def _receipt(rng: random.Random) -> dict:
    return {"frame_id": "0b7c6f64-8d0e-4a8a-9d53-2f1c1b1f2e3a", "site_id": _id(rng), "camera_id": _id(rng),
            "captured_at": _ms(rng), "deleted_at": _ms(rng), "outcome": rng.choice(["DELETED", "ALREADY_ABSENT", "SWEPT"]),
            "deleted_by": "processor"}


def _ledger(rng: random.Random) -> dict:
    return {"frame_id": "0b7c6f64-8d0e-4a8a-9d53-2f1c1b1f2e3a", "site_id": _id(rng), "camera_id": _id(rng),
            "captured_at": _ms(rng), "expires_at": _ms(rng)}


def _exact(spec, value: bytes) -> list | None:
    """The exact path's row (DateTime columns as the seconds the driver sends), or None if it
    refuses the record."""
    try:
        rec = serde.decode(spec.record, value)
        check_record(spec.record, rec)
        row = spec.row(rec)
    except (serde.SerdeError, InvalidRecord, KeyError, TypeError, ValueError, ArithmeticError):
        return None
    return [int(v.timestamp()) if isinstance(v, datetime) else v for v in row]


@pytest.mark.parametrize("spec,make", [(FLOW_COMPONENTS, _flow), (FOOTFALL_COMPONENTS, _footfall),
                                       (DEMOGRAPHIC_COMPONENTS, _count), (CROSSING_COMPONENTS, _count),
                                       (RECEIPTS, _receipt), (LEDGER, _ledger)], ids=lambda x: getattr(x, "table", ""))
def test_batch_rows_equal_the_exact_path_and_refer_everything_it_refuses(spec, make):
    rng = random.Random(spec.table)
    values = [serde.encode(spec.record, make(rng)) for _ in range(3000)]
    got = BatchDecoder(spec.record).decode(values)
    assert got is not None and got.frame.height == len(values) and got.rows.tolist() == [1] * len(values)
    cols, good, refer = batch_rows(spec, got.frame)
    assert sorted([*good, *refer]) == list(range(len(values)))
    exact = [_exact(spec, v) for v in values]
    batch = [list(r) for r in zip(*cols)]
    assert len(batch) == len(good)
    for i, row in zip(good, batch):
        assert exact[i] is not None, f"record {i}: the batch landed what the exact path refuses"
        assert row == exact[i], f"record {i}"
    refused = {i for i, r in enumerate(exact) if r is None}
    assert refused <= set(refer)
    # The generator makes both kinds, so both branches above were exercised.
    assert refused and len(good) >= 100


def test_a_batch_that_is_not_one_record_per_message_is_not_decoded():
    rng = random.Random(3)
    values = [serde.encode("FlowComponent", {**_flow(rng), "origin_site": "s1"}) for _ in range(200)]
    dec = BatchDecoder("FlowComponent")
    assert dec.decode(values) is not None
    for bad in (values[7] + b"\x00", values[7][:-1], values[7] + b"\x02\x02", values[7][:10] + values[8][10:] + b"\x00",
                serde.encode("FootfallComponent", _footfall(rng)), b"", b"\xc3\x01" + b"\x00" * 8 + values[7][10:]):
        assert dec.decode(values[:7] + [bad] + values[8:]) is None
    # Two messages whose bytes moved between them decode to the same concatenation: refused
    # because each one's decoded length must equal its own message's length.
    a, b = values[3], values[4]
    assert dec.decode(values[:3] + [a + b[10:13], b[:10] + b[13:]] + values[5:]) is None


def test_non_minimal_varints_go_the_exact_way():
    """A varint with a redundant continuation byte (0 as 0x80 0x00) is valid Avro that no
    encoder writes; the lengths cannot vouch for it, so the batch is left to the exact path,
    which decodes it."""
    rec = _flow(random.Random(1)) | {"window_seconds": 0}
    v = serde.encode("FlowComponent", rec)
    body = v[10:]
    pv = len(rec["params_version"].encode())
    i = 1 + pv                          # params_version's length varint, its bytes, then window_seconds
    assert body[i] == 0
    padded = v[:10] + body[:i] + b"\x80\x00" + body[i + 1:]
    assert serde.decode("FlowComponent", padded)["window_seconds"] == 0
    assert BatchDecoder("FlowComponent").decode([padded] * 20) is None


def _batches(rng: random.Random, rows: list[dict], sizes: tuple[int, ...] = ()) -> list[bytes]:
    """``rows`` as batch messages of 1 to 60 rows (or of ``sizes`` in turn), as the aggregator
    sends components."""
    out, i = [], 0
    while i < len(rows):
        n = sizes[len(out) % len(sizes)] if sizes else rng.randint(1, 60)
        out.append(serde.encode_batch("FlowComponent", rows[i:i + n]))
        i += n
    return out


def test_batch_messages_decode_to_exactly_their_rows_and_counts():
    rng = random.Random(11)
    rows = [_flow(rng) for _ in range(2500)]
    values = _batches(rng, rows)
    got = BatchDecoder("FlowComponent").decode(values)
    assert got is not None and got.frame.height == len(rows)
    assert got.rows.tolist() == [len(serde.decode_rows("FlowComponent", v, plain=True)) for v in values]
    assert got.frame.to_dicts() == [r for v in values for r in serde.decode_rows("FlowComponent", v, plain=True)]
    # The batch path's columns for the rows it keeps are the exact path's rows, and it refers
    # every row the exact path refuses.
    cols, good, refer = batch_rows(FLOW_COMPONENTS, got.frame)
    exact = [_exact(FLOW_COMPONENTS, serde.encode("FlowComponent", r)) for r in rows]
    for i, row in zip(good, zip(*cols)):
        assert list(row) == exact[i]
    assert {i for i, e in enumerate(exact) if e is None} <= set(refer.tolist())
    assert len(refer) and len(good) >= 100


def test_batch_messages_that_are_not_exactly_their_rows_are_not_decoded():
    rng = random.Random(5)
    rows = [{**_flow(rng), "origin_site": "s1"} for _ in range(400)]
    values = _batches(rng, rows, sizes=(5, 9, 1, 13, 7, 11, 4, 30))
    dec = BatchDecoder("FlowComponent")
    assert dec.decode(values) is not None
    v = values[3]
    n = len(serde.decode_rows("FlowComponent", v, plain=True))
    assert n == 13   # the sizes above: message 3 has 13 rows
    body_start = 10 + len(_zz_bytes(n))
    one_row = serde.encode("FlowComponent", rows[0])[10:]
    bad = [
        v[:-1],                                              # no terminating 0
        v + b"\x00",                                         # a trailing byte
        v[:10] + _zz_bytes(n + 1) + v[body_start:],          # more rows claimed than sent
        v[:10] + _zz_bytes(n - 1) + v[body_start:],         # fewer
        v[:-1] + _zz_bytes(1) + one_row + b"\x00",           # a second block
        v[:10] + _zz_bytes(-n) + _zz_bytes(len(v) - body_start - 1) + v[body_start:],  # a block with its size
        v[:10] + b"\x00",                                    # an empty batch
        serde.encode("FlowComponent", rows[0]),              # a single record among batches
        v[:10] + b"\xff" * 12,                               # a count that never ends
    ]
    for b in bad:
        assert dec.decode(values[:3] + [b] + values[4:]) is None, b[:16]
    # Bytes moved from one message to the next decode to the same concatenation: refused,
    # because each message's rows must add up to its own bytes.
    a, b = values[5], values[6]
    na, nb = (len(serde.decode_rows("FlowComponent", x, plain=True)) for x in (a, b))
    assert nb > 1
    first_b = serde.encode("FlowComponent", serde.decode_rows("FlowComponent", b, plain=True)[0])[10:]
    moved_a = a[:10] + _zz_bytes(na + 1) + a[10 + len(_zz_bytes(na)):-1] + first_b + b"\x00"
    moved_b = b[:10] + _zz_bytes(nb - 1) + b[10 + len(_zz_bytes(nb)) + len(first_b):]
    assert dec.decode([moved_a, moved_b]) is not None   # a genuine re-split is fine...
    skew_a = a[:10] + _zz_bytes(na) + a[10 + len(_zz_bytes(na)):-1] + first_b[:3] + b"\x00"
    skew_b = b[:10] + _zz_bytes(nb) + b[10 + len(_zz_bytes(nb)):][3:]
    assert dec.decode(values[:5] + [skew_a, skew_b] + values[7:]) is None   # ...a skewed one is not


def test_a_batch_below_the_minimum_is_left_to_the_exact_path():
    rng = random.Random(2)
    values = _batches(rng, [_flow(rng) for _ in range(90)])
    dec = BatchDecoder("FlowComponent")
    assert dec.decode(values, min_rows=100) is None
    assert dec.decode(values, min_rows=90) is not None


def test_a_truncated_record_is_refused_not_a_crash():
    """polars panics (a BaseException, not an Exception) on a block too short for its rows."""
    rng = random.Random(4)
    values = [serde.encode("FlowComponent", _flow(rng)) for _ in range(150)]
    assert BatchDecoder("FlowComponent").decode(values[:-1] + [values[-1][:-3]]) is None


def _zz_bytes(n: int) -> bytes:
    from pipeline.sink.batch import _zz
    return _zz(n)


def test_buffered_rows_are_inserted_in_parts_of_at_most_the_batch_size():
    """A poll of batch messages can bring more rows than sink.batch_max_rows at once; the insert
    is cut into parts of at most that many, in order, each with its rows' sources and the index
    its refusals are reported by."""
    from pipeline.sink.inserter import Pending

    rows = Pending([list(range(12)), [str(i) for i in range(12)]], [i % 2 for i in range(12)], list(range(12)))
    parts = rows.chunks(5)
    assert [len(p) for p in parts] == [5, 5, 2] and [p.start for p in parts] == [0, 5, 10]
    assert [v for p in parts for v in p.cols[0]] == list(range(12))
    assert [v for p in parts for v in p.cols[1]] == [str(i) for i in range(12)]
    assert [o for p in parts for o in p.offs] == list(range(12)) and parts[2].parts == [0, 1]
    assert rows.chunks(12) == [rows]
    first, second = parts[1].halves()
    assert (first.start, second.start, second.cols[0]) == (5, 7, [7, 8, 9])


def test_buffered_frames_and_exact_rows_reach_the_insert_as_the_same_columns_in_order():
    """What crosses to the insert process (frames as Arrow IPC, exact-path rows as Python
    columns) comes back as the driver's columns in buffer order, each row with its source."""
    import polars as pl

    from pipeline.sink.consumer import _Rows, _Source
    from pipeline.sink.inserter import pending_from

    rows = _Rows(3)
    rows.extend(pl.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [1.5, None]}), [0, 0], [10, 10], [b"m", b"m"])
    rows.extend(pl.DataFrame({"a": [3], "b": ["z"], "c": [2.5]}), [1], [11], [b"n"])
    rows.append([4, "w", 3.5], _Source(2, 12, b"o"))
    rows.extend(pl.DataFrame({"a": [5], "b": ["ü"], "c": [4.5]}), [0], [13], [b"p"])
    payload = rows.payload()
    assert [type(p) for p in payload] == [bytes, list, bytes]   # consecutive frames travel as one
    got = pending_from(3, payload, rows.parts, rows.offs)
    assert got.cols == [[1, 2, 3, 4, 5], ["x", "y", "z", "w", "ü"], [1.5, None, 2.5, 3.5, 4.5]]
    assert (got.parts, got.offs) == ([0, 0, 1, 2, 0], [10, 10, 11, 12, 13])
    assert rows.source(3) == _Source(2, 12, b"o")
    with pytest.raises(ValueError, match="2 columns for a table of 3"):
        pending_from(3, [[[1], [2]]], [0], [1])
    with pytest.raises(ValueError, match="differ in length"):
        pending_from(3, payload, rows.parts[:-1], rows.offs)
