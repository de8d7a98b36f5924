-- Model registry tables. Registered models have an integer key so a rename touches one row;
-- versions are numbered per model from `next_version`, so a deleted version's number is never
-- handed out again (as in MLflow).
CREATE TABLE registered_models (
    id                INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: events refer to it
    name              TEXT    NOT NULL UNIQUE,
    creation_time     INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    description       TEXT,
    next_version      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX registered_models_updated ON registered_models (last_updated_time);

CREATE TABLE registered_model_tags (
    model INTEGER NOT NULL REFERENCES registered_models (id) ON DELETE CASCADE,
    key   TEXT    NOT NULL,
    value TEXT    NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID;
CREATE INDEX registered_model_tags_kv ON registered_model_tags (key, value);

CREATE TABLE model_versions (
    model             INTEGER NOT NULL REFERENCES registered_models (id) ON DELETE CASCADE,
    version           INTEGER NOT NULL,
    creation_time     INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    description       TEXT,
    user_id           TEXT,
    stage             TEXT    NOT NULL DEFAULT 'None',
    source            TEXT    NOT NULL,
    storage_location  TEXT    NOT NULL,
    run_id            TEXT,
    run_link          TEXT,
    model_id          TEXT,
    status            TEXT    NOT NULL DEFAULT 'READY',
    status_message    TEXT,
    PRIMARY KEY (model, version)
) WITHOUT ROWID;
CREATE INDEX model_versions_run ON model_versions (run_id);
CREATE INDEX model_versions_logged_model ON model_versions (model_id);
CREATE INDEX model_versions_updated ON model_versions (last_updated_time);

CREATE TABLE model_version_tags (
    model   INTEGER NOT NULL,
    version INTEGER NOT NULL,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (model, version, key),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX model_version_tags_kv ON model_version_tags (key, value);

CREATE TABLE registered_model_aliases (
    model   INTEGER NOT NULL,
    alias   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX registered_model_aliases_version ON registered_model_aliases (model, version);

-- The change feed: one row per registry change, written in the same transaction as the change.
-- `model_key` ties events to the registered model itself, so its history survives a rename
-- and a re-created model of the same name does not inherit the old one's history.
CREATE TABLE registry_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    model_key  INTEGER,
    model_name TEXT    NOT NULL,
    version    INTEGER,
    data       TEXT    NOT NULL
);
CREATE INDEX registry_events_key ON registry_events (model_key, seq);
CREATE INDEX registry_events_name ON registry_events (model_name, seq);

-- Outgoing webhooks (MLflow's webhook API) and their durable delivery state.
CREATE TABLE registry_webhooks (
    id                TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    description       TEXT,
    url               TEXT    NOT NULL,
    events            TEXT    NOT NULL,
    secret            TEXT,
    status            TEXT    NOT NULL,
    creation_time     INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    cursor            INTEGER NOT NULL
);

CREATE TABLE registry_webhook_deliveries (
    id            TEXT    PRIMARY KEY,
    webhook_id    TEXT    NOT NULL,
    event_seq     INTEGER NOT NULL,
    event         TEXT    NOT NULL,
    attempt       INTEGER NOT NULL,
    time          INTEGER NOT NULL,
    status_code   INTEGER,
    response_body TEXT,
    error         TEXT,
    success       INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL
);
CREATE INDEX registry_webhook_deliveries_hook ON registry_webhook_deliveries (webhook_id, time);
