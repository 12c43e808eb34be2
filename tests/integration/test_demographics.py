"""Demographic counts, end to end on the real broker and ClickHouse: edge → processor (faust
worker subprocess, real face/age/gender models) → restricted per-window counts → the
aggregator's demographics stage → sink → flow.demographic_components.

Two cameras: vtest.avi (pedestrians whose faces are ~10 px: every person must be counted as
'unknown', never guessed) and a folder of real face photos (OpenCV documentation images, see
infra/models/fetch_face_samples.sh) sent several times each, so real (band, gender) cells exist.
The perception is checked on the exact restricted counts; the published cells are checked for
completeness (every grid cell of every camera-hour) and, with epsilon at its maximum so the
noise is almost surely 0, for equality with the exact counts. The noise itself is tested in
tests/aggregator/test_counts.py and on the broker in tests/integration/test_sink.py."""
import re
import shutil
from datetime import datetime

import pytest

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store
from pipeline import serde
from pipeline.aggregator.counts import demographic_grid
from pipeline.privacy.demographics import AGE_BANDS
from pipeline.privacy.release import discrete_laplace_variance
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl, past_window_start
from tests.integration.test_end_to_end import read_all
from tests.sample_data import face_samples_dir

pytestmark = pytest.mark.integration

VTEST_FRAMES = 10
COPIES = 5  # per face photo


def _window_start(s) -> datetime:
    # all frames of a camera in one window, wholly in the past
    return past_window_start(s.processor.window_seconds, VTEST_FRAMES / s.edge.sample_fps + 1)


def test_demographic_counts_land_in_clickhouse(env, footage, tmp_path):
    s = env
    faces = face_samples_dir()
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(COPIES):
        shutil.copy(faces / "face_swapped.jpg", folder / f"a{i}.jpg")
        shutil.copy(faces / "faceDetection.png", folder / f"b{i}.png")
    store = open_store(s.store.url, s.store.ttl_seconds)
    pub = load_public_key(s.keys.dir)
    start = _window_start(s)
    e1 = EdgeProducer(s, store, pub, site_id="demo-site", camera_id="plaza")
    st1 = e1.run(open_source(str(footage), s.edge.sample_fps, s.edge.max_width, s.edge.max_height),
                 max_frames=VTEST_FRAMES, start=start)
    e2 = EdgeProducer(s, store, pub, site_id="demo-site", camera_id="door")
    # Occurrences and demographics are counted per person pass, not per frame: with the pass gap
    # shorter than the 0.25 s between photos and one detection enough for a pass, each photo is a
    # pass of its own.
    # The photos are close-up portraits, which the CCTV person detector (trained on people seen
    # from above at a distance) rightly does not find; SSDLite (trained on VOC photos) does, and
    # this test is about the demographic path behind the detector.
    s = s.model_copy(update={"processor": s.processor.model_copy(update={"pass_max_gap_seconds": 0.2,
                                                                         "pass_min_hits": 1,
                                                                         "detector": "ssdlite"})})
    st2 = e2.run(open_source(str(folder), 4.0, s.edge.max_width, s.edge.max_height), start=start)
    n = VTEST_FRAMES + 2 * COPIES
    assert st1.delivered + st2.delivered == n and st1.failed == st2.failed == 0

    proc = flowctl(s, "process", "--max-frames", str(n), "--max-seconds", "240")
    assert f"processor: {n} frames" in proc.stderr, proc.stderr[-2000:]

    # The processor's output: exact per-window counts on the restricted topic, keyed by camera.
    exact: dict[tuple[str, str, str], int] = {}
    for m in read_all(s, s.kafka.demographics_topic):
        r = serde.decode("DemographicCount", m.value())
        assert r["site_id"] == "demo-site" and r["window_seconds"] == s.processor.demographics_window_seconds
        assert m.key() == f"demo-site/{r['camera_id']}".encode()
        k = (r["camera_id"], r["age_band"], r["gender"])
        exact[k] = exact.get(k, 0) + r["persons"]

    # the plaza: every pedestrian is 'unknown' (tiny faces are never estimated)
    plaza = {k: v for k, v in exact.items() if k[0] == "plaza"}
    assert set(plaza) == {("plaza", "unknown", "unknown")} and plaza[("plaza", "unknown", "unknown")] >= 3

    # the door: one man and one woman, each seen COPIES times, get real adult bands
    door = {k[1:]: v for k, v in exact.items() if k[0] == "door"}
    male = {b: v for (b, g), v in door.items() if g == "male"}
    female = {b: v for (b, g), v in door.items() if g == "female"}
    assert sum(male.values()) == COPIES and set(male) <= set(AGE_BANDS[:3]), door
    assert sum(female.values()) == COPIES and set(female) <= set(AGE_BANDS[:2]), door

    # The aggregator publishes protected camera-hours; the sink lands them.
    s = s.model_copy(update={"aggregator": s.aggregator.model_copy(update={"demographics_epsilon": 100.0})})
    agg = flowctl(s, "aggregate", "--stage", "counts", "--flush", "--idle-timeout", "4", "--max-seconds", "120")
    assert re.search(r"dead\s+letters\s+none", agg.stderr + agg.stdout), agg.stderr[-2000:]
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=4, max_seconds=120)
    wh = ServerWarehouse(s.clickhouse, role="admin")
    db = s.clickhouse.database
    rows = wh.rows(f"SELECT camera_id, toUInt32(hour), age_band, gender, persons, noise_var_milli, params_version "
                   f"FROM {db}.demographic_components FINAL WHERE site_id = 'demo-site'")
    hours = {(cam, h) for cam, h, *_ in rows}
    assert {cam for cam, _ in hours} == {"plaza", "door"}
    # every (band, gender) of every camera-hour, zeros included: no cell exists because someone passed
    assert len(rows) == len(hours) * len(demographic_grid())
    # each carries the variance of the noise its epsilon calls for (here ~0: epsilon 100)
    var = round(discrete_laplace_variance(s.aggregator.counts_spec("demographics", 900).noise_scale) * 1000)
    assert all(v == var and version for *_, v, version in rows)
    published: dict[tuple[str, str, str], int] = {}
    for cam, _h, band, g, p, _v, _ in rows:
        published[(cam, band, g)] = published.get((cam, band, g), 0) + int(p)
    assert {k: v for k, v in published.items() if v} == exact

    # nothing but counts reached the warehouse: no per-person, image or landmark columns
    cols = [r[0] for r in wh.rows(f"SELECT name FROM system.columns WHERE database = '{db}' "
                                  f"AND table = 'demographic_components'")]
    assert set(cols) == {"params_version", "site_id", "camera_id", "hour", "age_band", "gender", "persons",
                         "noise_var_milli", "version"}
