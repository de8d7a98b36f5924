-- Each series row holds its latest point (largest (step, timestamp, value)), so a log-batch
-- moves it forward by the integer series id (a HOT update: no indexed column changes)
-- instead of upserting a second table keyed by the run id and key text. On
-- PostgreSQL that upsert was the largest share of a log-batch's cost.
ALTER TABLE metric_series
    ADD COLUMN value     DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN timestamp BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN step      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN is_nan    BIGINT NOT NULL DEFAULT 0;
INSERT INTO metric_series (run_uuid, key)
SELECT l.run_uuid, l.key FROM latest_metrics l
WHERE NOT EXISTS (SELECT 1 FROM metric_series s WHERE s.run_uuid = l.run_uuid AND s.key = l.key);
UPDATE metric_series s
SET value = l.value, timestamp = l.timestamp, step = l.step, is_nan = l.is_nan
FROM latest_metrics l
WHERE l.run_uuid = s.run_uuid AND l.key = s.key;
-- A series with points but no latest row (not written by any released version): its newest point.
UPDATE metric_series s
SET (value, timestamp, step, is_nan) = (
    SELECT p.value, p.timestamp, p.step, p.is_nan FROM metric_points p
    WHERE p.series_id = s.series_id
    ORDER BY p.step DESC, p.timestamp DESC, p.value DESC LIMIT 1)
WHERE NOT EXISTS (SELECT 1 FROM latest_metrics l WHERE l.run_uuid = s.run_uuid AND l.key = s.key)
  AND EXISTS (SELECT 1 FROM metric_points p WHERE p.series_id = s.series_id);
DROP TABLE latest_metrics;

-- No foreign key from points to series on PostgreSQL: its check locks the series row once per
-- point (FOR KEY SHARE), which cost a quarter of a log-batch's database time. Every point's
-- series id is read or created in the same transaction that writes the point, and series rows
-- are never deleted; the primary key still leads with series_id (the index a foreign key needs).
ALTER TABLE metric_points DROP CONSTRAINT IF EXISTS metric_points_series_id_fkey;
