"""The sink's record checks and row building, without Kafka or ClickHouse: values the
warehouse would wrap or mangle are refused, errors say what to do next, and the fast flow-row
path equals the components' own column builder."""
import pytest

from pipeline import serde
from pipeline.sink.consumer import InvalidRecord, check_record


def test_sink_refuses_values_the_warehouse_would_wrap_or_ids_it_would_show():
    ok = {"site_id": "s1", "camera_id": "c1", "group_id": 999, "occurrences": 3, "window_seconds": 60}
    check_record("GroupOccurrence", ok)
    for bad in ({"group_id": 65536}, {"group_id": -1}, {"occurrences": 1 << 32}, {"camera_id": "c\u202e1"}):
        with pytest.raises(InvalidRecord):
            check_record("GroupOccurrence", {**ok, **bad})
    receipt = {"site_id": "s1", "camera_id": "c1", "captured_at": 1_790_000_000_000, "deleted_at": 1_790_000_000_040}
    check_record("DeletionReceipt", receipt)
    for bad in ({"captured_at": -1}, {"deleted_at": (1 << 32) * 1000}):   # DateTime wraps outside 1970..2106
        with pytest.raises(InvalidRecord, match="DateTime"):
            check_record("DeletionReceipt", {**receipt, **bad})


def test_warehouse_errors_say_whether_to_retry_isolate_or_stop():
    """The sink's next step depends on the kind: a row's content (isolate it), the server for
    now (retry), the connection mid-insert (find out first), or configuration (stop)."""
    from clickhouse_driver.errors import NetworkError, ServerException, SocketTimeoutError, TypeMismatchError

    from pipeline.sink.clickhouse import classify

    assert classify(ServerException("throwIf", 395)) == "rejected"
    assert classify(ServerException("cannot parse", 6)) == "rejected"
    assert classify(TypeMismatchError("bad type")) == "rejected"
    assert classify(ServerException("too many parts", 252)) == "transient"
    assert classify(ServerException("unknown status of insert", 319)) == "ambiguous"
    assert classify(SocketTimeoutError("timed out")) == "ambiguous"
    assert classify(NetworkError("reset")) == "ambiguous"
    assert classify(TimeoutError("timed out")) == "ambiguous"
    assert classify(ServerException("unknown table", 60)) == "fatal"
    assert classify(ServerException("wrong password", 516)) == "fatal"


def test_the_sinks_flow_rows_match_the_components_own_columns():
    """The sink builds flow rows straight from the decoded record (fast path); they must equal
    what FlowComponent and flow_component_columns make of the same record, through real serde."""
    import random

    from pipeline.aggregator.model import FlowComponent, flow_component_columns
    from pipeline.sink.consumer import FLOW_COMPONENTS, _single_row

    rng = random.Random(7)
    for _ in range(200):
        c = FlowComponent("pp-x", 60, 1_790_002_800_000 + 3_600_000 * rng.randrange(1000), "s1", "a", "s2", "b",
                          rng.choice(["lag", "far", "far2"]), rng.randrange(30), rng.randrange(30, 60),
                          rng.randrange(-10**12, 10**12), rng.randrange(10**15), rng.randrange(10**15),
                          rng.randrange(-10**12, 10**12), rng.randrange(1 << 90), rng.randrange(1 << 40),
                          rng.randrange(10**9))
        rec = serde.decode("FlowComponent", serde.encode("FlowComponent", c.to_record()))
        check_record("FlowComponent", rec)
        assert FLOW_COMPONENTS.row(rec) == _single_row(flow_component_columns([FlowComponent.from_record(rec)]))


def test_a_flow_between_whole_sites_has_empty_camera_ids_on_both_ends_only():
    """aggregator.cross_site "site": a site pair's rows carry empty camera ids (no real camera can
    have one). The sink lands them, through real serde, and refuses one empty end."""
    from pipeline.aggregator.model import FlowComponent

    site_pair = FlowComponent("pp-x", 60, 1_790_002_800_000, "s1", "", "s2", "", "lag", 3, 3, 5, 900, 900, 2700,
                              8100, 0, 1)
    rec = serde.decode("FlowComponent", serde.encode("FlowComponent", site_pair.to_record()))
    check_record("FlowComponent", rec)
    for bad in ({"origin_camera": "a"}, {"dest_camera": "b"}):
        with pytest.raises(InvalidRecord, match="camera"):
            check_record("FlowComponent", {**rec, **bad, **{k: "" for k in ("origin_camera", "dest_camera")
                                                           if k not in bad}})
    with pytest.raises(InvalidRecord):
        check_record("FootfallComponent", {"site_id": "s1", "camera_id": "", "window_seconds": 60})
