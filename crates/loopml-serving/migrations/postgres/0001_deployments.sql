-- Deployments created over HTTP or `loopml deploy apply`: the spec as written (JSON) and its live
-- state (status, rollback reason, per-variant counters and bandit rewards, previous spec,
-- events). Deployments defined by a file on the command line are not stored: the file is their
-- source of truth.
CREATE TABLE deployments (
    name        TEXT    PRIMARY KEY,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
