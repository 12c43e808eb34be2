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

import io
import logging
import time
from collections import deque
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline import serde
from pipeline.ops.kafka_clients import client_config
from pipeline.aggregator.model import (FLOW_COMPONENT_COLUMNS, FOOTFALL_COMPONENT_COLUMNS, NN2_LOW_MASK, NN2_SHIFT,
                                       FootfallComponent, footfall_component_columns)
from pipeline.serde import epoch_ms
from pipeline.processor.frames import dead_letter
from pipeline.settings import Settings
from pipeline.sink.batch import BatchDecoder
from pipeline.sink.clickhouse import ServerWarehouse
from pipeline.sink.inserter import InsertFailed, InsertProcess, Outcome, Target

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


# Below this many rows a batch costs more to set up than to decode one by one (a batch call
# has a fixed cost of about 2.5 ms: 64 flow records took 35 us each as a batch against 25 us one
# by one, 128 took 24 against 25-36); above the cap a poll would hold records back from their
# flush.
_MIN_BATCH = 100
_MAX_CONSUME = 10_000
# Flushes handed to the insert process before the loop waits for the oldest (see ``flush``).
_MAX_INFLIGHT = 2
# A poll returns when it has the messages it asked for or after this long with what there is:
# short, because a topic holding fewer than a batch's worth of messages (a few hundred messages of
# published components can be a whole hour) would otherwise hold its rows for the full wait
# (0.5 s cost the reference week's load bench a sixth of its time).
_POLL_SECONDS = 0.1
# Polls are sized as if every message carried at least this many rows, and more when a topic's
# messages have carried more (see ``run``): a topic not yet seen may hold batch messages, and
# 5,000 messages of published components were a whole week of one topic, decoded at once with
# nothing to overlap. Single records then come 100 to a poll, still a batch to decode.
_FIRST_ROWS_PER_MESSAGE = 50.0


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


_IDENTIFIER_ANCHORED = f"^(?:{serde._IDENTIFIER.pattern})$"


@lru_cache(maxsize=64)
def _screen(kind: str, keys: frozenset) -> tuple[pl.Expr, ...]:
    """``check_record``'s checks as column expressions: a row they pass, check_record passes.
    (Avro ints and longs always fit the signed 64-bit columns, so the signed check has no
    counterpart.)"""
    ids, times, _signed, uints = _checks_for(kind, keys)
    site_pair = (pl.col("origin_camera") == "") & (pl.col("dest_camera") == "") if kind == "FlowComponent" else None
    out = []
    for key in ids:
        ok = pl.col(key).str.contains(_IDENTIFIER_ANCHORED)
        out.append(ok | site_pair if site_pair is not None and key in ("origin_camera", "dest_camera") else ok)
    out += [pl.col(key).is_between(0, _DATETIME_MS - 1) for key in times]
    out += [(pl.col(key) >= 0) & (pl.col(key) < limit) if limit < _INT64 else pl.col(key) >= 0
            for key, limit in uints]
    return tuple(out)


def _seconds(field: str) -> pl.Expr:
    """A timestamp-millis field (a long in a batch) as DateTime seconds, as ``_dt`` truncates."""
    return pl.col(field) // 1000


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
    # The same row as column expressions over a batch-decoded frame (pipeline/sink/batch.py),
    # and conditions beyond check_record's under which ``row`` builds exactly these columns;
    # a row that fails one goes through check_record and ``row`` alone.
    batch_columns: tuple[pl.Expr, ...] | None = None
    batch_when: tuple[pl.Expr, ...] = ()

    @property
    def target(self) -> Target:
        """Where the insert process puts this spec's rows."""
        return Target(self.table, self.columns, self.offsets)

    def __post_init__(self) -> None:
        if self.batch_columns is not None and len(self.batch_columns) != len(self.columns):
            raise ValueError(f"{self.table}: {len(self.batch_columns)} batch columns for {len(self.columns)} columns")


def _single_row(columnar: list[list[Any]]) -> list[Any]:
    return [col[0] for col in columnar]


def _count_spec(kind: str, table: str, columns: tuple[str, ...]) -> "TableSpec":
    return TableSpec("CountComponent", table, columns, _count_row(kind), offsets=False,
                     batch_columns=(pl.col("params_version"), pl.col("site_id"), pl.col("camera_id"),
                                    _seconds("hour_start"), pl.col("key1"), pl.col("key2"), pl.col("count"),
                                    pl.col("noise_var_milli"), pl.col("version")),
                     batch_when=(pl.col("kind").cast(pl.String) == kind,))


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
DEMOGRAPHIC_COMPONENTS = _count_spec("demographics", "demographic_components",
    ("params_version", "site_id", "camera_id", "hour", "age_band", "gender", "persons", "noise_var_milli", "version"))
CROSSING_COMPONENTS = _count_spec("crossings", "crossing_components",
    ("params_version", "site_id", "camera_id", "hour", "line", "direction", "crossings", "noise_var_milli", "version"))
RECEIPTS = TableSpec("DeletionReceipt", "deletion_receipts",
    ("frame_id", "site_id", "camera_id", "captured_at", "captured_at_ms", "deleted_at_ms", "latency_ms",
     "outcome", "deleted_by"),
    lambda r: [r["frame_id"], r["site_id"], r["camera_id"], _dt(r["captured_at"]), epoch_ms(r["captured_at"]),
               epoch_ms(r["deleted_at"]), epoch_ms(r["deleted_at"]) - epoch_ms(r["captured_at"]), r["outcome"], r["deleted_by"]],
    batch_columns=(pl.col("frame_id"), pl.col("site_id"), pl.col("camera_id"), _seconds("captured_at"),
                   pl.col("captured_at"), pl.col("deleted_at"), pl.col("deleted_at") - pl.col("captured_at"),
                   pl.col("outcome").cast(pl.String), pl.col("deleted_by")))

FLOW_COMPONENTS = TableSpec("FlowComponent", "flow_components", FLOW_COMPONENT_COLUMNS, _flow_row, offsets=False,
    batch_columns=tuple(_seconds(c) if c == "hour" else pl.col(c) for c in FLOW_COMPONENT_COLUMNS),
    # nn2 as the aggregator splits it: a low part outside 32 bits is re-split by _flow_row.
    batch_when=(pl.col("nn2_lo").is_between(0, NN2_LOW_MASK),))
FOOTFALL_COMPONENTS = TableSpec("FootfallComponent", "footfall_components", FOOTFALL_COMPONENT_COLUMNS,
    lambda r: _single_row(footfall_component_columns([FootfallComponent.from_record(r)])), offsets=False,
    batch_columns=tuple(_seconds(c) if c == "hour" else pl.col(c) for c in FOOTFALL_COMPONENT_COLUMNS))

LEDGER = TableSpec("FrameIssued", "frame_ledger",
    ("frame_id", "site_id", "camera_id", "captured_at", "captured_at_ms", "expires_at_ms"),
    lambda r: [r["frame_id"], r["site_id"], r["camera_id"], _dt(r["captured_at"]), epoch_ms(r["captured_at"]),
               epoch_ms(r["expires_at"])],
    batch_columns=(pl.col("frame_id"), pl.col("site_id"), pl.col("camera_id"), _seconds("captured_at"),
                   pl.col("captured_at"), pl.col("expires_at")))


def batch_screen(spec: TableSpec, df: pl.DataFrame) -> np.ndarray:
    """Which rows of a batch-decoded frame of ``spec``'s records pass check_record's checks and
    the spec's conditions: those the batch path may land as they are."""
    conditions = _screen(spec.record, frozenset(df.columns)) + spec.batch_when
    return (df.select(pl.all_horizontal(conditions)).to_series().to_numpy() if conditions
            else np.ones(df.height, dtype=bool))


def batch_frame(spec: TableSpec, df: pl.DataFrame, keep: np.ndarray) -> pl.DataFrame:
    """The table's columns for the rows of ``df`` that ``keep`` marks, still a frame."""
    exprs = [e.alias(c) for e, c in zip(spec.batch_columns, spec.columns)]
    return (df if keep.all() else df.filter(keep)).select(exprs)


def batch_columns(spec: TableSpec, df: pl.DataFrame, keep: np.ndarray) -> list[list[Any]]:
    """The table's columns for the rows of ``df`` that ``keep`` marks, as the driver takes them."""
    return [s.to_list() for s in batch_frame(spec, df, keep).get_columns()]


def batch_rows(spec: TableSpec, df: pl.DataFrame) -> tuple[list[list[Any]], np.ndarray, np.ndarray]:
    """A batch-decoded frame of ``spec``'s records as the table's columns, for the rows that
    pass check_record's checks and the spec's conditions (their indices: ``good``); the indices
    of the others (``refer``) go through the exact one-record path, which refuses them with a
    reason or, for a condition only that path handles, builds their row itself."""
    ok = batch_screen(spec, df)
    return batch_columns(spec, df, ok), np.flatnonzero(ok), np.flatnonzero(~ok)


@dataclass(frozen=True)
class _Source:
    """Where a buffered row came from: its offsets, and the raw value a dead letter describes."""

    partition: int
    offset: int
    value: bytes | None


class _Rows:
    """Rows buffered for one table, with each row's source. Batch-decoded rows stay polars
    frames until the insert process turns them into Python values (pipeline/sink/inserter.py);
    rows of the exact path are Python columns already."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.segments: list[pl.DataFrame | list[list[Any]]] = []
        self.parts: list[int] = []
        self.offs: list[int] = []
        self.values: list[bytes | None] = []

    def __len__(self) -> int:
        return len(self.parts)

    def append(self, row: list[Any], src: "_Source") -> None:
        if not self.segments or isinstance(self.segments[-1], pl.DataFrame):
            self.segments.append([[] for _ in range(self.width)])
        for col, v in zip(self.segments[-1], row):
            col.append(v)
        self.parts.append(src.partition)
        self.offs.append(src.offset)
        self.values.append(src.value)

    def extend(self, frame: pl.DataFrame, parts: list[int], offs: list[int], values: list[bytes]) -> None:
        """A frame of the table's columns, with each row's source (rows of one message share it)."""
        self.segments.append(frame)
        self.parts.extend(parts)
        self.offs.extend(offs)
        self.values.extend(values)

    def source(self, i: int) -> _Source:
        return _Source(self.parts[i], self.offs[i], self.values[i])

    def payload(self) -> list[bytes | list[list[Any]]]:
        """The segments as they cross to the insert process: consecutive frames as one Arrow
        IPC stream (written in Rust), Python columns as they are."""
        out: list[bytes | list[list[Any]]] = []
        frames: list[pl.DataFrame] = []
        for seg in [*self.segments, None]:
            if isinstance(seg, pl.DataFrame):
                frames.append(seg)
                continue
            if frames:
                buf = io.BytesIO()
                pl.concat(frames, rechunk=False).write_ipc(buf)
                out.append(buf.getvalue())
                frames = []
            if seg is not None:
                out.append(seg)
        return out


@dataclass
class _Job:
    """One flush: the rows to insert per topic, and the offsets to commit once they landed."""

    rows: dict[str, _Rows]
    offsets: dict[tuple[str, int], int]


class _Rejected(ValueError):
    """A row the warehouse refused; its message is the server's (values of published or audit
    columns only: the sink lands no personal data)."""

    reason = "rejected_by_warehouse"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class SinkStats:
    consumed: int = 0   # Kafka messages
    inserted: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    batches: int = 0
    resumed_from_warehouse: dict[str, int] = field(default_factory=dict)
    ambiguous_landed: int = 0   # inserts that failed on the client but were found applied
    first_record_s: float | None = None   # from the start of run() to the first record (group join, resume)
    batch_decoded: int = 0   # rows decoded and checked as part of a batch (the rest: one by one)
    rows: int = 0   # rows the consumed messages carried (published components: many to a message)
    last_landed_s: float | None = None   # from the start of run() to the last insert confirmed


class ClickHouseSink:
    def __init__(self, settings: Settings, warehouse: ServerWarehouse, *, group_id: str | None = None) -> None:
        self.s = settings
        self._assigned_at: float | None = None
        self._rows_per_message: dict[str, float] = {}   # per topic, its last poll's: sizes the next poll
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
            # A fetch naming only partitions with nothing new waits this long on the broker; at
            # librdkafka's 500 ms default, the first fetch after an assignment (sent before the
            # partitions with data had their start offsets) held the sink's first rows back by
            # up to half a second.
            "fetch.wait.max.ms": 100,
        })
        self.dlq = Producer(client_config(settings, "sink", **{"enable.idempotence": True, "acks": "all"}))
        self.stats = SinkStats()
        reg = serde.registry()
        self._decoders = {spec.record: BatchDecoder(spec.record, reg) for spec in self.specs.values()
                          if spec.batch_columns is not None}
        self._buf: dict[str, _Rows] = {}
        # Started here, so that its interpreter starts while the caller goes on (a running
        # sink's is long started). It ends with the run, or with this process (see
        # inserter._die_with_parent: build a sink in the thread that runs it, or a longer-lived one).
        self._inserter: InsertProcess | None = self._start_inserter()
        self._ran = False
        self._closing = False
        # Flushes sent to the insert process and not yet confirmed, oldest first: up to two, so
        # the process has the next one as soon as it finishes one (it inserts them in order, and
        # their offsets are committed in that order).
        self._inflight: deque[_Job] = deque()
        self._next: dict[tuple[str, int], int] = {}  # offsets to commit after the next insert
        self._buffered = 0
        self._since = self._run_started = time.monotonic()

    def _start_inserter(self) -> InsertProcess:
        wh = self.wh
        return InsertProcess(wh.cfg, wh.database, wh.role, retry_seconds=self.s.sink.retry_seconds,
                             batch_max_rows=self.s.sink.batch_max_rows)

    def wait_ready(self) -> None:
        """Block until the insert process has started and opened its warehouse connection (a
        bad setting or a missing password is raised here, and that process is discarded)."""
        if self._inserter is None:
            self._inserter = self._start_inserter()
        try:
            self._inserter.wait_ready()
        except BaseException:
            self._drop_inserter()
            raise

    def _drop_inserter(self) -> None:
        """Kill the insert process and forget the flushes in flight (none of them is
        committed; a restart or the partitions' next owner lands them)."""
        self._inflight.clear()
        if self._inserter is not None:
            self._inserter.close(abort=True)
            self._inserter = None

    # -- resume from the warehouse ----------------------------------------------------------
    def _stored_offsets(self, topic: str) -> dict[int, int]:
        spec = self.specs[topic]
        if not spec.offsets:
            return {}
        rows = self.wh.rows(f"SELECT kafka_partition, max(kafka_offset) FROM {self.wh.database}.{spec.table} "
                            f"GROUP BY kafka_partition")
        return {int(p): int(o) for p, o in rows}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            return   # a join that completes while the consumer closes: nothing will be read
        self._settle()   # the stored offsets below include the insert in flight
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
            else:
                tp.offset = OFFSET_BEGINNING
        consumer.assign(partitions)
        # Idle time counts from when there is something to read (see ``run``).
        self._assigned_at = time.monotonic()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave the partitions away without a revocation (this sink missed its
        session): their next owner is reading them already, so nothing buffered or in flight
        may land or be committed from here. The buffered rows are dropped and the insert
        process killed (an insert in progress lands whole or not at all: a landed one is what
        the new owner resumes after, or replaces)."""
        if self._closing:
            return
        log.warning("partitions lost to the group (%d); dropping %d buffered rows and %d flushes in flight",
                    len(partitions), self._buffered, len(self._inflight))
        self._drop_inserter()
        self._buf, self._next, self._buffered = {}, {}, 0
        self._inserter = self._start_inserter()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing or self._inserter is None:
            # Closing: a run that ended well has landed and committed everything already, and
            # after a failure nothing more may be committed.
            return
        self.flush()   # lands and commits everything, the inserts in flight included

    # -- batching ---------------------------------------------------------------------------
    def _rows(self, topic: str) -> _Rows:
        rows = self._buf.get(topic)
        if rows is None:
            rows = self._buf[topic] = _Rows(len(self.specs[topic].columns))
        return rows

    def _handle(self, msg: Message) -> None:
        """One message decoded and checked on its own, row by row: the exact path, which names
        the reason of every row it refuses and lands the message's other rows."""
        topic = msg.topic()
        spec = self.specs[topic]
        src = _Source(msg.partition(), msg.offset(), msg.value())
        try:
            recs = serde.decode_rows(spec.record, src.value, plain=True)
        except serde.SerdeError as e:
            self._dead_letter(e, src, topic)
            return
        rows = self._rows(topic)
        for rec in recs:
            try:
                check_record(spec.record, rec)
                row = spec.row(rec)
            except (KeyError, TypeError, ValueError, ArithmeticError) as e:
                self._dead_letter(e, src, topic)
                continue
            rows.append(row, src)
            self._buffered += 1
        self.stats.rows += len(recs)

    def _handle_batch(self, topic: str, msgs: list[Message]) -> None:
        """Messages of one topic decoded, checked and turned into columns at once
        (pipeline/sink/batch.py). A message with a row the batch cannot vouch for, and every
        message of a batch it cannot decode, take the exact path of ``_handle``."""
        spec = self.specs[topic]
        decoder = self._decoders.get(spec.record)
        values = [m.value() for m in msgs]
        if decoder is not None and decoder.batch_prefix is not None:
            # Batch messages and single records (an older aggregator's) in one poll are decoded
            # apart: the rows land in a ReplacingMergeTree, where their order does not matter.
            n = len(decoder.batch_prefix)
            batches = [v is not None and v[:n] == decoder.batch_prefix for v in values]
            if any(batches) and not all(batches):
                self._handle_batch(topic, [m for m, b in zip(msgs, batches) if b])
                self._handle_batch(topic, [m for m, b in zip(msgs, batches) if not b])
                return
        got = (decoder.decode(values, min_rows=_MIN_BATCH) if decoder is not None
               and all(v is not None for v in values) else None)
        if got is None:
            for m in msgs:
                self._handle(m)
            return
        ok = batch_screen(spec, got.frame)
        owner = np.repeat(np.arange(len(msgs)), got.rows)   # the message of each row
        whole = np.logical_and.reduceat(ok, np.concatenate(([0], np.cumsum(got.rows[:-1]))))
        keep = whole[owner]
        n = int(keep.sum())
        if n:
            # Each row's source, its message's (built in numpy: per-row Python loops here cost
            # more than the decoding).
            parts = np.fromiter((m.partition() for m in msgs), dtype=np.int64, count=len(msgs))
            offs = np.fromiter((m.offset() for m in msgs), dtype=np.int64, count=len(msgs))
            if n == len(msgs):   # one row per message, all kept: the usual single-record case
                srcs = values
            else:
                kept = owner if n == len(owner) else owner[keep]
                parts, offs = parts[kept], offs[kept]
                srcs = np.fromiter(values, dtype=object, count=len(values))[kept].tolist()
            self._rows(topic).extend(batch_frame(spec, got.frame, keep), parts.tolist(), offs.tolist(), srcs)
            self._buffered += n
            self.stats.batch_decoded += n
            self.stats.rows += n
        for i in np.flatnonzero(~whole):
            self._handle(msgs[i])

    def _dead_letter(self, e: BaseException, src: "_Source", topic: str) -> None:
        self.stats.dead_letters += 1
        log.warning("dead letter %s[%d]@%d: %s", topic, src.partition, src.offset, getattr(e, "reason", type(e).__name__))
        dl = dead_letter(e, src.value, topic, src.partition, src.offset, "sink")
        self.dlq.produce(self.s.kafka.dead_letter_topic, value=serde.encode("DeadLetter", dl))
        self.dlq.poll(0)

    def flush(self, *, wait: bool = True) -> None:
        """Insert the buffered rows, then commit their offsets.

        With ``wait=False`` (the main loop) the insert runs in the sink's insert process
        (pipeline/sink/inserter.py) while the loop polls and decodes the next batch, and its
        offsets are committed once the insert is confirmed: at the next flush, or as soon as
        the loop sees the reply. ``wait=True`` (revocation, the end of a run) lands and commits
        everything before it returns."""
        if len(self._inflight) >= _MAX_INFLIGHT:
            self._settle(1)
        if self._next:
            job = self._take()
            self._inserter.submit({t: (self.specs[t].target, r.payload(), r.parts, r.offs)
                                   for t, r in job.rows.items()})
            self._inflight.append(job)
        if wait:
            self._settle()
        self._since = time.monotonic()

    def _take(self) -> "_Job":
        job = _Job({t: r for t, r in self._buf.items() if len(r)}, self._next)
        self._buf, self._next, self._buffered = {}, {}, 0
        return job

    def _settle(self, count: int | None = None) -> None:
        """Wait for the oldest ``count`` flushes in flight (default: all), and commit what they
        landed, in order. An insert that failed raises here: the sink stops with its offsets and
        every later flush's uncommitted, and a restart resumes after what ClickHouse holds. Rows
        the warehouse refused in the failed flush's earlier inserts are dead-lettered first:
        those inserts landed, so a restart may resume after the refused rows."""
        for _ in range(len(self._inflight) if count is None else min(count, len(self._inflight))):
            job = self._inflight.popleft()
            try:
                out = self._inserter.result()
            except InsertFailed as e:
                self._dead_letter_refused(job, e.partial)
                self.dlq.flush(30)
                raise
            self._finish(job, out)

    def _dead_letter_refused(self, job: "_Job", out: Outcome) -> None:
        for topic, i, detail in out.rejected:
            self._dead_letter(_Rejected(detail), job.rows[topic].source(i), topic)

    def _finish(self, job: "_Job", out: Outcome) -> None:
        for table, n in out.landed.items():
            self.stats.inserted[table] = self.stats.inserted.get(table, 0) + n
        self.stats.ambiguous_landed += out.ambiguous_landed
        self._dead_letter_refused(job, out)
        # Dead letters must be durable before the offsets that skip their records are committed.
        if self.dlq.flush(30) > 0:
            raise RuntimeError("dead letters not acknowledged by Kafka in 30 s; offsets not committed")
        self._commit([TopicPartition(t, p, o) for (t, p), o in job.offsets.items()])
        self.stats.batches += 1
        if out.landed:
            self.stats.last_landed_s = time.monotonic() - self._run_started

    def _commit(self, offsets: list[TopicPartition]) -> None:
        # Synchronous: one round trip per batch, after its insert is confirmed, and a failed
        # commit stops the sink here instead of surfacing later in a callback.
        self.consumer.commit(offsets=offsets, asynchronous=False)

    # -- main loop --------------------------------------------------------------------------
    def run(self, *, max_records: int | None = None, idle_timeout: float | None = None,
            max_seconds: float | None = None, on_progress: Callable[[SinkStats], None] | None = None) -> SinkStats:
        if self._ran:
            raise RuntimeError("a ClickHouseSink runs once (its consumer is closed at the end); create another")
        self._ran = True
        started = self._run_started = time.monotonic()
        last = started
        self._assigned_at = None
        self._rows_per_message = {}
        ok = False
        try:
            self.consumer.subscribe(list(self.specs), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_lost)
            # The group join goes on in the consumer's threads meanwhile.
            self.wait_ready()
            while True:
                # Messages carry one row or many (published components): ask for about a
                # batch's worth of rows at the largest rows per message of any topic seen, so a
                # poll holds about batch_max_rows rows whatever mix of topics it returns (sized
                # by single records, a poll fetched a week of batch messages at once).
                per = max([_FIRST_ROWS_PER_MESSAGE, *self._rows_per_message.values()])
                want = max(1, min(_MAX_CONSUME, round(self.s.sink.batch_max_rows / per)))
                msgs = self.consumer.consume(num_messages=want, timeout=_POLL_SECONDS)
                now = time.monotonic()
                if self._assigned_at is not None:
                    last = max(last, self._assigned_at)
                by_topic: dict[str, list[Message]] = {}
                for m in msgs:
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.error("consumer error: %s", m.error().str())
                        continue
                    by_topic.setdefault(m.topic(), []).append(m)
                if by_topic and self.stats.first_record_s is None:
                    self.stats.first_record_s = now - started
                for topic, batch in by_topic.items():
                    rows_before = self.stats.rows
                    self._handle_batch(topic, batch)
                    self._rows_per_message[topic] = max(1.0, (self.stats.rows - rows_before) / len(batch))
                    for m in batch:   # in offset order within a partition: the last one wins
                        self._next[(topic, m.partition())] = m.offset() + 1
                    self.stats.consumed += len(batch)
                    last = now
                while self._inflight and self._inserter.done():
                    self._settle(1)   # commit promptly, even if no further batch comes
                if self._buffered >= self.s.sink.batch_max_rows or (self._next and now - self._since >= self.s.sink.batch_max_seconds):
                    self.flush(wait=False)
                    if on_progress:
                        on_progress(self.stats)
                if max_records is not None and self.stats.consumed >= max_records:
                    break
                if idle_timeout is not None and self._assigned_at is not None and now - last >= idle_timeout:
                    break
                if max_seconds is not None and now - started >= max_seconds:
                    break
            self.flush()
            ok = True
        finally:
            try:
                if ok:
                    self._inserter.close()
                    self._inserter = None
                else:
                    # Nothing more may land after a failure: a flush queued behind it would
                    # store offsets past rows that are not there (see inserter.py).
                    self._drop_inserter()
            finally:
                self._closing = True
                try:
                    self.consumer.close()
                except Exception as e:   # librdkafka re-raises what a callback raised while closing
                    if ok:
                        raise
                    # The failure that stopped the run is the one to report.
                    log.warning("closing the consumer after a failure: %s", e)
                self.dlq.flush(10)
        return self.stats
