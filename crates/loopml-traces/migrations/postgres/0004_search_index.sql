-- Tag and metadata equality searches walk a page newest first: each pair carries its trace's
-- experiment and start time, kept equal to the trace's by the writers and by a trigger when
-- the trace's start time changes (OTLP spans first, then StartTraceV3).
ALTER TABLE trace_tags ADD COLUMN experiment_id BIGINT;
ALTER TABLE trace_tags ADD COLUMN request_time BIGINT;
ALTER TABLE trace_metadata ADD COLUMN experiment_id BIGINT;
ALTER TABLE trace_metadata ADD COLUMN request_time BIGINT;
UPDATE trace_tags x SET experiment_id = t.experiment_id, request_time = t.request_time
    FROM traces t WHERE t.trace_id = x.trace_id;
UPDATE trace_metadata x SET experiment_id = t.experiment_id, request_time = t.request_time
    FROM traces t WHERE t.trace_id = x.trace_id;
CREATE INDEX trace_tags_search
    ON trace_tags (experiment_id, key, value, request_time DESC, trace_id DESC);
CREATE INDEX trace_metadata_search
    ON trace_metadata (experiment_id, key, value, request_time DESC, trace_id DESC);
CREATE FUNCTION traces_time_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE trace_tags SET request_time = NEW.request_time, experiment_id = NEW.experiment_id
        WHERE trace_id = NEW.trace_id;
    UPDATE trace_metadata SET request_time = NEW.request_time, experiment_id = NEW.experiment_id
        WHERE trace_id = NEW.trace_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER traces_time_sync AFTER UPDATE OF request_time, experiment_id ON traces
    FOR EACH ROW
    WHEN (OLD.request_time IS DISTINCT FROM NEW.request_time
          OR OLD.experiment_id IS DISTINCT FROM NEW.experiment_id)
    EXECUTE FUNCTION traces_time_sync();
