"""`flowctl flows --json` output stays valid JSON when an estimate cannot be formed."""
import json

from pipeline.analytics.cli import _dump
from pipeline.analytics.flows import FlowEstimate


def test_flows_json_writes_null_for_an_estimate_that_cannot_be_formed(capsys):
    """No far-band products means no kappa, so kappa, flow and SE are NaN: the JSON must stay
    valid (null), not carry the bare token NaN that strict parsers refuse."""
    nan = float("nan")
    ok = FlowEstimate("s/a", "s/b", None, 120.0, 20.0, 0.001, 0.5, 200.4, 30.0)
    bad = FlowEstimate("s/a", "s/c", None, 0.0, 0.0, nan, 0.5, nan, nan)
    _dump([ok, bad])
    text = capsys.readouterr().out
    assert "NaN" not in text
    out = json.loads(text)
    assert out[0]["flow"] == 200.4 and out[0]["ci95"][0] < 200.4 < out[0]["ci95"][1]
    assert out[1]["kappa"] is None and out[1]["flow"] is None and out[1]["ci95"] == [None, None]
    assert out[1]["co_occurrences"] == 0.0 and out[1]["destination"] == "s/c"
