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
    df = BatchDecoder(spec.record).decode(values)
    assert df is not None and df.height == len(values)
    cols, good, refer = batch_rows(spec, df)
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
