-- flow_components sorted by day ahead of the camera pair (issue 14, chain scale; docs/SCALING.md §3).
--
-- Why: with the pair ahead of the hour, a camera pair's month is about 1.5 granules, so a question
-- or a roll-up build for one site and one day could not skip the other days of that site's
-- month: `flowctl rollups build` read a site's whole month for each day it built (2.1-2.7 s per
-- site-day on this 2-core machine, 0.4-0.45 s after this change), and "all camera pairs of one site for one day"
-- read the month too. With toDate(hour) first, a site-day is a contiguous range of the key;
-- a camera pair over a month becomes one small range per day. toDate(hour) is a function of hour,
-- so the rows ReplacingMergeTree collapses are the same as before.
--
-- The sorting key of a MergeTree cannot be reordered in place, so the rows are copied into a
-- table of the new layout, which then takes the old one's name. Run it as every migration, with
-- the sink stopped: rows landed between the copy and the rename would stay in the old table.
-- It costs the time of reading and writing the table once (about 0.5-1 million rows/s here) and
-- its size again on disk until the old copy is dropped. On a cluster the statements run ON
-- CLUSTER (the copy once, replicated from there), and the table keeps the ZooKeeper path it was
-- created with (/clickhouse/tables/{shard}/<db>/flow_components_by_day).
-- A run that stopped part-way starts again from the top: a half-filled copy is dropped first,
-- and after the rename the copy is made from the renamed table itself.
DROP TABLE IF EXISTS {db}.flow_components_by_day;

CREATE TABLE IF NOT EXISTS {db}.flow_components_by_day AS {db}.flow_components
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (params_version, window_seconds, toDate(hour), origin_site, origin_camera, dest_site, dest_camera, hour, kind, lag_lo, lag_hi);

INSERT INTO {db}.flow_components_by_day SELECT * FROM {db}.flow_components;

RENAME TABLE {db}.flow_components TO {db}.flow_components_by_pair, {db}.flow_components_by_day TO {db}.flow_components;

DROP TABLE IF EXISTS {db}.flow_components_by_pair;
