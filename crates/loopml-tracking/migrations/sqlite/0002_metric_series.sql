-- Narrow metric keys: each (run, key) series gets a small integer id once, and every point is
-- keyed by (series_id, timestamp, step, value, is_nan) instead of repeating the run id and the
-- key text in every row. History reads are one range of that key.
CREATE TABLE metric_series (
    series_id INTEGER PRIMARY KEY,
    run_uuid  TEXT NOT NULL,
    key       TEXT NOT NULL,
    UNIQUE (run_uuid, key)
);
INSERT INTO metric_series (run_uuid, key) SELECT DISTINCT run_uuid, key FROM metrics;

-- Every logged point; identical points are stored once. The key order is the history order.
CREATE TABLE metric_points (
    series_id INTEGER NOT NULL REFERENCES metric_series (series_id),
    timestamp INTEGER NOT NULL,
    step      INTEGER NOT NULL,
    value     REAL NOT NULL,
    is_nan    INTEGER NOT NULL,
    PRIMARY KEY (series_id, timestamp, step, value, is_nan)
) WITHOUT ROWID;
INSERT INTO metric_points (series_id, timestamp, step, value, is_nan)
SELECT s.series_id, m.timestamp, m.step, m.value, m.is_nan
FROM metrics m JOIN metric_series s ON s.run_uuid = m.run_uuid AND s.key = m.key;

DROP TABLE metrics;
