-- The scorer registry: serialized scorers, versioned per experiment and name.
CREATE TABLE scorers (
    scorer_id     TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    serialized    TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    UNIQUE (experiment_id, name, version)
);
