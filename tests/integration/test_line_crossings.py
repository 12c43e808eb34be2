"""Entries and exits across a camera's counting line, end to end: a layout file with a
count_line, edge -> processor (faust worker subprocess) -> restricted counts -> aggregator -> sink -> flow.crossing_components, checked
against the crossings of the project's labelled people over the same frames."""
from collections import Counter

import pytest

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store
from pipeline.layout import CountLine
from pipeline.settings import REPO_ROOT
from pipeline import serde
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from pipeline.vision import evaluation as ev
from pipeline.vision.lines import LineCounter
from tests.integration.conftest import flowctl, past_window_start
from tests.integration.test_end_to_end import read_all

pytestmark = pytest.mark.integration

N_FRAMES = 120  # 60 s of vtest at 2 frames/s
LINE = CountLine(name="mid", a=(0.5, 0.0), b=(0.5, 1.0))


def labelled_crossings(frames) -> Counter:
    labels = ev.load_labels(REPO_ROOT / "bench/data/vtest-gt/annotations.csv")
    counter, out = LineCounter(LINE), Counter()
    for f in frames:
        for l in labels.get(int(round(f.offset_seconds * 10)), []):
            if not l.ignore:
                x, y, w, h = l.box
                d = counter.update(l.person, (x + w / 2) / 768, (y + h) / 576)
                out[d] += d is not None
    return out


def test_line_crossings_land_by_direction_and_match_the_labelled_people(env, footage, tmp_path):
    layout = tmp_path / "layout.yaml"
    layout.write_text("sites:\n  - site_id: s1\n    cameras:\n      - camera_id: plaza\n        count_line: "
                      "{name: mid, a: [0.5, 0.0], b: [0.5, 1.0]}\n")
    s = env.model_copy(update={"processor": env.processor.model_copy(update={"layout": layout})})
    frames = list(open_source(str(footage), s.edge.sample_fps, s.edge.max_width, s.edge.max_height))[:N_FRAMES]
    # one crossing window, wholly in the past
    start = past_window_start(s.processor.demographics_window_seconds, N_FRAMES / s.edge.sample_fps + 1)
    ep = EdgeProducer(s, open_store(s.store.url, s.store.ttl_seconds), load_public_key(s.keys.dir),
                      site_id="s1", camera_id="plaza")
    st = ep.run(frames, start=start)
    assert st.delivered == N_FRAMES
    proc = flowctl(s, "process", "--max-frames", str(N_FRAMES), "--max-seconds", "240")
    assert f"processor: {N_FRAMES} frames" in proc.stderr, proc.stderr[-2000:]
    # exact per-window counts on the restricted topic (input of the aggregator's crossings stage)
    exact: dict[tuple[str, str], int] = {}
    for m in read_all(s, s.kafka.crossings_topic):
        r = serde.decode("LineCrossingCount", m.value())
        exact[(r["line"], r["direction"])] = exact.get((r["line"], r["direction"]), 0) + r["crossings"]
    truth = labelled_crossings(frames)
    assert truth["in"] >= 3 and truth["out"] >= 3
    for d in ("in", "out"):
        assert abs(exact.get(("mid", d), 0) - truth[d]) <= max(2, truth[d] // 5), (exact, truth)

    # Published: every (line, direction) the camera has had, per hour, with noise (epsilon at its
    # maximum here so that the noise is almost surely 0 and the sums can be compared exactly).
    s = s.model_copy(update={"aggregator": s.aggregator.model_copy(update={"crossings_epsilon": 100.0})})
    flowctl(s, "aggregate", "--stage", "counts", "--flush", "--idle-timeout", "4", "--max-seconds", "120")
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=4, max_seconds=120)
    wh = ServerWarehouse(s.clickhouse, role="admin")
    rows = wh.rows(f"SELECT line, direction, sum(crossings), min(noise_var_milli), count() "
                   f"FROM {s.clickhouse.database}.crossing_components FINAL "
                   f"WHERE site_id = 's1' AND camera_id = 'plaza' GROUP BY line, direction")
    got = {(line, d): int(n) for line, d, n, _, _ in rows}
    assert got == exact
    assert len({c for *_, c in rows}) == 1   # both directions in every hour

