import copy
import json
import time

import pytest

from pipeline import serde
from pipeline.serde import SCHEMA_DIR, Registry, SerdeError


def occurrence(**kw):
    r = dict(site_id="s1", camera_id="c1", window_start=1_700_000_040_000, window_seconds=60,
             group_id=42, occurrences=3, params_version="pp-test")
    r.update(kw)
    return r


def frame_ref():
    return dict(frame_id="0516cb75-3346-4de3-834c-6d09601185ee", site_id="s", camera_id="c",
                captured_at=1_700_000_000_000, expires_at=1_700_000_030_000, blob_uri="file:///x/y.bin",
                blob_sha256="ab" * 32, blob_size=10, nonce=b"\x00" * 12, key_id="k", wrapped_key=b"\x01" * 80,
                width=640, height=480)


@pytest.mark.parametrize("name,rec", [("GroupOccurrence", occurrence()), ("FrameRef", frame_ref())])
def test_round_trip_keeps_every_field(name, rec):
    out = serde.decode(name, serde.encode(name, rec))
    for k, v in rec.items():
        got = out[k]
        if hasattr(got, "timestamp"):
            got = int(got.timestamp() * 1000)
        assert got == v, k


def test_all_records_have_docs_on_every_field():
    for p in SCHEMA_DIR.glob("*.avsc"):
        doc = json.loads(p.read_text())
        assert doc.get("doc"), p.name
        for f in doc["fields"]:
            assert f.get("doc"), f"{p.name}:{f['name']} has no doc"


def test_wrong_type_is_a_serde_error_without_the_value():
    with pytest.raises(SerdeError) as ei:
        serde.encode("GroupOccurrence", occurrence(group_id="secret-value"))
    assert ei.value.reason == "invalid_record"
    assert "secret-value" not in str(ei.value)


@pytest.mark.parametrize("data,reason", [
    (b"", "malformed_record"),
    (b"plain json {}", "malformed_record"),
    (b"\xc3\x01" + b"\x00" * 8 + b"abc", "unknown_writer_schema"),
])
def test_garbage_is_rejected_with_reason(data, reason):
    with pytest.raises(SerdeError) as ei:
        serde.decode("GroupOccurrence", data)
    assert ei.value.reason == reason


def test_truncated_and_padded_bodies_are_rejected():
    b = serde.encode("GroupOccurrence", occurrence())
    for bad in (b[:-2], b + b"\x00\x01"):
        with pytest.raises(SerdeError) as ei:
            serde.decode("GroupOccurrence", bad)
        assert ei.value.reason == "malformed_record"


def test_record_type_is_checked():
    with pytest.raises(SerdeError) as ei:
        serde.decode("FrameRef", serde.encode("GroupOccurrence", occurrence()))
    assert ei.value.reason == "wrong_record_type"


def _schema(name):
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


def test_old_writer_is_read_by_new_reader_with_defaults():
    """Evolution: a producer still on an older schema (without a defaulted field) stays readable."""
    reg = Registry()
    old = _schema("DeadLetter")
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("detail", "frame_id")]
    reg.add_writer(old)
    rec = dict(source_topic="t", source_partition=0, source_offset=5, failed_at=int(time.time() * 1000),
               stage="processor", reason="missing_blob", error_class="X", payload_size=3, payload_sha256="00",
               site_id=None, camera_id=None)
    import io
    import fastavro
    from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

    parsed = parse_schema(old)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parse_schema(old, _write_hint=False)), "CRC-64-AVRO"))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, rec)
    out = reg.decode("DeadLetter", b"\xc3\x01" + fp + buf.getvalue())
    assert out["detail"] == "" and out["frame_id"] is None and out["reason"] == "missing_blob"


def test_new_writer_is_read_by_old_reader_ignoring_added_field(tmp_path):
    """Evolution the other way: a consumer on the current schema reads a newer producer's extra field."""
    newer = _schema("GroupOccurrence")
    newer["fields"] = newer["fields"] + [{"name": "zone_id", "type": ["null", "string"], "default": None, "doc": "x"}]
    reg = Registry()
    fp = reg.add_writer(newer)
    import io
    import fastavro
    from fastavro.schema import parse_schema

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parse_schema(newer), {**occurrence(), "zone_id": "z"})
    out = reg.decode("GroupOccurrence", b"\xc3\x01" + fp + buf.getvalue())
    assert out["group_id"] == 42 and "zone_id" not in out


def test_incompatible_change_is_detected():
    """Adding a field without a default cannot be read from old data: fastavro must refuse."""
    reg = Registry()
    broken = copy.deepcopy(_schema("GroupOccurrence"))
    broken["fields"].append({"name": "must_have", "type": "string", "doc": "x"})
    from fastavro.schema import parse_schema
    import fastavro
    import io

    data = serde.encode("GroupOccurrence", occurrence())
    with pytest.raises(Exception):
        fastavro.schemaless_reader(io.BytesIO(data[10:]), reg.current["GroupOccurrence"].parsed, parse_schema(broken))


def _flow_row(**kw):
    r = dict(params_version="pp-x", window_seconds=60, hour=1_790_002_800_000, origin_site="s1",
             origin_camera="c1", dest_site="s2", dest_camera="c2", kind="lag", lag_lo=0, lag_hi=3,
             s=5, nn=-2, qq=7, qn=1, nn2_hi=0, nn2_lo=9, version=3, noise_var_milli=16000)
    r.update(kw)
    return r


def test_a_batch_round_trips_its_rows_in_order_and_a_single_record_is_one_row():
    rows = [_flow_row(s=i, dest_camera=f"c{i}") for i in range(300)]
    out = serde.decode_rows("FlowComponent", serde.encode_batch("FlowComponent", rows))
    assert [(r["s"], r["dest_camera"]) for r in out] == [(i, f"c{i}") for i in range(300)]
    single = serde.decode_rows("FlowComponent", serde.encode("FlowComponent", rows[7]))
    assert len(single) == 1 and single[0]["s"] == 7


def test_batches_are_only_for_published_components_and_never_empty():
    with pytest.raises(SerdeError) as ei:
        serde.encode_batch("GroupOccurrence", [occurrence()])
    assert ei.value.reason == "unknown_schema"
    with pytest.raises(SerdeError) as ei:
        serde.encode_batch("FlowComponent", [])
    assert ei.value.reason == "invalid_record"
    # A batch of another record type is refused as that type, not read as rows of this one.
    with pytest.raises(SerdeError) as ei:
        serde.decode_rows("FootfallComponent", serde.encode_batch("FlowComponent", [_flow_row()]))
    assert ei.value.reason == "wrong_record_type"
    b = serde.encode_batch("FlowComponent", [_flow_row()] * 3)
    for bad in (b[:-1], b + b"\x00"):
        with pytest.raises(SerdeError) as ei:
            serde.decode_rows("FlowComponent", bad)
        assert ei.value.reason == "malformed_record"


def test_a_batch_from_an_older_row_schema_is_read_with_defaults():
    """A batch's schema derives from its row schema, so an aggregator on an older row schema
    sends batches this sink still reads (the added field takes its default)."""
    reg = Registry()
    old = _schema("FlowComponent")
    old["fields"] = [f for f in old["fields"] if f["name"] != "noise_var_milli"]
    reg.add_writer(old)
    old_batch = reg.writers[next(fp for fp, s in reg.writers.items()
                                 if s.name == "FlowComponentBatch" and fp != reg.current["FlowComponentBatch"].fp)]
    rows = [{k: v for k, v in _flow_row(s=i).items() if k != "noise_var_milli"} for i in range(5)]
    data = reg.encode("FlowComponentBatch", {"rows": rows}, schema=old_batch)
    out = reg.decode_rows("FlowComponent", data)
    assert [r["s"] for r in out] == list(range(5)) and all(r["noise_var_milli"] == 0 for r in out)
