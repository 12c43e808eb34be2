-- Demographics and line crossings become protected camera-hour cells (issue 11, docs/PRIVACY.md):
-- the processor's exact per-window counts are restricted input to the flow aggregator's counts
-- stages (pipeline/aggregator/counts.py), which publish every cell of every seen camera-hour once,
-- with discrete Laplace noise for a stated epsilon per person-day. A replayed hour replaces its
-- rows (ReplacingMergeTree on version); read with FINAL. noise_var_milli: the noise variance in
-- thousandths (integers only in the warehouse), additive over the cells a query sums. Counts are
-- signed: noise is not clamped at 0, so sums over many near-empty cells stay unbiased.
--
-- Footfall the same way: every hour of a seen camera is published (also hours nobody passed),
-- so its occurrences and windows carry unclamped noise and become signed too.
ALTER TABLE {db}.footfall_components MODIFY COLUMN occurrences Int64;
ALTER TABLE {db}.footfall_components MODIFY COLUMN windows Int64;

CREATE TABLE IF NOT EXISTS {db}.demographic_components
(
    params_version String,
    site_id String,
    camera_id String,
    hour DateTime,
    age_band String,
    gender String,
    persons Int64,
    noise_var_milli UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, site_id, camera_id, hour, age_band, gender);

CREATE TABLE IF NOT EXISTS {db}.crossing_components
(
    params_version String,
    site_id String,
    camera_id String,
    hour DateTime,
    line String,
    direction String,
    crossings Int64,
    noise_var_milli UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, site_id, camera_id, hour, line, direction);

-- The per-window landing tables held cells suppressed below 3 persons, with no bound on what
-- differencing them reveals; nothing feeds them any more and nothing published reads them.
-- Materialised view first (it inserts into demographics_hourly), then what it read and fed.
DROP TABLE IF EXISTS {db}.demographics_hourly_mv;
DROP TABLE IF EXISTS {db}.demographics_hourly;
DROP TABLE IF EXISTS {db}.demographic_counts;
DROP TABLE IF EXISTS {db}.line_crossings;
