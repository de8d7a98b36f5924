-- The scorer registry: serialized scorers, versioned per experiment and name.
CREATE TABLE scorers (
    scorer_id     TEXT PRIMARY KEY,
    experiment_id INTEGER NOT NULL,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    serialized    TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    UNIQUE (experiment_id, name, version)
);
