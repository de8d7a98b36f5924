-- Each series row holds its latest point (largest (step, timestamp, value)), so a log-batch
-- moves it forward by the integer series id instead of upserting a second table keyed by the
-- run id and key text.
ALTER TABLE metric_series ADD COLUMN value REAL NOT NULL DEFAULT 0;
ALTER TABLE metric_series ADD COLUMN timestamp INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metric_series ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE metric_series ADD COLUMN is_nan INTEGER NOT NULL DEFAULT 0;
INSERT INTO metric_series (run_uuid, key)
SELECT l.run_uuid, l.key FROM latest_metrics l
WHERE NOT EXISTS (SELECT 1 FROM metric_series s WHERE s.run_uuid = l.run_uuid AND s.key = l.key);
UPDATE metric_series
SET value = l.value, timestamp = l.timestamp, step = l.step, is_nan = l.is_nan
FROM latest_metrics l
WHERE l.run_uuid = metric_series.run_uuid AND l.key = metric_series.key;
-- A series with points but no latest row (not written by any released version): its newest point.
UPDATE metric_series
SET (value, timestamp, step, is_nan) = (
    SELECT p.value, p.timestamp, p.step, p.is_nan FROM metric_points p
    WHERE p.series_id = metric_series.series_id
    ORDER BY p.step DESC, p.timestamp DESC, p.value DESC LIMIT 1)
WHERE NOT EXISTS (SELECT 1 FROM latest_metrics l
                  WHERE l.run_uuid = metric_series.run_uuid AND l.key = metric_series.key)
  AND EXISTS (SELECT 1 FROM metric_points p WHERE p.series_id = metric_series.series_id);
DROP TABLE latest_metrics;
