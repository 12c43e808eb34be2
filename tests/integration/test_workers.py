"""Three processor workers in one consumer group, one of them killed with SIGKILL mid-stream,
against a no-fault run of the same frames; both runs go on through the aggregator and the sink
into ClickHouse.

What a crash may lose, by design (pipeline/processor/app.py, ``hand_over``): a processor keeps
a camera's open passes (running sums of re-id embeddings, personal data that never leaves its
memory) and open windows in memory only, and a frame cannot be processed twice because its blob
is deleted when it is read. So a killed worker loses, for the cameras it owned, the passes that
ended in windows it had not yet published, and the persons of the frames it had deleted but not
committed. Everything else must be identical:

- cameras the killed worker did not own: the same occurrences in every window, and the same
  ClickHouse footfall rows;
- the killed worker's cameras: the same occurrences in every window it had closed well before
  the kill; what differs is confined to the windows open at the kill, and each window holds at
  most what the no-fault run counted in it (nothing counted twice, up to the persons whose
  passes the crash split, stated below);
- every frame ends with exactly one receipt of its deletion, no frame is processed twice, and
  no blob is left.

Fictitious padding is off here (a parameter set of the deployment with ratio 0), because it is
fresh randomness per run; both runs share the deployment's keys, so the aggregator's keyed noise
is the same in both and ClickHouse rows compare exactly.
"""
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline import serde
from pipeline.edge.producer import EdgeProducer
from pipeline.edge.sources import open_source
from pipeline.envelope import load_public_key
from pipeline.framestore import open_store
from pipeline.ops.kafka_clients import client_config
from pipeline.ops.topics import admin_client, wait_for_group
from pipeline.privacy.deployment import ensure_deployment_params
from pipeline.settings import REPO_ROOT
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.consumer import ClickHouseSink
from tests.integration.conftest import flowctl, isolated_settings, read_topic, settings_env

pytestmark = pytest.mark.integration

CAMERAS = [f"wk{i}" for i in range(6)]
FRAMES = 70            # per camera: 35 s at 2 fps, 3-4 windows of 10 s
WORKERS = 3


def _tuned(s, params_path):
    return s.model_copy(update={
        "processor": s.processor.model_copy(update={"privacy_params": params_path, "session_timeout_seconds": 6.0}),
        "store": s.store.model_copy(update={"ttl_seconds": 600.0}),
    })


def _without_padding(keys_dir):
    params, _ = ensure_deployment_params(keys_dir)
    path = keys_dir / "params-without-padding.json"
    params.model_copy(update={"fictitious_floor": 0, "fictitious_ratio": 0.0}).save(path)
    return path


def _send(s, frames, start):
    """Every camera's frames, interleaved in capture order as live cameras would send them (a
    partition holding several cameras then carries all of them through the run)."""
    store = open_store(s.store.url, s.store.ttl_seconds)
    key = load_public_key(s.keys.dir)
    edges = [EdgeProducer(s, store, key, site_id="wk", camera_id=cam) for cam in CAMERAS]
    for fr in frames:
        for ep in edges:
            ep.send(fr.image, start + timedelta(seconds=fr.offset_seconds))
    for ep in edges:
        assert ep.producer.flush(30) == 0 and ep.stats.delivered == len(frames), ep.stats.errors


def _reference_run(ref, frames, start) -> Counter:
    """The no-fault run: one worker, every frame; its occurrences per (camera, window)."""
    _send(ref, frames, start)
    p = _processor(ref, "--idle-timeout", "10", "--max-seconds", "400")
    out = p.communicate(timeout=450)[0]
    assert p.returncode == 0, out[-3000:]
    want = _occurrences(ref)
    assert sum(want.values()) > 0
    return want


def _finish(procs) -> None:
    """Wait for bounded workers to end on their own, each successfully."""
    for q in procs:
        out = q.communicate(timeout=400)[0]
        assert q.returncode == 0, out[-3000:]


def _kill_left(procs) -> None:
    for q in procs:
        if q.poll() is None:
            q.kill()


def _assert_every_frame_ends_once(run) -> None:
    """Every frame has a receipt, none was deleted (decrypted, counted) twice, no blob is left."""
    receipts = _receipts(run)
    assert len({r["frame_id"] for r in receipts}) == len(CAMERAS) * FRAMES
    assert max(Counter((r["frame_id"], r["outcome"]) for r in receipts).values()) == 1
    assert open_store(run.store.url, run.store.ttl_seconds).stats().blobs == 0


def _of(occurrences: Counter, cam: str) -> dict:
    """One camera's occurrences per window."""
    return {k: v for k, v in occurrences.items() if k[0] == cam}


def _ms(t) -> int:
    return int(t.timestamp() * 1000)


def _processor(s, *args):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "process", *args], env=settings_env(s),
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _occurrences(s) -> Counter:
    """Occurrences per (camera, window start) on the restricted topic (fragments summed)."""
    out = Counter()
    for m in read_topic(s, s.kafka.occurrences_topic):
        r = serde.decode("GroupOccurrence", m.value())
        out[(r["camera_id"], _ms(r["window_start"]))] += r["occurrences"]
    return out


def _receipts(s) -> list[dict]:
    return [serde.decode("DeletionReceipt", m.value()) for m in read_topic(s, s.kafka.receipts_topic)]


def _owners(s) -> dict[int, int]:
    """Frame-reference partition -> pid of the worker that owns it (the client id ends in it)."""
    admin = admin_client(s)   # kept alive until the answer: a collected client never completes it
    g = admin.describe_consumer_groups([s.processor.app_id])[s.processor.app_id].result(15)
    out = {}
    for member in g.members:
        pid = int(member.client_id.rsplit("-", 1)[1])
        for tp in member.assignment.topic_partitions:
            if tp.topic == s.kafka.frame_refs_topic:
                out[tp.partition] = pid
    return out


def _footfall(s) -> dict[tuple, tuple]:
    """ClickHouse footfall rows by (camera, hour): what an analyst's footfall is made of."""
    flowctl(s, "aggregate", "--idle-timeout", "5", "--max-seconds", "300", "--flush")
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3, max_seconds=120)
    rows = ServerWarehouse(s.clickhouse, role="admin").rows(
        f"SELECT camera_id, hour, occurrences, windows FROM {s.clickhouse.database}.footfall_components FINAL")
    return {(cam, hour): (occ, win) for cam, hour, occ, win in rows}


def test_three_processor_workers_with_one_killed_lose_only_the_dead_workers_open_windows(stack, tmp_path, footage):
    frames = list(open_source(str(footage), 2.0, 640, 480))[:FRAMES]
    start = datetime.now(timezone.utc) - timedelta(seconds=200)
    with isolated_settings(tmp_path) as ref, isolated_settings(tmp_path, keys_dir=ref.keys.dir) as run:
        params = _without_padding(ref.keys.dir)
        ref, run = _tuned(ref, params), _tuned(run, params)
        window_ms = ref.processor.window_seconds * 1000
        grace_ms = ref.processor.grace_seconds * 1000

        want = _reference_run(ref, frames, start)

        # Three workers; the frames go out once the group is stable, so ownership is known.
        procs = [_processor(run, "--idle-timeout", "25", "--max-seconds", "500") for _ in range(WORKERS)]
        try:
            admin = admin_client(run)
            wait_for_group(admin, run.processor.app_id, 240, alive=lambda: all(q.poll() is None for q in procs),
                           members=WORKERS)
            owners = _owners(run)
            assert set(owners.values()) == {q.pid for q in procs}, owners   # every worker owns a partition
            _send(run, frames, start)
            part_of = {}
            for m in read_topic(run, run.kafka.frame_refs_topic):
                part_of[m.key().decode()] = m.partition()
            # The victim: the worker owning the most cameras.
            by_pid = Counter(owners[part_of[c]] for c in CAMERAS)
            victim_pid = by_pid.most_common(1)[0][0]
            victim = next(q for q in procs if q.pid == victim_pid)
            victim_cams = {c for c in CAMERAS if owners[part_of[c]] == victim_pid}
            deadline = time.monotonic() + 300
            while True:
                done = [r for r in _receipts(run) if r["camera_id"] in victim_cams]
                if len(done) >= len(victim_cams) * FRAMES // 2:
                    break
                assert victim.poll() is None, "the victim exited before it could be killed"
                assert time.monotonic() < deadline, "the victim did not handle half its frames in 300 s"
                time.sleep(0.3)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            at_kill = _receipts(run)
            # What the victim had processed by then, per camera: its capture-time watermark.
            wm = {c: max((_ms(r["captured_at"]) for r in at_kill if r["camera_id"] == c and r["outcome"] == "DELETED"),
                         default=0) for c in victim_cams}
            last = _ms(start) + (FRAMES - 1) * 500
            assert any(0 < w < last for w in wm.values()), f"the kill should land mid-stream: {wm}"
            # The survivors take the victim's partitions once its session expires.
            deadline = time.monotonic() + 120
            while True:
                try:
                    after = _owners(run)
                except Exception:  # noqa: BLE001 - the group is rebalancing
                    after = {}
                if set(after) == set(owners) and victim_pid not in after.values():
                    break
                assert time.monotonic() < deadline, f"the survivors did not take over: {after}"
                time.sleep(0.5)
            _finish([q for q in procs if q is not victim])
        finally:
            _kill_left(procs)

        got = _occurrences(run)
        kept = [c for c in CAMERAS if c not in victim_cams and owners[part_of[c]] == after[part_of[c]]]
        assert kept, "every surviving camera moved: nothing is compared exactly"

        # 1. Every frame ends with one receipt; none is decrypted (and counted) twice; no blob left.
        _assert_every_frame_ends_once(run)

        # 2. Cameras that stayed with a surviving worker: every window identical.
        for cam in kept:
            assert _of(got, cam) == _of(want, cam), cam

        # 3. The victim's cameras: windows it closed well before the kill are identical; the rest
        #    hold at most what the no-fault run counted, apart from passes the crash split.
        lost = split = 0
        for cam in victim_cams:
            horizon = wm[cam] - 2_000   # closed, and sent, at least 4 frames before its last receipt
            for key in {k for k in {**want, **got} if k[0] == cam}:
                ws = key[1]
                if ws + window_ms + grace_ms <= horizon:
                    assert got[key] == want[key], (key, got[key], want[key])
                else:
                    lost += max(0, want[key] - got[key])
                    split += max(0, got[key] - want[key])
        open_windows = sum(v for k, v in want.items() if k[0] in victim_cams
                           and k[1] + window_ms + grace_ms > wm[k[0]] - 2_000)
        assert lost <= open_windows
        # A person in view when the new owner took over is one pass there, and the first part of
        # their pass died with the victim; windows gain only where the fresh tracker cuts passes
        # differently. Not a theorem: measured 0, 4 and 10 extra against 5, 8 and 12 lost, so
        # this bound has little margin and is the first thing to revisit if it fails.
        assert split <= lost
        print(f"\n3 workers, 1 killed: {len(victim_cams)} of {len(CAMERAS)} cameras on the victim; "
              f"{sum(want.values())} occurrences without the fault, {sum(got.values())} with it; lost {lost} of "
              f"{open_windows} in windows open at the kill, {split} more where a pass was split; "
              f"{len(kept)} cameras identical")

        # 4. ClickHouse: the kept cameras' footfall rows are identical; the victim's cameras differ
        #    by exactly what the topic says was lost.
        want_rows, got_rows = _footfall(ref), _footfall(run)
        for key in want_rows:
            if key[0] in kept:
                assert got_rows.get(key) == want_rows[key], key
        for cam in victim_cams:
            topic_diff = sum(v for k, v in got.items() if k[0] == cam) - sum(v for k, v in want.items() if k[0] == cam)
            ch_diff = sum(v[0] for k, v in got_rows.items() if k[0] == cam) - \
                sum(v[0] for k, v in want_rows.items() if k[0] == cam)
            assert ch_diff == topic_diff, (cam, ch_diff, topic_diff)


def _group_owners(s, group: str, topic: str) -> dict[int, int]:
    admin = admin_client(s)   # kept alive until the answer: a collected client never completes it
    g = admin.describe_consumer_groups([group])[group].result(15)
    return {tp.partition: int(m.client_id.rsplit("-", 1)[1])
            for m in g.members for tp in m.assignment.topic_partitions if tp.topic == topic}


def _partition_ends(s, topic: str) -> dict[int, int]:
    c = Consumer({**client_config(s, "admin"), "group.id": f"ends-{os.getpid()}", "log_level": 2})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def _aggregate(s, *args):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "aggregate", *args], env=settings_env(s),
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_three_aggregator_workers_with_one_killed_publish_what_one_uninterrupted_worker_publishes(env):
    """The flow aggregator's per-partition stage on three workers and the combiner on a fourth;
    one partition worker is killed mid-stream. Its partitions move to the survivors, which
    restore them from their snapshots (state and input position in one record), so the
    published rows, and ClickHouse, equal an uninterrupted single worker's exactly."""
    from tests.integration.test_aggregator import aggregate_cells, high_watermarks, produce_cells, published, \
        synthetic_cells
    from pipeline.privacy.release import load_noise_key

    s = env.model_copy(update={
        "processor": env.processor.model_copy(update={"window_seconds": 60}),
        "aggregator": env.aggregator.model_copy(update={"window_seconds": 60, "snapshot_interval_seconds": 0.5,
                                                        "idle_advance_seconds": 3600,
                                                        "session_timeout_seconds": 6.0}),
    })
    cells = synthetic_cells(hours=6, seed=11)
    want_flow, want_foot = aggregate_cells(cells, s.aggregator.spec(), partitions=s.aggregator.partitions,
                                           noise_key=load_noise_key(s.keys.dir))
    split = next(i for i, c in enumerate(cells) if c.window_start_ms >= cells[0].window_start_ms + 4 * 3_600_000)
    produce_cells(s, cells[:split])
    group = f"{s.aggregator.app_id}-partitions"
    workers = [_aggregate(s, "--stage", "partitions", "--idle-timeout", "15", "--max-seconds", "400")
               for _ in range(WORKERS)]
    combiner = _aggregate(s, "--stage", "combiner", "--idle-timeout", "30", "--max-seconds", "400")
    procs = workers + [combiner]
    try:
        wait_for_group(admin_client(s), group, 180, alive=lambda: all(q.poll() is None for q in procs),
                       members=WORKERS)
        owners = _group_owners(s, group, s.kafka.occurrences_topic)
        assert set(owners) == set(range(s.aggregator.partitions)) and len(set(owners.values())) == WORKERS, owners
        deadline = time.monotonic() + 180
        while high_watermarks(s, s.kafka.flow_components_topic) == 0:     # real progress first
            assert all(q.poll() is None for q in procs), "a worker exited early"
            assert time.monotonic() < deadline, "nothing was published within 180 s"
            time.sleep(0.5)
        # Half the rest while it works, the kill, then the other half: the survivors must read
        # input of the victim's partitions after restoring them, whatever the kill interrupted.
        second = split + (len(cells) - split) // 2
        produce_cells(s, cells[split:second])
        time.sleep(0.1)
        victim_pid = Counter(owners.values()).most_common(1)[0][0]
        victim = next(q for q in workers if q.pid == victim_pid)
        moved = sorted(p for p, pid in owners.items() if pid == victim_pid)
        os.kill(victim_pid, signal.SIGKILL)
        victim.wait(10)
        produce_cells(s, cells[second:])
        outs = {}
        for q in [w for w in workers if w is not victim] + [combiner]:
            outs[q.pid] = q.communicate(timeout=420)[0]
            assert q.returncode == 0, outs[q.pid][-3000:]
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
    # Each of the victim's partitions was restored from a snapshot by a survivor.
    survivors_text = "".join(outs[q.pid] for q in workers if q is not victim)
    restored: dict[int, int] = {}   # the earliest restore of each partition (later rebalances restore again)
    for p, o in re.findall(r"partitions\[(\d+)\]@(\d+)", survivors_text):
        restored[int(p)] = min(int(o), restored.get(int(p), int(o)))
    assert set(moved) <= set(restored), (moved, survivors_text[-2000:])
    # ... at a position before the end of its input, which a survivor then read.
    ends = _partition_ends(s, s.kafka.occurrences_topic)
    assert any(restored[p] < ends[p] for p in moved), (restored, ends)

    # The last hours are closed by a bounded run (a live deployment closes them as time moves on).
    flowctl(s, "aggregate", "--idle-timeout", "5", "--max-seconds", "300", "--flush")
    got_flow, got_foot, _ = published(s)
    assert got_flow == {r.key: r for r in want_flow}
    assert got_foot == {r.key: r for r in want_foot}
    ClickHouseSink(s, ServerWarehouse(s.clickhouse, role="sink")).run(idle_timeout=3.0, max_seconds=120)
    wh, db = ServerWarehouse(s.clickhouse, role="admin"), s.clickhouse.database
    (n, total_s, total_nn), = wh.rows(f"SELECT count(), sum(s), sum(nn) FROM {db}.flow_components FINAL")
    assert (n, total_s, total_nn) == (len(want_flow), sum(r.s for r in want_flow), sum(r.nn for r in want_flow))
    print(f"\n3 aggregator workers, 1 killed (partitions {moved} moved): {len(want_flow)} flow and "
          f"{len(want_foot)} footfall rows, identical to the uninterrupted run")


def test_a_worker_joining_mid_stream_takes_cameras_over_and_no_frame_is_lost(stack, tmp_path, footage):
    """The hand-over path: one worker processes, a second joins when half the frames are done and
    takes half the partitions over (faust's assignor is sticky: a worker joining a group whose
    members are within the new per-worker capacity gets nothing, so 2 + 1 on four partitions
    would move nothing). The old owner closes the moved cameras' windows as fragments and leaves
    the persons in view to the new owner; the cameras that stay must not notice the rebalance.
    What a hand-over changes on the moved cameras is measured, not asserted: the new owner's
    fresh tracker is not the old one's (docs/SCALING.md §7)."""
    frames = list(open_source(str(footage), 2.0, 640, 480))[:FRAMES]
    start = datetime.now(timezone.utc) - timedelta(seconds=200)
    with isolated_settings(tmp_path) as ref, isolated_settings(tmp_path, keys_dir=ref.keys.dir) as run:
        params = _without_padding(ref.keys.dir)
        ref, run = _tuned(ref, params), _tuned(run, params)
        want = _reference_run(ref, frames, start)

        procs = [_processor(run, "--idle-timeout", "25", "--max-seconds", "500")]
        try:
            admin = admin_client(run)
            wait_for_group(admin, run.processor.app_id, 240, alive=lambda: all(q.poll() is None for q in procs),
                           members=1)
            before = _owners(run)
            _send(run, frames, start)
            part_of = {m.key().decode(): m.partition() for m in read_topic(run, run.kafka.frame_refs_topic)}
            deadline = time.monotonic() + 300
            while len(_receipts(run)) < len(CAMERAS) * FRAMES // 2:
                assert time.monotonic() < deadline, "half the frames were not handled in 300 s"
                time.sleep(0.3)
            joiner = _processor(run, "--idle-timeout", "25", "--max-seconds", "500")
            procs.append(joiner)
            wait_for_group(admin, run.processor.app_id, 240, alive=lambda: joiner.poll() is None, members=2)
            after = _owners(run)
            _finish(procs)
        finally:
            _kill_left(procs)
        got = _occurrences(run)
        moved = [c for c in CAMERAS if before[part_of[c]] != after[part_of[c]]]
        kept = [c for c in CAMERAS if c not in moved]
        assert any(after[part_of[c]] == joiner.pid for c in moved), (before, after)   # a hand-over happened
        assert kept, "every camera moved: nothing is compared exactly"

        _assert_every_frame_ends_once(run)
        letters = {serde.decode("DeadLetter", m.value())["reason"] for m in read_topic(run, run.kafka.dead_letter_topic)}
        assert letters <= {"missing_blob"}, letters   # only references in flight at the hand-over

        for cam in kept:
            assert _of(got, cam) == _of(want, cam), cam
        moved_want = sum(v for k, v in want.items() if k[0] in moved)
        moved_got = sum(v for k, v in got.items() if k[0] in moved)
        print(f"\n1 worker + 1 joining: {len(moved)} of {len(CAMERAS)} cameras handed over; their occurrences "
              f"{moved_got} against {moved_want} without the hand-over (a person who leaves before the new owner "
              f"has seen them twice is lost; its fresh tracker may cut passes differently); "
              f"{len(kept)} cameras identical")
