-- Tag and metadata equality searches walk a page newest first: each pair carries its trace's
-- experiment and start time, kept equal to the trace's by the writers and by a trigger when
-- the trace's start time changes (OTLP spans first, then StartTraceV3).
ALTER TABLE trace_tags ADD COLUMN experiment_id INTEGER;
ALTER TABLE trace_tags ADD COLUMN request_time INTEGER;
ALTER TABLE trace_metadata ADD COLUMN experiment_id INTEGER;
ALTER TABLE trace_metadata ADD COLUMN request_time INTEGER;
UPDATE trace_tags SET
    experiment_id = (SELECT t.experiment_id FROM traces t WHERE t.trace_id = trace_tags.trace_id),
    request_time = (SELECT t.request_time FROM traces t WHERE t.trace_id = trace_tags.trace_id);
UPDATE trace_metadata SET
    experiment_id = (SELECT t.experiment_id FROM traces t WHERE t.trace_id = trace_metadata.trace_id),
    request_time = (SELECT t.request_time FROM traces t WHERE t.trace_id = trace_metadata.trace_id);
CREATE INDEX trace_tags_search
    ON trace_tags (experiment_id, key, value, request_time DESC, trace_id DESC);
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
