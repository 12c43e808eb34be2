"""The restricted per-window group cell tables, for the reference estimator on cells only.

Migration 0009 dropped ``group_occurrences`` and what was built on it from every warehouse: group
cells are restricted data and may never be stored there (issue 11, ``flowctl audit ages`` fails
on any table with a ``group_id`` column). The reference estimator on cells
(:mod:`pipeline.analytics.cell_estimator`) and the footfall it derived still read them, so tests
that compare the published components with it create them again, as migrations 0001, 0002 and
0004 did, in a throwaway database of their own (chdb in a temporary directory), after
:func:`pipeline.sink.migrations.migrate`. Never call this on a database the sink or analysts use.
"""
from __future__ import annotations

from typing import Any

CELL_DDL = """
CREATE TABLE IF NOT EXISTS {db}.group_occurrences
(
    site_id String, camera_id String, window_start DateTime, window_seconds UInt32, group_id UInt16,
    occurrences UInt32, params_version String, kafka_partition UInt32, kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (site_id, camera_id, window_start, group_id, kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.occurrences_by_window
(
    params_version String, site_id String, camera_id String, window_start DateTime, window_seconds UInt32,
    group_id UInt16, occurrences UInt64
)
ENGINE = SummingMergeTree((occurrences))
PARTITION BY toYYYYMM(window_start)
ORDER BY (params_version, site_id, camera_id, window_start, window_seconds, group_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.occurrences_by_window_mv TO {db}.occurrences_by_window AS
SELECT params_version, site_id, camera_id, window_start, window_seconds, group_id,
       toUInt64(occurrences) AS occurrences
FROM {db}.group_occurrences;

CREATE TABLE IF NOT EXISTS {db}.camera_window_totals
(
    params_version String, site_id String, camera_id String, window_start DateTime, window_seconds UInt32,
    occurrences UInt64, group_rows UInt64
)
ENGINE = SummingMergeTree((occurrences, group_rows))
PARTITION BY toYYYYMM(window_start)
ORDER BY (params_version, site_id, camera_id, window_start, window_seconds);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.camera_window_totals_mv TO {db}.camera_window_totals AS
SELECT params_version, site_id, camera_id, window_start, window_seconds,
       toUInt64(sum(occurrences)) AS occurrences, toUInt64(count()) AS group_rows
FROM {db}.group_occurrences
GROUP BY params_version, site_id, camera_id, window_start, window_seconds;

CREATE VIEW IF NOT EXISTS {db}.footfall_hourly AS
SELECT
    t.params_version AS params_version, site_id, camera_id, hour, occurrences, windows,
    occurrences - windows * p.fictitious_per_group * p.n_groups AS estimated_persons
FROM
(
    SELECT params_version, site_id, camera_id, toStartOfHour(window_start) AS hour,
           sum(occurrences) AS occurrences, uniqExact(window_start) AS windows
    FROM {db}.camera_window_totals
    GROUP BY params_version, site_id, camera_id, hour
) AS t
ANY LEFT JOIN
(
    SELECT params_version, argMax(n_groups, registered_at) AS n_groups,
           argMax(fictitious_per_group, registered_at) AS fictitious_per_group
    FROM {db}.privacy_params
    GROUP BY params_version
) AS p USING (params_version)
"""


def create_cell_tables(wh: Any) -> None:
    """Create the restricted cell tables (and their views) in ``wh``'s own, throwaway database."""
    for stmt in CELL_DDL.split(";"):
        if stmt.strip():
            wh.execute(stmt.strip().replace("{db}", wh.database))
