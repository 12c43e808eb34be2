"""The streaming flow aggregator as a Kafka worker: restricted group occurrences in, published
flow and footfall components out (docs/AGGREGATOR.md §9).

A thin loop around the two pure cores. What it adds is the part that makes a crash harmless:

* **State and input position travel together.** Each input partition's core is snapshotted,
  together with the next input offset, as *one* record on a restricted changelog topic (one
  changelog partition per input partition). On assignment the worker reads the newest snapshot
  and seeks to its position, so state and offset can never disagree. This is why the worker is
  not a faust agent with a faust table: faust commits consumer offsets and table changelog
  writes separately, so a ``kill -9`` between them restores a state that has or has not seen
  records the consumer will or will not replay, i.e. a window lost or counted twice. Here the
  consumer group only distributes partitions (and shows lag); offsets come from the snapshot.
* **Outputs before the snapshot.** Before a snapshot is written, everything the core emitted up
  to it is flushed to the broker. A crash after the outputs and before the snapshot replays
  records whose outputs are then emitted again, identically: the combiner keeps shares keyed by
  partition and ignores finished windows, and ClickHouse's ReplacingMergeTree replaces a
  published row with the same key. Nothing is added twice.
* **Time without input.** When a partition has had no input for ``idle_advance_seconds``, its
  clock moves with wall time minus the processor's delay, so restricted state still expires and
  the last hours close at night.
* **Bad records** (undecodable, invalid ids, windows from a clock running ahead) go to the
  dead-letter topic with a reason and a payload hash, never with their counts.

Both stages can run in one process (``stage="all"``, the default and what ``flowctl demo``
uses) or apart (``partitions`` workers scale with the occurrences topic's partitions; the
``combiner`` is one partition). ``all`` also runs the two counts stages (``stage="counts"`` runs
them alone): the processor's exact per-window demographics and line crossings in, protected
camera-hour cells out (pipeline/aggregator/counts.py), with the same snapshot discipline.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline import serde
from pipeline.ops.kafka_clients import client_config
from pipeline.aggregator.combiner import Combiner
from pipeline.aggregator.components import GroupPartitionAggregator
from pipeline.aggregator.counts import CountCell, HourlyCounts
from pipeline.aggregator.messages import component_messages
from pipeline.aggregator.model import AggregatorSpec, OccurrenceCell, Partial, SpecError
from pipeline.ops import metrics as m_
from pipeline.processor.frames import dead_letter
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Stage = Literal["all", "partitions", "combiner", "counts"]
COUNT_RECORDS = {"demographics": "DemographicCount", "crossings": "LineCrossingCount"}
SNAPSHOT_FORMAT = 1
EXPORT_SECONDS = 5.0


class BadRecord(ValueError):
    """A record the aggregator cannot use; ``reason`` names it in the dead letter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class AggregatorStats:
    consumed: dict[str, int] = field(default_factory=dict)
    partials_out: int = 0
    flow_rows_out: int = 0
    footfall_rows_out: int = 0
    count_rows_out: int = 0
    component_messages_out: int = 0   # messages carrying the rows above (many rows each)
    snapshots: int = 0
    restored: list[str] = field(default_factory=list)      # "stage[partition]@offset"
    cold_starts: list[str] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)


def encode_snapshot(state: dict[str, Any], position: int) -> bytes:
    """One changelog value: the core's state and the next input offset, compressed JSON."""
    doc = {"format": SNAPSHOT_FORMAT, "position": position, "written_ms": int(time.time() * 1000), "state": state}
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def decode_snapshot(value: bytes) -> dict[str, Any]:
    doc = json.loads(zlib.decompress(value))
    if doc.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot format {doc.get('format')!r} is not {SNAPSHOT_FORMAT}")
    return doc


def read_latest_snapshot(conf: dict[str, Any], topic: str, partition: int, timeout: float = 15.0) -> dict[str, Any] | None:
    """The newest snapshot of ``partition`` on its changelog partition (None if none is left).

    The changelog is delete-only with a retention of minutes, so this reads at most a few
    minutes of snapshots."""
    c = Consumer({**conf, "group.id": f"restore-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        if high <= low:
            return None
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        latest: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise RuntimeError(f"reading {topic}[{partition}]: {msg.error().str()}")
            if msg.key() == str(partition).encode():
                try:
                    latest = decode_snapshot(msg.value())
                except (ValueError, zlib.error) as e:
                    log.error("%s[%d]@%d: unreadable snapshot (%s); skipped", topic, partition, msg.offset(), e)
            if msg.offset() >= high - 1:
                break
        else:
            raise RuntimeError(f"timed out reading the changelog {topic}[{partition}] up to offset {high}")
        return latest
    finally:
        c.close()


def oldest_window_ms(state: dict[str, Any]) -> int | None:
    """The oldest window a snapshot's state holds counts of (either stage), for the age audit."""
    times = [row[0] for key in ("pending", "ring", "windows") for row in state.get(key, [])]
    return min(times, default=None)


def snapshot_ages(settings: Settings) -> list[tuple[str, int, float | None, float]]:
    """(changelog topic, partition, age in s of the oldest window the newest snapshot holds or
    None if it holds none, age in s of the snapshot itself) for every aggregator partition that
    has a snapshot. What ``flowctl audit ages`` checks against the aggregator's state bound: the
    snapshots are the worker's memory as of at most ``snapshot_max_seconds`` ago."""
    from confluent_kafka.admin import AdminClient

    k = settings.kafka
    md = AdminClient(client_config(settings, "aggregator")).list_topics(timeout=15)
    now = time.time() * 1000
    out = []
    for topic in (k.partitions_changelog_topic, k.combiner_changelog_topic, k.demographics_changelog_topic,
                  k.crossings_changelog_topic):
        if topic not in md.topics:
            continue
        for p in sorted(md.topics[topic].partitions):
            snap = read_latest_snapshot(client_config(settings, "aggregator"), topic, p)
            if snap is None:
                continue
            oldest = oldest_window_ms(snap["state"])
            out.append((topic, p, None if oldest is None else (now - oldest) / 1000, (now - snap["written_ms"]) / 1000))
    return out


class _StageRunner:
    """One stage: a consumer over its input topic, a core per assigned partition, snapshots."""

    def __init__(self, name: str, worker: "AggregatorWorker", input_topic: str, changelog_topic: str,
                 new_core: Callable[[int, bool], Any], restore_core: Callable[[dict[str, Any]], Any],
                 handle: Callable[[Any, Message], None], group_id: str) -> None:
        self.name = name
        self.w = worker
        self.input_topic = input_topic
        self.changelog_topic = changelog_topic
        self._new_core = new_core
        self._restore_core = restore_core
        self._handle = handle
        self.cores: dict[int, Any] = {}
        self.position: dict[int, int] = {}           # next input offset per partition
        self._snap_final: dict[int, Any] = {}         # progress marker at the last snapshot
        self._snap_at: dict[int, float] = {}
        self._dirty: set[int] = set()
        self.last_input: dict[int, float] = {}
        self.assigned_at = 0.0
        k = worker.s.kafka
        self.consumer = Consumer({
            # One client id per process: the group's description tells which worker owns what.
            **client_config(k, "aggregator"), "client.id": f"{k.client_id}-aggregator-{name}-{socket.gethostname()}-{os.getpid()}",
            "group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": int(worker.s.aggregator.session_timeout_seconds * 1000),
            "heartbeat.interval.ms": int(worker.s.aggregator.session_timeout_seconds * 250),
            "max.poll.interval.ms": 600000,
        })

    # -- assignment ------------------------------------------------------------------------------
    def start(self) -> None:
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = self._restore(tp.partition)
        consumer.assign(partitions)
        # A bounded run's idle clock starts when there is something to read, not at subscribe:
        # joining the group and restoring snapshots can take longer than the idle timeout.
        self.assigned_at = time.monotonic()

    def _restore(self, p: int) -> int:
        snap = read_latest_snapshot(client_config(self.w.s, "aggregator"), self.changelog_topic, p)
        if snap is not None:
            try:
                core = self._restore_core(snap["state"])
            except (SpecError, KeyError, TypeError, ValueError) as e:
                # Another configuration (lags, window) wrote it: its sums cannot continue here.
                log.error("%s[%d]: snapshot not usable with this configuration (%s); starting cold",
                          self.name, p, e)
                snap = None
            else:
                self.cores[p], self.position[p] = core, int(snap["position"])
                self.w.stats.restored.append(f"{self.name}[{p}]@{self.position[p]}")
                log.info("%s[%d]: restored state, resuming at offset %d", self.name, p, self.position[p])
        if snap is None:
            low, _high = self.consumer.get_watermark_offsets(TopicPartition(self.input_topic, p), timeout=15)
            # Cold only if records may have expired from the topic before we could see them:
            # then hours that pair with them are incomplete and must not be published.
            cold = low > 0 and self.w.cold_starts
            self.cores[p], self.position[p] = self._new_core(p, cold), low
            if cold:
                self.w.stats.cold_starts.append(f"{self.name}[{p}]")
                log.warning("%s[%d]: no snapshot and the topic starts at offset %d: cold start, hours before "
                            "the first complete one are not published", self.name, p, low)
        self._snap_final[p] = self._progress(self.cores[p])
        self._snap_at[p] = time.monotonic()
        self.last_input[p] = time.monotonic()
        return self.position[p]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.snapshot([tp.partition for tp in partitions if tp.partition in self.cores])
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another worker may own them already: never write their snapshots from here.
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            for d in (self.cores, self.position, self._snap_final, self._snap_at, self.last_input):
                d.pop(tp.partition, None)
            self._dirty.discard(tp.partition)

    # -- processing -----------------------------------------------------------------------------------
    def poll(self, timeout: float) -> int:
        msgs = self.consumer.consume(num_messages=500, timeout=timeout)
        n = 0
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.error("%s consumer error: %s", self.name, msg.error().str())
                continue
            p = msg.partition()
            core = self.cores.get(p)
            if core is None or msg.offset() < self.position.get(p, 0):
                continue   # a record fetched before a seek or revocation
            try:
                self._handle(core, msg)
            except BadRecord as e:
                self.w.dead_letter(e, msg, self.name)
            self.position[p] = msg.offset() + 1
            self._dirty.add(p)
            self.last_input[p] = time.monotonic()
            n += 1
        if n:
            self.w.stats.consumed[self.name] = self.w.stats.consumed.get(self.name, 0) + n
        return n

    @staticmethod
    def _progress(core: Any) -> Any:
        return core.complete_through if isinstance(core, Combiner) else core.final_through

    def due(self) -> list[int]:
        """Partitions whose snapshot is due: a window became final, or it changed a while ago,
        or the last snapshot is getting old (the changelog must always hold one)."""
        now = time.monotonic()
        cfg = self.w.s.aggregator
        out = []
        for p, core in self.cores.items():
            age = now - self._snap_at.get(p, 0.0)
            if (self._progress(core) != self._snap_final.get(p) or (p in self._dirty and age >= cfg.snapshot_interval_seconds)
                    or age >= cfg.snapshot_max_seconds):
                out.append(p)
        return out

    def snapshot(self, partitions: list[int]) -> None:
        if not partitions:
            return
        # Outputs first: a snapshot must never claim input whose outputs could still be lost.
        self.w.flush_outputs()
        for p in partitions:
            core = self.cores[p]
            value = encode_snapshot(core.snapshot(), self.position[p])
            self.w.producer.produce(self.changelog_topic, key=str(p).encode(), value=value, partition=p)
            self._snap_final[p] = self._progress(core)
            self._snap_at[p] = time.monotonic()
            self._dirty.discard(p)
            self.w.stats.snapshots += 1
            m_.AGG_SNAPSHOT_BYTES.labels(self.name).set(len(value))
        self.w.flush_outputs()
        # Informational only (lag in the exporter): positions come from the snapshots.
        try:
            self.consumer.commit(offsets=[TopicPartition(self.input_topic, p, self.position[p]) for p in partitions],
                                 asynchronous=True)
        except Exception as e:  # noqa: BLE001 - a failed informational commit changes nothing
            log.debug("%s: commit of positions failed: %s", self.name, e)

    def caught_up_cached(self, p: int) -> bool:
        """Partition ``p`` has been read to the end the consumer last heard of (no broker call).
        The idle clock needs this: a partition whose records are queued behind other partitions'
        has had no input for a while without being idle, and moving its clock to wall time would
        make every queued record late."""
        try:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.input_topic, p), cached=True)
        except Exception:  # noqa: BLE001 - no fetch yet for this partition: not known to be caught up
            return False
        return high >= 0 and self.position.get(p, 0) >= high

    def caught_up(self) -> bool:
        """Every assigned partition has been read to its current end (bounded runs)."""
        for p in self.cores:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.input_topic, p), timeout=10)
            if self.position.get(p, 0) < high:
                return False
        return True

    def close(self) -> None:
        self.consumer.close()


class AggregatorWorker:
    """Runs one or both stages until stopped or a bound is reached."""

    def __init__(self, settings: Settings, *, stage: Stage = "all", cold_starts: bool = True) -> None:
        self.s = settings
        self.cold_starts = cold_starts
        self._exported = 0.0
        self.spec: AggregatorSpec = settings.aggregator.spec()
        if settings.aggregator.window_seconds != settings.processor.window_seconds:
            raise SpecError(f"aggregator.window_seconds={settings.aggregator.window_seconds} differs from "
                            f"processor.window_seconds={settings.processor.window_seconds}: the aggregator's lags "
                            "are counted in the processor's windows")
        k = settings.kafka
        self.stats = AggregatorStats()
        self.producer = Producer({**client_config(k, "aggregator"), "client.id": f"{k.client_id}-aggregator",
                                  "enable.idempotence": True, "acks": "all", "linger.ms": 20,
                                  "message.max.bytes": 8_388_608, "compression.type": "lz4"})
        self._partitions = settings.aggregator.partitions
        md = self.producer.list_topics(timeout=15)

        def partitions_of(topic: str) -> int:
            have = md.topics.get(topic)
            if have is None or have.error is not None:
                raise SpecError(f"topic {topic} does not exist: run `flowctl topics apply` first")
            return len(have.partitions)

        for topic, want in ((k.occurrences_topic, self._partitions), (k.partitions_changelog_topic, self._partitions),
                            (k.partials_topic, 1), (k.combiner_changelog_topic, 1)):
            if partitions_of(topic) != want:
                raise SpecError(f"topic {topic} has {partitions_of(topic)} partitions, the aggregator needs {want} "
                                "(aggregator.partitions must equal the occurrences topic's partitions)")
        counts_topics = {"demographics": (k.demographics_topic, k.demographics_changelog_topic),
                         "crossings": (k.crossings_topic, k.crossings_changelog_topic)}
        if stage in ("all", "counts"):
            for topic, changelog in counts_topics.values():
                if partitions_of(changelog) != partitions_of(topic):
                    raise SpecError(f"topic {changelog} has {partitions_of(changelog)} partitions and {topic} "
                                    f"{partitions_of(topic)}: a counts stage keeps one snapshot partition per input "
                                    "partition (infra/topics.yaml)")
        self.stages: list[_StageRunner] = []
        app = settings.aggregator.app_id
        if stage in ("all", "partitions"):
            self.stage1 = _StageRunner(
                "partitions", self, k.occurrences_topic, k.partitions_changelog_topic,
                new_core=lambda p, cold: GroupPartitionAggregator(self.spec, p, self._partitions, cold_start=cold),
                restore_core=lambda st: GroupPartitionAggregator.restore(self.spec, st),
                handle=self._handle_occurrence, group_id=f"{app}-partitions")
            self.stages.append(self.stage1)
        else:
            self.stage1 = None
        noise_key = None
        if self.spec.flow_noise_scale or self.spec.footfall_noise_scale or stage in ("all", "counts"):
            from pipeline.privacy.release import load_noise_key

            noise_key = load_noise_key(settings.keys.dir)
        if stage in ("all", "combiner"):
            self.stage2 = _StageRunner(
                "combiner", self, k.partials_topic, k.combiner_changelog_topic,
                new_core=lambda p, cold: Combiner(self.spec, self._partitions, cold_start=cold, noise_key=noise_key),
                restore_core=lambda st: Combiner.restore(self.spec, st, noise_key=noise_key),
                handle=self._handle_partial, group_id=f"{app}-combiner")
            self.stages.append(self.stage2)
        else:
            self.stage2 = None
        self.counts: list[_StageRunner] = []
        if stage in ("all", "counts"):
            window = settings.processor.demographics_window_seconds
            for kind, (topic, changelog) in counts_topics.items():
                spec = settings.aggregator.counts_spec(kind, window)
                runner = _StageRunner(
                    kind, self, topic, changelog,
                    new_core=lambda p, cold, spec=spec: HourlyCounts(spec, noise_key=noise_key, cold_start=cold),
                    restore_core=lambda st, spec=spec: HourlyCounts.restore(spec, st, noise_key=noise_key),
                    handle=lambda core, msg, kind=kind: self._handle_count(kind, core, msg),
                    group_id=f"{app}-{kind}")
                self.counts.append(runner)
                self.stages.append(runner)

    # -- record handling -------------------------------------------------------------------------------
    def _check_origin(self, site_id: str, camera_id: str, window_start_ms: int) -> None:
        """Dead-letter reasons every restricted input shares: ids the warehouse would refuse, and a
        window from a clock running ahead (it would finalise every earlier window)."""
        for key in (site_id, camera_id):
            if not serde.valid_identifier(key):
                raise BadRecord("invalid_id", "site or camera id is not a valid identifier")
        ahead = window_start_ms - time.time() * 1000
        if ahead > self.s.aggregator.future_tolerance_seconds * 1000:
            raise BadRecord("future_window", f"window starts {ahead / 1000:.0f} s after wall clock (skewed clock)")

    def _handle_occurrence(self, core: GroupPartitionAggregator, msg: Message) -> None:
        try:
            rec = serde.decode("GroupOccurrence", msg.value())
            cell = OccurrenceCell.from_record(rec)
        except (serde.SerdeError, KeyError, TypeError, ValueError) as e:
            raise BadRecord("malformed", f"not a GroupOccurrence record: {type(e).__name__}") from None
        self._check_origin(cell.site_id, cell.camera_id, cell.window_start_ms)
        before = core.stats.late_cells
        self._emit_partials(core.add(cell, msg.offset()))
        if core.stats.late_cells > before:
            m_.AGG_LATE_CELLS.inc()

    def _handle_count(self, kind: str, core: HourlyCounts, msg: Message) -> None:
        record = COUNT_RECORDS[kind]
        try:
            cell = CountCell.from_record(kind, serde.decode(record, msg.value()))
        except (serde.SerdeError, KeyError, TypeError, ValueError) as e:
            raise BadRecord("malformed", f"not a {record} record: {type(e).__name__}") from None
        self._check_origin(cell.site_id, cell.camera_id, cell.window_start_ms)
        before = dict(core.stats.rejected)
        self._emit_rows(core.add(cell, msg.offset()))
        refused = [r for r, n in core.stats.rejected.items() if n > before.get(r, 0)]
        if refused:
            # A cell outside the published grid or window length: dead-lettered so it is seen, never counted.
            raise BadRecord("invalid_cell", f"{record} cell refused by the counts stage ({refused[0]})")

    def _handle_partial(self, core: Combiner, msg: Message) -> None:
        try:
            part = Partial.from_record(serde.decode("AggregatorPartial", msg.value()))
        except (serde.SerdeError, KeyError, TypeError, ValueError) as e:
            raise BadRecord("malformed", f"not an AggregatorPartial record: {type(e).__name__}") from None
        self._emit_rows(core.add(part, msg.offset()))

    def _emit_partials(self, partials: list[Partial]) -> None:
        topic = self.s.kafka.partials_topic
        for p in partials:
            self.producer.produce(topic, key=str(p.partition).encode(),
                                  value=serde.encode("AggregatorPartial", p.to_record()))
            self.producer.poll(0)
        self.stats.partials_out += len(partials)

    def _emit_rows(self, rows: list[Any]) -> None:
        """Published rows, many to a message per camera (pipeline/aggregator/messages.py)."""
        for m in component_messages(rows, self.s.kafka, self.s.aggregator.publish_batch_rows):
            self.producer.produce(m.topic, key=m.key, value=m.value)
            if m.record == "FlowComponent":
                self.stats.flow_rows_out += m.rows
            elif m.record == "FootfallComponent":
                self.stats.footfall_rows_out += m.rows
            else:
                self.stats.count_rows_out += m.rows
            self.stats.component_messages_out += 1
            self.producer.poll(0)
        if rows:
            m_.AGG_ROWS.inc(len(rows))

    def dead_letter(self, e: BadRecord, msg: Message, stage: str) -> None:
        self.stats.dead_letters[e.reason] = self.stats.dead_letters.get(e.reason, 0) + 1
        m_.DEAD_LETTERS.labels("aggregator", e.reason).inc()
        log.warning("dead letter %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), e.reason)
        dl = dead_letter(e, msg.value(), msg.topic(), msg.partition(), msg.offset(), f"aggregator-{stage}")
        self.producer.produce(self.s.kafka.dead_letter_topic, value=serde.encode("DeadLetter", dl))

    def flush_outputs(self) -> None:
        left = self.producer.flush(30)
        if left:
            raise RuntimeError(f"{left} aggregator records not acknowledged by the broker after 30 s")

    # -- time ----------------------------------------------------------------------------------------------
    def _advance_idle(self) -> None:
        """Wall-clock time for partitions without input (see the module docstring)."""
        now = time.monotonic()
        delay = self.s.aggregator.processor_delay_seconds * 1000
        wall = int(time.time() * 1000)
        runners = [(self.stage1, self.spec.window_ms, self._emit_partials)] if self.stage1 is not None else []
        runners += [(r, self.s.processor.demographics_window_seconds * 1000, self._emit_rows) for r in self.counts]
        for runner, window_ms, emit in runners:
            for p, core in runner.cores.items():
                if (now - runner.last_input.get(p, now) >= self.s.aggregator.idle_advance_seconds
                        and runner.caught_up_cached(p)):
                    before = core.final_through
                    emit(core.advance(wall - window_ms - delay))
                    if core.final_through != before:
                        runner._dirty.add(p)

    def _export_state(self) -> None:
        """The state-age gauge, at most once per EXPORT_SECONDS: ``state_size`` walks every held
        count, which the poll loop (every 0.2 s) need not pay for."""
        if time.monotonic() - self._exported < EXPORT_SECONDS:
            return
        self._exported = time.monotonic()
        now_ms = time.time() * 1000
        for st in self.stages:
            oldest = [c.state_size().get("oldest_window_ms") for c in st.cores.values()]
            oldest = [o for o in oldest if o is not None]
            m_.AGG_STATE_AGE.labels(st.name).set((now_ms - min(oldest)) / 1000 if oldest else 0.0)

    # -- main loop ---------------------------------------------------------------------------------------
    def run(self, *, idle_timeout: float | None = None, max_seconds: float | None = None, flush_at_end: bool = False,
            stop_after_records: int | None = None, on_progress: Callable[[AggregatorStats], None] | None = None
            ) -> AggregatorStats:
        """Consume until ``idle_timeout`` seconds pass without input, ``max_seconds`` pass, or
        ``stop_after_records`` were read (None: forever). ``flush_at_end`` closes every open
        hour when the input is exhausted: for bounded runs (demo, backfills) with a single
        worker owning all partitions, never for a live deployment."""
        for st in self.stages:
            st.start()
        started = last = time.monotonic()
        try:
            while True:
                # Non-blocking reads of every stage; block briefly only when none had anything, so
                # idle stages never slow a busy one down.
                n = sum(st.poll(0) for st in self.stages)
                if not n:
                    n = self.stages[0].poll(0.2)
                now = time.monotonic()
                if n:
                    last = now
                last = max([last] + [st.assigned_at for st in self.stages])
                if not flush_at_end:
                    # A bounded --flush run (backfill, demo) closes everything at its end; wall
                    # time would jump a caught-up partition past the data while the combiner is
                    # still busy, and publish empty hours up to now.
                    self._advance_idle()
                for st in self.stages:
                    st.snapshot(st.due())
                self._export_state()
                if on_progress:
                    on_progress(self.stats)
                total = sum(self.stats.consumed.values())
                if stop_after_records is not None and total >= stop_after_records:
                    break
                if max_seconds is not None and now - started >= max_seconds:
                    break
                if idle_timeout is not None and now - last >= idle_timeout and self._assigned():
                    break
            if flush_at_end:
                # The flushed state is terminal (every hour closed early) and is never persisted:
                # a later run resumes from the last snapshot taken before the flush and replays,
                # so hours it re-emits then hold everything seen, and replace these rows.
                self._flush_all()
            else:
                for st in self.stages:
                    st.snapshot(list(st.cores))
        finally:
            self.flush_outputs()
            for st in self.stages:
                st.close()
        return self.stats

    def _assigned(self) -> bool:
        return all(st.cores for st in self.stages)

    def _flush_all(self) -> None:
        """End of a bounded input: every partition final, then the combiner drains and closes;
        the counts stages close every hour they hold."""
        for runner in self.counts:
            for core in runner.cores.values():
                self._emit_rows(core.flush())
        if self.stage1 is not None:
            clocks = [c.state_size()["clock_ms"] for c in self.stage1.cores.values()]
            last = max((c for c in clocks if c is not None), default=None)
            for p, core in self.stage1.cores.items():
                self._emit_partials(core.flush(last))
        self.flush_outputs()
        if self.stage2 is not None:
            deadline = time.monotonic() + 120
            while not self.stage2.caught_up():
                if time.monotonic() > deadline:
                    raise RuntimeError("the combiner did not catch up with the partials topic within 120 s")
                self.stage2.poll(0.5)
            for p, core in self.stage2.cores.items():
                self._emit_rows(core.flush())
                log.info("combiner[%d] after the final flush: %s, progress %s", p, core.state_size(),
                         sorted(core._progress.items()))


def run_aggregator(settings: Settings, **kwargs: Any) -> AggregatorStats:
    stage = kwargs.pop("stage", "all")
    cold_starts = kwargs.pop("cold_starts", True)
    if settings.aggregator.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.aggregator.metrics_port, addr=settings.aggregator.metrics_addr)
    return AggregatorWorker(settings, stage=stage, cold_starts=cold_starts).run(**kwargs)
