"""The sink's inserts, in a process of their own.

Why a process: clickhouse-driver encodes every value in Python (type checks, range checks,
string writes), about 2.6-8 µs a row depending on the machine, and the sink's consuming and
decoding holds the same GIL in between its Rust calls. In one interpreter the two took turns:
an insert thread gave 0.58-0.65 of the driver's own insert rate against 0.57-0.58 without it
(docs/SCALING.md §6). Here the sink's main process consumes, decodes and checks; this process
turns the checked columns into Python values and inserts them, each with a core of its own.

What crosses between them: a flush's rows per table, batch-decoded parts as Arrow IPC (written
and read by polars in Rust, no Python object per value on the sink's side) and rows of the
exact path as Python columns, with each row's source partition and offset. Back come rows landed
per table, the indices of rows the warehouse refused (the sink dead-letters them with their own
bytes, which never leave the sink) and how many ambiguous inserts were found applied. The
channel is a socket pair between a process and the child it started, so pickle is safe on it.

Guarantees are the sink's (pipeline/sink/consumer.py): one insert is one block, offsets are
committed by the sink only after this process confirms the insert, and a failed or ambiguous
insert is retried only once the warehouse says it did not land. If this process dies, the sink
stops with the flush's offsets uncommitted, and a restart resumes after what ClickHouse holds.

What ends it, and why that way: the sink's clean end (it lands what was sent, which is nothing
by then); a failed flush (it stops itself, so nothing queued behind the failure lands: that
would store offsets past missing rows); the sink failing or losing its partitions (killed, for
the same reason); the sink's process ending (Linux's parent-death signal, or a broken channel
elsewhere: a sink killed outright must not leave inserts running that its partitions' next
owner also makes). Killing is safe because a block being inserted lands whole or not at all.
"""
from __future__ import annotations

import io
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pipeline import logs
from pipeline.settings import ClickHouseRole, ClickHouseSettings
from pipeline.sink.clickhouse import ServerWarehouse, WarehouseError

log = logging.getLogger(__name__)

OFFSET_COLUMNS = ("kafka_partition", "kafka_offset")


@dataclass(frozen=True)
class Target:
    """Where a topic's rows go: the table, its columns, and whether each row's source partition
    and offset are stored with it (append-only tables, which the sink resumes from)."""

    table: str
    columns: tuple[str, ...]
    offsets: bool


@dataclass
class Pending:
    """Rows for one table as the driver's columns, with each row's source; ``start`` is the
    index of the first row in the flush's rows for its topic (what a refusal is reported by)."""

    cols: list[list[Any]]
    parts: list[int]
    offs: list[int]
    start: int = 0

    def __len__(self) -> int:
        return len(self.parts)

    def _slice(self, lo: int, hi: int) -> "Pending":
        return Pending([c[lo:hi] for c in self.cols], self.parts[lo:hi], self.offs[lo:hi], self.start + lo)

    def halves(self) -> tuple["Pending", "Pending"]:
        mid = len(self) // 2
        return self._slice(0, mid), self._slice(mid, len(self))

    def chunks(self, size: int) -> list["Pending"]:
        """Consecutive parts of at most ``size`` rows (the rows themselves if they fit)."""
        if len(self) <= size:
            return [self]
        return [self._slice(lo, min(lo + size, len(self))) for lo in range(0, len(self), size)]

    def columnar(self, offsets: bool) -> list[list[Any]]:
        return self.cols + ([self.parts, self.offs] if offsets else [])


def pending_from(width: int, segments: list[bytes | list[list[Any]]], parts: list[int], offs: list[int]) -> Pending:
    """A topic's flush as columns: IPC segments (batch-decoded rows) become Python values here,
    in the inserting process; exact-path segments already are."""
    cols: list[list[Any]] = [[] for _ in range(width)]
    for seg in segments:
        if isinstance(seg, bytes):
            import polars as pl   # only this process reads IPC; the import is paid once

            part = [s.to_list() for s in pl.read_ipc(io.BytesIO(seg)).get_columns()]
        else:
            part = seg
        if len(part) != width:
            raise ValueError(f"a segment of {len(part)} columns for a table of {width}")
        for col, vs in zip(cols, part):
            col.extend(vs)
    if any(len(c) != len(parts) for c in cols) or len(offs) != len(parts):
        raise ValueError("columns and sources of a flush differ in length")
    return Pending(cols, parts, offs)


@dataclass
class Outcome:
    landed: dict[str, int] = field(default_factory=dict)              # rows per table
    rejected: list[tuple[str, int, str]] = field(default_factory=list)   # (topic, row index, server's message)
    ambiguous_landed: int = 0   # inserts that failed on the client but were found applied


class Inserter:
    """Inserts with the sink's guarantees (see ``_insert_with_retry``) on one connection."""

    def __init__(self, wh: ServerWarehouse, retry_seconds: float, batch_max_rows: int) -> None:
        self.wh = wh
        self.retry_seconds = retry_seconds
        self.batch_max_rows = batch_max_rows

    def insert_all(self, rows: dict[str, tuple[Target, Pending]], out: Outcome | None = None) -> Outcome:
        """Lands ``rows`` and records in ``out`` what landed and what was refused as it goes,
        so that a failure part-way still reports the earlier inserts' refused rows."""
        out = Outcome() if out is None else out
        for topic, (target, pending) in rows.items():
            # Inserts of at most batch_max_rows: a poll of batch messages can bring more rows
            # than that at once (its size is a guess until a topic has been seen).
            for chunk in pending.chunks(self.batch_max_rows):
                out.landed[target.table] = out.landed.get(target.table, 0) + self._land(topic, target, chunk, out)
        return out

    def _land(self, topic: str, target: Target, pending: Pending, out: Outcome) -> int:
        """Insert ``pending``; returns rows landed. Rows the warehouse rejects are found by
        halving the batch and reported (the sink dead-letters them one by one), so one bad row
        neither blocks the sink for good (it would fail again after every restart) nor takes
        good rows with it."""
        try:
            self._insert_with_retry(target, pending, out)
            return len(pending)
        except WarehouseError as e:
            if e.kind != "rejected":
                raise
            if len(pending) == 1:
                out.rejected.append((topic, pending.start, str(e)))
                return 0
            first, second = pending.halves()
            return self._land(topic, target, first, out) + self._land(topic, target, second, out)

    def _insert_with_retry(self, target: Target, pending: Pending, out: Outcome) -> None:
        """One insert, retried on transient and ambiguous failures until it is known to have
        landed exactly once (``sink.retry_seconds``, then the error is raised and the sink
        stops with its offsets uncommitted; a restart resumes after what ClickHouse holds).

        Why retries cannot double count: an insert whose connection failed may still have been
        applied (or still be running) on the server. Before inserting again, this waits for its
        query id to leave ``system.processes``, then looks for the batch's source offsets in the
        table (one insert is one block, applied entirely or not at all). Tables without offsets
        are the published components, ReplacingMergeTree read with FINAL: a second copy of a row
        replaces the first."""
        cols = list(target.columns) + (list(OFFSET_COLUMNS) if target.offsets else [])
        columnar = pending.columnar(target.offsets)
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            query_id = f"flowpipe-sink-{uuid.uuid4()}"
            try:
                self.wh.insert(target.table, cols, columnar, query_id=query_id)
                return
            except WarehouseError as e:
                if e.kind in ("rejected", "fatal"):
                    raise
                if e.kind == "ambiguous" and target.offsets and self._landed(target, pending, query_id, deadline):
                    out.ambiguous_landed += 1
                    log.warning("insert into %s failed on the client (%s) but landed on the server; not repeated",
                                target.table, e)
                    return
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("insert into %s failed (%s); retrying in %.1f s", target.table, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _landed(self, target: Target, pending: Pending, query_id: str, deadline: float) -> bool:
        """Whether an insert whose outcome the client did not see is in the table. False when
        the server cannot be asked yet (then the caller retries, and asks again next time)."""
        try:
            while self.wh.rows("SELECT count() FROM system.processes WHERE query_id = %(q)s", {"q": query_id})[0][0]:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
            by_part: dict[int, list[int]] = {}
            for part, off in zip(pending.parts, pending.offs):
                by_part.setdefault(part, []).append(off)
            found = 0
            for part, offs in by_part.items():
                found += int(self.wh.rows(
                    f"SELECT count() FROM {self.wh.database}.{target.table} WHERE kafka_partition = %(p)s "
                    f"AND kafka_offset IN %(o)s", {"p": part, "o": tuple(offs)})[0][0])
        except WarehouseError:
            return False
        if found not in (0, len(pending)):
            # Cannot happen for one block; if it did, repeating the insert would duplicate rows.
            raise WarehouseError(f"{target.table}: {found} of {len(pending)} rows of a failed insert are in the "
                                 f"table; refusing to guess which", "fatal")
        return found == len(pending)


# -- the process ------------------------------------------------------------------------------
Request = dict[str, tuple[Target, list, list[int], list[int]]]   # topic -> (target, segments, parts, offs)
_STOP = "stop"   # the sink's clean end: finish what was sent, then exit
_GONE = "gone"   # the channel broke: the sink is gone, insert nothing more


class InsertFailed(WarehouseError):
    """A flush the insert process could not land. ``partial``: what it did land and refuse
    before the failure (rows landed in earlier inserts of the flush stay landed: their refused
    rows must still be dead-lettered before the sink stops)."""

    def __init__(self, message: str, kind: str, code: int | None, partial: Outcome) -> None:
        super().__init__(message, kind, code)
        self.partial = partial


def _serve(conn: Connection) -> None:
    """The child's loop: open the warehouse as told, then one reply per request, in order,
    until the sink says stop (or its channel breaks).

    A reader thread receives the next request and turns it into Python columns while this
    thread inserts the previous one: most of an insert is waiting for the server, with the GIL
    released (the conversion took about a tenth of this process's time when it ran in turn)."""
    try:
        cfg, database, role, retry_seconds, batch_max_rows, level = conn.recv()
        logs.setup(level)
        wh = ServerWarehouse(cfg, database, role=role)
        # Connect now: a wrong password or an unreachable server is reported before the sink
        # starts consuming, and the first insert does not pay the handshake.
        wh.server_version()
        ins = Inserter(wh, retry_seconds, batch_max_rows)
        conn.send(("ready",))
    except (EOFError, OSError):
        return
    except Exception as e:   # a password file missing, a bad setting: say so, then stop
        conn.send(("error", getattr(e, "kind", "fatal"), str(e), getattr(e, "code", None), Outcome()))
        return
    ready: queue.Queue = queue.Queue(maxsize=1)
    threading.Thread(target=_read, args=(conn, ready), name="sink-insert-reader", daemon=True).start()
    while True:
        item = ready.get()
        if item in (_STOP, _GONE):
            # Gone: a flush still queued belongs to a sink that can no longer commit it, and
            # another sink may already be landing the same rows.
            return
        out = Outcome()
        try:
            if isinstance(item, BaseException):
                raise item
            ins.insert_all(item, out)
        except Exception as e:   # a warehouse error, or a bug here: it must stop the sink, not lose its rows
            conn.send(("error", getattr(e, "kind", "fatal"), str(e) if isinstance(e, WarehouseError)
                       else f"{type(e).__name__}: {e}", getattr(e, "code", None), out))
            # Nothing after a failed flush may land: a later one queued behind it would put
            # offsets in the warehouse past rows that are not there, and a restart resumes
            # after the highest stored offset.
            return
        conn.send(("done", out))


def _read(conn: Connection, ready: queue.Queue) -> None:
    """Requests as Pending rows, in order; then _STOP or _GONE, or an exception for a request
    it could not read (after which it reads nothing more)."""
    while True:
        try:
            req: Request | None = conn.recv()
        except (EOFError, OSError):
            ready.put(_GONE)
            return
        except BaseException as e:   # a request that does not unpickle, memory: the flush fails, loudly
            ready.put(e)
            return
        if req is None:
            ready.put(_STOP)
            return
        try:
            ready.put({topic: (target, pending_from(len(target.columns), segs, parts, offs))
                       for topic, (target, segs, parts, offs) in req.items()})
        except BaseException as e:
            ready.put(e)
            return


def _die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when the process that started it ends (a sink killed
    or crashed must not leave its inserts running behind it: another sink may take its
    partitions and land the same rows). A block being inserted lands whole or not at all.
    Linux sends the signal when the *thread* that started this process ends, so a sink is built
    in the thread that runs it (or a longer-lived one)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass   # elsewhere the broken channel alone ends it, after the insert in progress
    if os.getppid() != parent:   # it ended before the above took effect
        os._exit(0)


class InsertProcess:
    """The sink's handle on its insert process, which serves requests one after another, in
    the order they were sent; replies come back in that order."""

    def __init__(self, cfg: ClickHouseSettings, database: str, role: ClickHouseRole, *,
                 retry_seconds: float, batch_max_rows: int) -> None:
        parent, child = socket.socketpair()
        # Its own interpreter (not a fork: librdkafka's and polars' threads do not survive one),
        # started by module so it imports only what it needs.
        self._proc = subprocess.Popen([sys.executable, "-m", "pipeline.sink.inserter", str(child.fileno()),
                                       str(os.getpid())], pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self._conn = Connection(parent.detach())
        level = logging.getLevelName(logging.getLogger("pipeline").getEffectiveLevel())
        self._wait_s = retry_seconds + 10
        self._ready = False
        self._pending = 0   # requests sent, replies not yet read
        try:
            self._conn.send((cfg, database, role, retry_seconds, batch_max_rows, level))
        except OSError:
            pass   # it died at once: wait_ready says so, with its exit code

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _ended(self) -> RuntimeError:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"the sink's insert process ended (exit code {code}); offsets of the flushes "
                            f"in flight are not committed, a restart resumes from ClickHouse")

    def _reply(self) -> tuple:
        try:
            # Waits in steps, so that a process that died without closing its end is noticed.
            while not self._conn.poll(1.0):
                if self._proc.poll() is not None:
                    raise EOFError
            msg = self._conn.recv()
        except (EOFError, OSError):
            raise self._ended() from None
        if msg[0] == "error":
            raise InsertFailed(msg[2], msg[1], msg[3], msg[4])
        return msg

    def wait_ready(self) -> None:
        if not self._ready:
            self._reply()
            self._ready = True

    def submit(self, request: Request) -> None:
        self.wait_ready()
        try:
            self._conn.send(request)
        except OSError:   # it died while this waited to hand the flush over
            raise self._ended() from None
        self._pending += 1

    def done(self) -> bool:
        """Whether the reply to the oldest request in flight has arrived (without waiting)."""
        return self._pending > 0 and self._conn.poll()

    def result(self) -> Outcome:
        """The outcome of the oldest request in flight (waits for it); a failure is raised here
        as :class:`InsertFailed`, with the kind of the warehouse error and what did land."""
        if not self._pending:
            raise RuntimeError("no insert in flight")
        self._pending -= 1
        return self._reply()[1]

    def close(self, *, abort: bool = False) -> None:
        """Stop the process. Without ``abort`` it first lands what was sent (the sink has
        settled everything when it ends well, so there is nothing). With ``abort`` (the sink
        failed) it is killed at once: a flush queued behind a failure must not land, and an
        insert in progress lands whole or not at all; the sink commits neither."""
        if abort:
            self._proc.kill()
        else:
            try:
                self._conn.send(None)
            except OSError:
                pass
        try:
            self._proc.wait(timeout=self._wait_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._conn.close()


def main() -> None:
    _die_with_parent(int(sys.argv[2]))
    _serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    # Through the importable module, so what it sends back unpickles as pipeline.sink.inserter's
    # classes, not this script's __main__ copies.
    from pipeline.sink.inserter import main as _main
    _main()
