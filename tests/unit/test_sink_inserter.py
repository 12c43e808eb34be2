"""The insert process's request reader (pipeline/sink/inserter.py): what it hands the inserting
thread for each way a request can arrive. The process itself, with a real warehouse, is
exercised in tests/integration/test_sink.py."""
import pickle
import queue
from multiprocessing import Pipe

import polars as pl

from pipeline.sink.inserter import _GONE, _STOP, Target, _read


def _run(*sends, close: bool = False) -> list:
    a, b = Pipe()
    for kind, payload in sends:
        (a.send_bytes if kind == "bytes" else a.send)(payload)
    if close:
        a.close()
    out: queue.Queue = queue.Queue()
    _read(b, out)
    return [out.get_nowait() for _ in range(out.qsize())]


def test_requests_become_pending_rows_in_order_then_stop():
    import io

    buf = io.BytesIO()
    pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}).write_ipc(buf)
    t = Target("t", ("a", "b"), offsets=True)
    got = _run(("obj", {"topic": (t, [buf.getvalue(), [[3], ["z"]]], [0, 0, 1], [5, 5, 6])}), ("obj", None))
    assert len(got) == 2 and got[1] == _STOP
    target, pending = got[0]["topic"]
    assert target == t and pending.cols == [[1, 2, 3], ["x", "y", "z"]] and pending.offs == [5, 5, 6]


def test_a_broken_channel_is_gone_not_a_clean_stop():
    """EOF means the sink died: the inserting thread must not land what is still queued."""
    assert _run(close=True) == [_GONE]


def test_a_request_that_cannot_be_read_is_handed_over_as_its_error_and_reading_ends():
    got = _run(("bytes", b"not a pickle"), ("obj", None))
    assert len(got) == 1 and isinstance(got[0], pickle.UnpicklingError)
    t = Target("t", ("a", "b"), offsets=False)
    got = _run(("obj", {"topic": (t, [[[1]]], [0], [1])}), ("obj", None))   # one column for two
    assert len(got) == 1 and isinstance(got[0], ValueError) and "1 columns for a table of 2" in str(got[0])
