-- The LLM gateway: virtual keys (stored by SHA-256, never the key), teams and users with their
-- budgets and limits; the request (spend) log, written in batches off the request path and
-- bounded by retention; and spend per day, key, team, user and model group, kept incrementally
-- so reports never sum the raw log.
CREATE TABLE gateway_teams (
    team_id               TEXT    PRIMARY KEY,
    team_alias            TEXT,
    models                TEXT    NOT NULL,
    max_budget            REAL,
    budget_duration       TEXT,
    budget_reset_at       INTEGER,
    rpm_limit             INTEGER,
    tpm_limit             INTEGER,
    max_parallel_requests INTEGER,
    spend                 REAL    NOT NULL DEFAULT 0,
    blocked               INTEGER NOT NULL DEFAULT 0,
    metadata              TEXT    NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE gateway_users (
    user_id               TEXT    PRIMARY KEY,
    user_email            TEXT,
    user_role             TEXT,
    models                TEXT    NOT NULL,
    max_budget            REAL,
    budget_duration       TEXT,
    budget_reset_at       INTEGER,
    rpm_limit             INTEGER,
    tpm_limit             INTEGER,
    max_parallel_requests INTEGER,
    spend                 REAL    NOT NULL DEFAULT 0,
    metadata              TEXT    NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE gateway_keys (
    token                 TEXT    PRIMARY KEY,
    key_name              TEXT    NOT NULL,
    key_alias             TEXT,
    user_id               TEXT,
    team_id               TEXT,
    models                TEXT    NOT NULL,
    max_budget            REAL,
    budget_duration       TEXT,
    budget_reset_at       INTEGER,
    rpm_limit             INTEGER,
    tpm_limit             INTEGER,
    max_parallel_requests INTEGER,
    spend                 REAL    NOT NULL DEFAULT 0,
    expires               INTEGER,
    blocked               INTEGER NOT NULL DEFAULT 0,
    metadata              TEXT    NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE UNIQUE INDEX gateway_keys_by_alias ON gateway_keys (key_alias);
CREATE INDEX gateway_keys_by_team ON gateway_keys (team_id);
CREATE INDEX gateway_keys_by_user ON gateway_keys (user_id);

CREATE TABLE gateway_spend_logs (
    request_id        TEXT    PRIMARY KEY,
    api_key           TEXT    NOT NULL,
    key_alias         TEXT,
    user_id           TEXT,
    team_id           TEXT,
    end_user          TEXT,
    call_type         TEXT    NOT NULL,
    model_group       TEXT    NOT NULL,
    deployment        TEXT,
    model             TEXT,
    stream            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    spend             REAL    NOT NULL,
    start_time        INTEGER NOT NULL,
    end_time          INTEGER NOT NULL,
    latency_ms        REAL    NOT NULL,
    overhead_ms       REAL    NOT NULL,
    status            TEXT    NOT NULL,
    http_status       INTEGER NOT NULL,
    error             TEXT,
    request_body      TEXT,
    response_body     TEXT
);
CREATE INDEX gateway_spend_logs_by_time ON gateway_spend_logs (start_time);
CREATE INDEX gateway_spend_logs_by_key ON gateway_spend_logs (api_key, start_time);
CREATE INDEX gateway_spend_logs_by_team ON gateway_spend_logs (team_id, start_time);
CREATE INDEX gateway_spend_logs_by_user ON gateway_spend_logs (user_id, start_time);

CREATE TABLE gateway_spend_daily (
    day               TEXT    NOT NULL,
    api_key           TEXT    NOT NULL,
    team_id           TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    model_group       TEXT    NOT NULL,
    requests          INTEGER NOT NULL,
    failures          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    spend             REAL    NOT NULL,
    PRIMARY KEY (day, api_key, team_id, user_id, model_group)
);
