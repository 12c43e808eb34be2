-- Entries and exits across each camera's counting line (pipeline/vision/lines.py), per window and
-- direction. One row per Kafka record; ReplacingMergeTree on (..., kafka_partition, kafka_offset)
-- makes a re-delivered record replace itself, as for demographic counts.
CREATE TABLE IF NOT EXISTS {db}.line_crossings
(
    site_id String,
    camera_id String,
    window_start DateTime,
    window_seconds UInt32,
    line String,
    direction String,
    crossings UInt32,
    params_version String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (site_id, camera_id, window_start, line, direction, kafka_partition, kafka_offset);
