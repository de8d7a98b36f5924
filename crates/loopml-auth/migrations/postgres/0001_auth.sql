-- Users (MLflow's auth app: username, password hash, admin flag), their permissions on
-- experiments, registered models and prompts, the bearer tokens loopml issues, and the audit log.
CREATE TABLE auth_users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

CREATE TABLE auth_permissions (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    permission    TEXT NOT NULL,
    UNIQUE (user_id, resource_type, resource_id)
);
CREATE INDEX auth_permissions_resource ON auth_permissions (resource_type, resource_id);

CREATE TABLE auth_tokens (
    id         TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    read_only  BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

CREATE TABLE auth_audit (
    id          BIGSERIAL PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    username    TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX auth_audit_time ON auth_audit (at_ms);
