-- Evaluation datasets (mlflow.genai.datasets): records upserted by the hash of their inputs.
CREATE TABLE eval_datasets (
    dataset_id       TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    tags             TEXT NOT NULL,
    digest           TEXT NOT NULL,
    created_time     INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL,
    created_by       TEXT,
    last_updated_by  TEXT
);
CREATE INDEX eval_datasets_name ON eval_datasets (name);
CREATE INDEX eval_datasets_created ON eval_datasets (created_time);

CREATE TABLE eval_dataset_experiments (
    dataset_id    TEXT NOT NULL,
    experiment_id INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, experiment_id)
);
CREATE INDEX eval_dataset_experiments_experiment ON eval_dataset_experiments (experiment_id);

CREATE TABLE eval_dataset_records (
    record_id        TEXT PRIMARY KEY,
    dataset_id       TEXT NOT NULL,
    inputs_hash      TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    expectations     TEXT,
    outputs          TEXT,
    tags             TEXT,
    source           TEXT,
    source_type      TEXT NOT NULL,
    created_time     INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL,
    created_by       TEXT,
    last_updated_by  TEXT,
    UNIQUE (dataset_id, inputs_hash)
);
CREATE INDEX eval_dataset_records_dataset ON eval_dataset_records (dataset_id, created_time);
