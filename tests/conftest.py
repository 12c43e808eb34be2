"""Test tiers: tests marked ``integration`` (all of tests/integration, and the server tests of
tests/analytics and tests/simulator) run against the real Kafka broker and ClickHouse server
that infra/local/stack.sh starts; it is started here if it is not running, whichever directory
runs first, so `pytest` alone is enough. The other tests need no services."""
import subprocess

import pytest

from pipeline.settings import REPO_ROOT


@pytest.fixture(scope="session")
def stack():
    """The real local stack; started by the project's own script, never mocked."""
    rc = subprocess.call(["bash", str(REPO_ROOT / "infra" / "local" / "stack.sh"), "up"])
    assert rc == 0, "infra/local/stack.sh up failed"
    return True


@pytest.fixture(autouse=True)
def _stack_for_integration_tests(request):
    """Any test marked integration, in any directory, gets the stack (module fixtures that need
    it before the first test ask for ``stack`` themselves)."""
    if request.node.get_closest_marker("integration"):
        request.getfixturevalue("stack")
