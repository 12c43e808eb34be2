"""flowctl: one entry point for the local stack, topics, keys, migrations, the three pipeline
stages, queries and the end-to-end demo. Every long-running command can be bounded
(--max-*, --idle-timeout) so tests, demos and benchmarks stop by themselves.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from typing import Any
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import logs
from pipeline.ops.kafka_clients import client_config
from pipeline.settings import REPO_ROOT, ConfigError, Settings, load_settings

console = Console(stderr=True)
out = Console()
INFRA = REPO_ROOT / "infra" / "local"


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group()
@click.option("--log-level", default=None, help="Log level for the pipeline's own loggers.")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """Privacy-by-design customer-flow analytics on Kafka."""
    try:
        s = load_settings()
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    logs.setup(log_level or s.log_level)
    ctx.obj = {"settings": s}


# --- stack -------------------------------------------------------------------------------------

def _script(name: str, action: str) -> int:
    return subprocess.call(["bash", str(INFRA / name), action])


@cli.group()
def stack() -> None:
    """The local Kafka broker and ClickHouse server (no Docker)."""


@stack.command("up")
def stack_up() -> None:
    """Install if missing, start if not running, wait until healthy."""
    t = time.monotonic()
    if _script("stack.sh", "up") != 0:
        raise click.ClickException("stack did not come up (see messages above)")
    console.print(f"stack up in {time.monotonic() - t:.1f} s")


@stack.command("down")
def stack_down() -> None:
    sys.exit(_script("stack.sh", "down"))


@stack.command("status")
def stack_status() -> None:
    sys.exit(_script("stack.sh", "status"))


@stack.command("reset")
def stack_reset() -> None:
    """Stop and delete all local Kafka and ClickHouse data."""
    sys.exit(_script("stack.sh", "reset"))


# --- topics ------------------------------------------------------------------------------------

@cli.group()
def topics() -> None:
    """Apply and audit the declarative topic policy (infra/topics.yaml)."""


def _policy(s: Settings, path: Path | None):
    from pipeline.ops.topics import DEFAULT_POLICY, PolicyError, policy_for_settings

    try:
        return policy_for_settings(s, path or DEFAULT_POLICY)
    except PolicyError as e:
        raise click.ClickException(str(e)) from None


@topics.command("apply")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.pass_context
def topics_apply(ctx: click.Context, policy: Path | None) -> None:
    from pipeline.ops.topics import admin_client, apply_policy

    s = _settings(ctx)
    actions = apply_policy(admin_client(s), _policy(s, policy))
    for a in actions:
        console.print(f"  {a}")
    console.print(f"topic policy applied ({len(actions)} change(s))")


@topics.command("audit")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.pass_context
def topics_audit(ctx: click.Context, policy: Path | None) -> None:
    """Exit 1 on any violation (raw topic over its limits, compaction on raw data, undeclared topic)."""
    from pipeline.ops.topics import admin_client, audit

    s = _settings(ctx)
    rep = audit(admin_client(s), _policy(s, policy))
    t = Table("topic", "severity", "finding")
    for f in rep.findings:
        t.add_row(f.topic, f.severity, f.message)
    if rep.findings:
        out.print(t)
    out.print("audit: OK" if rep.ok else f"audit: {len(rep.violations)} violation(s)")
    sys.exit(0 if rep.ok else 1)


# --- keys --------------------------------------------------------------------------------------

@cli.group()
def keys() -> None:
    """The processors' X25519 key pair (edges get only the public key)."""


@keys.command("init")
@click.option("--rotate", is_flag=True, help="Create a new current key; old private keys stay for in-flight frames.")
@click.pass_context
def keys_init(ctx: click.Context, rotate: bool) -> None:
    from pipeline.envelope import ensure_keypair, generate_keypair

    from pipeline.privacy.deployment import ensure_deployment_params

    d = _settings(ctx).keys.dir
    kid = generate_keypair(d) if rotate else ensure_keypair(d)
    console.print(f"processor key {kid} in {d}" + (" (running edges and processors switch within seconds; "
                                                   "`flowctl keys retire` deletes the old key after its frames expired)"
                                                   if rotate else ""))
    # The deployment's secret privacy parameter set lives beside the key, with the same
    # protection: created once from OS entropy (rotate it with `flowctl privacy rotate`).
    params, created = ensure_deployment_params(d)
    console.print(f"privacy parameter set {params.version} {'created' if created else 'present'} in {d}")
    from pipeline.privacy.release import ensure_noise_key

    console.print(f"release-noise key for the aggregator: {ensure_noise_key(d)}")


@keys.command("retire")
@click.pass_context
def keys_retire(ctx: click.Context) -> None:
    """Delete processor private keys superseded longer ago than frames live (store TTL + skew
    tolerance + keys.retire_margin_seconds); processors already stopped using them."""
    from pipeline.envelope import retire_keys
    from pipeline.settings import key_retire_after_seconds

    s = _settings(ctx)
    try:
        gone = retire_keys(s.keys.dir, key_retire_after_seconds(s))
    except FileNotFoundError as e:
        raise click.ClickException(f"no current key in {s.keys.dir} ({e.strerror}): run `flowctl keys init`") from None
    console.print(f"retired {len(gone)} key(s): {', '.join(gone) or 'none due'}")


# --- warehouse ---------------------------------------------------------------------------------

def _warehouse(s: Settings, role: str):
    """A warehouse connection as ``role``: admin (migrations, loading, audits), sink, or
    analyst (read-only, published databases only; every analysis command)."""
    from pipeline.sink.clickhouse import ServerWarehouse

    return ServerWarehouse(s.clickhouse, role=role)


@cli.command()
@click.option("--chdb", "chdb_path", default=None, help="Apply to an embedded current ClickHouse (chdb) at this path instead.")
@click.pass_context
def migrate(ctx: click.Context, chdb_path: str | None) -> None:
    """Apply pending ClickHouse migrations from schemas/clickhouse."""
    from pipeline.sink.clickhouse import ChdbWarehouse, WarehouseError
    from pipeline.sink.migrations import MigrationError, migrate as run

    s = _settings(ctx)
    try:
        wh = ChdbWarehouse(chdb_path, s.clickhouse.database) if chdb_path else _warehouse(s, "admin")
        done = run(wh)
        # The estimators need the public figures of the parameter set the processors use.
        from pipeline.analytics.dimensions import register_params
        from pipeline.privacy import ParamsError
        from pipeline.privacy.deployment import load_params

        try:
            params = load_params(s)
        except ParamsError as e:
            params = None
            note = f"no privacy parameters registered ({e})"
        else:
            register_params(wh, params)
            note = f"privacy parameters {params.version} registered"
    except (WarehouseError, MigrationError) as e:
        raise click.ClickException(str(e)) from None
    console.print(f"ClickHouse {wh.server_version()}: applied {done or 'nothing (up to date)'}; {note}")


# --- stages ------------------------------------------------------------------------------------

@cli.command()
@click.argument("source")
@click.option("--site", default=None, help="Site id (default: edge.site_id).")
@click.option("--camera", default=None, help="Camera id (default: edge.camera_id).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None)
@click.option("--realtime", is_flag=True, help="Pace a video file at its own speed instead of as fast as possible.")
@click.pass_context
def edge(ctx: click.Context, source: str, site: str | None, camera: str | None, max_frames: int | None, realtime: bool) -> None:
    """Encrypt frames from SOURCE (video file, image folder or camera URL) and publish references."""
    from pipeline.edge.producer import EdgeProducer
    from pipeline.edge.sources import SourceError, open_source
    from pipeline.envelope import CurrentPublicKey
    from pipeline.framestore import store_from_settings

    s = _settings(ctx)
    try:
        frames = open_source(source, s.edge.sample_fps, s.edge.max_width, s.edge.max_height)
        pub = CurrentPublicKey(s.keys.dir)
    except (SourceError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    ep = EdgeProducer(s, store_from_settings(s), pub, site_id=site, camera_id=camera)
    with _progress() as prog:
        task = prog.add_task(f"edge {ep.site_id}/{ep.camera_id}", total=max_frames)
        stats = ep.run(frames, max_frames=max_frames, realtime=realtime, on_frame=lambda n: prog.update(task, completed=n))
    console.print(f"edge: {stats.frames} frames sealed, {stats.delivered} references delivered, {stats.failed} failed")
    if stats.failed or stats.errors:
        raise click.ClickException(f"{stats.failed} frame reference(s) not delivered: {stats.errors[:3]}")


@cli.command()
@click.option("--max-frames", type=click.IntRange(min=1), default=None)
@click.option("--idle-timeout", type=click.FloatRange(min=0.5), default=None, help="Stop after this many seconds without frames.")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=None)
@click.pass_context
def process(ctx: click.Context, max_frames: int | None, idle_timeout: float | None, max_seconds: float | None) -> None:
    """Run the stream processor (faust-streaming worker)."""
    from pipeline.privacy import ParamsError
    from pipeline.processor.app import run_processor

    try:
        stats = run_processor(_settings(ctx), max_frames=max_frames, idle_timeout=idle_timeout,
                              max_seconds=max_seconds)
    except ParamsError as e:
        raise click.ClickException(str(e)) from None
    console.print(f"processor: {stats.frames} frames, {stats.persons} detections in {stats.passes} person passes, "
                  f"{stats.windows_emitted} windows, "
                  f"{stats.occurrence_records} occurrence records, {stats.demographic_records} demographic records, "
                  f"dead letters {stats.dead_letters or 'none'}")


@cli.command()
@click.option("--stage", type=click.Choice(["all", "partitions", "combiner", "counts"]), default="all",
              show_default=True,
              help="Run every stage, or only the per-partition flow workers (scale with the occurrences topic), the "
                   "combiner, or the demographics and crossings counts stages.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.5), default=None,
              help="Stop after this many seconds without input.")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=None)
@click.option("--max-records", type=click.IntRange(min=1), default=None, help="Stop after reading this many records.")
@click.option("--flush/--no-flush", default=False, show_default=True,
              help="At the end of a bounded run, close every open hour with what was seen (demo, backfills; one "
                   "worker owning every partition). Never on a live deployment: later windows would arrive late.")
@click.option("--cold-starts/--no-cold-starts", default=True, show_default=True,
              help="Without a snapshot, and with records already expired from the topic, publish only hours that "
                   "cannot have paired with the expired records. --no-cold-starts publishes them anyway (a demo on "
                   "a local stack, where earlier runs' hours were already closed).")
@click.pass_context
def aggregate(ctx: click.Context, stage: str, idle_timeout: float | None, max_seconds: float | None,
              max_records: int | None, flush: bool, cold_starts: bool) -> None:
    """Run the flow aggregator: restricted group occurrences and per-window counts in, published
    flow, footfall, demographic and crossing components out (docs/AGGREGATOR.md)."""
    from pipeline.aggregator.app import run_aggregator
    from pipeline.aggregator.model import SpecError
    from pipeline.privacy.release import NoiseKeyError

    if flush and stage not in ("all", "counts"):
        raise click.BadParameter("--flush needs --stage all or counts (a flow worker must own both flow stages)",
                                 param_hint="--flush")
    s = _settings(ctx)
    try:
        with _progress() as prog:
            task = prog.add_task("aggregator: records read", total=max_records)
            stats = run_aggregator(s, stage=stage, idle_timeout=idle_timeout, max_seconds=max_seconds,
                                   stop_after_records=max_records, flush_at_end=flush, cold_starts=cold_starts,
                                   on_progress=lambda st: prog.update(task, completed=sum(st.consumed.values())))
    except (SpecError, NoiseKeyError) as e:
        raise click.ClickException(str(e)) from None
    console.print(f"aggregator: read {stats.consumed or 'nothing'}, {stats.partials_out} partials, "
                  f"{stats.flow_rows_out} flow, {stats.footfall_rows_out} footfall and {stats.count_rows_out} "
                  "demographic/crossing component rows, "
                  f"{stats.snapshots} snapshots, restored {stats.restored or 'none'}, "
                  f"dead letters {stats.dead_letters or 'none'}")


@cli.command()
@click.option("--max-records", type=click.IntRange(min=1), default=None)
@click.option("--idle-timeout", type=click.FloatRange(min=0.5), default=None)
@click.option("--max-seconds", type=click.FloatRange(min=1), default=None)
@click.pass_context
def sink(ctx: click.Context, max_records: int | None, idle_timeout: float | None, max_seconds: float | None) -> None:
    """Land the published components (flows, footfall, demographics, crossings), receipts and the
    ledger in ClickHouse."""
    from pipeline.sink.consumer import ClickHouseSink

    s = _settings(ctx)
    snk = ClickHouseSink(s, _warehouse(s, "sink"))
    with _progress() as prog:
        task = prog.add_task("sink", total=max_records)
        stats = snk.run(max_records=max_records, idle_timeout=idle_timeout, max_seconds=max_seconds,
                        on_progress=lambda st: prog.update(task, completed=st.consumed))
    console.print(f"sink: {stats.consumed} messages ({stats.rows} rows), inserted {stats.inserted or 'nothing'}, "
                  f"{stats.dead_letters} dead letters")


@cli.group()
def store() -> None:
    """The ephemeral frame store."""


def _swept_receipts(s: Settings, producer: Any, frame_ids: list[str]) -> None:
    """Receipts keep the audit whole. A sweeper outside the edge does not know a blob's camera or
    exact capture time (the edge's own sweeper does): it reports the latest possible capture time."""
    from pipeline import serde

    now_ms = int(time.time() * 1000)
    for fid in frame_ids:
        producer.produce(s.kafka.receipts_topic, value=serde.encode("DeletionReceipt", {
            "frame_id": fid, "site_id": "", "camera_id": "", "deleted_at": now_ms,
            "captured_at": now_ms - int(s.store.ttl_seconds * 1000), "outcome": "SWEPT", "deleted_by": "sweeper"}))
    producer.flush(10)


@store.command("serve")
@click.option("--host", default=None, help="Default: store.serve_host (loopback).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: store.serve_port.")
@click.pass_context
def store_serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """The site's blob service: remote processors GET and DELETE frames over HTTPS (bearer token,
    the deployment's CA); sweeps the TTL and sends receipts for what it sweeps."""
    from urllib.parse import urlparse

    from pipeline.edge.blobservice import serve
    from pipeline.edge.producer import kafka_producer
    from pipeline.framestore import LocalDirFrameStore

    s = _settings(ctx)
    u = urlparse(s.store.url)
    if u.scheme != "file":
        raise click.ClickException(f"store.url {s.store.url!r}: the blob service serves a local file:// directory")
    if not s.store.token_file.is_file():
        raise click.ClickException(f"blob service token {s.store.token_file} not found; `flowctl stack up` creates it "
                                   f"on the local stack (or set store.token_file)")
    store = LocalDirFrameStore(Path(u.path), s.store.ttl_seconds)
    # Optional: without it only the processors' token reads the stats and metrics.
    monitor = [s.store.monitor_token_file.read_text().strip()] if s.store.monitor_token_file.is_file() else []
    producer = kafka_producer(s)
    try:
        serve(store, [s.store.token_file.read_text().strip()], s.store.max_blob_bytes, host or s.store.serve_host,
              port or s.store.serve_port, s.store.server_cert_file, s.store.sweep_interval_seconds,
              on_swept=lambda ids: _swept_receipts(s, producer, ids), monitor_tokens=monitor)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e


@store.command("sweep")
@click.option("--loop", is_flag=True, help="Keep sweeping every store.sweep_interval_seconds.")
@click.pass_context
def store_sweep(ctx: click.Context, loop: bool) -> None:
    """Delete blobs older than the TTL (cron-able; edges also sweep on their own)."""
    from pipeline.edge.producer import kafka_producer
    from pipeline.framestore import store_from_settings

    s = _settings(ctx)
    st = store_from_settings(s)
    producer = kafka_producer(s)
    while True:
        swept = st.sweep()
        n = len(swept)
        _swept_receipts(s, producer, swept)
        stats = st.stats()
        console.print(f"swept {n}; {stats.blobs} blob(s) left, oldest {stats.oldest_age_seconds:.1f} s")
        if not loop:
            return
        time.sleep(s.store.sweep_interval_seconds)


# --- SRE: exporter and receipts audit ----------------------------------------------------------

@cli.command()
@click.option("--once", is_flag=True, help="Print one scrape in Prometheus text format and exit.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: exporter.port.")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=None)
@click.pass_context
def exporter(ctx: click.Context, once: bool, port: int | None, max_seconds: float | None) -> None:
    """Prometheus exporter: raw-record and blob ages against policy, processor lag."""
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server

    from pipeline.framestore import store_from_settings
    from pipeline.ops.exporter import PipelineCollector
    from pipeline.ops.topics import admin_client, policy_for_settings

    s = _settings(ctx)
    reg = CollectorRegistry()
    reg.register(PipelineCollector(admin_client(s, "exporter"), client_config(s, "exporter"), policy_for_settings(s),
                                   store_from_settings(s),
                                   s.exporter.processor_group or s.processor.app_id,
                                   s.exporter.retention_check_interval_ms))
    if once:
        out.print(generate_latest(reg).decode(), end="", markup=False, highlight=False, soft_wrap=True)
        return
    port = port or s.exporter.port
    start_http_server(port, addr=s.exporter.addr, registry=reg)
    console.print(f"exporter on http://{s.exporter.addr}:{port}/metrics")
    t0 = time.monotonic()
    while max_seconds is None or time.monotonic() - t0 < max_seconds:
        time.sleep(0.5)


@cli.group("audit")
def audit_group() -> None:
    """Retention audits over the warehouse."""


@audit_group.command("receipts")
@click.option("--hours", type=click.IntRange(min=1), default=24, show_default=True)
@click.pass_context
def audit_receipts(ctx: click.Context, hours: int) -> None:
    """Capture-to-deletion latency per site and camera; exit 1 if a frame outlived its TTL without a receipt."""
    wh = _warehouse(_settings(ctx), "admin")
    db = wh.database
    lat = wh.rows(f"SELECT site_id, camera_id, sum(frames), max(p50_ms), max(p95_ms), max(p99_ms), max(max_ms), "
                  f"sum(swept) FROM {db}.deletion_latency WHERE hour >= now() - {int(hours) * 3600} "
                  f"GROUP BY site_id, camera_id ORDER BY site_id, camera_id")
    t = Table("site", "camera", "frames", "p50 ms*", "p95 ms*", "p99 ms*", "max ms", "swept",
              title=f"capture-to-deletion latency, last {hours} h (*worst hour)")
    for r in lat:
        t.add_row(*(f"{x:.0f}" if isinstance(x, float) else str(x) for x in r))
    out.print(t)
    missing = wh.rows(f"SELECT site_id, camera_id, count() FROM {db}.missing_receipts GROUP BY site_id, camera_id")
    if missing:
        for site, cam, n in missing:
            out.print(f"[red]{n} frame(s) at {site}/{cam} passed their TTL with no deletion receipt[/red]")
        sys.exit(1)
    out.print("every issued frame past its TTL has a deletion receipt")


@audit_group.command("ages")
@click.pass_context
def audit_ages(ctx: click.Context) -> None:
    """Oldest record on the broker of every raw and restricted topic against its bound (retention +
    segment roll + retention check interval), the flow aggregator's snapshotted state against its
    bound, and ClickHouse, which may hold no restricted group cell at all; exit 1 if anything
    outlives its bound."""
    from confluent_kafka.admin import ConfigResource

    from pipeline.ops.exporter import oldest_record_ages
    from pipeline.ops.topics import admin_client, policy_for_settings

    s = _settings(ctx)
    pol = policy_for_settings(s)
    admin = admin_client(s)
    specs = [t for t in pol.topics if pol.limits(t)]
    t = Table("tier", "topic", "partition", "records", "oldest age s", "bound s", "tier limit s", title="data-age audit")
    over = []
    cfgs = {r.name: {k: v.value for k, v in f.result(timeout=15).items()}
            for r, f in admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, x.name)
                                                for x in specs]).items()} if specs else {}
    for spec in specs:
        cfg = cfgs.get(spec.name, {})
        check = s.exporter.retention_check_interval_ms
        bound = (int(cfg.get("retention.ms", -1)) + int(cfg.get("segment.ms", 0)) + check) / 1000
        max_ret, max_seg = pol.limits(spec)
        limit = (max_ret + max_seg + check) / 1000
        if int(cfg.get("retention.ms", -1)) < 0 or bound > limit:
            over.append(f"{spec.name} (its configuration lets records live {bound:.0f} s, over the {spec.tier} "
                        f"limit of {limit:.0f} s: run `flowctl topics apply`)")
        if "compact" in cfg.get("cleanup.policy", "delete"):
            over.append(f"{spec.name} (cleanup.policy={cfg.get('cleanup.policy')} keeps records past retention: "
                        f"run `flowctl topics apply`)")
        for pa in oldest_record_ages(client_config(s, "admin"), spec.name):
            t.add_row(spec.tier, spec.name, str(pa.partition), str(pa.high - pa.low), f"{pa.oldest_age_seconds:.0f}",
                      f"{bound:.0f}", f"{limit:.0f}")
            if pa.oldest_age_seconds > min(bound, limit) + 5:
                over.append(f"{spec.name}[{pa.partition}] (oldest record {pa.oldest_age_seconds:.0f} s)")
    out.print(t)
    over += _audit_aggregator_state(s, out)
    held = _audit_warehouse(s, out)
    if over or held:
        for o in over:
            out.print(f"[red]outlives its bound: {o}[/red]")
        for h in held:
            out.print(f"[red]{h}[/red]")
        sys.exit(1)
    out.print("every raw and restricted record is within its age bound, and ClickHouse holds no restricted "
              "group cells")


def _audit_aggregator_state(s: Settings, out: Console) -> list[str]:
    """The flow aggregator's restricted state, as its newest snapshots show it: the oldest window
    whose counts it still holds, against the state bound its configuration promises."""
    from pipeline.aggregator.app import snapshot_ages

    spec = s.aggregator.spec()
    bound = spec.state_age_seconds
    slack = s.aggregator.snapshot_max_seconds
    over = []
    rows = snapshot_ages(s)
    if not rows:
        return over
    t = Table("changelog", "partition", "oldest window held, age s", "snapshot age s", "state bound s",
              title="flow aggregator state (restricted)")
    for topic, p, age, snap_age in rows:
        t.add_row(topic, str(p), "none" if age is None else f"{age:.0f}", f"{snap_age:.0f}", f"{bound}")
        # The snapshot is up to snap_age old; by now the worker has dropped what it held then, so
        # the state bound applies to the window's age when the snapshot was written.
        if age is not None and age - snap_age > bound + slack:
            over.append(f"aggregator state in {topic}[{p}] (held a window {age - snap_age:.0f} s old, "
                        f"bound {bound} s)")
    out.print(t)
    return over


# A column of this name is the restricted-cell shape: per-window counts of one anonymous group are
# linkable across cameras (issue 11), so no table of the warehouse may have it.
RESTRICTED_COLUMN = "group_id"


def _audit_warehouse(s: Settings, out: Console) -> list[str]:
    """ClickHouse keeps rows for months, so restricted data must never be there at all: every table
    or view of the configured database with a ``group_id`` column is a finding, whatever it holds.
    A warehouse that cannot be checked is a finding too (the audit must not pass unseen)."""
    from pipeline.sink.clickhouse import WarehouseError

    db = s.clickhouse.database
    try:
        wh = _warehouse(s, "admin")
        arg = {"db": db}
        shaped = sorted({str(r[0]) for r in wh.rows(
            "SELECT table FROM system.columns WHERE database = %(db)s AND name = %(col)s",
            {**arg, "col": RESTRICTED_COLUMN})})
        engines = {str(n): str(e) for n, e in wh.rows("SELECT name, engine FROM system.tables WHERE database = %(db)s",
                                                      arg)} if shaped else {}
        stored = {str(t): int(n) for t, n in wh.rows("SELECT table, sum(rows) FROM system.parts "
                                                     "WHERE database = %(db)s AND active GROUP BY table", arg)} \
            if shaped else {}
    except WarehouseError as e:
        return [f"ClickHouse database {db} could not be checked for restricted group cells ({e}); the audit "
                f"cannot pass without it: is the server up (`flowctl stack status`)?"]
    if not shaped:
        out.print(f"ClickHouse {db}: no table or view has a {RESTRICTED_COLUMN} column (no restricted group cells)")
        return []
    found = []
    for table in shaped:
        engine = engines.get(table, "?")
        what = (f"rows stored: {stored[table]}" if table in stored
                else "a view" if engine.endswith("View") else "no rows")
        found.append(f"restricted group cells in ClickHouse: {db}.{table} ({engine}, {what}) has a "
                     f"{RESTRICTED_COLUMN} column")
    found.append(f"per-window group cells may never be stored in the warehouse: run `flowctl migrate` (migration "
                 f"0009 drops group_occurrences and the tables and views built on it); for any other table above, "
                 f"stop what writes it, then DROP TABLE it")
    return found


# --- queries -----------------------------------------------------------------------------------

@cli.group()
def query() -> None:
    """Read results from ClickHouse."""


def _print_counts(rows: list[tuple], title: str, settings: Settings) -> None:
    """Occurrences include fictitious persons; the estimate subtracts their known expectation."""
    from pipeline.privacy import ParamsError
    from pipeline.privacy.deployment import load_params

    try:
        p = load_params(settings)
        version, per_window = p.version, p.fictitious_per_window
        var_window = p.n_groups * p.fictitious_variance_per_group
    except ParamsError:
        # Not a processor host: the public figures of the newest registered version suffice.
        got = _warehouse(settings, "analyst").rows(
            f"SELECT params_version, n_groups * fictitious_per_group, n_groups * fictitious_variance_per_group "
            f"FROM {settings.clickhouse.database}.privacy_params ORDER BY registered_at DESC, params_version DESC "
            f"LIMIT 1")
        if not got:
            raise click.ClickException("no privacy parameter set here or registered in the warehouse: run "
                                       "`flowctl migrate` on a processor host") from None
        version, per_window, var_window = str(got[0][0]), float(got[0][1]), float(got[0][2])
    t = Table("site", "camera", "windows", "occurrences", "est. persons (± 1 sd)", title=title)
    for site, cam, windows, occ, *noise in rows:
        est = occ - windows * per_window
        # published noise on occurrences and, independently with the same variance, on windows
        sd = (windows * var_window + (noise[0] * (1 + per_window ** 2) if noise else 0.0)) ** 0.5
        t.add_row(site, cam, str(windows), str(occ), f"{est:.0f} ± {sd:.0f}")
    out.print(t)
    out.print(f"[dim]occurrences include {per_window:.0f} expected fictitious persons per camera "
              f"and window (privacy parameters {version}) and differentially private noise per camera-hour "
              f"(docs/PRIVACY.md §10) on occurrences and windows, all in the ± 1 sd[/dim]")


@query.command("counts")
@click.option("--site", default=None)
@click.option("--since-minutes", type=click.IntRange(min=1), default=None)
@click.pass_context
def query_counts(ctx: click.Context, site: str | None, since_minutes: int | None) -> None:
    """Occurrences per camera (real + fictitious persons)."""
    from pipeline.analytics.counts import camera_counts

    since = datetime.now(timezone.utc) - timedelta(minutes=since_minutes) if since_minutes else None
    _print_counts(camera_counts(_warehouse(_settings(ctx), "analyst"), since, site, with_noise=True), "per-camera occurrences", _settings(ctx))


@query.command("sql")
@click.argument("statement")
@click.pass_context
def query_sql(ctx: click.Context, statement: str) -> None:
    """Run a read-only SELECT against the warehouse, as the analyst user: the server refuses
    anything else (readonly profile, published databases only); the prefix check only gives a
    friendlier message first."""
    from pipeline.sink.clickhouse import WarehouseError

    if not statement.lstrip().lower().startswith(("select", "with", "show", "describe")):
        raise click.ClickException("only SELECT/WITH/SHOW/DESCRIBE statements are allowed here")
    try:
        rows = _warehouse(_settings(ctx), "analyst").rows(statement)
    except WarehouseError as e:
        raise click.ClickException(str(e)) from None
    for row in rows:
        out.print("\t".join(str(x) for x in row))


# --- demo --------------------------------------------------------------------------------------

@cli.command()
@click.option("--source", default=None, help="Footage (default: vtest.avi from Debian's opencv-doc).")
@click.option("--site", default="demo-site")
@click.option("--cameras", default="entrance,plaza", help="Comma-separated camera ids; the footage is split among them.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Frames per camera.")
@click.option("--speed", type=click.FloatRange(min=0.1, max=20), default=1.0, show_default=True,
              help="Replay speed of the footage relative to real time. Capture times follow the replay, so "
                   "above 1 people seem to walk faster and the tracker (tuned on real time) sees another world.")
@click.pass_context
def demo(ctx: click.Context, source: str | None, site: str, cameras: str, max_frames: int | None, speed: float) -> None:
    """The main job end to end: stack up, topics, keys, migrations, edge → processor → sink, counts."""
    s = _settings(ctx)
    t0 = time.monotonic()
    ctx.invoke(stack_up)
    ctx.invoke(topics_apply, policy=None)
    ctx.invoke(keys_init, rotate=False)
    ctx.invoke(migrate, chdb_path=None)
    if source is None:
        source = subprocess.check_output(["bash", str(INFRA / "footage.sh")], text=True).strip()
    cams = [c.strip() for c in cameras.split(",") if c.strip()]
    cmd = [sys.executable, "-m", "pipeline.cli", "process", "--idle-timeout", "8"]
    proc = subprocess.Popen(cmd)
    try:
        from pipeline.edge.producer import EdgeProducer
        from pipeline.edge.sources import open_source
        from pipeline.envelope import CurrentPublicKey
        from pipeline.framestore import store_from_settings

        import threading

        from pipeline.ops.topics import admin_client, wait_for_group

        pub = CurrentPublicKey(s.keys.dir)
        frames = list(open_source(source, s.edge.sample_fps, s.edge.max_width, s.edge.max_height))
        # Cameras go live once the processor has loaded its models and joined its group: frames
        # sent before then queued for seconds, and the latency audit reported the start-up (p99
        # ~3 s) instead of the pipeline (issue 14: the demo's figures must agree with the bench's).
        try:
            waited = wait_for_group(admin_client(s), s.processor.app_id, 300, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as e:
            raise click.ClickException(str(e)) from None
        console.print(f"processor ready after {waited:.0f} s")
        # Edges connected (TLS + SCRAM, about a second) before they go live, as a running edge is:
        # connecting on the first frame put that second into its capture-to-deletion latency.
        edges = {cam: EdgeProducer(s, store_from_settings(s), pub, site_id=site, camera_id=cam) for cam in cams}
        for ep in edges.values():
            ep.producer.list_topics(s.kafka.frame_refs_topic, timeout=30)
        # The cameras' clock starts once the footage is decoded: started before, every frame was
        # stamped as captured about a second before it was sent (issue 14: demo latency ~1.3 s).
        started = datetime.now(timezone.utc)
        per = max_frames or max(1, len(frames) // len(cams))
        errors: list[str] = []
        with _progress() as prog:
            def feed(i: int, cam: str) -> None:
                chunk = frames[i * per:(i + 1) * per]
                # Independent cameras are not in step: their frames are spread over the frame period
                # (in step, every camera's frame queued behind the others', which no site does and
                # the latency bench does not assume).
                t0 = (chunk[0].offset_seconds if chunk else 0.0) - i / (s.edge.sample_fps * len(cams)) * speed
                chunk = [replace(f, offset_seconds=f.offset_seconds - t0) for f in chunk]
                task = prog.add_task(f"edge {site}/{cam}", total=len(chunk))
                ep = edges[cam]
                # Each camera replays its share of the footage as a live camera would, sped up.
                st = ep.run(chunk, realtime=True, speed=speed, start=started,
                            on_frame=lambda n: prog.update(task, completed=n))
                errors.extend(st.errors)
            threads = [threading.Thread(target=feed, args=(i, c)) for i, c in enumerate(cams)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise click.ClickException(f"edge errors: {errors[:3]}")
        console.print("edge done; waiting for the processor to drain")
        rc = proc.wait(timeout=900)
        if rc != 0:
            raise click.ClickException(f"processor exited with {rc}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    # The footage is minutes long: close its hours with what was seen (a live deployment
    # publishes an hour about three hours after it starts, when every lag pairing it is final).
    ctx.invoke(aggregate, stage="all", idle_timeout=5.0, max_seconds=600, max_records=None, flush=True,
               cold_starts=False)
    ctx.invoke(sink, max_records=None, idle_timeout=5.0, max_seconds=300)
    from pipeline.analytics.counts import camera_counts

    rows = camera_counts(_warehouse(s, "analyst"), started - timedelta(seconds=s.processor.window_seconds), site, with_noise=True)
    _print_counts(rows, f"{site}: occurrences per camera since {started:%H:%M:%S} UTC", s)
    if not rows:
        raise click.ClickException("no occurrences reached ClickHouse")
    from pipeline.privacy.deployment import load_params

    fict = load_params(s).fictitious_per_window
    counted = {f"{r[0]}/{r[1]}": r[3] - r[2] * fict for r in rows}
    truth = _footage_truth(source, frames, per, site, cams, counted)
    _demo_reports(ctx, s, site, cams, started, truth)
    console.print(f"demo finished in {time.monotonic() - t0:.0f} s")


VTEST_LABELS = REPO_ROOT / "bench" / "data" / "vtest-gt" / "annotations.csv"


def _footage_truth(source: str, frames: list, per: int, site: str, cams: list[str], counted: dict[str, float]):
    """Labelled persons per demo camera when the footage is the labelled vtest.avi, else None."""
    import cv2

    from pipeline.analytics.report import GroundTruth
    from pipeline.vision.evaluation import load_labels, visits as visit_count

    if Path(source).name != "vtest.avi" or not VTEST_LABELS.is_file():
        return None
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.release()
    labels = load_labels(VTEST_LABELS)
    gap = int(round(load_settings().processor.pass_max_gap_seconds * fps))
    persons, seconds, visits = {}, {}, {}
    for i, cam in enumerate(cams):
        chunk = frames[i * per:(i + 1) * per]
        idx = [int(round(f.offset_seconds * fps)) for f in chunk]
        seen = {l.person for fr in idx for l in labels.get(fr, []) if not l.ignore}
        persons[f"{site}/{cam}"] = len(seen)
        if idx:
            inside = {fr: ls for fr, ls in labels.items() if idx[0] <= fr <= idx[-1]}
            visits[f"{site}/{cam}"] = sum(visit_count(inside, gap, frames=idx).values())
        seconds[f"{site}/{cam}"] = (chunk[-1].offset_seconds - chunk[0].offset_seconds) if chunk else 0.0
    return GroundTruth(persons, f"{VTEST_LABELS.relative_to(REPO_ROOT)} (the project's own annotation of vtest.avi)",
                       seconds, counted, visits)


def _demo_reports(ctx: click.Context, s: Settings, site: str, cams: list[str], started: datetime,
                  truth=None) -> None:
    """The analyst's view of the run: one report on the footage just processed (minutes of two
    cameras, so its flows are noise and say so through their intervals) and one on a simulated
    week of the reference scenario (two sites, six cameras), where flows are measurable."""
    from pipeline.analytics.report import build_report
    from pipeline.privacy.deployment import load_params
    from pipeline.privacy.deployment import deployment_params_path
    from pipeline.simulator.cli import run as simulate_run
    from pipeline.simulator.scenario import load_scenario
    from pipeline.sink.clickhouse import ServerWarehouse

    reports = REPO_ROOT / ".var" / "reports"
    w = s.processor.window_seconds
    footage = build_report(_warehouse(s, "analyst"), load_params(s).version, started - timedelta(seconds=w),
                           datetime.now(timezone.utc) + timedelta(seconds=w),
                           cameras=[f"{site}/{c}" for c in cams], window_seconds=w,
                           out_path=reports / "footage-report.html", truth=truth)
    console.print(f"footage report: {footage.out_path} ({len(footage.flows)} camera pairs)")
    ctx.invoke(simulate_run, scenario="reference", days=None, mode=None, target="clickhouse", database="flow_sim",
               replace=True, append=False, truth_path=reports / "reference-truth.json",
               params_path=s.processor.privacy_params or deployment_params_path(s.keys.dir), seed=None,
               calibrate=False)
    sc = load_scenario("reference")
    t_start = datetime(sc.start.year, sc.start.month, sc.start.day, tzinfo=timezone.utc)
    week = build_report(ServerWarehouse(s.clickhouse, database="flow_sim", role="analyst"), load_params(s).version, t_start,
                        t_start + timedelta(days=sc.days), window_seconds=sc.window_seconds, level="camera",
                        out_path=reports / "flow-report.html")
    console.print(f"[bold]flow report[/bold] (simulated week, {len(week.cameras)} cameras): {week.out_path}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


from pipeline.privacy.cli import privacy  # noqa: E402  (mounted as `flowctl privacy`)

cli.add_command(privacy)

from pipeline.simulator.cli import simulate_group  # noqa: E402  (mounted as `flowctl simulate`)

cli.add_command(simulate_group)

from pipeline.analytics.cli import COMMANDS as ANALYST_COMMANDS  # noqa: E402  (flows, od-matrix, transit, ...)

for _cmd in ANALYST_COMMANDS:
    cli.add_command(_cmd)


def main() -> None:
    from confluent_kafka import KafkaException

    from pipeline.sink.clickhouse import WarehouseError

    try:
        cli(prog_name="flowctl")
    except (WarehouseError, KafkaException, ConfigError) as e:
        # Expected operational failures: one readable line, no traceback.
        console.print(f"[red]error:[/red] {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
