"""Red team: attacks on what analysts can read (the published tier) and, for comparison, on the
restricted tier, over simulated worlds with ground truth (issue 11 item 5; docs/PRIVACY.md §10).

``flowctl privacy attack`` runs the suite (:func:`pipeline.redteam.suite.run_suite`);
``bench/privacy/published_attacks.py`` is a thin wrapper around it. Imports flow one way: this
package uses the simulator, the aggregator's cores, analytics and privacy; nothing in
``pipeline/`` imports it except that CLI command (lazily).

* :mod:`pipeline.redteam.world`: the attacked world (truth, restricted cells, published tiers
  made by the project's own cores) and building one from the simulator.
* :mod:`pipeline.redteam.attacks`: (a) group following, (b) the analyst with a sighting, (c)
  value coverage, (d) demographics to path, (e) row existence.
* :mod:`pipeline.redteam.suite`: both runs, every attack on every tier, the Done-when verdicts.
* :mod:`pipeline.redteam.report`: rich tables and JSON.
"""
from pipeline.redteam.suite import SuiteConfig, SuiteResult, run_suite
from pipeline.redteam.world import ANALYST, RESTRICTED, UNPROTECTED, CaptureTable, Cells, Tier, World

__all__ = ["ANALYST", "RESTRICTED", "UNPROTECTED", "CaptureTable", "Cells", "Tier", "World", "SuiteConfig",
           "SuiteResult", "run_suite"]
