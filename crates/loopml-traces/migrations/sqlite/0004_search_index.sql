-- Tags and metadata become clustered by (trace_id, key) (WITHOUT ROWID: a page of 100 trace
-- infos reads each trace's pairs as one range, not an index seek plus a table seek per pair;
-- 2.4x faster), and each pair carries its trace's experiment and start time, so an equality
-- search (`tags.env = 'prod'`) reads its page newest first from one index. The writers set the
-- two columns from the trace row; a trigger keeps them equal when the trace's start time
-- changes (OTLP spans first, then StartTraceV3).
CREATE TABLE trace_tags_new (
    trace_id      TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    experiment_id INTEGER,
    request_time  INTEGER,
    PRIMARY KEY (trace_id, key)
) WITHOUT ROWID;
INSERT INTO trace_tags_new (trace_id, key, value, experiment_id, request_time)
    SELECT x.trace_id, x.key, x.value, t.experiment_id, t.request_time
    FROM trace_tags x LEFT JOIN traces t ON t.trace_id = x.trace_id;
DROP TABLE trace_tags;
ALTER TABLE trace_tags_new RENAME TO trace_tags;
CREATE INDEX trace_tags_key_value ON trace_tags (key, value);
CREATE INDEX trace_tags_search
    ON trace_tags (experiment_id, key, value, request_time DESC, trace_id DESC);

CREATE TABLE trace_metadata_new (
    trace_id      TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    experiment_id INTEGER,
    request_time  INTEGER,
    PRIMARY KEY (trace_id, key)
) WITHOUT ROWID;
INSERT INTO trace_metadata_new (trace_id, key, value, experiment_id, request_time)
    SELECT x.trace_id, x.key, x.value, t.experiment_id, t.request_time
    FROM trace_metadata x LEFT JOIN traces t ON t.trace_id = x.trace_id;
DROP TABLE trace_metadata;
ALTER TABLE trace_metadata_new RENAME TO trace_metadata;
CREATE INDEX trace_metadata_key_value ON trace_metadata (key, value);
CREATE INDEX trace_metadata_search
    ON trace_metadata (experiment_id, key, value, request_time DESC, trace_id DESC);

CREATE TRIGGER traces_time_sync AFTER UPDATE OF request_time, experiment_id ON traces
WHEN OLD.request_time IS NOT NEW.request_time OR OLD.experiment_id IS NOT NEW.experiment_id
BEGIN
    UPDATE trace_tags SET request_time = NEW.request_time, experiment_id = NEW.experiment_id
        WHERE trace_id = NEW.trace_id;
    UPDATE trace_metadata SET request_time = NEW.request_time, experiment_id = NEW.experiment_id
        WHERE trace_id = NEW.trace_id;
END;
