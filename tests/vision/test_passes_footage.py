"""Perception on real footage against the project's own labels (bench/data/vtest-gt): the
processor's detector, embedding and pass counter with their default settings, on vtest.avi as
the edge sends it (2 frames/s, <= 640x480, JPEG q80).

The thresholds are issue 10's acceptance figures; the full table (2, 4 and 5 fps, by person
size, with the tracker on labelled boxes) is printed by bench/vision/perception.py."""
import cv2
import numpy as np
import pytest

from pipeline.edge.sources import open_source
from pipeline.processor.app import pass_counter
from pipeline.vision.factory import descriptor_for, detector_for
from pipeline.settings import REPO_ROOT, load_settings
from pipeline.vision import evaluation as ev
from pipeline.vision.crops import appearance_features, crop_weights
from pipeline.vision.tracker import Tracker
from tests.sample_data import footage_path

LABELS = REPO_ROOT / "bench" / "data" / "vtest-gt" / "annotations.csv"
VIDEO_FPS = 10.0


@pytest.fixture(scope="module")
def run():
    ps = load_settings().processor
    det, (embed, _) = detector_for(ps), descriptor_for(ps.descriptor)
    labels = ev.load_labels(LABELS, scale=640 / 768)
    frames = []
    for f in open_source(str(footage_path()), 2.0, 640, 480):
        _, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        boxes = det.detect(img)
        frames.append((int(round(f.offset_seconds * VIDEO_FPS)), boxes,
                       embed(img, boxes) if boxes else np.zeros((0, 256), np.float32),
                       crop_weights(boxes, img.shape[1], img.shape[0])))
    return ps, labels, frames


def test_detector_finds_people_with_few_false_alarms(run):
    ps, labels, frames = run
    score = ev.DetectionScore()
    for fr, boxes, _, _ in frames:
        score.add(ev.match_frame([(b.x, b.y, b.w, b.h) for b in boxes], labels.get(fr, [])))
    assert score.tp > 500
    assert score.recall >= 0.85 and score.precision >= 0.90, (score.recall, score.precision)


def test_each_visit_is_about_one_pass(run):
    ps, labels, frames = run
    pc = pass_counter(ps)
    passes = 0
    for fr, boxes, desc, q in frames:
        for c in pc.update("s", "c", int(fr * 100), boxes, desc, None, q):
            passes += len(c.descriptors)
    passes += sum(len(c.descriptors) for _, _, c in pc.flush())
    visits = sum(ev.visits(labels, int(ps.pass_max_gap_seconds * VIDEO_FPS), frames=[f[0] for f in frames]).values())
    assert visits >= 15
    assert 0.8 * visits <= passes <= 1.3 * visits, (passes, visits)


def test_passes_rarely_jump_to_another_person(run):
    ps, labels, frames = run
    tracker = Tracker(pass_counter(ps).cfg)
    seq: dict[int, list[tuple[int, int | None]]] = {}
    for fr, boxes, desc, q in frames:
        a = tracker.update(fr / VIDEO_FPS, [(b.x, b.y, b.w, b.h) for b in boxes], [b.score for b in boxes],
                           appearance_features(desc, q))
        m = ev.match_frame([(b.x, b.y, b.w, b.h) for b in boxes], labels.get(fr, []))
        for tid, person in zip(a.track_of, m.person_of):
            if tid is not None:
                seq.setdefault(tid, []).append((fr, person))
    s = ev.score_passes({t: v for t, v in seq.items() if len(v) >= ps.pass_min_hits}, [])
    assert s.links > 500
    assert s.jump_rate <= 0.05, (s.jumps, s.links)
