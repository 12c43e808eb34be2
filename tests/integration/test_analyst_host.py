"""An analyst's host holds no processor key and no secret parameter set: the CLI works from the
public figures the warehouse holds."""
from datetime import datetime, timezone

import pytest

from pipeline.sink.clickhouse import ServerWarehouse
from tests.integration.conftest import flowctl

pytestmark = pytest.mark.integration


def test_counts_need_no_secret_on_an_analyst_host(env, tmp_path):
    """`flowctl query counts` on a machine without the processors' parameter file takes the public
    figures of the newest registered version from the warehouse, and the counts from the
    published footfall components."""
    from pipeline.aggregator.model import FootfallComponent
    from pipeline.analytics.dimensions import register_params
    from pipeline.simulator.publish import write_components
    from pipeline.privacy.deployment import ensure_deployment_params

    params, _ = ensure_deployment_params(env.keys.dir)
    wh = ServerWarehouse(env.clickhouse, role="admin")
    register_params(wh, params)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    write_components(wh, [], [FootfallComponent(params.version, 60, int(hour.timestamp()) * 1000, "s9", "door", 12, 1, 1)])
    analyst = env.model_copy(update={"keys": env.keys.model_copy(update={"dir": tmp_path / "no-keys"})})
    p = flowctl(analyst, "query", "counts", "--site", "s9")
    assert "door" in p.stdout and params.version in p.stdout.replace("\n", "")
    assert "12" in p.stdout  # the published camera-hour's occurrences

