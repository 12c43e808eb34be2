-- Site roll-ups of the published flow components (issue 14, chain scale; docs/SCALING.md).
--
-- Why: a site-level question over a month of a 50-site chain sums the components of 19,000
-- camera pairs x 360 hours x 34 rows (233 million rows), which no 2-core server answers in
-- seconds. Every term the site-level estimator needs is a sum over the camera pairs of a site
-- pair and over hours, so it can be summed once per closed day: `flowctl rollups build` writes,
-- per ordered site pair and hour, the sums over the camera pairs that were *active* in that hour
-- (pipeline.aggregator.estimate: window products above what fictitious persons alone give), for
-- one lag range (the aggregator's published SE range). A question over built days then reads
-- about 50 x 360 rows instead of 233 million. Nothing here is finer than the published tier it is
-- summed from (sums of published rows: post-processing, no new privacy cost), and it holds
-- integers only, like every published table.
--
-- kind = 'range' (lag_lo, lag_hi = the range): the range row's s, qq, qn, nn2 and noise summed
--   over the active camera pairs (exact = 1 when every one of them had a range row; otherwise
--   the reader sums the lag rows), nn over the range's lag rows, both far bands, the active and
--   seen camera pair-hours, and the roll-up's design-effect ingredients: resid_micro = 10^6 x the
--   sum over active camera pairs of e = s_far - k nn_far (k: that camera pair's far level over
--   the active hours of its UTC day), resid_sq_micro = 10^6 x the sum of e^2. Over a period the
--   design effect is sum_h (resid_h)^2 / sum_h resid_sq_h (pipeline.aggregator.estimate.design_effect).
-- kind = 'lag' (lag_lo = lag_hi = d, d in the range): lag d's terms over the same active pairs.
--
-- ReplacingMergeTree(version): rebuilding a day replaces its rows; readers use FINAL. Sorted by
-- kind and lags before the hour, so a question over the range rows reads no lag row (31 times
-- as many): the year of a 50-site chain is 220,000 range rows among 6.5 million.
-- flow_rollup_days records which (origin site, day) a build covered, so a question uses the
-- roll-ups only where they exist and the camera rows elsewhere.
CREATE TABLE IF NOT EXISTS {db}.flow_site_rollups
(
    params_version String,
    window_seconds UInt32,
    hour DateTime,
    origin_site String,
    dest_site String,
    kind String,
    lag_lo Int16,
    lag_hi Int16,
    s Int64,
    nn Int64,
    qq Int64,
    qn Int64,
    nn2_hi UInt64,
    nn2_lo UInt64,
    noise_var_milli UInt64,
    exact UInt8,
    s_far_in Int64,
    nn_far_in Int64,
    noise_var_far_in_milli UInt64,
    s_far_out Int64,
    nn_far_out Int64,
    noise_var_far_out_milli UInt64,
    pairs_active UInt32,
    pairs_seen UInt32,
    resid_micro Int64,
    resid_sq_micro UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, window_seconds, origin_site, dest_site, kind, lag_lo, lag_hi, hour);

CREATE TABLE IF NOT EXISTS {db}.flow_rollup_days
(
    params_version String,
    window_seconds UInt32,
    lag_lo Int16,
    lag_hi Int16,
    origin_site String,
    day Date,
    camera_pair_hours UInt64,
    built_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (params_version, window_seconds, lag_lo, lag_hi, origin_site, day);
