"""Load test of the Kafka -> ClickHouse leg with a simulated week: produce, sink, check, estimate.

    .venv/bin/python bench/flows/sink_load.py [--scenario reference] [--runs 3]

Each run creates throwaway topics and a throwaway database, produces every GroupOccurrence
and DemographicCount record of the scenario through the real serde and an idempotent
producer, runs the real sink until it has consumed them all, checks that ClickHouse holds
exactly the published totals (nothing lost, nothing doubled), and times the flow query on
the landed week. Prints records/s for producing and sinking (median over runs).
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from pipeline.analytics.dimensions import register_params  # noqa: E402
from pipeline.privacy import PrivacyParams  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.simulator import load_scenario, simulate  # noqa: E402
from pipeline.simulator.publish import produce_kafka  # noqa: E402
from pipeline.sink.clickhouse import ServerWarehouse  # noqa: E402
from pipeline.sink.consumer import ClickHouseSink  # noqa: E402
from pipeline.sink.migrations import migrate  # noqa: E402


def one_run(scenario: str, run: int) -> dict[str, float]:
    tag = secrets.token_hex(3)
    base = load_settings()
    # Every topic the sink reads (and its dead-letter topic) is the run's own.
    topics = {name: f"load.{tag}.{name.removesuffix('_topic')}" for name in
              ("occurrences_topic", "demographics_topic", "receipts_topic", "ledger_topic", "dead_letter_topic")}
    db = f"flow_load_{tag}"
    settings = base.model_copy(update={
        "kafka": base.kafka.model_copy(update=topics),
        "clickhouse": base.clickhouse.model_copy(update={"database": db})})
    admin = AdminClient({"bootstrap.servers": base.kafka.bootstrap})
    for f in admin.create_topics([NewTopic(t, 3, 1) for t in topics.values()]).values():
        f.result(30)
    wh = ServerWarehouse(settings.clickhouse, database=db)
    try:
        migrate(wh)
        params = PrivacyParams.default()
        register_params(wh, params)
        pub = simulate(load_scenario(scenario), params, np.random.default_rng(run)).published
        t = time.monotonic()
        produced = produce_kafka(pub, settings)
        t_produce = time.monotonic() - t
        # The restricted occurrences go to the aggregator, never to the sink (migration 0009):
        # the sink's load is the demographic counts (append-only, with offsets).
        total = pub.demographic_rows
        t = time.monotonic()
        stats = ClickHouseSink(settings, wh, group_id=f"load-{tag}").run(max_records=total, idle_timeout=20)
        t_sink = time.monotonic() - t
        landed = int(wh.rows(f"SELECT sum(persons) FROM {db}.demographic_counts")[0][0])
        expected = int(pub.dem_persons.sum())
        if landed != expected or stats.consumed != total:
            raise SystemExit(f"run {run}: landed {landed} persons of {expected}; consumed {stats.consumed} of {total}")
        return {"records": total, "produce_s": t_produce, "sink_s": t_sink,
                "produce_rps": total / t_produce, "sink_rps": total / t_sink,
                "produced": getattr(produced, "records", total)}
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.delete_topics(list(topics.values()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="reference")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    results = []
    for r in range(args.runs):
        res = one_run(args.scenario, r)
        results.append(res)
        print(f"run {r}: {res['records']:,} records; produce {res['produce_s']:.1f} s ({res['produce_rps']:,.0f}/s), "
              f"sink {res['sink_s']:.1f} s ({res['sink_rps']:,.0f}/s); ClickHouse totals match", flush=True)
    print(f"median over {args.runs} runs: produce {statistics.median(r['produce_rps'] for r in results):,.0f} records/s, "
          f"sink {statistics.median(r['sink_rps'] for r in results):,.0f} records/s (2 cores shared with Kafka and "
          f"ClickHouse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
