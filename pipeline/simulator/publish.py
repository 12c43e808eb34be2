"""Publish simulated captures exactly as the processor would: padded group counts and exact
demographic counts per (site, camera, window), then into ClickHouse or Kafka.

Per (camera, window) the real per-group counts go through
:func:`pipeline.privacy.pad_with_fictitious`, with the parameter set given at run time (never a
hard-coded fictitious figure); per (camera, demographics window) the observed (age band, gender)
counts are kept exact, as the processor now emits them: they are restricted input of the
aggregator's demographics stage, which publishes camera-hours with noise. A camera publishes
every window of its site's opening hours (a live camera streams frames all day, so the processor
closes every window, empty or not) and every other window that holds a capture (people still
walking after closing).

Rows are kept columnar (numpy) so a week of a site fits in memory and evaluation code can use
them without any database. Two outputs:

* :func:`write_clickhouse` writes what analysts may read, into a database *of the simulator's
  own* (``flow_sim`` by default), created and migrated with
  :func:`pipeline.sink.migrations.migrate`: the cells go through the streaming flow aggregator's
  cores in-process (:func:`pipeline.aggregator.batch.aggregate_cells`, the same rows the
  aggregator app publishes) into ``flow_components`` / ``footfall_components``, and the exact
  demographic counts through its counts core (:func:`pipeline.aggregator.counts.publish_hourly_counts`:
  every cell of every camera-hour, noised) into ``demographic_components``. Neither the
  per-window group cells nor the exact demographic counts are written there: both are restricted.
  The sink's database is refused (the sink's tables there are the deployment's).
* :func:`produce_kafka` encodes the restricted records with :func:`pipeline.serde.encode` and
  produces them (idempotent producer, keyed as the processor keys them) to the occurrences and
  demographics topics, to load-test the aggregator; :func:`produce_components` produces a
  published tier to the components topics, to load-test the sink.

:func:`write_cells` lands the restricted cells in ``group_occurrences``, only for the reference
estimator on cells (:mod:`pipeline.analytics.cell_estimator`) in tests and benchmarks.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.ops.kafka_clients import client_config
from pipeline.aggregator.messages import component_messages
from pipeline.aggregator.counts import CountCell, CountComponent, CountsSpec, demographic_grid, publish_hourly_counts
from pipeline.aggregator.model import (FLOW_COMPONENT_COLUMNS, FOOTFALL_COMPONENT_COLUMNS, AggregatorSpec,
                                       FlowComponent, FootfallComponent, OccurrenceCell, flow_component_columns,
                                       footfall_component_columns)
from pipeline.privacy import WINDOW_MARKER_GROUP, PrivacyParams, pad_with_fictitious
from pipeline.settings import Settings
from pipeline.simulator.journeys import Captures
from pipeline.simulator.scenario import DAY, Scenario
from pipeline.simulator.truth import OBS_BANDS, OBS_GENDERS

__all__ = ["Published", "publish", "published_windows", "write_clickhouse", "prepare_database", "publish_components",
           "publish_demographics", "write_components", "write_count_components", "write_cells", "produce_kafka",
           "produce_components", "SimulatorError", "OCCURRENCE_COLUMNS", "COUNT_COMPONENT_TABLES", "KafkaLoadStats"]

OCCURRENCE_COLUMNS = ("site_id", "camera_id", "window_start", "window_seconds", "group_id", "occurrences",
                      "params_version", "kafka_partition", "kafka_offset")
# Published count cells (pipeline.aggregator.counts.CountComponent) per kind: table and columns
# (schemas/clickhouse/0010_protected_counts.sql; the sink lands the components topics the same way).
COUNT_COMPONENT_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "demographics": ("demographic_components", ("params_version", "site_id", "camera_id", "hour", "age_band", "gender",
                                                "persons", "noise_var_milli", "version")),
    "crossings": ("crossing_components", ("params_version", "site_id", "camera_id", "hour", "line", "direction",
                                          "crossings", "noise_var_milli", "version")),
}


class SimulatorError(RuntimeError):
    """A simulation cannot be written where asked (wrong database, missing topic, ...)."""


@dataclass
class Published:
    """Everything the simulated processors published, columnar. Windows are indices since the
    scenario's start midnight (``window_start = start + window * window_seconds``)."""

    site_ids: tuple[str, ...]
    camera_ids: tuple[str, ...]
    camera_site: np.ndarray        # (C,) site index per camera
    start_epoch: int
    window_seconds: int
    params_version: str
    n_groups: int
    occ_camera: np.ndarray         # (R,) int16
    occ_window: np.ndarray         # (R,) int32
    occ_group: np.ndarray          # (R,) int32
    occ_count: np.ndarray          # (R,) int32, real + fictitious
    # Exact demographic counts, one row per non-empty (camera, demographics window, band, gender)
    # cell, as the processor emits them to the restricted demographics topic (no suppression: the
    # aggregator's demographics stage protects the camera-hours it publishes).
    dem_camera: np.ndarray         # (S,) int16
    dem_window: np.ndarray         # (S,) int32, index of a demographics window (dem_window_seconds)
    dem_band: np.ndarray           # (S,) int8 index into AGE_BANDS + ("unknown",)
    dem_gender: np.ndarray         # (S,) int8 index into ("female", "male", "unknown")
    dem_persons: np.ndarray        # (S,) int32, >= 1
    windows_per_camera: np.ndarray  # (C,) camera-windows published
    real_per_camera: np.ndarray    # (C,) real occurrences (= captures)
    fictitious_per_camera: np.ndarray  # (C,) fictitious occurrences actually drawn
    demographic_persons_per_camera: np.ndarray  # (C,) persons in the exact demographic cells (= captures)
    seconds: float = 0.0
    dem_window_seconds: int = 0    # 0: same as window_seconds

    @property
    def _dws(self) -> int:
        return self.dem_window_seconds or self.window_seconds

    @property
    def demographics_window_seconds(self) -> int:
        """Length of the demographic counts' windows (the processor's demographics_window_seconds)."""
        return self._dws

    @property
    def occurrence_rows(self) -> int:
        return int(self.occ_count.shape[0])

    @property
    def demographic_rows(self) -> int:
        return int(self.dem_persons.shape[0])

    @property
    def fictitious_added(self) -> int:
        return int(self.fictitious_per_camera.sum())

    def occurrences_per_camera(self) -> dict[str, int]:
        tot = np.bincount(self.occ_camera.astype(np.int64), weights=self.occ_count, minlength=len(self.camera_ids))
        return {c: int(t) for c, t in zip(self.camera_ids, tot)}

    def window_start(self, window: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.start_epoch + int(window) * self.window_seconds, tz=dt.timezone.utc)

    def counts_matrix(self, camera_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(windows, (n_windows, n_groups) counts) of one camera: the estimator's input without a database."""
        c = self.camera_ids.index(camera_id)
        m = self.occ_camera == c
        wins, inv = np.unique(self.occ_window[m], return_inverse=True)
        out = np.zeros((wins.shape[0], self.n_groups), dtype=np.int32)
        np.add.at(out, (inv, self.occ_group[m]), self.occ_count[m])
        return wins, out

    # ---- records ---------------------------------------------------------------------------
    def occurrence_records(self, lo: int = 0, hi: int | None = None) -> Iterator[dict[str, Any]]:
        """GroupOccurrence records (Avro field names; window_start in epoch milliseconds)."""
        hi = self.occurrence_rows if hi is None else hi
        ws_ms = (self.start_epoch + self.occ_window[lo:hi].astype(np.int64) * self.window_seconds) * 1000
        for c, w, g, n in zip(self.occ_camera[lo:hi].tolist(), ws_ms.tolist(), self.occ_group[lo:hi].tolist(),
                              self.occ_count[lo:hi].tolist()):
            yield {"site_id": self.site_ids[self.camera_site[c]], "camera_id": self.camera_ids[c],
                   "window_start": w, "window_seconds": self.window_seconds, "group_id": g, "occurrences": n,
                   "params_version": self.params_version}

    def occurrence_records_by_window(self) -> Iterator[dict[str, Any]]:
        """The same records in window order (then camera), as processors emit them: the
        aggregator finalises a window once a later one has been seen, so a camera-major stream
        would make every camera after the first arrive late."""
        order = np.lexsort((self.occ_camera[: self.occurrence_rows], self.occ_window[: self.occurrence_rows]))
        for i in order.tolist():
            yield from self.occurrence_records(i, i + 1)

    def occurrence_cells(self) -> Iterator[OccurrenceCell]:
        """The aggregator's input records, one per published (camera, window, group)."""
        return (OccurrenceCell.from_record(r) for r in self.occurrence_records())

    def demographic_records(self, lo: int = 0, hi: int | None = None) -> Iterator[dict[str, Any]]:
        hi = self.demographic_rows if hi is None else hi
        ws_ms = (self.start_epoch + self.dem_window[lo:hi].astype(np.int64) * self._dws) * 1000
        for c, w, b, g, n in zip(self.dem_camera[lo:hi].tolist(), ws_ms.tolist(), self.dem_band[lo:hi].tolist(),
                                 self.dem_gender[lo:hi].tolist(), self.dem_persons[lo:hi].tolist()):
            yield {"site_id": self.site_ids[self.camera_site[c]], "camera_id": self.camera_ids[c],
                   "window_start": w, "window_seconds": self._dws, "age_band": OBS_BANDS[b],
                   "gender": OBS_GENDERS[g], "persons": n, "params_version": self.params_version}

    def demographic_cells(self) -> Iterator[CountCell]:
        """The aggregator's demographics-stage input, one per exact (camera, window, band, gender) cell."""
        return (CountCell.from_record("demographics", r) for r in self.demographic_records())

    def _columns(self, cams: np.ndarray, wins: np.ndarray, first_offset: int,
                 seconds: int | None = None) -> list[list[Any]]:
        seconds = seconds or self.window_seconds
        cam_l = cams.tolist()
        uw, inv = np.unique(wins, return_inverse=True)
        starts = [dt.datetime.fromtimestamp(self.start_epoch + w * seconds, tz=dt.timezone.utc) for w in uw.tolist()]
        n = len(cam_l)
        return [[self.site_ids[self.camera_site[c]] for c in cam_l], [self.camera_ids[c] for c in cam_l],
                [starts[i] for i in inv.tolist()], [seconds] * n]

    def occurrence_columns(self, lo: int, hi: int, first_offset: int) -> list[list[Any]]:
        """Columnar ClickHouse rows ``lo:hi`` in :data:`OCCURRENCE_COLUMNS` order."""
        n = hi - lo
        return self._columns(self.occ_camera[lo:hi], self.occ_window[lo:hi], first_offset) + [
            self.occ_group[lo:hi].tolist(), self.occ_count[lo:hi].tolist(), [self.params_version] * n,
            [0] * n, list(range(first_offset, first_offset + n))]


def published_windows(sc: Scenario, captures: Captures) -> list[np.ndarray]:
    """Per camera: sorted window indices it publishes (opening hours of every day + any capture)."""
    ws = sc.window_seconds
    per_day = DAY // ws
    w = captures.window(ws)
    out = []
    for ci, cid in enumerate(sc.camera_ids):
        oh = sc.site_of(cid).opening_hours
        first, last = oh.open // ws, -(-oh.close // ws)
        day_wins = np.arange(first, last)
        opening = (np.arange(sc.days)[:, None] * per_day + day_wins[None, :]).ravel()
        out.append(np.union1d(opening, w[captures.camera == ci]))
    return out


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique sorted keys with the [start, end) slice of each in a sorted array."""
    uk, first = np.unique(keys, return_index=True)
    ends = np.append(first[1:], keys.shape[0])
    return uk, first, ends


def publish(sc: Scenario, captures: Captures, groups: np.ndarray, params: PrivacyParams,
            rng: np.random.Generator, progress: Callable[[int], None] | None = None) -> Published:
    """Pad every (camera, window) of the scenario and count its demographics exactly; see the module
    docstring."""
    t0 = time.monotonic()
    C = len(sc.camera_ids)
    ws = sc.window_seconds
    win = captures.window(ws)
    cam = captures.camera.astype(np.int64)
    windows = published_windows(sc, captures)
    # key per (camera, window): camera * W + window
    W = int(max((int(x.max()) for x in windows if x.size), default=0)) + 1
    cw = cam * W + win

    # real counts per (camera, window, group), sorted
    G = params.n_groups
    if groups.size and (groups.min() < 0 or groups.max() >= G):
        raise ValueError("group ids outside [0, n_groups)")
    k3, c3 = np.unique(cw * G + groups.astype(np.int64), return_counts=True)
    cw3, g3 = k3 // G, k3 % G
    ucw, s3, e3 = _segments(cw3)
    seg_of = dict(zip(ucw.tolist(), zip(s3.tolist(), e3.tolist())))

    # observed demographics per (camera, demographics window, band, gender): exact, non-empty
    # cells only, sorted by camera and window (what the processor emits)
    NB, NG = len(OBS_BANDS), len(OBS_GENDERS)
    dws = sc.demographics_window_seconds
    dwin = captures.window(dws)
    DW = int(dwin.max()) + 1 if dwin.size else 1
    kd, cd = np.unique(((cam * DW + dwin) * NB + captures.band.astype(np.int64)) * NG
                       + captures.gender.astype(np.int64), return_counts=True)
    dem_cam, dem_win = np.divmod(kd // (NB * NG), DW)

    occ_c, occ_w, occ_g, occ_n = [], [], [], []
    real = np.zeros(C, dtype=np.int64)
    fict = np.zeros(C, dtype=np.int64)
    g3l, c3l = g3.tolist(), c3.tolist()
    for ci in range(C):
        for w in windows[ci].tolist():
            key = ci * W + w
            s, e = seg_of.get(key, (0, 0))
            counts = dict(zip(g3l[s:e], c3l[s:e]))
            # a window left empty still sends a marker (0 occurrences), as processors do
            padded = pad_with_fictitious(counts, params, rng) or {WINDOW_MARKER_GROUP: 0}
            n = len(padded)
            gs = np.fromiter(padded.keys(), dtype=np.int32, count=n)
            ns = np.fromiter(padded.values(), dtype=np.int32, count=n)
            r = sum(c3l[s:e])
            real[ci] += r
            fict[ci] += int(ns.sum()) - r
            occ_c.append(np.full(n, ci, dtype=np.int16))
            occ_w.append(np.full(n, w, dtype=np.int32))
            occ_g.append(gs)
            occ_n.append(ns)
        if progress:
            progress(len(windows[ci]))
    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)

    return Published(
        site_ids=sc.site_ids, camera_ids=sc.camera_ids, camera_site=sc.camera_site, start_epoch=sc.start_epoch,
        window_seconds=ws, params_version=params.version, n_groups=G,
        occ_camera=cat(occ_c, np.int16), occ_window=cat(occ_w, np.int32), occ_group=cat(occ_g, np.int32),
        occ_count=cat(occ_n, np.int32),
        dem_camera=dem_cam.astype(np.int16), dem_window=dem_win.astype(np.int32),
        dem_band=((kd // NG) % NB).astype(np.int8), dem_gender=(kd % NG).astype(np.int8),
        dem_persons=cd.astype(np.int32),
        windows_per_camera=np.array([len(x) for x in windows], dtype=np.int64),
        real_per_camera=real, fictitious_per_camera=fict,
        demographic_persons_per_camera=np.bincount(dem_cam, weights=cd, minlength=C).astype(np.int64),
        seconds=time.monotonic() - t0, dem_window_seconds=dws)


# ---- ClickHouse ------------------------------------------------------------------------------

# ReplacingMergeTree: a rerun (--append) replaces the hours it publishes again. Nothing the
# simulator writes carries Kafka offsets any more: group cells are never landed (0009), and the
# exact per-window demographic counts are restricted, published only as components (0010).
PUBLISHED_TABLES = ("flow_components", "footfall_components", "demographic_components")


def prepare_database(settings: Settings, database: str, *, replace: bool = False, append: bool = False):
    """Open, create and migrate the simulator's own database; returns the warehouse.

    Refuses the sink's database (``settings.clickhouse.database``): simulated components there
    would mix with, and replace hours of, the deployment's published tier. An existing database
    with published rows is refused unless ``replace`` (drop it first) or ``append`` (add to it;
    published components of hours already there replace them, as a replayed hour does).
    """
    from pipeline.sink.clickhouse import ServerWarehouse
    from pipeline.sink.migrations import migrate

    if not database.replace("_", "").isalnum():
        raise SimulatorError(f"database name {database!r} must be a plain identifier (letters, digits, _)")
    if database == settings.clickhouse.database or database in ("system", "default"):
        raise SimulatorError(f"refusing to write simulated rows into {database!r}: that is the sink's (or a "
                             "system) database, whose published tables hold the deployment's rows; "
                             "use a database of its own, e.g. --database flow_sim")
    wh = ServerWarehouse(settings.clickhouse, database=database, role="admin")
    tables = {r[0] for r in wh.rows("SELECT name FROM system.tables WHERE database = %(db)s", {"db": database})}
    if tables and replace:
        wh.execute(f"DROP DATABASE IF EXISTS {database}")
        tables = set()
    migrate(wh)
    for t in [t for t in PUBLISHED_TABLES if t in tables]:
        n = int(wh.rows(f"SELECT count() FROM {database}.{t}")[0][0])
        if n and not append:
            raise SimulatorError(f"{database}.{t} already holds {n} rows; pass --replace to drop the "
                                 "database first or --append to add to it")
    return wh


def publish_components(pub: Published, spec: AggregatorSpec | None = None, partitions: int = 4, *,
                       noise_key: bytes | None = None) -> tuple[list[FlowComponent], list[FootfallComponent]]:
    """The published tier of a simulation: its cells through the aggregator's two stages, every
    hour closed at the end (the rows the streaming app would publish for the same cells).

    ``spec`` defaults to the aggregator's defaults for the simulation's window length; a spec of
    another window length is refused (lags are counted in windows). A spec that adds published
    noise needs a key; without ``noise_key`` the simulation draws one of its own, since a
    simulated site has no deployment key and the noise must stay unpredictable."""
    from pipeline.aggregator.batch import aggregate_cells

    spec = spec or AggregatorSpec(window_seconds=pub.window_seconds)
    if spec.window_seconds != pub.window_seconds:
        raise SimulatorError(f"the aggregator is configured for {spec.window_seconds} s windows but the scenario "
                             f"publishes {pub.window_seconds} s windows; set aggregator.window_seconds to match")
    if noise_key is None and (spec.flow_noise_scale or spec.footfall_noise_scale):
        noise_key = secrets.token_bytes(32)
    return aggregate_cells(pub.occurrence_cells(), spec, partitions, noise_key=noise_key)


def publish_demographics(pub: Published, spec: CountsSpec | None = None, *, noise_key: bytes | None = None,
                         exact: bool = False) -> list[CountComponent]:
    """The published demographics of a simulation: its exact per-window counts through the
    aggregator's demographics stage (:func:`pipeline.aggregator.counts.publish_hourly_counts`),
    every hour closed at the end: every (age band, gender) cell of every camera-hour, with
    discrete Laplace noise, zeros included.

    ``spec`` defaults to the counts core's defaults for the simulation's demographics window
    (``settings.aggregator.counts_spec("demographics", ...)`` gives the configured one); a spec of
    another window length is refused. The noise needs a key: without ``noise_key`` one is drawn,
    as for :func:`publish_components`. ``exact=True`` (tests, evaluation only) publishes the
    exact hourly sums instead."""
    spec = spec or CountsSpec("demographics", window_seconds=pub.demographics_window_seconds, grid=demographic_grid())
    if spec.kind != "demographics":
        raise SimulatorError(f"a {spec.kind!r} counts spec cannot publish demographics")
    if spec.window_seconds != pub.demographics_window_seconds:
        raise SimulatorError(f"the demographics stage is configured for {spec.window_seconds} s windows but the "
                             f"scenario counts demographics per {pub.demographics_window_seconds} s; set "
                             "processor.demographics_window_seconds (or the scenario's) to match")
    if noise_key is None and not exact:
        noise_key = secrets.token_bytes(32)
    return publish_hourly_counts(pub.demographic_cells(), spec, noise_key=noise_key, exact=exact)


def _insert_batches(wh: Any, table: str, columns: Sequence[str], total: int,
                    batch: Callable[[int, int], list[list[Any]]], batch_rows: int,
                    progress: Callable[[str, int], None] | None) -> int:
    """Insert rows [0, total) of ``table`` in batches of ``batch_rows`` (``batch(lo, hi)`` builds one)."""
    for lo in range(0, total, batch_rows):
        hi = min(lo + batch_rows, total)
        wh.insert(table, list(columns), batch(lo, hi))
        if progress:
            progress(table, hi - lo)
    return total


def write_components(wh: Any, flow: Sequence[FlowComponent], foot: Sequence[FootfallComponent], *,
                     batch_rows: int = 200_000, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Insert published rows into ``flow_components`` / ``footfall_components``; rows per table."""
    return {
        "flow_components": _insert_batches(wh, "flow_components", FLOW_COMPONENT_COLUMNS, len(flow),
                                           lambda lo, hi: flow_component_columns(flow[lo:hi]), batch_rows, progress),
        "footfall_components": _insert_batches(wh, "footfall_components", FOOTFALL_COMPONENT_COLUMNS, len(foot),
                                               lambda lo, hi: footfall_component_columns(foot[lo:hi]), batch_rows,
                                               progress)}


def count_component_columns(rows: Sequence[CountComponent]) -> list[list[Any]]:
    """Columnar data of published count cells of one kind, in ``COUNT_COMPONENT_TABLES`` order;
    hours as UTC datetimes."""
    out: list[list[Any]] = [[] for _ in range(9)]
    for r in rows:
        hour = dt.datetime.fromtimestamp(r.hour_ms / 1000, tz=dt.timezone.utc)
        vals = (r.params_version, r.site_id, r.camera_id, hour, r.key1, r.key2, r.count, r.noise_var_milli, r.version)
        for col, v in zip(out, vals):
            col.append(v)
    return out


def write_count_components(wh: Any, rows: Sequence[CountComponent], *, batch_rows: int = 200_000,
                           progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Insert published count cells into ``demographic_components`` / ``crossing_components`` by
    their kind; rows per table written (only the kinds present)."""
    written: dict[str, int] = {}
    for kind, (table, columns) in COUNT_COMPONENT_TABLES.items():
        mine = [r for r in rows if r.kind == kind]
        if mine:
            written[table] = _insert_batches(wh, table, columns, len(mine),
                                             lambda lo, hi: count_component_columns(mine[lo:hi]), batch_rows, progress)
    unknown = {r.kind for r in rows} - set(COUNT_COMPONENT_TABLES)
    if unknown:
        raise SimulatorError(f"count components of unknown kind {sorted(unknown)}")
    return written


def write_clickhouse(pub: Published, wh: Any, *, spec: AggregatorSpec | None = None,
                     components: tuple[Sequence[FlowComponent], Sequence[FootfallComponent]] | None = None,
                     demographics: Sequence[CountComponent] | None = None, counts_spec: CountsSpec | None = None,
                     noise_key: bytes | None = None, batch_rows: int = 200_000,
                     progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Insert the published tier of ``pub``; rows per table. Flow and footfall components are
    ``components`` or :func:`publish_components` with ``spec``; demographic components are
    ``demographics`` or :func:`publish_demographics` with ``counts_spec``. What is computed here
    uses ``noise_key`` (one drawn for the run if none, shared by every stage as the aggregator
    shares its release key)."""
    if noise_key is None and (components is None or demographics is None):
        noise_key = secrets.token_bytes(32)
    flow, foot = components if components is not None else publish_components(pub, spec, noise_key=noise_key)
    dem = demographics if demographics is not None else publish_demographics(pub, counts_spec, noise_key=noise_key)
    written = write_components(wh, flow, foot, batch_rows=batch_rows, progress=progress)
    written["demographic_components"] = 0
    written.update(write_count_components(wh, dem, batch_rows=batch_rows, progress=progress))
    return written


def write_cells(pub: Published, wh: Any, *, first_offset: int = 0, batch_rows: int = 200_000) -> int:
    """Insert the restricted per-window group cells into ``group_occurrences``: only for the
    reference estimator on cells (tests, benchmarks), in a throwaway database where
    :func:`pipeline.analytics.cell_tables.create_cell_tables` made the table (migration 0009
    drops it from every real warehouse), never for a database analysts read."""
    return _insert_batches(wh, "group_occurrences", OCCURRENCE_COLUMNS, pub.occurrence_rows,
                           lambda lo, hi: pub.occurrence_columns(lo, hi, first_offset + lo), batch_rows, None)


# ---- Kafka -----------------------------------------------------------------------------------

@dataclass
class KafkaLoadStats:
    records: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return sum(self.records.values()) / self.seconds if self.seconds > 0 else 0.0


def produce_waiting(producer: Any, topic: str, value: bytes, key: bytes, on_delivery: Callable[..., None]) -> None:
    """Produce one record, serving delivery callbacks while the client's local queue is full
    (confluent-kafka raises BufferError instead of blocking), so a bulk load never drops a record."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def _open_producer(settings: Settings, role: str, topics: Iterable[str]) -> Any:
    """One idempotent producer authenticated as ``role``; every topic must exist."""
    from confluent_kafka import Producer

    k = settings.kafka
    producer = Producer({**client_config(settings, role), "client.id": f"{k.client_id}-simulator",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 20,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000,
                         "queue.buffering.max.kbytes": 512 * 1024})
    known = producer.list_topics(timeout=10).topics
    for t in topics:
        if t not in known:
            raise SimulatorError(f"topic {t!r} does not exist on {k.bootstrap}; run `flowctl topics apply` first")
    return producer


def _count_failures(stats: KafkaLoadStats) -> Callable[[Any, Any], None]:
    """A delivery callback that counts failed messages in ``stats``."""
    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            stats.failed += 1
    return on_delivery


def _finish(producer: Any, stats: KafkaLoadStats, t0: float, flush_timeout: float) -> KafkaLoadStats:
    left = producer.flush(flush_timeout)
    stats.seconds = time.monotonic() - t0
    if left:
        raise SimulatorError(f"{left} messages still unsent after {flush_timeout:.0f} s")
    if stats.failed:
        raise SimulatorError(f"{stats.failed} messages failed delivery")
    return stats


def _produce(settings: Settings, streams: Sequence[tuple[str, str, Iterator[tuple[bytes, dict[str, Any]]]]], *,
             progress: Callable[[str, int], None] | None, flush_timeout: float,
             role: str = "simulator") -> KafkaLoadStats:
    """Encode (pipeline.serde) and produce ``(record name, topic, (key, record)...)`` streams with
    one idempotent producer, authenticated as ``role`` (the simulator stands in for processors)."""
    from pipeline import serde

    producer = _open_producer(settings, role, (t for _, t, _ in streams))
    stats = KafkaLoadStats()
    on_delivery = _count_failures(stats)

    t0 = time.monotonic()
    for name, topic, records in streams:
        n = 0
        for key, rec in records:
            produce_waiting(producer, topic, serde.encode(name, rec), key, on_delivery)
            n += 1
            if n % 5000 == 0:
                producer.poll(0)
                if progress:
                    progress(name, 5000)
        if progress and n % 5000:
            progress(name, n % 5000)
        stats.records[name] = stats.records.get(name, 0) + n
        stats.messages += n
    return _finish(producer, stats, t0, flush_timeout)


def produce_kafka(pub: Published, settings: Settings, *, progress: Callable[[str, int], None] | None = None,
                  flush_timeout: float = 120.0) -> KafkaLoadStats:
    """Produce what processors emit, to the restricted topics the aggregator reads: every padded
    occurrence cell (keyed by group, as ``pipeline.processor.app.occurrence_key``) and every exact
    demographic count (keyed by site/camera, as ``camera_key``: a camera-hour in one partition)."""
    k = settings.kafka
    occ = ((str(r["group_id"]).encode(), r) for r in pub.occurrence_records_by_window())
    dem = ((f"{r['site_id']}/{r['camera_id']}".encode(), r) for r in pub.demographic_records())
    return _produce(settings, [("GroupOccurrence", k.occurrences_topic, occ),
                               ("DemographicCount", k.demographics_topic, dem)],
                    progress=progress, flush_timeout=flush_timeout)


def produce_components(settings: Settings, flow: Sequence[FlowComponent], foot: Sequence[FootfallComponent],
                       counts: Sequence[CountComponent] = (), *, progress: Callable[[str, int], None] | None = None,
                       flush_timeout: float = 120.0) -> KafkaLoadStats:
    """Produce a published tier as the aggregator does, to the components topics the sink lands:
    authenticated as the aggregator, each hour's rows as the aggregator emits an hour (many rows
    of one camera to a message, pipeline/aggregator/messages.py). ``records`` in the returned
    stats counts rows per record name, ``messages`` the Kafka messages that carried them."""
    k = settings.kafka
    topics = [k.flow_components_topic, k.footfall_components_topic]
    topics += [t for kind, t in (("demographics", k.demographic_components_topic),
                                 ("crossings", k.crossing_components_topic)) if any(r.kind == kind for r in counts)]
    producer = _open_producer(settings, "aggregator", topics)
    stats = KafkaLoadStats()
    on_delivery = _count_failures(stats)

    by_hour: dict[int, list[Any]] = {}
    for r in (*flow, *foot, *counts):
        by_hour.setdefault(r.hour_ms, []).append(r)
    t0 = time.monotonic()
    for hour in sorted(by_hour):
        for m in component_messages(by_hour[hour], k, settings.aggregator.publish_batch_rows):
            produce_waiting(producer, m.topic, m.value, m.key, on_delivery)
            stats.records[m.record] = stats.records.get(m.record, 0) + m.rows
            stats.messages += 1
            if progress:
                progress(m.record, m.rows)
        producer.poll(0)
    return _finish(producer, stats, t0, flush_timeout)


def register_dimensions(wh: Any, sc: Scenario, params: PrivacyParams) -> None:
    """Load the scenario's camera layout and the parameter set's public figures into the analysts'
    dimension tables (``cameras``, ``privacy_params``), so the flow estimators run on the
    simulator's database as on the sink's."""
    from pipeline.analytics.dimensions import load_layout, register_params
    from pipeline.layout import Layout

    load_layout(wh, Layout.model_validate({"sites": [
        {"site_id": s.site_id, "cameras": [{"camera_id": c.camera_id, "zone": c.zone or "", "store": c.store or ""}
                                           for c in s.cameras]} for s in sc.sites]}))
    register_params(wh, params)
