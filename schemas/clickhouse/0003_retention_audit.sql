-- Retention audit: every frame the edges issued, and views over the deletion receipts.
CREATE TABLE IF NOT EXISTS {db}.frame_ledger
(
    frame_id String,
    site_id String,
    camera_id String,
    captured_at DateTime,
    captured_at_ms UInt64,
    expires_at_ms UInt64,
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(captured_at)
ORDER BY (site_id, camera_id, captured_at, frame_id, kafka_partition, kafka_offset);

-- Capture-to-deletion latency per site, camera and hour (first receipt of each frame).
CREATE VIEW IF NOT EXISTS {db}.deletion_latency AS
SELECT
    site_id,
    camera_id,
    toStartOfHour(captured_at) AS hour,
    count() AS frames,
    quantile(0.5)(latency_ms) AS p50_ms,
    quantile(0.95)(latency_ms) AS p95_ms,
    quantile(0.99)(latency_ms) AS p99_ms,
    max(latency_ms) AS max_ms,
    countIf(outcome = 'SWEPT') AS swept
FROM
(
    SELECT frame_id, any(site_id) AS site_id, any(camera_id) AS camera_id, any(captured_at) AS captured_at,
           min(latency_ms) AS latency_ms, argMin(outcome, deleted_at_ms) AS outcome
    FROM {db}.deletion_receipts
    GROUP BY frame_id
)
GROUP BY site_id, camera_id, hour;

-- Frames whose TTL has passed with no deletion receipt at all: the blob may still exist.
CREATE VIEW IF NOT EXISTS {db}.missing_receipts AS
SELECT site_id, camera_id, frame_id, captured_at, expires_at_ms
FROM {db}.frame_ledger
WHERE expires_at_ms < toUInt64(toUnixTimestamp(now())) * 1000
  AND frame_id NOT IN (SELECT frame_id FROM {db}.deletion_receipts);
