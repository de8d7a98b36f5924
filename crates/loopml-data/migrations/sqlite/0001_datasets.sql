-- Dataset versions. A version's bytes live once in the artifact store under
-- datasets/sha256/<digest>.<ext> (content-addressed: identical content is stored once).
CREATE TABLE dataset_versions (
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    digest        TEXT    NOT NULL,
    format        TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    rows          INTEGER NOT NULL,
    columns       INTEGER NOT NULL,
    schema        TEXT    NOT NULL,
    profile       TEXT    NOT NULL,
    source        TEXT,
    creation_time INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE UNIQUE INDEX dataset_versions_content ON dataset_versions (name, digest);
CREATE INDEX dataset_versions_digest ON dataset_versions (digest);
