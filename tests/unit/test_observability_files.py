"""The alert rules and dashboard only reference metrics that the exporter and processor define,
and the compose file wires what the local scripts run."""
import json
import re

import yaml

from pipeline.settings import REPO_ROOT

def _tier_metric_names() -> set[str]:
    from pipeline.ops.exporter import _tier_families

    return {f.name for tier in ("raw", "restricted") for f in _tier_families(tier)}


KNOWN = _tier_metric_names() | {
    # exporter (pipeline/ops/exporter.py)
    "flowpipe_exporter_kafka_up", "flowpipe_processor_lag_records", "flowpipe_topic_policy_violations", "flowpipe_framestore_blobs",
    "flowpipe_framestore_oldest_blob_age_seconds", "flowpipe_framestore_ttl_seconds", "flowpipe_exporter_scrape_seconds",
}


def _processor_metrics():
    from prometheus_client import REGISTRY

    import pipeline.ops.metrics  # noqa: F401  (registers the processor's metrics)

    names = set()
    for fam in REGISTRY.collect():
        if fam.name.startswith("flowpipe_"):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
            names.update(fam.name + sfx for sfx in suffixes.get(fam.type, ("",)))
    return names


def _referenced(expr):
    return set(re.findall(r"\bflowpipe_[a-z_]+", expr))


def test_alert_rules_reference_real_metrics():
    known = KNOWN | _processor_metrics()
    doc = yaml.safe_load((REPO_ROOT / "infra/prometheus/alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {"RawRecordOutlivesPolicy", "RestrictedRecordOutlivesPolicy", "FrameBlobOutlivesTTL",
            "TopicPolicyViolation"} <= {r["alert"] for r in rules}
    for r in rules:
        refs = _referenced(r["expr"])
        assert refs, r["alert"]
        assert refs <= known, (r["alert"], refs - known)


def test_dashboard_references_real_metrics():
    known = KNOWN | _processor_metrics()
    dash = json.loads((REPO_ROOT / "infra/grafana/dashboards/flowpipe-sre.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for e in exprs:
        assert _referenced(e) <= known, e
