"""Demographic counts, end to end on the real broker and ClickHouse: edge → processor (faust
worker subprocess, real face/age/gender models) → sink → flow.demographic_counts.

Two cameras: vtest.avi (pedestrians whose faces are ~10 px: every person must be counted as
'unknown', never guessed) and a folder of real face photos (OpenCV documentation images, see
infra/models/fetch_face_samples.sh) sent several times each, so the real (band, gender) cells
reach the small-count threshold and are published."""
import shutil
from datetime import datetime, timezone

import pytest

from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store
from pipeline.privacy.demographics import AGE_BANDS
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl
from tests.sample_data import face_samples_dir

pytestmark = pytest.mark.integration

VTEST_FRAMES = 10
COPIES = 5  # per face photo: above the publication threshold of 3


def _window_start(s) -> datetime:
    w = s.processor.window_seconds
    now = datetime.now(timezone.utc).timestamp()
    return datetime.fromtimestamp(now - now % w, tz=timezone.utc)  # all frames of a camera in one window


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

    ClickHouseSink(s, ServerWarehouse(s.clickhouse)).run(idle_timeout=4, max_seconds=120)
    wh = ServerWarehouse(s.clickhouse)
    db = s.clickhouse.database
    rows = wh.rows(f"SELECT camera_id, age_band, gender, sum(persons), any(params_version), any(window_seconds) "
                   f"FROM {db}.demographic_counts WHERE site_id = 'demo-site' "
                   f"GROUP BY camera_id, age_band, gender ORDER BY camera_id, age_band, gender")
    cells = {(cam, band, g): int(p) for cam, band, g, p, _, _ in rows}
    assert rows and all(v and ws == s.processor.demographics_window_seconds for *_, v, ws in rows)

    # the plaza: every pedestrian is 'unknown' (tiny faces are never estimated)
    plaza = {k: v for k, v in cells.items() if k[0] == "plaza"}
    assert set(plaza) == {("plaza", "unknown", "unknown")} and plaza[("plaza", "unknown", "unknown")] >= 3

    # the door: one man and one woman, each seen COPIES times, get real adult bands
    door = {k[1:]: v for k, v in cells.items() if k[0] == "door"}
    male = {b: v for (b, g), v in door.items() if g == "male"}
    female = {b: v for (b, g), v in door.items() if g == "female"}
    assert sum(male.values()) == COPIES and set(male) <= set(AGE_BANDS[:3]), door
    assert sum(female.values()) == COPIES and set(female) <= set(AGE_BANDS[:2]), door
    assert all(v >= 3 for v in door.values())  # no published cell below the threshold

    # nothing but counts reached the warehouse: no per-person, image or landmark columns
    cols = [r[0] for r in wh.rows(f"SELECT name FROM system.columns WHERE database = '{db}' "
                                  f"AND table = 'demographic_counts'")]
    assert set(cols) == {"site_id", "camera_id", "window_start", "window_seconds", "age_band", "gender", "persons",
                         "params_version", "kafka_partition", "kafka_offset", "ingested_at"}
