"""Load test of the Kafka -> ClickHouse leg with a simulated week: produce, sink, check, query.

    .venv/bin/python bench/flows/sink_load.py [--scenario reference] [--runs 3] [--weeks 1]

What the sink lands is the published tier: the aggregator's flow, footfall, demographic and
crossing components (ReplacingMergeTree), plus deletion receipts and the frame ledger (not
simulated here). The restricted per-window cells and exact demographic counts go to the
aggregator, never to the sink (migrations 0009, 0010). So each run simulates the scenario, puts
its cells and exact demographic counts through the aggregator's stages in-process (the rows the
streaming aggregator would publish, with a release-noise key drawn for the run), produces every
published row through the real serde and an idempotent producer to throwaway copies of the
components topics, runs the real sink on a throwaway database until it has consumed them all,
checks that ClickHouse holds exactly what was produced (every row once: raw row count and FINAL
sums per table; nothing lost, nothing doubled, nothing dead-lettered), and times the flow and
demographics queries on the landed week. Prints records/s for producing and sinking (median
over runs), and the client CPU each costs per record (every thread of this process and its
children: for the sink its consumer and batch decoding, and its insert process; for the bound
the driver's inserts): the
figure that says what the sink would reach where it did not share two cores with the broker
and the server. And the CPU the local stack's ClickHouse server and Kafka broker spend meanwhile
(their pid files under .var/), per record: with everything on one machine's cores, the bound's
total over the sink's is the ratio's ceiling when both keep every core busy (``cpu_budget``;
the machine's busy cores are printed too).
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from pipeline.analytics.dimensions import register_params  # noqa: E402
from pipeline.analytics.flows import CameraRef, FlowQuery, estimate_flows  # noqa: E402
from pipeline.analytics.queries import demographics_hourly  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.simulator import load_scenario, simulate  # noqa: E402
from pipeline.simulator.publish import produce_components, publish_components, publish_demographics  # noqa: E402
from pipeline.sink.clickhouse import ServerWarehouse  # noqa: E402
from pipeline.sink.consumer import ClickHouseSink  # noqa: E402
from pipeline.sink.migrations import migrate  # noqa: E402
from pipeline.ops.acls import acl_policy, apply_acls, remove_acls  # noqa: E402
from pipeline.ops.kafka_clients import client_config  # noqa: E402

# Every topic the sink reads (and its dead-letter topic) is the run's own.
SINK_TOPICS = ("flow_components_topic", "footfall_components_topic", "demographic_components_topic",
               "crossing_components_topic", "receipts_topic", "ledger_topic", "dead_letter_topic")


def _stack_pids() -> dict[str, list[int]]:
    """The local stack's ClickHouse server and Kafka broker processes (infra/local: their pid
    files), whose CPU the sink's rows cost as well; empty where they are not ours to read."""
    var = Path(os.environ.get("FLOW_VAR_DIR", ROOT / ".var"))
    files = {"clickhouse": [var / "clickhouse" / "clickhouse.pid"],
             "kafka": sorted((var / "kafka").glob("**/kafka.pid"))}
    pids: dict[str, list[int]] = {}
    for name, paths in files.items():
        for f in paths:
            try:
                pids.setdefault(name, []).append(int(f.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def _stack_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each stack component (all its threads, from /proc); NaN if it is
    not readable (another OS, a process restarted meanwhile)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, ps in pids.items():
        total = 0.0
        for pid in ps:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick   # utime + stime
            except (OSError, ValueError, IndexError):
                total = float("nan")
        out[name] = total
    return out


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (/proc/stat: all but idle and iowait)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _per_row(before: dict[str, float], after: dict[str, float], rows: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / rows * 1e6 for k in before}


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have ended: the sink's insert
    process (pipeline/sink/inserter.py) is one, waited for when the sink's run ends (its CPU
    includes its start-up)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _check(wh, db: str, run: int, table: str, rows: int, sums: dict[str, int]) -> None:
    """Exactly ``rows`` rows landed in ``table`` (a re-delivered row would be a second raw row
    until a merge), and the FINAL sums of ``sums``' columns are what was produced."""
    raw = int(wh.rows(f"SELECT count() FROM {db}.{table}")[0][0])
    cols = list(sums)
    got = wh.rows(f"SELECT count(), {', '.join(f'sum({c})' for c in cols)} FROM {db}.{table} FINAL")[0]
    final = dict(zip(cols, (int(v) for v in got[1:])))
    if raw != rows or int(got[0]) != rows or final != sums:
        raise SystemExit(f"run {run}: {table} holds {raw} rows ({got[0]} after FINAL) of {rows} produced; "
                         f"FINAL sums {final}, produced {sums}")


def driver_bound(settings, db: str, flow, foot, dem) -> tuple[float, float, dict[str, float]]:
    """Records/s of clickhouse-driver alone inserting the same columns the sink builds (decoded
    and checked beforehand, untimed, by the sink's own batch path; batches of
    sink.batch_max_rows; the sink's insert call, ServerWarehouse.insert), into a fresh copy of the
    schema: the bound the sink is held to (issue 14: >= 0.8 of it). Returns records/s, this
    process's CPU seconds for the inserts, and the server's and broker's CPU per row meanwhile
    (µs)."""
    from pipeline import serde
    from pipeline.sink.batch import BatchDecoder
    from pipeline.sink.consumer import DEMOGRAPHIC_COMPONENTS, FLOW_COMPONENTS, FOOTFALL_COMPONENTS, batch_rows

    wh = ServerWarehouse(settings.clickhouse, database=f"{db}_bound", role="admin")
    try:
        migrate(wh)
        batch = settings.sink.batch_max_rows
        prepared = []
        for spec, recs in ((FLOW_COMPONENTS, flow), (FOOTFALL_COMPONENTS, foot), (DEMOGRAPHIC_COMPONENTS, dem)):
            values = [serde.encode(spec.record, r.to_record()) for r in recs]
            decoder = BatchDecoder(spec.record)
            for i in range(0, len(values), batch):
                cols, good, refer = batch_rows(spec, decoder.decode(values[i:i + batch]).frame)
                if len(refer):
                    raise SystemExit(f"{len(refer)} {spec.record} records fail the sink's checks")
                prepared.append((spec, cols))
        rows = sum(len(cols[0]) for _, cols in prepared)
        pids = _stack_pids()
        t, cpu, stack, busy = time.monotonic(), time.process_time(), _stack_cpu(pids), _busy_seconds()
        for spec, cols in prepared:
            wh.insert(spec.table, list(spec.columns), cols)
        wall = time.monotonic() - t
        return (rows / wall, time.process_time() - cpu,
                {**_per_row(stack, _stack_cpu(pids), rows), "cores": (_busy_seconds() - busy) / wall})
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {db}_bound")


def sink_processes(settings, wh, db: str, n: int, total: int) -> tuple[float, float]:
    """Seconds from launch to the last record landed, and from the first to the last, with ``n``
    ``flowctl sink`` processes in one consumer group (each its own interpreter, so their
    decoding and inserting do not share a GIL). Progress is ClickHouse's own count of rows."""
    import subprocess
    import tempfile

    from pipeline.ops.local_grants import clickhouse_grants
    from pipeline.settings import settings_as_env

    env = settings_as_env(settings)
    tables = ("flow_components", "footfall_components", "demographic_components")
    count_sql = " + ".join(f"(SELECT count() FROM {db}.{t})" for t in tables)
    # The run's database, for the sink user the processes log in as; their output goes to a file
    # (a pipe nobody reads while they run could fill and stall them).
    with clickhouse_grants(db), tempfile.TemporaryFile() as log:
        t0 = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "sink", "--idle-timeout", "5"], env=env,
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log) for _ in range(n)]
        first = None
        try:
            while True:
                landed = int(wh.rows(f"SELECT {count_sql}")[0][0])
                now = time.monotonic()
                if landed and first is None:
                    first = now
                if landed >= total:
                    return now - t0, now - first
                if now - t0 > 600 or all(p.poll() is not None for p in procs):
                    log.seek(0)
                    raise SystemExit(f"{n} sink processes landed {landed} of {total} records\n"
                                     f"{log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.05)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)


_WEEK_MS = 7 * 86_400_000


def _weeks(rows: list, weeks: int) -> list:
    return [replace(r, hour_ms=r.hour_ms + k * _WEEK_MS) for k in range(weeks) for r in rows]


def one_run(scenario: str, run: int, processes: int = 0, weeks: int = 1) -> dict[str, float]:
    tag = secrets.token_hex(3)
    base = load_settings()
    topics = {name: f"load.{tag}.{name.removesuffix('_topic')}" for name in SINK_TOPICS}
    db = f"flow_load_{tag}"
    settings = base.model_copy(update={
        "kafka": base.kafka.model_copy(update=topics),
        "sink": base.sink.model_copy(update={"group_id": f"load-{tag}"}),
        "clickhouse": base.clickhouse.model_copy(update={"database": db})})
    admin = AdminClient({**client_config(base, "admin")})
    # Four partitions: one or two sink processes get equal shares of the flow topic.
    for f in admin.create_topics([NewTopic(t, 4, 1) for t in topics.values()]).values():
        f.result(30)
    grants = acl_policy(settings) if settings.kafka.security_protocol == "SASL_SSL" else []
    apply_acls(admin, grants)   # the aggregator may write, the sink read, the run's own topics
    wh = ServerWarehouse(settings.clickhouse, database=db, role="admin")
    try:
        migrate(wh)
        params = PrivacyParams.default()
        register_params(wh, params)
        sc = load_scenario(scenario)
        pub = simulate(sc, params, np.random.default_rng(run)).published
        t = time.monotonic()
        key = secrets.token_bytes(32)
        flow, foot = publish_components(pub, base.aggregator.spec(), noise_key=key)
        dem = publish_demographics(pub, base.aggregator.counts_spec("demographics", pub.demographics_window_seconds),
                                   noise_key=key)
        t_aggregate = time.monotonic() - t
        # Further weeks: the same rows a week later each time (distinct keys), so that the
        # sink's start (group join, the first flush) weighs what it does in a long run.
        flow, foot, dem = (_weeks(rows, weeks) for rows in (flow, foot, dem))
        total = len(flow) + len(foot) + len(dem)

        t = time.monotonic()
        messages = produce_components(settings, flow, foot, dem).messages
        t_produce = time.monotonic() - t
        # The bound is timed just before and just after the sink and averaged: on a shared
        # machine, CPU steal drifts over a run, and one side timed alone picked it up (single
        # bounds of the same run differed by up to 1.6x).
        before = driver_bound(settings, db, flow, foot, dem)
        if processes:
            t_sink, t_steady = sink_processes(settings, wh, db, processes, total)
            t_run = t_sink
            join_s, cpu_sink = t_sink - t_steady, float("nan")
            cpu_main, stack_sink = float("nan"), {}
        else:
            # Timed from run(): the sink's processes are started beforehand, as a running
            # sink's are (its insert process imports for ~0.35 s, like this one did before
            # the clock started); the consumer's group join is timed, and printed apart.
            sink = ClickHouseSink(settings, wh)
            cpu = _cpu_with_children()
            main_cpu = time.process_time()
            sink.wait_ready()
            pids = _stack_pids()
            t, stack, busy = time.monotonic(), _stack_cpu(pids), _busy_seconds()
            stats = sink.run(max_records=messages, idle_timeout=20)
            t_run, cpu_sink = time.monotonic() - t, _cpu_with_children() - cpu
            stack_sink = {**_per_row(stack, _stack_cpu(pids), total), "cores": (_busy_seconds() - busy) / t_run}
            cpu_main = time.process_time() - main_cpu
            # To the last row confirmed in ClickHouse, as the process mode counts it; leaving
            # the group and stopping the insert process come after (t_run).
            t_sink = stats.last_landed_s or t_run
            if stats.consumed != messages or stats.rows != total or stats.dead_letters:
                raise SystemExit(f"run {run}: consumed {stats.consumed} of {messages} messages ({stats.rows} of "
                                 f"{total} rows), {stats.dead_letters} dead letters")
            join_s = stats.first_record_s or 0.0
        _check(wh, db, run, "flow_components", len(flow), {"s": sum(r.s for r in flow), "nn": sum(r.nn for r in flow)})
        _check(wh, db, run, "footfall_components", len(foot), {"occurrences": sum(r.occurrences for r in foot),
                                                               "windows": sum(r.windows for r in foot)})
        _check(wh, db, run, "demographic_components", len(dem),
               {"persons": sum(r.count for r in dem), "noise_var_milli": sum(r.noise_var_milli for r in dem)})

        after = driver_bound(settings, db, flow, foot, dem)
        bound_rps = 2 / (1 / before[0] + 1 / after[0])   # records over the mean time
        cpu_bound = (before[1] + after[1]) / 2
        stack_bound = {k: (before[2][k] + after[2][k]) / 2 for k in before[2]}

        start = datetime.fromtimestamp(pub.start_epoch, timezone.utc)
        end = start + timedelta(days=sc.days)
        cams = tuple(CameraRef(pub.site_ids[pub.camera_site[i]], c) for i, c in enumerate(pub.camera_ids))
        t = time.monotonic()
        estimate_flows(wh, FlowQuery(params.version, cams, start, end))
        t_flows = time.monotonic() - t
        t = time.monotonic()
        demographics_hourly(wh, params.version, start, end)
        t_demo = time.monotonic() - t
        return {"records": total, "flow": len(flow), "footfall": len(foot), "demographics": len(dem),
                "aggregate_s": t_aggregate, "produce_s": t_produce, "sink_s": t_sink, "sink_run_s": t_run,
                "produce_rps": total / t_produce, "sink_rps": total / t_sink, "bound_rps": bound_rps,
                "bound_before_rps": before[0], "bound_after_rps": after[0],
                "sink_cpu_us": cpu_sink / total * 1e6, "bound_cpu_us": cpu_bound / total * 1e6,
                "sink_main_cpu_us": cpu_main / total * 1e6,
                "sink_server_us": stack_sink.get("clickhouse", float("nan")),
                "sink_broker_us": stack_sink.get("kafka", float("nan")),
                "bound_server_us": stack_bound.get("clickhouse", float("nan")),
                "bound_broker_us": stack_bound.get("kafka", float("nan")),
                "sink_cores": stack_sink.get("cores", float("nan")),
                "bound_cores": stack_bound.get("cores", float("nan")),
                "sink_join_s": join_s,
                "sink_steady_rps": total / max(1e-9, t_sink - join_s),
                "flows_query_s": t_flows,
                "demographics_query_s": t_demo}
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.delete_topics(list(topics.values()))
        remove_acls(admin, sorted(set(grants) - set(acl_policy(base))))


def cpu_budget(res: dict[str, float]) -> tuple[float, float]:
    """CPU per record (µs) of everything that works for the sink's rows (its two processes, the
    server, the broker) and for the bound's (the driver, the server, the broker idling). Where
    both keep every core busy, rates go inversely with these totals, so bound / sink is then
    the ratio's ceiling; with cores to spare (the printed cores busy below the machine's), the
    sink overlaps its work and can beat it."""
    sink = res["sink_cpu_us"] + res["sink_server_us"] + res["sink_broker_us"]
    bound = res["bound_cpu_us"] + res["bound_server_us"] + res["bound_broker_us"]
    return sink, bound


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sink-processes", type=int, default=0,
                    help="run the sink as this many flowctl sink processes in one group, timed by ClickHouse's "
                         "row count from launch and from the first row landed (no client CPU figure); "
                         "default 0: one sink in this process")
    ap.add_argument("--weeks", type=int, default=1,
                    help="land the simulated week this many times, a week apart (default 1): a longer run, "
                         "in which the sink's start weighs what it does in service")
    args = ap.parse_args()
    if not 1 <= args.weeks <= 52:
        ap.error("--weeks must be 1 to 52")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not 0 <= args.sink_processes <= 4:
        ap.error("--sink-processes must be 0 to 4 (the topics have 4 partitions)")
    results = []
    for r in range(args.runs):
        res = one_run(args.scenario, r, args.sink_processes, args.weeks)
        results.append(res)
        print(f"run {r}: {res['records']:,} component records ({res['flow']:,} flow, {res['footfall']:,} footfall, "
              f"{res['demographics']:,} demographic; aggregated in-process in {res['aggregate_s']:.1f} s); "
              f"produce {res['produce_s']:.1f} s ({res['produce_rps']:,.0f}/s), "
              f"sink {res['sink_s']:.1f} s to the last row landed (run returned at {res['sink_run_s']:.1f} s; {res['sink_rps']:,.0f}/s; clickhouse-driver alone {res['bound_rps']:,.0f}/s "
              f"(before the sink {res['bound_before_rps']:,.0f}/s, after it {res['bound_after_rps']:,.0f}/s), "
              f"ratio {res['sink_rps'] / res['bound_rps']:.2f}; after its first record, {res['sink_join_s']:.1f} s in: "
              f"{res['sink_steady_rps']:,.0f}/s, ratio {res['sink_steady_rps'] / res['bound_rps']:.2f}; "
              f"client CPU per record: sink {res['sink_cpu_us']:.1f} us, driver alone {res['bound_cpu_us']:.1f} us); "
              f"ClickHouse holds exactly what was produced; "
              f"flow query {res['flows_query_s']:.2f} s, demographics query {res['demographics_query_s']:.2f} s",
              flush=True)
        if not args.sink_processes:
            sink_total, bound_total = cpu_budget(res)
            print(f"  CPU per record (us): sink {sink_total:.1f} = its main process {res['sink_main_cpu_us']:.1f} + "
                  f"insert process {res['sink_cpu_us'] - res['sink_main_cpu_us']:.1f} + ClickHouse server "
                  f"{res['sink_server_us']:.1f} + Kafka broker {res['sink_broker_us']:.1f}; driver alone "
                  f"{bound_total:.1f} = client {res['bound_cpu_us']:.1f} + server {res['bound_server_us']:.1f} + "
                  f"broker {res['bound_broker_us']:.1f}; bound/sink {bound_total / sink_total:.2f}; cores busy: "
                  f"sink {res['sink_cores']:.2f}, driver alone {res['bound_cores']:.2f} of {os.cpu_count()}",
                  flush=True)
    print(f"median over {args.runs} runs: produce {statistics.median(r['produce_rps'] for r in results):,.0f} records/s, "
          f"sink {statistics.median(r['sink_rps'] for r in results):,.0f} records/s, driver bound "
          f"{statistics.median(r['bound_rps'] for r in results):,.0f} records/s, sink/bound "
          f"{statistics.median(r['sink_rps'] / r['bound_rps'] for r in results):.2f} (after the first record "
          f"{statistics.median(r['sink_steady_rps'] / r['bound_rps'] for r in results):.2f}); client CPU per record: "
          f"driver alone / sink {statistics.median(r['bound_cpu_us'] / r['sink_cpu_us'] for r in results):.2f} "
          f"(2 cores shared with Kafka and ClickHouse)")
    if not args.sink_processes:
        print(f"CPU per record of everything (the sink's processes, the server, the broker), bound / sink "
              f"(the ratio's ceiling when both keep every core busy): "
              f"{statistics.median(cpu_budget(r)[1] / cpu_budget(r)[0] for r in results):.2f} median "
              f"({', '.join(f'{cpu_budget(r)[1] / cpu_budget(r)[0]:.2f}' for r in results)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
