-- Users (MLflow's auth app: username, password hash, admin flag), their permissions on
-- experiments, registered models and prompts, the bearer tokens loopml issues, and the audit log.
CREATE TABLE auth_users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE auth_permissions (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    permission    TEXT NOT NULL,
    UNIQUE (user_id, resource_type, resource_id)
);
CREATE INDEX auth_permissions_resource ON auth_permissions (resource_type, resource_id);

CREATE TABLE auth_tokens (
    id         TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    read_only  INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

CREATE TABLE auth_audit (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    username    TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX auth_audit_time ON auth_audit (at_ms);
