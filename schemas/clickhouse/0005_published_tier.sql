-- Published tier: what the streaming flow aggregator (pipeline/aggregator, docs/AGGREGATOR.md)
-- emits per closed hour. No row holds a group id, a per-window count or anything finer than a
-- camera-hour: flow components are sums over all groups and all windows of the hour, footfall is
-- the camera-hour total. Still SQL that ClickHouse 18.16 and current releases accept.
--
-- Idempotence: the aggregator emits each (component, hour) exactly once per run, and a replay
-- (restart, re-emission) produces a row with the same sort key. ReplacingMergeTree(version)
-- keeps one row per sort key, the highest version, when parts merge. Until then duplicates
-- can coexist, so readers either use FINAL (flow_components FINAL) or take argMax(..., version)
-- per key before summing. Never sum() the raw table without one of them.
--
-- Additivity: every measure is a sum over windows (and groups), so any set of hours, lags, camera
-- pairs, zones or sites is a sum of rows. Roll-ups and periods are GROUP BY queries.
--
-- Integers only (the privacy-by-schema rule of the warehouse: no stored floats outside
-- privacy_params). nn2 can exceed 64 bits and is split: nn2 = nn2_hi * 2^32 + nn2_lo.
--
-- Sort key: a flow query fixes a parameter set, window length and camera pairs, then scans
-- hours, so (params_version, window_seconds, origin, destination, hour) come first and the row
-- identity (kind, lag_lo, lag_hi) last. Monthly partitions, as for the other hourly tables.
--
-- kind = 'lag'   lag_lo = lag_hi = d: co-occurrences and window products at lag d
-- kind = 'range' an SE range [lag_lo, lag_hi] the aggregator was configured for: exact variance terms
-- kind = 'far'   lag_lo <= |d| <= lag_hi, both directions: s and nn for kappa = sum(s) / sum(nn)

CREATE TABLE IF NOT EXISTS {db}.flow_components
(
    params_version String,
    window_seconds UInt32,
    hour DateTime,
    origin_site String,
    origin_camera String,
    dest_site String,
    dest_camera String,
    kind String,
    lag_lo Int16,
    lag_hi Int16,
    s Int64,
    nn UInt64,
    qq UInt64,
    qn UInt64,
    nn2_hi UInt64,
    nn2_lo UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, window_seconds, origin_site, origin_camera, dest_site, dest_camera, hour, kind, lag_lo, lag_hi);

-- Occurrences (real + fictitious) per camera-hour and the windows of the hour that had any:
-- what footfall_hourly derives from per-window cells today.
CREATE TABLE IF NOT EXISTS {db}.footfall_components
(
    params_version String,
    window_seconds UInt32,
    site_id String,
    camera_id String,
    hour DateTime,
    occurrences UInt64,
    windows UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, window_seconds, site_id, camera_id, hour);
