-- Monitors (the spec as JSON), their results as one time series per monitor and check, and
-- alerts as an outbox: an alert is written in the same transaction as the result that raised
-- it and stays `pending` until every webhook took it and its pipeline started, so a crash or a
-- webhook that is down loses none.
CREATE TABLE monitors (
    name        TEXT    PRIMARY KEY,
    spec        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE monitor_results (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor       TEXT    NOT NULL,
    check_name    TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    evaluated_at  INTEGER NOT NULL,
    window_start  INTEGER,
    window_end    INTEGER,
    rows          INTEGER NOT NULL,
    status        TEXT    NOT NULL,
    value         REAL,
    threshold     REAL,
    message       TEXT    NOT NULL,
    details       TEXT    NOT NULL
);
CREATE INDEX monitor_results_by_check ON monitor_results (monitor, check_name, evaluated_at);

CREATE TABLE monitor_alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor        TEXT    NOT NULL,
    check_name     TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_attempt   INTEGER NOT NULL,
    last_error     TEXT,
    delivered_at   INTEGER,
    payload        TEXT    NOT NULL,
    delivered_to   TEXT    NOT NULL DEFAULT '[]',
    pipeline       TEXT
);
CREATE INDEX monitor_alerts_pending ON monitor_alerts (status, next_attempt);
CREATE INDEX monitor_alerts_by_check ON monitor_alerts (monitor, check_name, created_at);
