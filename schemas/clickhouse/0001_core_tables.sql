-- Core landing tables, fed by the sink. Only aggregates and frame-level receipts: no person
-- identifier, embedding, crop or per-person timestamp has a column here.
-- kafka_partition/kafka_offset record where each row came from: the sink resumes from them
-- after a crash (so nothing is counted twice), and ReplacingMergeTree folds any replay that
-- slipped through into one row on merge.
-- Kept to SQL that both ClickHouse 18.16 (Debian) and current releases accept.

CREATE TABLE IF NOT EXISTS {db}.group_occurrences
(
    site_id String,
    camera_id String,
    window_start DateTime,
    window_seconds UInt32,
    group_id UInt16,
    occurrences UInt32,
    params_version String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (site_id, camera_id, window_start, group_id, kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.demographic_counts
(
    site_id String,
    camera_id String,
    window_start DateTime,
    window_seconds UInt32,
    age_band String,
    gender String,
    persons UInt32,
    params_version String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (site_id, camera_id, window_start, age_band, gender, kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.deletion_receipts
(
    frame_id String,
    site_id String,
    camera_id String,
    captured_at DateTime,
    captured_at_ms UInt64,
    deleted_at_ms UInt64,
    latency_ms Int64,
    outcome String,
    deleted_by String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(captured_at)
ORDER BY (site_id, camera_id, captured_at, frame_id, kafka_partition, kafka_offset);
