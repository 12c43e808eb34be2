"""Helpers for the simulator tests: tiny scenarios built in code."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.simulator.scenario import Scenario, parse_scenario


def scenario(**over: Any) -> Scenario:
    base: dict[str, Any] = {
        "name": "t", "start": "2026-11-02", "days": 1, "seed": 3,
        "sites": [{"site_id": "s1", "opening_hours": "09:00-21:00",
                   "cameras": [{"camera_id": "A"}, {"camera_id": "B"}, {"camera_id": "C"}]}],
        "entries": [{"camera": "A", "arrivals_per_day": 100}],
        "routes": [],
    }
    base.update(over)
    return parse_scenario(base)


@pytest.fixture()
def make_scenario():
    return scenario
