-- First analyst-facing view: occurrences per camera and hour. Occurrences include the privacy
-- core's fictitious persons; estimators correct for their known rate.
CREATE VIEW IF NOT EXISTS {db}.camera_hourly_occurrences AS
SELECT
    site_id,
    camera_id,
    toStartOfHour(window_start) AS hour,
    params_version,
    sum(occurrences) AS occurrences,
    uniqExact(window_start) AS windows
FROM {db}.group_occurrences
GROUP BY site_id, camera_id, hour, params_version;
