import pytest

from pipeline.ops.topics import DEFAULT_POLICY, PolicyError, load_policy, raw_problems


def test_shipped_policy_meets_raw_limits():
    pol = load_policy(DEFAULT_POLICY)
    raw = [t for t in pol.topics if t.raw]
    assert raw, "the frame-reference topic must be declared raw"
    for t in raw:
        assert int(t.config["retention.ms"]) <= 60_000 and int(t.config["segment.ms"]) <= 10_000
        assert t.config["cleanup.policy"] == "delete"
        assert t.config["message.timestamp.type"] == "LogAppendTime"


@pytest.mark.parametrize("cfg,needle", [
    ({"retention.ms": "600000", "segment.ms": "1000"}, "retention.ms"),
    ({"retention.ms": "1000", "segment.ms": "60000"}, "segment.ms"),
    ({"retention.ms": "-1", "segment.ms": "1000"}, "retention.ms"),
    ({"retention.ms": "1000", "segment.ms": "1000", "cleanup.policy": "compact"}, "cleanup.policy"),
])
def test_raw_problems(cfg, needle):
    assert any(needle in p for p in raw_problems(cfg, 60_000, 10_000))


def test_policy_breaking_raw_limits_is_refused(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("topics:\n  - {name: r, role: frame_refs, raw: true, partitions: 1, config: {retention.ms: '86400000'}}\n")
    with pytest.raises(PolicyError, match="raw topic r"):
        load_policy(p)


def test_unknown_keys_are_refused(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("topics:\n  - {name: r, role: x, raw: false, partitions: 1, retention: 5}\n")
    with pytest.raises(PolicyError, match="unknown keys"):
        load_policy(p)
