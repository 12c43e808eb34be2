"""Flow accuracy end to end: simulator -> Kafka -> flow aggregator -> sink -> ClickHouse -> `flowctl flows`.

    .venv/bin/python bench/flows/end_to_end.py                          # reference, 7 days, p = 0.5, 1 replicate
    .venv/bin/python bench/flows/end_to_end.py --replicates 3
    .venv/bin/python bench/flows/end_to_end.py --p 0.15 --days 7        # a real-footage same-group rate
    .venv/bin/python bench/flows/end_to_end.py --scenario realistic --replicates 2
    .venv/bin/python bench/flows/end_to_end.py --days 1 --keep          # later: --cleanup TAG
    .venv/bin/python bench/flows/end_to_end.py --days 1 --producer flowctl   # `flowctl simulate run --to kafka`

Issue 11 "Done when": flows of at least 100 per day over 7 days have a median relative error of
at most 10% end to end, with 95% CI coverage between 0.90 and 0.98, at p = 0.5. The in-process
benches (evaluate.py, components_eval.py, bench/privacy/published_noise.py) run the same cores
without a broker; this one runs the deployed commands on the local stack
(`bash infra/local/stack.sh up`), each replicate in isolation:

1. setup: a fresh topic prefix ``e2e<tag>.`` (every topic of infra/topics.yaml, via
   ``FLOW_KAFKA__*_TOPIC``), a ClickHouse database ``e2e_<tag>``, a keys directory of its own
   (``flowctl keys init``: a fresh release-noise key per replicate, as published_noise.py's
   "fresh keys"), consumer groups ``e2e-agg-<tag>-*`` / ``e2e-sink-<tag>``;
   ``flowctl topics apply``, ``flowctl migrate``, and ``flowctl params register`` of a
   parameter set that is the default (flow profile) with ``same_group_rate = --p``.
2. simulate + produce the scenario's restricted occurrence cells to Kafka. ``--producer``:
   * ``bench`` (default): the simulator in process (exactly what ``flowctl simulate run`` does
     for the same scenario, days, seed and parameter set), its truth written as ``flowctl
     simulate run --truth`` writes it, and the cells produced *as processors send them*: in
     window order, keyed by group id (``pipeline.processor.app.occurrence_key``), so that every
     group's cells share a partition (docs/AGGREGATOR.md §2).
   * ``flowctl``: ``flowctl simulate run SCENARIO --to kafka --truth F --params F --seed --days``
     as is. Before 86baf2e that command produced camera by camera (and keyed by camera id before
     3c131cf), which the aggregator cannot use: every camera after a partition's first arrived
     after its windows were closed and was dropped as late. Since 86baf2e it sends the cells in
     window order keyed by group, like the bench producer.
3. ``flowctl aggregate --flush --no-cold-starts --idle-timeout --max-seconds`` (one worker, both
   stages), then ``flowctl sink --idle-timeout --max-seconds``.
4. ``flowctl flows --json`` over the simulated period, compared with the truth: per pair the
   capture pairs of one person within lags 0..max_lag (the estimator's definition; bench
   evaluate.py's :class:`Row` and :func:`summarise` compute coverage and errors).
5. cleanup: drop the database, delete the topics and consumer groups (``--keep`` keeps them).

Checks that the run was complete: every produced record was read by the aggregator, the
occurrences topic still starts at offset 0 (its retention is 1 h: a slower run loses records),
no dead letters, and the published footfall per camera, over the camera-hours with captures,
equals the produced occurrences (real + fictitious) within 4 SD of the summed footfall noise + 1%.

Printed per replicate and as medians over replicates: median relative error of flows >= 100/day,
95% CI coverage over all pairs (and over the big flows), mean and SD of z = (estimate - truth) / SE,
RMSE / RMS SE, the share of zero-true-flow pairs called significant (95% CI excludes 0; and
the share significantly above 0), wall
time per stage, occurrence records and the aggregator's throughput. JSON to --out.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from evaluate import Row, summarise  # noqa: E402  (bench/flows/evaluate.py)

from pipeline.settings import KafkaSettings, Settings, load_settings  # noqa: E402
from pipeline.ops.kafka_clients import client_config

Z95 = 1.959964
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ---- isolation ---------------------------------------------------------------------------------

def isolated_env(tag: str, keys_dir: Path, idle_advance_seconds: float | None = None) -> dict[str, str]:
    """FLOW_* overrides that give a run its own topics, database, keys and consumer groups (and,
    if given, the aggregator's idle clock)."""
    env = {f"FLOW_KAFKA__{name.upper()}": f"e2e{tag}.{default}"
           for name, default in KafkaSettings().model_dump().items() if name.endswith("_topic")}
    env.update({
        "FLOW_CLICKHOUSE__DATABASE": f"e2e_{tag}",
        "FLOW_KEYS__DIR": str(keys_dir),
        "FLOW_AGGREGATOR__APP_ID": f"e2e-agg-{tag}",
        "FLOW_SINK__GROUP_ID": f"e2e-sink-{tag}",
        "FLOW_PROCESSOR__APP_ID": f"e2e-proc-{tag}",
        "FLOW_STORE__URL": (keys_dir.parent / "frames").as_uri(),
    })
    if idle_advance_seconds:
        env["FLOW_AGGREGATOR__IDLE_ADVANCE_SECONDS"] = f"{idle_advance_seconds:g}"
    return env


def check_isolated(s: Settings, tag: str) -> None:
    defaults = KafkaSettings()   # the shipped names (Settings() would read our FLOW_* overrides)
    for name, value in s.kafka.model_dump().items():
        if name.endswith("_topic"):
            if value == getattr(defaults, name) or not value.startswith(f"e2e{tag}."):
                raise SystemExit(f"refusing to run: {name} = {value!r} is not isolated")
    if s.clickhouse.database != f"e2e_{tag}":
        raise SystemExit(f"refusing to run: database {s.clickhouse.database!r} is not isolated")


# ---- subprocesses ------------------------------------------------------------------------------

def flowctl(env: dict[str, str], args: list[str], logdir: Path, name: str, *, nice: int, timeout: float,
            heartbeat: Any = None, cpu: dict[str, float] | None = None) -> tuple[str, str, float]:
    """Run `flowctl ARGS` with the isolated settings; stdout/stderr to logdir/name.{out,err};
    the child's CPU seconds (user + system) go to ``cpu[name]``."""
    cmd = ([("nice"), "-n", str(nice)] if nice else []) + [PY, "-m", "pipeline.cli", *args]
    out_p, err_p = logdir / f"{name}.out", logdir / f"{name}.err"
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_p, "w") as fo, open(err_p, "w") as fe:
        proc = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, cwd=ROOT, text=True)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    if heartbeat:
                        heartbeat(time.monotonic() - t0)
                    if time.monotonic() - t0 > timeout:
                        proc.terminate()
                        proc.wait(30)
                        raise RuntimeError(f"flowctl {' '.join(args)} timed out after {timeout:.0f} s")
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    secs = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu[name] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out, err = out_p.read_text(), err_p.read_text()
    if rc != 0:
        raise RuntimeError(f"flowctl {' '.join(args)} exited {rc}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")
    return out, err, secs


def last_line(text: str, prefix: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip().startswith(prefix)]
    return lines[-1] if lines else ""


# ---- producing as processors do ------------------------------------------------------------------

def produce_in_window_order(pub: Any, s: Settings) -> tuple[int, int, float]:
    """The simulator's cells in window order (then camera, group), keyed by group id, as the
    processors emit them (pipeline/processor/app.py ``occurrence_key``); demographic counts in
    window order keyed by site/camera. Returns (occurrence records, demographic records, seconds)."""
    from confluent_kafka import Producer

    from pipeline import serde
    from pipeline.simulator.publish import produce_waiting

    def occurrence_key(group_id: int) -> bytes:   # = pipeline.processor.app.occurrence_key (that module imports faust)
        return str(int(group_id)).encode()

    k = s.kafka
    producer = Producer({**client_config(k, "admin"), "client.id": f"{k.client_id}-e2e-bench",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 500_000, "queue.buffering.max.kbytes": 512 * 1024})
    failed = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    t0 = time.monotonic()
    order = np.lexsort((pub.occ_group, pub.occ_camera, pub.occ_window))
    ws_ms = (pub.start_epoch + pub.occ_window.astype(np.int64) * pub.window_seconds) * 1000
    n_occ = 0
    for i in order.tolist():
        c = int(pub.occ_camera[i])
        g = int(pub.occ_group[i])
        rec = {"site_id": pub.site_ids[pub.camera_site[c]], "camera_id": pub.camera_ids[c],
               "window_start": int(ws_ms[i]), "window_seconds": pub.window_seconds, "group_id": g,
               "occurrences": int(pub.occ_count[i]), "params_version": pub.params_version}
        produce_waiting(producer, k.occurrences_topic, serde.encode("GroupOccurrence", rec), occurrence_key(g),
                        on_delivery)
        n_occ += 1
        if n_occ % 5000 == 0:
            producer.poll(0)
    # Demographic counts: also in window order, keyed by site/camera as processors key them
    # (``camera_key``: a camera's counts in one partition; the aggregator's counts stage reads them).
    n_dem = 0
    dem = sorted(pub.demographic_records(), key=lambda r: (r["window_start"], r["site_id"], r["camera_id"]))
    for rec in dem:
        produce_waiting(producer, k.demographics_topic, serde.encode("DemographicCount", rec),
                        f"{rec['site_id']}/{rec['camera_id']}".encode(), on_delivery)
        n_dem += 1
        if n_dem % 5000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed[0]:
        raise RuntimeError(f"{left} records unsent, {failed[0]} failed delivery")
    return n_occ, n_dem, time.monotonic() - t0


def topic_offsets(s: Settings, topic: str) -> tuple[int, int]:
    """(sum of low watermarks, sum of high watermarks) of a topic."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client_config(s, "admin"), "group.id": f"e2e-probe-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        lo = hi = 0
        for p in md.partitions:
            a, b = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            lo, hi = lo + a, hi + b
        return lo, hi
    finally:
        c.close()


class CommitWatcher:
    """Reads the aggregator's committed input positions (informational commits at snapshots) every
    few seconds: progress output, and when it had read everything (its throughput without the
    idle timeout and the start-up)."""

    def __init__(self, s: Settings, total: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.total = total
        self.topic = s.kafka.occurrences_topic
        self.c = Consumer({**client_config(s, "admin"), "group.id": f"{s.aggregator.app_id}-partitions",
                           "enable.auto.commit": False})
        parts = self.c.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self.tps = [TopicPartition(self.topic, p) for p in parts]
        self.done_at: float | None = None
        self.first_at: float | None = None
        self.read = 0

    def poll(self, elapsed: float) -> None:
        try:
            got = self.c.committed(self.tps, timeout=5)
        except Exception:  # noqa: BLE001 - progress only
            return
        self.read = sum(max(tp.offset, 0) for tp in got)
        if self.read and self.first_at is None:
            self.first_at = elapsed
        if self.read >= self.total and self.done_at is None:
            self.done_at = elapsed

    def close(self) -> None:
        self.c.close()


# ---- comparison ----------------------------------------------------------------------------------

def true_flows(truth: dict, days: int) -> dict[tuple[str, str], float]:
    start = dt.date.fromisoformat(truth["start"])
    last = start + dt.timedelta(days=days)
    out: dict[tuple[str, str], float] = {}
    for f in truth["flows"]:
        if f["from"] != f["to"] and dt.date.fromisoformat(f["day"]) < last:
            out[(f["from"], f["to"])] = out.get((f["from"], f["to"]), 0.0) + f["pairs"]
    return out


def compare(estimates: list[dict], truth: dict, days: int, replicate: int, min_per_day: float) -> tuple[list[Row], dict]:
    tf = true_flows(truth, days)
    rows = []
    for e in estimates:
        a, b = e["origin"].split("/", 1)[1], e["destination"].split("/", 1)[1]
        rows.append(Row("flow", replicate, days, e["origin"], e["destination"], float(tf.get((a, b), 0.0)),
                        float(e["flow"]), float(e["se"])))
    s = summarise(rows, "flow", min_per_day)["periods"][days] if rows else {}
    z = np.array([(r.estimate - r.truth) / r.se for r in rows if r.se > 0])
    zero = [r for r in rows if r.truth == 0]
    sig = [r for r in zero if abs(r.estimate) > Z95 * r.se]
    sig_pos = [r for r in zero if r.estimate - Z95 * r.se > 0]
    big = [r for r in rows if r.per_day >= min_per_day]
    s.update({
        "pairs": len(rows), "mean_z": float(z.mean()) if z.size else None, "sd_z": float(z.std(ddof=1)) if z.size > 1 else None,
        "zero_truth_pairs": len(zero),
        "zero_truth_significant_share": (len(sig) / len(zero)) if zero else None,
        "zero_truth_significant_positive_share": (len(sig_pos) / len(zero)) if zero else None,
        "mean_error_big": float(np.mean([r.estimate - r.truth for r in big])) if big else None,
        "mean_rel_error_big": float(np.mean([(r.estimate - r.truth) / r.truth for r in big])) if big else None,
        "max_rel_error_big": float(max(abs(r.estimate - r.truth) / r.truth for r in big)) if big else None,
    })
    return rows, s


# ---- one replicate -------------------------------------------------------------------------------

@dataclass
class Result:
    replicate: int
    seed: int
    tag: str
    summary: dict = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)     # CPU seconds of the flowctl subprocesses
    counts: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def run_replicate(args: argparse.Namespace, r: int, outdir: Path) -> Result:
    from pipeline.privacy import PrivacyParams
    from pipeline.simulator import load_scenario, simulate

    tag = uuid.uuid4().hex[:8]
    seed = args.seed + r
    res = Result(r, seed, tag)
    work = Path(tempfile.mkdtemp(prefix=f"e2e-{tag}-"))
    logdir = outdir / f"r{r}-{tag}"
    logdir.mkdir(parents=True, exist_ok=True)
    keys_dir = work / "keys"
    overrides = isolated_env(tag, keys_dir, args.idle_advance_seconds)
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    env = {**os.environ, "COLUMNS": "300"}   # rich wraps flowctl's summary lines at 80 columns otherwise
    s = load_settings()
    check_isolated(s, tag)
    nice, st = args.nice, res.stages
    version = f"e2e-{tag}-p{args.p:g}"
    log(f"replicate {r + 1}/{args.replicates}: seed {seed}, tag {tag} (topics e2e{tag}.*, database "
        f"{s.clickhouse.database}, params {version}, aggregator idle clock {s.aggregator.idle_advance_seconds:g} s), "
        f"logs {logdir}")
    try:
        # 1. setup
        t0 = time.monotonic()
        flowctl(env, ["keys", "init"], logdir, "keys", nice=nice, timeout=120)
        flowctl(env, ["topics", "apply"], logdir, "topics", nice=nice, timeout=120)
        flowctl(env, ["migrate"], logdir, "migrate", nice=nice, timeout=300)
        params = PrivacyParams.default().with_changes(same_group_rate=args.p, version=version)
        params_path = work / "params.json"
        params.save(params_path)
        flowctl(env, ["params", "register", "--params", str(params_path)], logdir, "params", nice=nice, timeout=120)
        st["setup"] = time.monotonic() - t0
        log(f"  setup (keys, topics, migrations, params register) {st['setup']:.1f} s")

        # 2. simulate + produce
        truth_path = logdir / "truth.json"
        sc = load_scenario(args.scenario).with_overrides(days=args.days, seed=seed)
        t0 = time.monotonic()
        if args.producer == "flowctl":
            out, _err, secs = flowctl(env, ["simulate", "run", args.scenario, "--to", "kafka", "--truth", str(truth_path),
                                            "--params", str(params_path), "--seed", str(seed), "--days", str(args.days)],
                                      logdir, "simulate", nice=nice, timeout=3600)
            st["simulate+produce"] = secs
            res.counts["simulate_output"] = last_line(out, "produced")
            res.counts["same_group"] = last_line(out, "same-group rate")
            log(f"  flowctl simulate run --to kafka: {secs:.1f} s; {res.counts['simulate_output']}")
        else:
            sim = simulate(sc, params, np.random.default_rng(sc.seed))
            pub, truth = sim.published, sim.truth
            truth.notes.update({"fictitious_added": pub.fictitious_added,   # as `flowctl simulate run --truth`
                                "fictitious_per_camera": dict(zip(pub.camera_ids, pub.fictitious_per_camera.tolist())),
                                "occurrence_rows": pub.occurrence_rows, "demographic_rows": pub.demographic_rows})
            truth.save(truth_path)
            st["simulate"] = time.monotonic() - t0
            sg = sim.stats.same_group
            res.counts["same_group"] = (f"same-group rate achieved {sg.all_pairs:.3f} over {sg.all_pairs_n} pairs, "
                                        f"target {args.p}")
            log(f"  simulate {sc.name} {sc.days} d seed {seed}: {sim.stats.captures} captures, "
                f"{pub.occurrence_rows} occurrence cells ({pub.fictitious_added} fictitious), {st['simulate']:.1f} s; "
                f"{res.counts['same_group']}")
            n_occ, n_dem, secs = produce_in_window_order(pub, s)
            st["produce"] = secs
            log(f"  produced {n_occ} occurrence + {n_dem} demographic records in window order, keyed by group, "
                f"{secs:.1f} s ({(n_occ + n_dem) / secs:,.0f} records/s)")
        truth = json.loads(truth_path.read_text())
        lo, hi = topic_offsets(s, s.kafka.occurrences_topic)
        res.counts["occurrence_records"] = hi
        res.counts["captures"] = truth["captures"]
        res.counts["fictitious"] = truth["notes"].get("fictitious_added")

        # 3. aggregate, sink
        watcher = CommitWatcher(s, hi)
        last_print = [0.0]

        def beat(elapsed: float) -> None:
            watcher.poll(elapsed)
            if elapsed - last_print[0] >= args.progress_seconds:
                last_print[0] = elapsed
                log(f"    aggregator {elapsed:.0f} s: committed {watcher.read:,}/{hi:,} occurrence records")

        try:
            out, err, secs = flowctl(env, ["aggregate", "--flush", "--no-cold-starts", "--idle-timeout",
                                           str(args.idle_timeout), "--max-seconds", str(args.max_seconds)],
                                     logdir, "aggregate", nice=nice, timeout=args.max_seconds + 600, heartbeat=beat,
                                     cpu=res.cpu)
        finally:
            watcher.close()
        st["aggregate"] = secs
        agg_line = last_line(err, "aggregator:") or last_line(out, "aggregator:")
        res.counts["aggregator"] = agg_line
        m = re.search(r"'partitions': (\d+)", agg_line)
        read = int(m.group(1)) if m else None
        net = secs - args.idle_timeout
        res.counts["aggregator_read"] = read
        res.counts["aggregator_records_per_s_gross"] = (read / secs) if read else None
        res.counts["aggregator_records_per_s_net"] = (read / net) if read and net > 0 else None
        res.counts["aggregator_records_per_cpu_s"] = (read / res.cpu["aggregate"]) if read and res.cpu.get("aggregate") else None
        if watcher.done_at and watcher.first_at is not None:
            res.counts["aggregator_caught_up_after_s"] = watcher.done_at
        log(f"  flowctl aggregate {secs:.1f} s (idle timeout {args.idle_timeout:g} s included): {agg_line}")
        if read:
            log(f"    throughput {read / secs:,.0f} records/s over the whole command, {read / net:,.0f} without the "
                f"idle timeout; {res.cpu['aggregate']:.1f} CPU s = {read / res.cpu['aggregate']:,.0f} records per CPU s; "
                f"stage 1 committed every record after <= {watcher.done_at or float('nan'):.0f} s (snapshot commits, "
                f"so up to snapshot_interval_seconds late); the rest is the combiner")
        lo2, hi2 = topic_offsets(s, s.kafka.occurrences_topic)
        dl_lo, dl_hi = topic_offsets(s, s.kafka.dead_letter_topic)
        res.checks.update({"produced": hi, "aggregator_read": read, "occurrences_low_watermark_after": lo2,
                           "dead_letters": dl_hi - dl_lo})

        out, err, secs = flowctl(env, ["sink", "--idle-timeout", str(args.sink_idle_timeout), "--max-seconds",
                                       str(args.max_seconds)], logdir, "sink", nice=nice, timeout=args.max_seconds + 600,
                                 cpu=res.cpu)
        st["sink"] = secs
        res.counts["sink"] = last_line(err, "sink:") or last_line(out, "sink:")
        log(f"  flowctl sink {secs:.1f} s (idle timeout {args.sink_idle_timeout:g} s included, {res.cpu['sink']:.1f} CPU s): "
            f"{res.counts['sink']}")

        # 4. flows
        start = dt.date.fromisoformat(truth["start"])
        end = start + dt.timedelta(days=args.days)
        t0 = time.monotonic()
        out, _err, secs = flowctl(env, ["flows", "--from", start.isoformat(), "--to", end.isoformat(), "--params-version",
                                        version, "--window-seconds", str(truth["window_seconds"]), "--max-lag",
                                        str(truth["max_lag_windows"]), "--json"], logdir, "flows", nice=nice, timeout=1800)
        st["flows"] = secs
        estimates = json.loads(out)
        log(f"  flowctl flows --json {secs:.1f} s: {len(estimates)} camera pairs")
        footfall_check(s, version, truth, res)

        rows, summ = compare(estimates, truth, args.days, r, args.min_per_day)
        res.summary = summ
        res.rows = [r_.__dict__ for r_ in rows]
        print_replicate(res, rows, args)
        return res
    finally:
        t0 = time.monotonic()
        if args.keep:
            log(f"  kept: topics e2e{tag}.*, database {s.clickhouse.database}, keys {keys_dir}; settings: "
                + " ".join(f"{k}={v}" for k, v in overrides.items() if "TOPIC" not in k))
            (logdir / "settings.env").write_text("".join(f"export {k}={v}\n" for k, v in overrides.items()))
        else:
            cleanup(s, tag)
            shutil.rmtree(work, ignore_errors=True)
        st["cleanup"] = time.monotonic() - t0
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def footfall_check(s: Settings, version: str, truth: dict, res: Result) -> None:
    """Published footfall per camera (noisy) vs the produced occurrences (real + fictitious), over
    the camera-hours in which the simulated camera captured someone. The aggregator publishes rows
    for every hour of a camera it has seen (nights too, and after a bounded run's idle clock moved
    to wall time, every hour until the camera retires), noised alike and clamped at 0, so a sum
    over all rows would include a few occurrences per empty hour; and ``windows`` is noised too."""
    from pipeline.sink.clickhouse import ServerWarehouse

    wh = ServerWarehouse(s.clickhouse, role="admin")
    try:
        rows = wh.rows(f"SELECT camera_id, toUnixTimestamp(hour), occurrences FROM {s.clickhouse.database}."
                       "footfall_components FINAL WHERE params_version = %(v)s", {"v": version})
        nflow = wh.rows(f"SELECT count() FROM {s.clickhouse.database}.flow_components FINAL "
                        "WHERE params_version = %(v)s", {"v": version})[0][0]
    finally:
        wh.close()
    busy = {(h["camera"], int(dt.datetime.strptime(h["hour"], "%Y-%m-%dT%H:%M:%SZ")
                               .replace(tzinfo=dt.timezone.utc).timestamp()))
            for h in truth["per_camera_hour"] if h["captures"] > 0}
    captures = truth["captures_per_camera"]
    fict = truth["notes"].get("fictitious_per_camera") or {}
    published = {c: 0 for c in captures}
    hours = {c: 0 for c in captures}
    inside = outside = 0
    for cam, hour, n in rows:
        if (cam, int(hour)) in busy:
            published[cam] = published.get(cam, 0) + int(n)
            hours[cam] = hours.get(cam, 0) + 1
            inside += 1
        else:
            outside += 1
    # Allowed difference: 4 SD of the summed noise (discrete Laplace of the configured scale b per
    # camera-hour: variance 2a / (1 - a)^2 with a = exp(-1/b)) plus 1% for what the noise model leaves out.
    b = float(getattr(s.aggregator.spec(), "footfall_noise_scale", 0.0) or 0.0)
    var_h = 2 * np.exp(-1 / b) / (1 - np.exp(-1 / b)) ** 2 if b > 0 else 0.0
    res.checks["footfall_tolerance"] = {c: 4 * float(np.sqrt(var_h * hours[c])) + 0.01 * (captures[c] + fict.get(c, 0))
                                        for c in captures}
    last = max((int(r[1]) for r in rows), default=None)
    last_s = "-" if last is None else f"{dt.datetime.fromtimestamp(last, dt.timezone.utc):%Y-%m-%d %H:%M}"
    ratio = {c: published.get(c, 0) / (captures[c] + fict.get(c, 0)) for c in captures}
    res.checks["footfall_off"] = {c: published.get(c, 0) - (captures[c] + fict.get(c, 0)) for c in captures
                                  if abs(published.get(c, 0) - (captures[c] + fict.get(c, 0)))
                                  > res.checks["footfall_tolerance"][c]}
    res.checks.update({"footfall_published_in_capture_hours": published, "footfall_over_produced": ratio,
                       "footfall_camera_hours": {"with_captures": inside, "other": outside, "last_hour": last_s},
                       "captures_per_camera": captures, "flow_component_rows": int(nflow)})
    log(f"  ClickHouse: {nflow} flow component rows; {len(rows)} footfall camera-hours, {inside} of them with captures "
        f"(last published hour {last_s}); footfall published / produced occurrences per camera, over the hours with "
        "captures: " + ", ".join(f"{c} {x:.3f}" for c, x in ratio.items()))


def cleanup(s: Settings, tag: str) -> None:
    """Drop the run's database and delete every topic named ``e2e<tag>.*`` on the broker (listed,
    not taken from infra/topics.yaml: the policy may have changed since the run applied it) and
    its consumer groups."""
    from confluent_kafka.admin import AdminClient

    from pipeline.sink.clickhouse import ServerWarehouse

    db = f"e2e_{tag}"
    wh = ServerWarehouse(s.clickhouse.model_copy(update={"database": "default"}), role="admin")
    try:
        wh.execute(f"DROP DATABASE IF EXISTS {db}")
    finally:
        wh.close()
    admin = AdminClient({**client_config(s, "admin")})
    topics = sorted(t for t in admin.list_topics(timeout=15).topics if t.startswith(f"e2e{tag}."))
    if topics:
        for f in admin.delete_topics(topics, operation_timeout=30).values():
            try:
                f.result()
            except Exception as e:  # noqa: BLE001
                log(f"  could not delete a topic: {e}")
    groups = [f"e2e-agg-{tag}-partitions", f"e2e-agg-{tag}-combiner", f"e2e-sink-{tag}"]
    try:
        for f in admin.delete_consumer_groups(groups, request_timeout=15).values():
            try:
                f.result()
            except Exception:  # noqa: BLE001 - a group never created
                pass
    except Exception:  # noqa: BLE001 - older clients
        pass
    log(f"  cleaned up: database {db}, {len(topics)} topics e2e{tag}.*, consumer groups")


# ---- output --------------------------------------------------------------------------------------

def fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_replicate(res: Result, rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\n  per pair, replicate {res.replicate} (seed {res.seed}), {args.days} days, p = {args.p:g}:")
    print(f"  {'origin':26} {'destination':26} {'true':>8} {'estimate':>9} {'SE':>7} {'z':>6} {'rel.err':>8} cov")
    for r in sorted(rows, key=lambda r: -r.truth):
        rel = f"{(r.estimate - r.truth) / r.truth:+.1%}" if r.truth else "-"
        z = (r.estimate - r.truth) / r.se if r.se > 0 else float("nan")
        print(f"  {r.origin:26} {r.destination:26} {r.truth:8.0f} {r.estimate:9.1f} {r.se:7.1f} {z:+6.2f} {rel:>8} "
              f"{'yes' if r.covered else 'NO'}")
    s = res.summary
    print(f"  => flows >= {args.min_per_day:g}/day: {s.get('big_flows')} pairs, median rel. error "
          f"{fmt(s.get('median_rel_error_big'))} (median rel. SE {fmt(s.get('median_rel_se_big'))}); 95% coverage "
          f"all {s.get('pairs')} pairs {fmt(s.get('coverage_95'))}, big {fmt(s.get('coverage_95_big'))}; mean z "
          f"{fmt(s.get('mean_z'), '+.3f')} (SD {fmt(s.get('sd_z'))}); RMSE/RMS SE {fmt(s.get('rmse_over_rms_se'))}; "
          f"zero-truth pairs {s.get('zero_truth_pairs')}, significant {fmt(s.get('zero_truth_significant_share'))}\n",
          flush=True)


def median_of(results: list[Result], key: str) -> float | None:
    xs = [r.summary.get(key) for r in results if r.summary.get(key) is not None]
    return float(np.median(xs)) if xs else None


def check_stack() -> None:
    """Kafka and ClickHouse answer (the local stack: `bash infra/local/stack.sh up`)."""
    from confluent_kafka.admin import AdminClient

    from pipeline.sink.clickhouse import ServerWarehouse

    s = load_settings()
    try:
        AdminClient({**client_config(s, "admin")}).list_topics(timeout=10)
        wh = ServerWarehouse(s.clickhouse.model_copy(update={"database": "default"}), role="admin")
        wh.rows("SELECT 1")
        wh.close()
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"Kafka or ClickHouse is not reachable ({e}); start the local stack: "
                         "bash infra/local/stack.sh up") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference", help="reference, realistic, small or a YAML path")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--p", type=float, default=0.5, help="same-group rate of the parameter set (simulated and registered)")
    ap.add_argument("--replicates", type=int, default=1)
    ap.add_argument("--seed", type=int, default=20261102, help="replicate r uses seed + r")
    ap.add_argument("--producer", choices=["bench", "flowctl"], default="bench",
                    help="bench: produce in window order keyed by group (as processors do); flowctl: `flowctl "
                         "simulate run --to kafka` as is")
    ap.add_argument("--min-per-day", type=float, default=100.0)
    ap.add_argument("--idle-timeout", type=float, default=15.0, help="flowctl aggregate --idle-timeout")
    ap.add_argument("--sink-idle-timeout", type=float, default=10.0, help="flowctl sink --idle-timeout")
    ap.add_argument("--max-seconds", type=float, default=3000.0,
                    help="flowctl aggregate/sink --max-seconds (the occurrences topic keeps records 1 h)")
    ap.add_argument("--idle-advance-seconds", type=float, default=0.0,
                    help="aggregator.idle_advance_seconds for the run (default 0: the configured value, 60 s). "
                         "At 2e1b5a5, with 60 s a group partition still waiting behind the others for its first "
                         "record jumped to wall time and dropped its whole week as late (fixed in 824a0f4); "
                         "3600 takes the idle clock out of a run")
    ap.add_argument("--nice", type=int, default=10, help="niceness of the flowctl subprocesses (0: none)")
    ap.add_argument("--progress-seconds", type=float, default=30.0)
    ap.add_argument("--keep", action="store_true", help="keep each replicate's topics, database and keys")
    ap.add_argument("--out", type=Path, default=ROOT / ".var" / "reports" / "flow-e2e")
    ap.add_argument("--cleanup", metavar="TAG", action="append", default=[],
                    help="only delete the topics, database and consumer groups a --keep run left (its tag); repeat")
    args = ap.parse_args(argv)
    if args.cleanup:
        for tag in args.cleanup:
            if not re.fullmatch(r"[0-9a-f]{8}", tag):
                ap.error(f"{tag!r} is not a run tag (8 hex digits)")
            cleanup(load_settings(), tag)
        return 0
    if not 0 < args.p <= 1 or args.days < 1 or args.replicates < 1:
        ap.error("need 0 < --p <= 1, --days >= 1, --replicates >= 1")

    check_stack()
    run_id = f"{args.scenario}-{args.days}d-p{args.p:g}-{args.producer}-{dt.datetime.now():%Y%m%dT%H%M%S}"
    outdir = args.out / run_id
    outdir.mkdir(parents=True, exist_ok=True)
    log(f"end-to-end flow bench: {args.scenario}, {args.days} days, p = {args.p:g}, {args.replicates} replicate(s), "
        f"producer {args.producer}; output {outdir}")
    t_all = time.monotonic()
    results = []
    for r in range(args.replicates):
        results.append(run_replicate(args, r, outdir))
        (outdir / "results.json").write_text(json.dumps([x.__dict__ for x in results], indent=1, default=str) + "\n")

    keys = [("median_rel_error_big", "median rel. error, flows >= %g/day" % args.min_per_day),
            ("coverage_95", "95% CI coverage, all pairs"), ("coverage_95_big", "95% CI coverage, flows >= 100/day"),
            ("mean_z", "mean z"), ("sd_z", "SD of z"), ("rmse_over_rms_se", "RMSE / RMS SE"),
            ("zero_truth_significant_share", "zero-truth pairs called significant"),
            ("zero_truth_significant_positive_share", "zero-truth pairs significantly > 0"),
            ("mean_rel_error_big", "mean signed rel. error, big flows"), ("max_rel_error_big", "max |rel. error|, big flows")]
    print(f"\n=== {args.scenario}, {args.days} days, p = {args.p:g}, producer {args.producer}: "
          f"{len(results)} replicate(s), seeds {[r.seed for r in results]}")
    print(f"{'figure':44} {'median':>8}   per replicate")
    for k, label in keys:
        print(f"{label:44} {fmt(median_of(results, k)):>8}   " + " ".join(fmt(r.summary.get(k)) for r in results))
    pooled = [Row(**d) for r in results for d in r.rows]
    if pooled:
        cov = float(np.mean([x.covered for x in pooled]))
        big = [x for x in pooled if x.per_day >= args.min_per_day]
        print(f"pooled over replicates: {len(pooled)} pair estimates, coverage {cov:.3f}; {len(big)} big flows, "
              f"median rel. error {np.median([abs(x.estimate - x.truth) / x.truth for x in big]):.3f}, coverage "
              f"{np.mean([x.covered for x in big]):.3f}; zero-truth pairs {sum(1 for x in pooled if x.truth == 0)}")
    print("counts: " + "; ".join(f"r{r.replicate}: {r.counts.get('occurrence_records')} occurrence records, "
                                 f"{r.counts.get('captures')} captures, aggregator "
                                 f"{fmt(r.counts.get('aggregator_records_per_s_gross'), ',.0f')} records/s gross / "
                                 f"{fmt(r.counts.get('aggregator_records_per_s_net'), ',.0f')} net of idle timeout / "
                                 f"{fmt(r.counts.get('aggregator_records_per_cpu_s'), ',.0f')} per CPU s"
                                 for r in results))
    stages = sorted({k for r in results for k in r.stages}, key=lambda k: list(results[0].stages).index(k)
                    if k in results[0].stages else 99)
    print("wall time per stage (s), median [per replicate]: " + ", ".join(
        f"{k} {np.median([r.stages[k] for r in results if k in r.stages]):.1f} "
        f"[{' '.join(f'{r.stages[k]:.0f}' for r in results if k in r.stages)}]" for k in stages))
    problems = []
    for r in results:
        c = r.checks
        if c.get("aggregator_read") != c.get("produced"):
            problems.append(f"r{r.replicate}: aggregator read {c.get('aggregator_read')} of {c.get('produced')} records")
        if c.get("occurrences_low_watermark_after"):
            problems.append(f"r{r.replicate}: occurrence records expired before the end (low watermark "
                            f"{c['occurrences_low_watermark_after']})")
        if c.get("dead_letters"):
            problems.append(f"r{r.replicate}: {c['dead_letters']} dead letters")
        bad = c.get("footfall_off") or {}
        if bad:
            problems.append(f"r{r.replicate}: published footfall differs from the produced occurrences by more than "
                            "the noise allows: " + ", ".join(f"{k} {v:+d} (ratio {c['footfall_over_produced'][k]:.3f})"
                                                             for k, v in bad.items()))
    print("checks: " + ("all complete (every record read, none expired, no dead letters, footfall within its noise)"
                        if not problems else "PROBLEMS: " + "; ".join(problems)))
    print("aggregator / sink CPU s per replicate: " + ", ".join(
        f"r{r.replicate} {r.cpu.get('aggregate', 0):.0f} / {r.cpu.get('sink', 0):.0f}" for r in results))
    print(f"total {time.monotonic() - t_all:.0f} s; results {outdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
