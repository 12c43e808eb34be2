"""Test tiers: tests/unit and tests/privacy need no services; tests/integration run against the
real Kafka broker and ClickHouse server that infra/local/stack.sh starts (it is started here if
it is not running, so `pytest` alone is enough)."""
