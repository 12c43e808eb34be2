"""The topic policy on the real broker: apply creates and repairs, audit catches violations."""
import time

import pytest
from confluent_kafka.admin import NewTopic

from pipeline.ops.topics import admin_client, apply_policy, audit, policy_for_settings
from tests.integration.conftest import flowctl, set_config

pytestmark = pytest.mark.integration


def _only_ours(report, s):
    names = {t.name for t in policy_for_settings(s).topics}
    return [f for f in report.findings if f.topic in names or f.topic.startswith(s.kafka.frame_refs_topic.split(".")[0])]


def test_apply_is_idempotent_and_topics_match_policy(env):
    admin = admin_client(env)
    pol = policy_for_settings(env)
    assert apply_policy(admin, pol) == []
    assert _only_ours(audit(admin, pol), env) == []


def test_misconfigured_raw_topic_is_a_violation_and_apply_repairs_it(env):
    admin = admin_client(env)
    pol = policy_for_settings(env)
    raw = env.kafka.frame_refs_topic
    set_config(admin, raw, retention_ms="86400000", cleanup_policy="compact")
    found = [f for f in _only_ours(audit(admin, pol), env) if f.topic == raw]
    assert any(f.severity == "violation" and "retention.ms" in f.message for f in found)
    assert any(f.severity == "violation" and "compact" in f.message for f in found)
    # the CLI exits non-zero with a readable report
    p = flowctl(env, "topics", "audit", check=False)
    assert p.returncode == 1 and raw in p.stdout and "violation" in p.stdout
    actions = apply_policy(admin, pol)
    assert any(raw in a for a in actions)
    assert [f for f in _only_ours(audit(admin, pol), env) if f.topic == raw] == []


def test_undeclared_topic_is_reported(env):
    admin = admin_client(env)
    rogue = env.kafka.frame_refs_topic + ".copy"
    admin.create_topics([NewTopic(rogue, 1, -1)])[rogue].result(timeout=10)
    deadline = time.monotonic() + 15
    while rogue not in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        rep = audit(admin, policy_for_settings(env))
        assert any(f.topic == rogue and f.severity == "violation" and "undeclared" in f.message for f in rep.findings)
        assert not rep.ok
    finally:
        admin.delete_topics([rogue])[rogue].result(timeout=10)


def test_restricted_group_cells_topic_is_enforced_like_raw_data_and_its_ages_are_audited(env):
    """Per-window group cells are pseudonymous (issue 11): their topic is declared restricted,
    a configuration that would keep them past the tier's bound is a violation, and
    `flowctl audit ages` shows each partition's oldest record against the bound."""
    admin = admin_client(env)
    pol = policy_for_settings(env)
    occ = env.kafka.occurrences_topic
    spec = next(t for t in pol.topics if t.name == occ)
    assert spec.tier == "restricted"
    max_ret, max_seg = pol.limits(spec)
    assert max_ret + max_seg + env.exporter.retention_check_interval_ms < 2 * 3600 * 1000
    p = flowctl(env, "audit", "ages", check=False)
    assert p.returncode == 0 and "restricted" in p.stdout, p.stdout + p.stderr
    set_config(admin, occ, retention_ms="604800000")
    found = [f for f in _only_ours(audit(admin, pol), env) if f.topic == occ]
    assert any(f.severity == "violation" and "restricted topic" in f.message for f in found)
    p = flowctl(env, "audit", "ages", check=False)
    assert p.returncode == 1 and "over the restricted limit" in p.stdout.replace("\n", " ")
    apply_policy(admin, pol)
    assert [f for f in _only_ours(audit(admin, pol), env) if f.topic == occ] == []
