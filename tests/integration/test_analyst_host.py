"""An analyst's host holds no processor key and no secret parameter set: the CLI works from the
public figures the warehouse holds."""
from datetime import datetime, timezone

import pytest

from pipeline.sink.clickhouse import ServerWarehouse
from tests.integration.conftest import flowctl

pytestmark = pytest.mark.integration


def test_counts_need_no_secret_on_an_analyst_host(env, tmp_path):
    """`flowctl query counts` on a machine without the processors' parameter file takes the public
    figures of the newest registered version from the warehouse."""
    from pipeline.analytics.dimensions import register_params
    from pipeline.privacy.deployment import ensure_deployment_params

    params, _ = ensure_deployment_params(env.keys.dir)
    wh = ServerWarehouse(env.clickhouse)
    register_params(wh, params)
    wh.insert("group_occurrences", ["site_id", "camera_id", "window_start", "window_seconds", "group_id",
                                    "occurrences", "params_version", "kafka_partition", "kafka_offset"],
              [["s9"], ["door"], [datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)], [60], [7], [12],
               [params.version], [0], [0]])
    analyst = env.model_copy(update={"keys": env.keys.model_copy(update={"dir": tmp_path / "no-keys"})})
    p = flowctl(analyst, "query", "counts", "--site", "s9")
    assert "door" in p.stdout and params.version in p.stdout.replace("\n", "")

