"""The stream processor as a faust-streaming app: a thin agent that wires the frame-reference
topic to :class:`FrameProcessor` and :class:`WindowAggregator` and sends what they produce.

CPU-bound work (decrypt, decode, detect, embed) runs in a thread pool so the event loop keeps
heartbeating and committing. Offsets are committed by faust once an event is acked, i.e. after
its blob is deleted and its receipt (or dead letter) was handed to the producer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faust
import numpy as np

from pipeline import serde
from pipeline.ops.kafka_clients import faust_credentials
from pipeline.envelope import KeyDirectory
from pipeline.ops import metrics as m_
from pipeline.framestore import store_from_settings
from pipeline.privacy import WINDOW_MARKER_GROUP, Anonymizer, PrivacyParams, pad_with_fictitious
from pipeline.privacy.demographics import check_demographic_counts
from pipeline.privacy.deployment import load_params
from pipeline.processor.frames import FrameProcessor, ProcessingError, dead_letter
from pipeline.processor.passes import Contribution, PassCounter
from pipeline.processor.windows import ClosedWindow, WindowAggregator
from pipeline.layout import count_lines, read_layout
from pipeline.settings import ProcessorSettings, Settings, key_retire_after_seconds
from pipeline.vision.age_gender import DemographicEstimator
from pipeline.vision.factory import descriptor_for, detector_for
from pipeline.vision.tracker import TrackerConfig

log = logging.getLogger(__name__)

LOG_APPEND_TIME = 1   # Kafka record timestamp type (0: CreateTime, the producer's clock)


@dataclass
class ProcessorStats:
    frames: int = 0
    persons: int = 0   # detections, one per person per frame
    passes: int = 0    # person passes: what is published as occurrences
    dead_letters: dict[str, int] = field(default_factory=dict)
    windows_emitted: int = 0
    occurrence_records: int = 0
    demographic_records: int = 0
    last_event: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)


def pass_counter(ps: ProcessorSettings) -> PassCounter:
    """The pass counter the settings describe; appearance joins the tracking only for re-id
    embeddings, whose cosine distances the gate was chosen for; cameras with a counting line in
    the layout file get their crossings counted."""
    cfg = TrackerConfig(high_score=ps.track_high_score, low_score=min(ps.track_low_score, ps.track_high_score),
                        max_gap_s=ps.pass_max_gap_seconds, min_hits=ps.pass_min_hits,
                        app_gate=ps.track_appearance_gate)
    lines = count_lines(read_layout(ps.layout)) if ps.layout else {}
    return PassCounter(cfg, max_pass_seconds=ps.pass_max_seconds, appearance=ps.descriptor.startswith("reid"),
                       lines=lines)


def occurrence_records(w: ClosedWindow, params: PrivacyParams, rng: np.random.Generator) -> list[dict]:
    """The window's padded group cells; a window left with none (nobody passed and no fictitious
    person was drawn) still sends one cell of 0 occurrences (group 0): a *window marker*.

    Why the marker: footfall subtracts the expected fictitious persons of every window the camera
    was live. Counting only windows with cells subtracted too few in quiet hours, where about a
    third of the windows (exp(-1) at one fictitious person a window) have none: about 22 phantom
    persons an hour per camera at night (issue 12 item 4). The marker carries no person."""
    padded = pad_with_fictitious(dict(w.counts), params, rng)
    cells = [(int(g), int(c)) for g, c in sorted(padded.items()) if c > 0] or [(WINDOW_MARKER_GROUP, 0)]
    return [{"site_id": w.site_id, "camera_id": w.camera_id, "window_start": w.window_start_ms,
             "window_seconds": w.window_seconds, "group_id": g, "occurrences": c,
             "params_version": params.version}
            for g, c in cells]


def occurrence_key(group_id: int) -> bytes:
    """Kafka key of an occurrence cell: its group (docs/AGGREGATOR.md §2). The aggregator never
    needs to know which partition holds which group, only that each group has one."""
    return str(int(group_id)).encode()


def camera_key(site_id: str, camera_id: str) -> bytes:
    """Kafka key of a camera's per-window counts: a camera-hour's counts land in one partition,
    where the aggregator's counts stage sums and protects them (pipeline/aggregator/counts.py)."""
    return f"{site_id}/{camera_id}".encode()


def crossing_records(w: ClosedWindow, params: PrivacyParams) -> list[dict]:
    """The window's exact line crossings per (line, direction): restricted input of the
    aggregator, which publishes camera-hours with differential-privacy noise (no cell is
    suppressed here any more: suppression below 3 bounds nothing an analyst can difference)."""
    return [{"site_id": w.site_id, "camera_id": w.camera_id, "window_start": w.window_start_ms,
             "window_seconds": w.window_seconds, "line": line, "direction": d, "crossings": int(c),
             "params_version": params.version}
            for (line, d), c in sorted(w.demographics.items()) if c > 0]


def demographic_records(w: ClosedWindow, params: PrivacyParams) -> list[dict]:
    """The window's exact (age_band, gender) counts: restricted input of the aggregator's
    demographics stage, which publishes protected camera-hours (docs/PRIVACY.md)."""
    check_demographic_counts(dict(w.demographics))
    return [{"site_id": w.site_id, "camera_id": w.camera_id, "window_start": w.window_start_ms,
             "window_seconds": w.window_seconds, "age_band": band, "gender": gender, "persons": int(c),
             "params_version": params.version}
            for (band, gender), c in sorted(w.demographics.items()) if c > 0]


def build_app(settings: Settings, *, max_frames: int | None = None, idle_timeout: float | None = None,
              max_seconds: float | None = None) -> tuple[faust.App, ProcessorStats]:
    k = settings.kafka
    ps = settings.processor
    ps.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        ps.app_id,
        broker=f"kafka://{k.bootstrap}",
        # One id per process: the group's description then tells which worker owns which
        # partitions (operators, and the worker fault test, read it).
        broker_client_id=f"{k.client_id}-processor-{socket.gethostname()}-{os.getpid()}",
        broker_credentials=faust_credentials(settings, "processor"),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(ps.data_dir / f"{ps.app_id}-data"),
        web_enabled=False,
        topic_allow_declare=False,   # topics come from infra/topics.yaml, with their retention
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=50,
        broker_commit_interval=1.0,
        producer_acks=-1,
        stream_wait_empty=False,
        processing_guarantee="at_least_once",
        broker_session_timeout=ps.session_timeout_seconds,
        broker_heartbeat_interval=ps.session_timeout_seconds / 4,
    )
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    frames_topic = app.topic(k.frame_refs_topic, **raw)
    occ_topic = app.topic(k.occurrences_topic, **raw)
    demo_topic = app.topic(k.demographics_topic, **raw)
    cross_topic = app.topic(k.crossings_topic, **raw)
    rec_topic = app.topic(k.receipts_topic, **raw)
    dlq_topic = app.topic(k.dead_letter_topic, **raw)

    params = load_params(settings)
    store = store_from_settings(settings)
    # Demographics are always on (no setting exists for them): face detector + age/gender models,
    # loaded and hash-checked here so a missing model fails at start, not on the first person.
    describe, dim = descriptor_for(ps.descriptor)
    tolerance_ms = int(ps.clock_skew_tolerance_seconds * 1000)
    # Rotation reaches a running processor: the key directory is re-read (KeyDirectory).
    processor = FrameProcessor(store, KeyDirectory(settings.keys.dir, key_retire_after_seconds(settings)), detector_for(ps),
                               Anonymizer(params, input_dim=dim), settings.store.max_blob_bytes,
                               demographics=DemographicEstimator(), describe=describe,
                               skew_tolerance_ms=tolerance_ms, store_ttl_ms=int(settings.store.ttl_seconds * 1000))
    windows = WindowAggregator(ps.window_seconds, ps.grace_seconds, ps.idle_flush_seconds)
    # Demographics on their own, longer windows; a quiet camera closes them after the longer of
    # the idle flush and one occurrence window, so a short pause does not split them.
    demo_windows = WindowAggregator(ps.demographics_window_seconds, ps.grace_seconds,
                                    max(ps.idle_flush_seconds, float(ps.window_seconds)))
    passes = pass_counter(ps)
    # Line crossings are counted per camera over the demographics window (counts of a few people
    # per minute would describe individuals).
    line_windows = WindowAggregator(ps.demographics_window_seconds, ps.grace_seconds,
                                    max(ps.idle_flush_seconds, float(ps.window_seconds)))
    pool = ThreadPoolExecutor(max_workers=ps.worker_threads, thread_name_prefix="infer")
    rng = np.random.default_rng()  # fictitious persons: fresh entropy, never reproducible
    stats = ProcessorStats()
    stopping = {"flag": False}

    async def emit_windows(closed: list[ClosedWindow], closed_demo: list[ClosedWindow],
                           closed_lines: list[ClosedWindow] = ()) -> None:
        for w in closed:
            recs = occurrence_records(w, params, rng)
            for r in recs:
                # Keyed by group: every occurrence of a group, from every camera, lands in one
                # partition, where the flow aggregator multiplies A_g(t)·B_g(t+d) locally.
                await occ_topic.send(key=occurrence_key(r["group_id"]), value=serde.encode("GroupOccurrence", r))
            stats.windows_emitted += 1
            stats.occurrence_records += len(recs)
            m_.WINDOWS.inc()
        for w in closed_demo:
            demo = demographic_records(w, params)
            for r in demo:
                await demo_topic.send(key=camera_key(w.site_id, w.camera_id), value=serde.encode("DemographicCount", r))
            stats.demographic_records += len(demo)
        for w in closed_lines:
            for r in crossing_records(w, params):
                await cross_topic.send(key=camera_key(w.site_id, w.camera_id), value=serde.encode("LineCrossingCount", r))
        m_.OPEN_WINDOWS.set(windows.open_windows)

    async def count(loop: asyncio.AbstractEventLoop, site: str, cam: str, ended: list[Contribution]) -> None:
        for c in ended:
            if c.descriptors:
                t = time.perf_counter()
                groups = await loop.run_in_executor(pool, processor.assign_groups, c.descriptors)
                m_.STAGE_SECONDS.labels("anonymise").observe(time.perf_counter() - t)
                windows.add(site, cam, c.ts_ms, groups)
                stats.passes += len(groups)
            if c.demographics:
                demo_windows.add(site, cam, c.ts_ms, (), demographics=c.demographics)
            if c.crossings:
                line_windows.add(site, cam, c.ts_ms, (), demographics=c.crossings)

    # Which input partition each camera's frames came from, and which partitions this worker
    # owns: a camera is handed over when its partition moves to another worker.
    camera_partition: dict[tuple[str, str], int] = {}
    owned: set[int] = set()
    pass_idle_s = max(ps.pass_max_seconds, ps.idle_flush_seconds)

    async def hand_over(cams: list[tuple[str, str]], why: str, *, moved: bool = False) -> None:
        """Close every open window of ``cams`` now; end their passes, counting them unless the
        camera ``moved`` to another worker.

        Why not changelog-backed state: a camera's open passes hold running sums of re-id
        embeddings, personal data that by design never leaves this worker's memory (a changelog
        topic would keep it for its retention, and replicate it). What moves with a partition
        is therefore nothing: the old owner closes the camera's windows as fragments and drops
        its open passes, the new owner starts a fresh tracker, opens new fragments of the same
        windows (the aggregator sums fragments) and counts the persons still in view when their
        passes end. Counting the dropped passes here as well counted each person in view twice
        (measured: 46 passes against 33 for three cameras handed over once,
        tests/integration/test_workers.py); dropping them loses only a person who leaves before
        the new owner has seen them pass_min_hits times. An idle camera (no new owner) has its
        passes counted. A crash cannot hand over: the dead worker's open windows and passes are
        lost (docs/SCALING.md §7)."""
        if not cams:
            return
        loop = asyncio.get_running_loop()
        n = 0
        if moved:
            n = passes.drop(cams)
        else:
            for site, cam, c in passes.flush(cams):
                await count(loop, site, cam, [c])
                n += 1
        await emit_windows(windows.flush_cameras(cams), demo_windows.flush_cameras(cams),
                           line_windows.flush_cameras(cams))
        for cam in cams:
            camera_partition.pop(cam, None)
        log.info("handed over %d camera(s) (%s): %d open pass(es) %s", len(cams), why, n,
                 "left to the new owner" if moved else "counted")

    @app.on_partitions_assigned.connect
    async def _assigned(app: faust.App, assigned: set, **kwargs: object) -> None:  # noqa: ARG001
        # Decided on assignment, not on revocation: faust's rebalances revoke every partition
        # and then assign the new set, in which a worker mostly gets its own partitions back
        # (faust's assignor is sticky); handing those over would split every pass in view.
        topic = frames_topic.get_topic_name()
        owned.clear()
        owned.update(tp.partition for tp in assigned if tp.topic == topic)
        gone = [cam for cam, p in camera_partition.items() if p not in owned]
        if gone:
            await hand_over(gone, "partitions moved to another worker", moved=True)
            await app.producer.flush()
        log.info("assigned partitions %s of %s", sorted(owned), topic)

    @app.agent(frames_topic)
    async def process_frames(stream):  # noqa: ANN001 - faust's stream type
        loop = asyncio.get_running_loop()
        async for event in stream.events():
            m = event.message
            stats.last_event = time.monotonic()
            m_.LAST_EVENT.set_to_current_time()
            # The broker's append time is the trusted clock (the topic policy sets LogAppendTime);
            # a record stamped by its producer (CreateTime) carries the edge's own clock.
            appended_ms = int(m.timestamp * 1000) if m.timestamp_type == LOG_APPEND_TIME and m.timestamp else None
            try:
                res = await loop.run_in_executor(pool, processor.process, event.value, None, appended_ms)
            except ProcessingError as e:
                if e.skew_ms is not None:
                    m_.EDGE_CLOCK_SKEW.observe(e.skew_ms / 1000)
                stats.dead_letters[e.reason] = stats.dead_letters.get(e.reason, 0) + 1
                m_.FRAMES.labels("dead_letter").inc()
                m_.DEAD_LETTERS.labels("processor", e.reason).inc()
                log.warning("dead letter %s[%d]@%d: %s", m.topic, m.partition, m.offset, e.reason,
                            exc_info=e.reason == "internal_error")  # a bug: keep its traceback
                await dlq_topic.send(key=m.key or b"", value=serde.encode(
                    "DeadLetter", dead_letter(e, event.value, m.topic, m.partition, m.offset, "processor")))
                if e.receipt:
                    await rec_topic.send(key=m.key or b"", value=serde.encode("DeletionReceipt", e.receipt))
            except Exception as e:  # a bug must not kill the agent silently: dead-letter and go on
                stats.dead_letters["internal_error"] = stats.dead_letters.get("internal_error", 0) + 1
                m_.FRAMES.labels("dead_letter").inc()
                m_.DEAD_LETTERS.labels("processor", "internal_error").inc()
                log.exception("internal error on %s[%d]@%d", m.topic, m.partition, m.offset)
                await dlq_topic.send(key=m.key or b"", value=serde.encode(
                    "DeadLetter", dead_letter(e, event.value, m.topic, m.partition, m.offset, "processor")))
            else:
                # The frame keeps its windows open (and padded) even when nobody new is in view;
                # occurrences and demographics are counted once per person pass, from the pass's
                # mean descriptor when it ends.
                if res.skew_ms is not None:
                    m_.EDGE_CLOCK_SKEW.observe(res.skew_ms / 1000)
                windows.add(res.site_id, res.camera_id, res.captured_at_ms, ())
                demo_windows.add(res.site_id, res.camera_id, res.captured_at_ms, ())  # advances its watermark
                line_windows.add(res.site_id, res.camera_id, res.captured_at_ms, ())
                ended = passes.update(res.site_id, res.camera_id, res.captured_at_ms, res.scored_boxes,
                                      res.descriptors, res.labels, res.quality, res.frame_size)
                await count(loop, res.site_id, res.camera_id, ended)
                camera_partition[(res.site_id, res.camera_id)] = m.partition
                if m.partition not in owned:
                    # Moved away while this frame was in flight (faust does not wait for it):
                    # the camera's state is handed over behind it, not left behind.
                    await hand_over([(res.site_id, res.camera_id)], "frame finished after its partition moved", moved=True)
                stats.persons += res.persons
                m_.FRAMES.labels("processed").inc()
                m_.PERSONS.inc(res.persons)
                if res.receipt["outcome"] == "DELETED":
                    m_.DELETION_LATENCY.observe(max(0.0, (res.receipt["deleted_at"] - res.captured_at_ms) / 1000))
                for stage, ms in res.timings_ms.items():
                    m_.STAGE_SECONDS.labels(stage).observe(ms / 1000)
                await rec_topic.send(key=res.camera_id.encode(), value=serde.encode("DeletionReceipt", res.receipt))
            stats.frames += 1
            await emit_windows(windows.flush_ready(), demo_windows.flush_ready(), line_windows.flush_ready())

    @app.timer(interval=1.0)
    async def housekeeping() -> None:
        # A camera with no frame for a while (its edge stopped, or another worker owns it now)
        # must not keep descriptor sums in open passes until the process ends.
        await hand_over(passes.idle_cameras(pass_idle_s), "idle")
        await emit_windows(windows.flush_ready(), demo_windows.flush_ready(), line_windows.flush_ready())
        now = time.monotonic()
        done = (max_frames is not None and stats.frames >= max_frames) or \
               (idle_timeout is not None and now - stats.last_event >= idle_timeout) or \
               (max_seconds is not None and now - stats.started >= max_seconds)
        if done and not stopping["flag"]:
            stopping["flag"] = True
            for site, cam, c in passes.flush():
                await count(asyncio.get_running_loop(), site, cam, [c])
            await emit_windows(windows.flush_all(), demo_windows.flush_all(), line_windows.flush_all())
            await app.producer.flush()
            log.info("bounded run complete: %d frames, %d persons, dead letters %s",
                     stats.frames, stats.persons, stats.dead_letters)
            os.kill(os.getpid(), signal.SIGTERM)

    @app.on_before_shutdown.connect
    async def _flush_on_shutdown(app: faust.App, **kwargs: object) -> None:  # noqa: ARG001
        # Graceful stop (SIGTERM): emit every open window before leaving.
        if not stopping["flag"]:
            stopping["flag"] = True
            for site, cam, c in passes.flush():
                await count(asyncio.get_running_loop(), site, cam, [c])
            await emit_windows(windows.flush_all(), demo_windows.flush_all(), line_windows.flush_all())
            await app.producer.flush()

    return app, stats


def run_processor(settings: Settings, *, max_frames: int | None = None, idle_timeout: float | None = None,
                  max_seconds: float | None = None, loglevel: str = "warning") -> ProcessorStats:
    # Parallelism comes from the worker threads; multi-threaded BLAS inside each small matrix
    # product (projection, hashing) only fights them for the cores: measured 2.8x fewer frames/s
    # per core with OpenBLAS's default threads (bench/vision/evaluate.py, end-to-end section).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    app, stats = build_app(settings, max_frames=max_frames, idle_timeout=idle_timeout, max_seconds=max_seconds)
    if settings.processor.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.processor.metrics_port, addr=settings.processor.metrics_addr)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    return stats
