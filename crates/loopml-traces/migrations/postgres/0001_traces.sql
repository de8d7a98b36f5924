-- Traces (MLflow TraceInfoV3), their spans (kept as MLflow's trace JSON, with the columns
-- searches need), tags, request metadata, assessments and links to runs and prompts.
CREATE TABLE traces (
    trace_id          TEXT PRIMARY KEY,
    experiment_id     BIGINT NOT NULL,
    request_time      BIGINT NOT NULL,
    execution_ms      BIGINT,
    state             TEXT NOT NULL,
    client_request_id TEXT,
    request_preview   TEXT,
    response_preview  TEXT,
    name              TEXT,
    source_run        TEXT,
    finalized         BIGINT NOT NULL DEFAULT 0,
    span_count        BIGINT NOT NULL DEFAULT 0,
    input_tokens      BIGINT,
    output_tokens     BIGINT,
    cost              DOUBLE PRECISION
);
CREATE INDEX traces_experiment_time ON traces (experiment_id, request_time DESC, trace_id DESC);
CREATE INDEX traces_source_run ON traces (source_run);
CREATE INDEX traces_client_request ON traces (client_request_id);

CREATE TABLE trace_tags (
    trace_id TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
);
CREATE INDEX trace_tags_key_value ON trace_tags (key, value);

CREATE TABLE trace_metadata (
    trace_id TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
);
CREATE INDEX trace_metadata_key_value ON trace_metadata (key, value);

CREATE TABLE spans (
    trace_id       TEXT NOT NULL,
    span_id        TEXT NOT NULL,
    parent_span_id TEXT,
    name           TEXT NOT NULL,
    span_type      TEXT,
    status         TEXT NOT NULL,
    start_ns       BIGINT NOT NULL,
    end_ns         BIGINT NOT NULL,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    cost           DOUBLE PRECISION,
    content        TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX spans_name ON spans (name);

CREATE TABLE assessments (
    assessment_id TEXT PRIMARY KEY,
    trace_id      TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    value         TEXT,
    valid         BIGINT NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX assessments_trace ON assessments (trace_id);
CREATE INDEX assessments_name_value ON assessments (kind, name, value);

CREATE TABLE trace_runs (
    trace_id TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    PRIMARY KEY (trace_id, run_id)
);
CREATE INDEX trace_runs_run ON trace_runs (run_id);

CREATE TABLE trace_prompts (
    trace_id TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  TEXT NOT NULL,
    PRIMARY KEY (trace_id, name, version)
);
CREATE INDEX trace_prompts_version ON trace_prompts (name, version);
