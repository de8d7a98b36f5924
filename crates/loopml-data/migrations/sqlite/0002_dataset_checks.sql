-- Checks run against a stored dataset version over HTTP: validation results and drift reports,
-- kept with the version they checked (the current side, for drift).
CREATE TABLE dataset_checks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('validation', 'drift')),
    against       TEXT,
    success       INTEGER NOT NULL,
    summary       TEXT    NOT NULL,
    definition    TEXT    NOT NULL,
    result        TEXT    NOT NULL,
    report_html   TEXT    NOT NULL,
    creation_time INTEGER NOT NULL
);
CREATE INDEX dataset_checks_version ON dataset_checks (name, version, id);
