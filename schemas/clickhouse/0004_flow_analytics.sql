-- Flow analytics: time-bucketed aggregates the estimators read, dimensions, and the privacy
-- parameters the estimators need. Still SQL that ClickHouse 18.16 and current releases accept.
--
-- Why these sort keys: every flow query fixes a parameter set and a set of cameras and scans a
-- time range, then joins cameras on (group_id, window). (params_version, site_id, camera_id,
-- window_start) first makes that a contiguous range read per camera; group_id last keeps one
-- camera-window's groups together. Monthly partitions let a year of minute data be dropped or
-- moved a month at a time. SummingMergeTree folds the processor's window fragments (a late frame
-- re-opens a window) into one row per key on merge; queries still sum(), so unmerged parts
-- never change an answer.

CREATE TABLE IF NOT EXISTS {db}.occurrences_by_window
(
    params_version String,
    site_id String,
    camera_id String,
    window_start DateTime,
    window_seconds UInt32,
    group_id UInt16,
    occurrences UInt64
)
ENGINE = SummingMergeTree((occurrences))
PARTITION BY toYYYYMM(window_start)
ORDER BY (params_version, site_id, camera_id, window_start, window_seconds, group_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.occurrences_by_window_mv TO {db}.occurrences_by_window AS
SELECT params_version, site_id, camera_id, window_start, window_seconds, group_id,
       toUInt64(occurrences) AS occurrences
FROM {db}.group_occurrences;

-- One row per (camera, window): how many occurrences and how many group rows. Footfall and the
-- per-hour views read this instead of the per-group table (1/100 of the rows or fewer).
CREATE TABLE IF NOT EXISTS {db}.camera_window_totals
(
    params_version String,
    site_id String,
    camera_id String,
    window_start DateTime,
    window_seconds UInt32,
    occurrences UInt64,
    group_rows UInt64
)
ENGINE = SummingMergeTree((occurrences, group_rows))
PARTITION BY toYYYYMM(window_start)
ORDER BY (params_version, site_id, camera_id, window_start, window_seconds);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.camera_window_totals_mv TO {db}.camera_window_totals AS
SELECT params_version, site_id, camera_id, window_start, window_seconds,
       toUInt64(sum(occurrences)) AS occurrences, toUInt64(count()) AS group_rows
FROM {db}.group_occurrences
GROUP BY params_version, site_id, camera_id, window_start, window_seconds;

CREATE TABLE IF NOT EXISTS {db}.demographics_hourly
(
    params_version String,
    site_id String,
    camera_id String,
    hour DateTime,
    age_band String,
    gender String,
    persons UInt64
)
ENGINE = SummingMergeTree((persons))
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, site_id, camera_id, hour, age_band, gender);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.demographics_hourly_mv TO {db}.demographics_hourly AS
SELECT params_version, site_id, camera_id, toStartOfHour(window_start) AS hour, age_band, gender,
       toUInt64(sum(persons)) AS persons
FROM {db}.demographic_counts
GROUP BY params_version, site_id, camera_id, hour, age_band, gender;

-- Rows that reached the landing tables before this migration.
INSERT INTO {db}.occurrences_by_window
SELECT params_version, site_id, camera_id, window_start, window_seconds, group_id, toUInt64(occurrences)
FROM {db}.group_occurrences;

INSERT INTO {db}.camera_window_totals
SELECT params_version, site_id, camera_id, window_start, window_seconds,
       toUInt64(sum(occurrences)), toUInt64(count())
FROM {db}.group_occurrences
GROUP BY params_version, site_id, camera_id, window_start, window_seconds;

INSERT INTO {db}.demographics_hourly
SELECT params_version, site_id, camera_id, toStartOfHour(window_start), age_band, gender, toUInt64(sum(persons))
FROM {db}.demographic_counts
GROUP BY params_version, site_id, camera_id, toStartOfHour(window_start), age_band, gender;

-- Camera layout, loaded from a site's layout file (flowctl layout load). The latest load wins.
CREATE TABLE IF NOT EXISTS {db}.cameras
(
    site_id String,
    camera_id String,
    name String,
    zone String,
    store String,
    loaded_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (site_id, camera_id);

-- The figures of each privacy parameter set that estimators need (never the seed or the
-- reference statistics: those stay with the processors). Registered by flowctl params register
-- and by the simulator.
CREATE TABLE IF NOT EXISTS {db}.privacy_params
(
    params_version String,
    n_groups UInt32,
    same_group_rate Float64,
    fictitious_floor UInt32,
    fictitious_ratio Float64,
    fictitious_per_group Float64,
    fictitious_variance_per_group Float64,
    registered_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(registered_at)
ORDER BY params_version;

-- Estimated persons per camera and hour: occurrences minus the expected fictitious ones
-- (fictitious_per_group x n_groups per window present). Assumes every window of the hour that
-- has rows was streamed; see docs/ANALYST_SQL.md.
CREATE VIEW IF NOT EXISTS {db}.footfall_hourly AS
SELECT
    t.params_version AS params_version,
    site_id,
    camera_id,
    hour,
    occurrences,
    windows,
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
) AS p USING (params_version);
