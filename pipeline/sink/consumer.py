"""Kafka → ClickHouse sink.

Delivery is at-least-once on Kafka's side; exactly-once in the warehouse comes from storing
each row's source partition/offset with it. On (re)assignment the sink resumes each partition
after the highest offset already in ClickHouse, so a crash between insert and commit does not
count anything twice. Offsets are committed only after an insert succeeded. The published
component tables are ReplacingMergeTree: a re-delivered row has the same key and replaces itself.

The sink never lands per-window group cells: they are restricted data that only the flow
aggregator reads (docs/AGGREGATOR.md).
"""
from __future__ import annotations

import logging
import time
import uuid
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline import serde
from pipeline.ops.kafka_clients import client_config
from pipeline.aggregator.model import (FLOW_COMPONENT_COLUMNS, FOOTFALL_COMPONENT_COLUMNS, NN2_LOW_MASK, NN2_SHIFT,
                                       FootfallComponent, footfall_component_columns)
from pipeline.serde import epoch_ms
from pipeline.processor.frames import dead_letter
from pipeline.settings import Settings
from pipeline.sink.clickhouse import ServerWarehouse, WarehouseError

log = logging.getLogger(__name__)


def _dt(v: Any) -> datetime:
    if isinstance(v, datetime) and v.tzinfo is not None:   # fastavro's timestamp-millis: already UTC
        return v.astimezone(timezone.utc).replace(microsecond=0)
    return datetime.fromtimestamp(epoch_ms(v) / 1000, tz=timezone.utc).replace(microsecond=0)



# Column ranges of the warehouse (schemas/clickhouse): a value outside them would wrap silently
# into the column (a group id of 65536 becomes group 0), so such a record is dead-lettered.
_UINT_RANGES = {"group_id": 1 << 16, "occurrences": 1 << 32, "persons": 1 << 32, "crossings": 1 << 32,
                "window_seconds": 1 << 32, "noise_var_milli": 1 << 63}
# Published values carry unclamped noise and are signed (migration 0010).
_SIGNED = {"FootfallComponent": {"occurrences", "windows"}, "CountComponent": {"count"}}
_INT64 = 1 << 63
# Times that land in DateTime columns (seconds since 1970 in a UInt32 on every server release):
# a negative or post-2106 time would wrap into a wrong date instead of failing.
_TIME_FIELDS = ("captured_at", "deleted_at", "expires_at", "hour", "hour_start", "window_start")
_DATETIME_MS = (1 << 32) * 1000


class InvalidRecord(ValueError):
    reason = "invalid_value"


_ID_KEYS = ("site_id", "camera_id", "origin_site", "origin_camera", "dest_site", "dest_camera")


@lru_cache(maxsize=256)
def _checks_for(kind: str, keys: frozenset) -> tuple[tuple, tuple, tuple, tuple]:
    """Which checks apply to a record of ``kind`` with these fields (computed once per shape:
    the sink checks every record, and looping over every possible field cost it a sixth of its
    time)."""
    signed = tuple(k for k in _SIGNED.get(kind, ()) if k in keys)
    return (tuple(k for k in _ID_KEYS if k in keys), tuple(k for k in _TIME_FIELDS if k in keys), signed,
            tuple((k, lim) for k, lim in _UINT_RANGES.items() if k in keys and k not in signed))


def check_record(kind: str, rec: dict) -> None:
    """InvalidRecord (-> dead letter) for identifiers or numbers the warehouse would mangle.
    ``kind``: the Avro record name."""
    ids, times, signed, uints = _checks_for(kind, frozenset(rec))
    # A flow between two whole sites (aggregator.cross_site "site") has empty camera ids, which no
    # real camera can have: allowed on both ends together, never on one.
    site_pair = kind == "FlowComponent" and rec.get("origin_camera") == "" and rec.get("dest_camera") == ""
    for key in ids:
        if site_pair and key in ("origin_camera", "dest_camera"):
            continue
        if not serde.valid_identifier(rec[key]):
            raise InvalidRecord(f"{kind}.{key} is not a valid identifier (1-64 of A-Z a-z 0-9 . _ : -)")
    for key in times:
        if not 0 <= epoch_ms(rec[key]) < _DATETIME_MS:
            raise InvalidRecord(f"{kind}.{key} is outside the DateTime column's range (1970 to 2106)")
    for key in signed:
        if not -_INT64 <= int(rec[key]) < _INT64:
            raise InvalidRecord(f"{kind}.{key}={rec[key]} does not fit a signed 64-bit column")
    for key, limit in uints:
        if not 0 <= int(rec[key]) < limit:
            raise InvalidRecord(f"{kind}.{key}={rec[key]} is outside the column's range [0, {limit})")


def _flow_row(r: dict[str, Any]) -> list[Any]:
    """A decoded FlowComponent as a flow_components row (FLOW_COMPONENT_COLUMNS order), built
    straight from the record: going through FlowComponent and flow_component_columns cost the
    sink more than the insert itself. nn2 is re-split as the aggregator splits it."""
    nn2 = (r["nn2_hi"] << NN2_SHIFT) + r["nn2_lo"]
    hi = nn2 >> NN2_SHIFT
    if not -_INT64 <= hi < _INT64:
        raise InvalidRecord("FlowComponent.nn2 does not fit its columns")
    return [r["params_version"], r["window_seconds"], _dt(r["hour"]), r["origin_site"], r["origin_camera"],
            r["dest_site"], r["dest_camera"], r["kind"], r["lag_lo"], r["lag_hi"], r["s"], r["nn"], r["qq"], r["qn"],
            hi, nn2 & NN2_LOW_MASK, r["version"], r.get("noise_var_milli", 0)]


@dataclass(frozen=True)
class TableSpec:
    """How one topic lands in one table. ``offsets``: the table stores each row's source
    partition/offset, and the sink resumes after the highest one it holds (append-only tables).
    Published component tables are ReplacingMergeTree instead: a re-delivered row replaces
    itself, so they need no offsets and resume from the committed ones."""

    record: str
    table: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any]], list[Any]]
    offsets: bool = True


def _single_row(columnar: list[list[Any]]) -> list[Any]:
    return [col[0] for col in columnar]


def _count_row(kind: str) -> Callable[[dict[str, Any]], list[Any]]:
    """A published count cell (pipeline/aggregator/counts.py) as a row of its kind's table; a
    cell of the other kind on this topic is refused (dead letter), never landed in the wrong table."""
    def row(r: dict[str, Any]) -> list[Any]:
        if r["kind"] != kind:
            raise InvalidRecord(f"CountComponent.kind={r['kind']!r} on the {kind} topic")
        return [r["params_version"], r["site_id"], r["camera_id"], _dt(r["hour_start"]), r["key1"], r["key2"],
                r["count"], r["noise_var_milli"], r["version"]]
    return row


# Published, protected camera-hour cells: ReplacingMergeTree (a replayed hour replaces its rows).
DEMOGRAPHIC_COMPONENTS = TableSpec("CountComponent", "demographic_components",
    ("params_version", "site_id", "camera_id", "hour", "age_band", "gender", "persons", "noise_var_milli", "version"),
    _count_row("demographics"), offsets=False)
CROSSING_COMPONENTS = TableSpec("CountComponent", "crossing_components",
    ("params_version", "site_id", "camera_id", "hour", "line", "direction", "crossings", "noise_var_milli", "version"),
    _count_row("crossings"), offsets=False)
RECEIPTS = TableSpec("DeletionReceipt", "deletion_receipts",
    ("frame_id", "site_id", "camera_id", "captured_at", "captured_at_ms", "deleted_at_ms", "latency_ms",
     "outcome", "deleted_by"),
    lambda r: [r["frame_id"], r["site_id"], r["camera_id"], _dt(r["captured_at"]), epoch_ms(r["captured_at"]),
               epoch_ms(r["deleted_at"]), epoch_ms(r["deleted_at"]) - epoch_ms(r["captured_at"]), r["outcome"], r["deleted_by"]])

FLOW_COMPONENTS = TableSpec("FlowComponent", "flow_components", FLOW_COMPONENT_COLUMNS, _flow_row, offsets=False)
FOOTFALL_COMPONENTS = TableSpec("FootfallComponent", "footfall_components", FOOTFALL_COMPONENT_COLUMNS,
    lambda r: _single_row(footfall_component_columns([FootfallComponent.from_record(r)])), offsets=False)

LEDGER = TableSpec("FrameIssued", "frame_ledger",
    ("frame_id", "site_id", "camera_id", "captured_at", "captured_at_ms", "expires_at_ms"),
    lambda r: [r["frame_id"], r["site_id"], r["camera_id"], _dt(r["captured_at"]), epoch_ms(r["captured_at"]),
               epoch_ms(r["expires_at"])])


@dataclass(frozen=True)
class _Source:
    """Where a buffered row came from: its offsets, and the raw value a dead letter describes."""

    partition: int
    offset: int
    value: bytes | None


@dataclass
class _Pending:
    row: list[Any]
    source: _Source


class _Rejected(ValueError):
    """A row the warehouse refused; its message is the server's (values of published or audit
    columns only: the sink lands no personal data)."""

    reason = "rejected_by_warehouse"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class SinkStats:
    consumed: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    batches: int = 0
    resumed_from_warehouse: dict[str, int] = field(default_factory=dict)
    ambiguous_landed: int = 0   # inserts that failed on the client but were found applied
    first_record_s: float | None = None   # from the start of run() to the first record (group join, resume)


class ClickHouseSink:
    def __init__(self, settings: Settings, warehouse: ServerWarehouse, *, group_id: str | None = None) -> None:
        self.s = settings
        self._assigned_at: float | None = None
        self.wh = warehouse
        k = settings.kafka
        # Restricted data (per-window group cells, exact per-window demographics and crossings)
        # is read only by the flow aggregator; analysts get its published components.
        self.specs: dict[str, TableSpec] = {k.flow_components_topic: FLOW_COMPONENTS,
                                            k.footfall_components_topic: FOOTFALL_COMPONENTS,
                                            k.demographic_components_topic: DEMOGRAPHIC_COMPONENTS,
                                            k.crossing_components_topic: CROSSING_COMPONENTS,
                                            k.receipts_topic: RECEIPTS, k.ledger_topic: LEDGER}
        self.consumer = Consumer({
            **client_config(settings, "sink"),
            "group.id": group_id or settings.sink.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 30000,
        })
        self.dlq = Producer(client_config(settings, "sink", **{"enable.idempotence": True, "acks": "all"}))
        self.stats = SinkStats()
        self._buf: dict[str, list[_Pending]] = {}
        self._next: dict[tuple[str, int], int] = {}  # offsets to commit after the next insert
        self._buffered = 0
        self._since = time.monotonic()

    # -- resume from the warehouse ----------------------------------------------------------
    def _stored_offsets(self, topic: str) -> dict[int, int]:
        spec = self.specs[topic]
        if not spec.offsets:
            return {}
        rows = self.wh.rows(f"SELECT kafka_partition, max(kafka_offset) FROM {self.wh.database}.{spec.table} "
                            f"GROUP BY kafka_partition")
        return {int(p): int(o) for p, o in rows}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=30)}
        stored: dict[str, dict[int, int]] = {}
        for tp in partitions:
            if tp.topic not in stored:
                stored[tp.topic] = self._stored_offsets(tp.topic)
            after = stored[tp.topic].get(tp.partition)
            c = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
            if after is not None:
                _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                if after >= high:
                    # The warehouse has offsets the topic never reached: it was recreated or
                    # truncated. Those offsets name other records now; do not skip by them.
                    log.warning("%s[%d]: warehouse holds offset %d but the topic ends at %d "
                                "(recreated?); resuming from the committed offset instead",
                                tp.topic, tp.partition, after, high)
                    after = None
            if after is not None and (c < 0 or c <= after):
                tp.offset = after + 1
                self.stats.resumed_from_warehouse[f"{tp.topic}[{tp.partition}]"] = after + 1
            elif c >= 0:
                tp.offset = c
        consumer.assign(partitions)
        # Idle time counts from when there is something to read (see ``run``).
        self._assigned_at = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush()

    # -- batching ---------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        topic, part, off = msg.topic(), msg.partition(), msg.offset()
        spec = self.specs[topic]
        try:
            rec = serde.decode(spec.record, msg.value())
            check_record(spec.record, rec)
            row = spec.row(rec) + ([part, off] if spec.offsets else [])
        except (serde.SerdeError, KeyError, TypeError, ValueError, ArithmeticError) as e:
            self._dead_letter(e, _Source(part, off, msg.value()), topic)
            row = None
        if row is not None:
            self._buf.setdefault(topic, []).append(_Pending(row, _Source(part, off, msg.value())))
            self._buffered += 1
        self._next[(topic, part)] = off + 1

    def _dead_letter(self, e: BaseException, src: "_Source", topic: str) -> None:
        self.stats.dead_letters += 1
        log.warning("dead letter %s[%d]@%d: %s", topic, src.partition, src.offset, getattr(e, "reason", type(e).__name__))
        dl = dead_letter(e, src.value, topic, src.partition, src.offset, "sink")
        self.dlq.produce(self.s.kafka.dead_letter_topic, value=serde.encode("DeadLetter", dl))
        self.dlq.poll(0)

    def flush(self) -> None:
        """Insert the buffered rows, then commit their offsets.

        Inserting in a second thread while the next batch is decoded was measured and gave
        nothing on two cores (sink/driver-bound ratio 0.28 vs 0.27, median of 3 runs each,
        bench/flows/sink_load.py): decoding and the driver's encoding both hold the GIL."""
        if not self._next:
            return
        for topic, pending in self._buf.items():
            if not pending:
                continue
            spec = self.specs[topic]
            landed = self._land(topic, spec, pending)
            self.stats.inserted[spec.table] = self.stats.inserted.get(spec.table, 0) + landed
            # Inserted: never insert these rows again, even if the commit below fails (a later
            # flush retries only the commit; a restart resumes from the offsets in ClickHouse).
            self._buf[topic] = []
        # Dead letters must be durable before the offsets that skip their records are committed.
        if self.dlq.flush(30) > 0:
            raise RuntimeError("dead letters not acknowledged by Kafka in 30 s; offsets not committed")
        self._commit([TopicPartition(t, p, o) for (t, p), o in self._next.items()])
        self.stats.batches += 1
        self._buf.clear()
        self._next.clear()
        self._buffered = 0
        self._since = time.monotonic()

    def _commit(self, offsets: list[TopicPartition]) -> None:
        self.consumer.commit(offsets=offsets, asynchronous=False)

    def _land(self, topic: str, spec: TableSpec, pending: list["_Pending"]) -> int:
        """Insert ``pending`` into its table; returns rows landed. Rows the warehouse rejects are
        found by halving the batch and go to the dead-letter topic one by one, so one bad row
        neither blocks the sink for good (it would fail again after every restart) nor takes
        good rows with it."""
        try:
            self._insert_with_retry(spec, pending)
            return len(pending)
        except WarehouseError as e:
            if e.kind != "rejected":
                raise
            if len(pending) == 1:
                self._dead_letter(_Rejected(str(e)), pending[0].source, topic)
                return 0
            mid = len(pending) // 2
            return self._land(topic, spec, pending[:mid]) + self._land(topic, spec, pending[mid:])

    def _insert_with_retry(self, spec: TableSpec, pending: list["_Pending"]) -> None:
        """One insert, retried on transient and ambiguous failures until it is known to have
        landed exactly once (``sink.retry_seconds``, then the error is raised and the sink
        stops with its offsets uncommitted; a restart resumes after what ClickHouse holds).

        Why retries cannot double count: an insert whose connection failed may still have been
        applied (or still be running) on the server. Before inserting again, the sink waits
        for its query id to leave ``system.processes``, then looks for the batch's source
        offsets in the table (one insert is one block, applied entirely or not at all). Tables
        without offsets are the published components, ReplacingMergeTree read with FINAL: a
        second copy of a row replaces the first."""
        cols = list(spec.columns) + (["kafka_partition", "kafka_offset"] if spec.offsets else [])
        columnar = [list(c) for c in zip(*(p.row for p in pending))]
        deadline = time.monotonic() + self.s.sink.retry_seconds
        delay = 0.5
        while True:
            query_id = f"flowpipe-sink-{uuid.uuid4()}"
            try:
                self.wh.insert(spec.table, cols, columnar, query_id=query_id)
                return
            except WarehouseError as e:
                if e.kind in ("rejected", "fatal"):
                    raise
                if e.kind == "ambiguous" and spec.offsets and self._landed(spec, pending, query_id, deadline):
                    self.stats.ambiguous_landed += 1
                    log.warning("insert into %s failed on the client (%s) but landed on the server; not repeated",
                                spec.table, e)
                    return
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("insert into %s failed (%s); retrying in %.1f s", spec.table, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _landed(self, spec: TableSpec, pending: list["_Pending"], query_id: str, deadline: float) -> bool:
        """Whether an insert whose outcome the client did not see is in the table. False when
        the server cannot be asked yet (then the caller retries, and asks again next time)."""
        try:
            while self.wh.rows("SELECT count() FROM system.processes WHERE query_id = %(q)s", {"q": query_id})[0][0]:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
            by_part: dict[int, list[int]] = {}
            for p in pending:
                by_part.setdefault(p.source.partition, []).append(p.source.offset)
            found = 0
            for part, offs in by_part.items():
                found += int(self.wh.rows(
                    f"SELECT count() FROM {self.wh.database}.{spec.table} WHERE kafka_partition = %(p)s "
                    f"AND kafka_offset IN %(o)s", {"p": part, "o": tuple(offs)})[0][0])
        except WarehouseError:
            return False
        if found not in (0, len(pending)):
            # Cannot happen for one block; if it did, repeating the insert would duplicate rows.
            raise WarehouseError(f"{spec.table}: {found} of {len(pending)} rows of a failed insert are in the "
                                 f"table; refusing to guess which", "fatal")
        return found == len(pending)

    # -- main loop --------------------------------------------------------------------------
    def run(self, *, max_records: int | None = None, idle_timeout: float | None = None,
            max_seconds: float | None = None, on_progress: Callable[[SinkStats], None] | None = None) -> SinkStats:
        self.consumer.subscribe(list(self.specs), on_assign=self._on_assign, on_revoke=self._on_revoke)
        started = last = time.monotonic()
        self._assigned_at = None
        try:
            while True:
                msgs = self.consumer.consume(num_messages=500, timeout=0.5)
                now = time.monotonic()
                if self._assigned_at is not None:
                    last = max(last, self._assigned_at)
                for m in msgs:
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.error("consumer error: %s", m.error().str())
                        continue
                    self._handle(m)
                    if self.stats.first_record_s is None:
                        self.stats.first_record_s = time.monotonic() - started
                    self.stats.consumed += 1
                    last = now
                if self._buffered >= self.s.sink.batch_max_rows or (self._next and now - self._since >= self.s.sink.batch_max_seconds):
                    self.flush()
                    if on_progress:
                        on_progress(self.stats)
                if max_records is not None and self.stats.consumed >= max_records:
                    break
                if idle_timeout is not None and self._assigned_at is not None and now - last >= idle_timeout:
                    break
                if max_seconds is not None and now - started >= max_seconds:
                    break
            self.flush()
        finally:
            self.consumer.close()
            self.dlq.flush(10)
        return self.stats
