"""SRE exporter: is raw data expiring, and is the pipeline keeping up?

Collected fresh on every scrape (a custom collector, no background polling):
* per raw topic and partition: the age of the oldest record still on the broker (read at the
  low watermark; raw topics use LogAppendTime, so the broker's own clock), the record count,
  and the configured retention.ms / segment.ms and the bound they imply;
* topic-policy violations found by the same audit as `flowctl topics audit`;
* consumer lag of the processor group on the raw topic;
* the frame store: blob count and the age of the oldest blob, against its TTL.
Labels are topic names and partition numbers only.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.framestore import BlobRejected, FrameStore
from pipeline.ops.topics import Policy, audit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionAge:
    topic: str
    partition: int
    low: int
    high: int
    oldest_age_seconds: float  # 0 when the partition holds no records


def oldest_record_ages(conf: dict[str, Any], topic: str, now: float | None = None) -> list[PartitionAge]:
    """Age of the first record still on the broker, per partition (reads one record each)."""
    c = Consumer({**conf, "group.id": f"flowpipe-exporter-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.max.bytes": 1_000_000})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return []
        parts = sorted(md.topics[topic].partitions)
        out = []
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            age = 0.0
            if high > low:
                c.assign([TopicPartition(topic, p, low)])
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    msg = c.poll(0.5)
                    if msg is None or msg.error():
                        continue
                    # Only the timestamp is read; the value (a frame reference) is dropped unread.
                    _ts_type, ts = msg.timestamp()
                    age = max(0.0, (time.time() if now is None else now) - ts / 1000)
                    break
            out.append(PartitionAge(topic, p, low, high, age))
        return out
    finally:
        c.close()


def consumer_lag(admin: AdminClient, conf: dict[str, Any], group: str, topic: str) -> dict[int, int]:
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    try:
        committed = {tp.partition: tp.offset for tp in fut[group].result(timeout=10).topic_partitions
                     if tp.topic == topic}
    except Exception:  # group unknown yet
        committed = {}
    c = Consumer({**conf, "group.id": f"flowpipe-lag-{uuid.uuid4().hex[:8]}"})
    try:
        md = c.list_topics(topic, timeout=10)
        lag = {}
        for p in sorted(md.topics[topic].partitions) if topic in md.topics else []:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            done = committed.get(p, -1)
            lag[p] = high - max(done, low) if done >= 0 else high - low
        return lag
    finally:
        c.close()


class PipelineCollector(Collector):
    def __init__(self, admin: AdminClient, conf: dict[str, Any], policy: Policy, store: FrameStore | None,
                 processor_group: str, retention_check_interval_ms: int = 1000) -> None:
        self.admin, self.conf, self.policy, self.store = admin, conf, policy, store
        self.group = processor_group
        self.check_ms = retention_check_interval_ms

    def _configs(self, topics: list[str]) -> dict[str, dict[str, str]]:
        res = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
        out = {}
        for r, f in self.admin.describe_configs(res).items():
            try:
                out[r.name] = {k: v.value for k, v in f.result(timeout=10).items()}
            except Exception:
                out[r.name] = {}
        return out

    def collect(self) -> Iterator[GaugeMetricFamily]:
        t0 = time.monotonic()
        up = GaugeMetricFamily("flowpipe_exporter_kafka_up", "1 when the broker answered this scrape")
        fams = {tier: _tier_families(tier) for tier in ("raw", "restricted")}
        lagm = GaugeMetricFamily("flowpipe_processor_lag_records", "Processor group lag on a raw topic partition",
                                 labels=["topic", "partition"])
        viol = GaugeMetricFamily("flowpipe_topic_policy_violations", "Violations found by the topic-policy audit")
        try:
            for tier, (age, recs, ret, seg, bound) in fams.items():
                topics = [t.name for t in self.policy.topics if t.tier == tier]
                cfgs = self._configs(topics) if topics else {}
                for t in topics:
                    cfg = cfgs.get(t, {})
                    r_ms, s_ms = int(cfg.get("retention.ms", -1)), int(cfg.get("segment.ms", -1))
                    ret.add_metric([t], r_ms / 1000)
                    seg.add_metric([t], s_ms / 1000)
                    bound.add_metric([t], (r_ms + s_ms + self.check_ms) / 1000)
                    for pa in oldest_record_ages(self.conf, t):
                        age.add_metric([t, str(pa.partition)], pa.oldest_age_seconds)
                        recs.add_metric([t, str(pa.partition)], pa.high - pa.low)
                    if tier == "raw":
                        for p, lag in consumer_lag(self.admin, self.conf, self.group, t).items():
                            lagm.add_metric([t, str(p)], lag)
            viol.add_metric([], len(audit(self.admin, self.policy).violations))
            up.add_metric([], 1)
        except Exception as e:  # the exporter must keep serving store metrics when Kafka is down
            log.warning("kafka metrics unavailable: %s", type(e).__name__)
            up.add_metric([], 0)
        yield up
        for families in fams.values():
            yield from families
        yield from (lagm, viol)
        if self.store is not None:
            try:
                st = self.store.stats()
            except BlobRejected:
                # a site's blob service that does not answer: say so (alertable) rather than fail the scrape
                yield GaugeMetricFamily("flowpipe_framestore_reachable", "Whether every frame store answered", value=0)
                st = None
        if self.store is not None and st is not None:
            yield GaugeMetricFamily("flowpipe_framestore_reachable", "Whether every frame store answered", value=1)
            yield GaugeMetricFamily("flowpipe_framestore_blobs", "Encrypted frame blobs in the store", value=st.blobs)
            yield GaugeMetricFamily("flowpipe_framestore_oldest_blob_age_seconds", "Age of the oldest blob in the store",
                                    value=st.oldest_age_seconds)
            yield GaugeMetricFamily("flowpipe_framestore_ttl_seconds", "The store's TTL", value=self.store.ttl_seconds)
        yield GaugeMetricFamily("flowpipe_exporter_scrape_seconds", "Time this scrape took", value=time.monotonic() - t0)


def _tier_families(tier: str) -> tuple[GaugeMetricFamily, ...]:
    """Age metrics of one data tier's topics (raw frames; restricted group cells)."""
    what = "a raw-data" if tier == "raw" else "a restricted (pseudonymous)"
    return (
        GaugeMetricFamily(f"flowpipe_{tier}_oldest_record_age_seconds",
                          f"Age of the oldest record still on the broker in {what} topic partition",
                          labels=["topic", "partition"]),
        GaugeMetricFamily(f"flowpipe_{tier}_records", f"Records still on the broker in {what} topic partition",
                          labels=["topic", "partition"]),
        GaugeMetricFamily(f"flowpipe_{tier}_retention_seconds", f"Configured retention.ms of {what} topic",
                          labels=["topic"]),
        GaugeMetricFamily(f"flowpipe_{tier}_segment_seconds", f"Configured segment.ms of {what} topic",
                          labels=["topic"]),
        GaugeMetricFamily(f"flowpipe_{tier}_age_bound_seconds",
                          f"Worst age {what} record may reach: retention + segment roll + retention check interval",
                          labels=["topic"]),
    )
