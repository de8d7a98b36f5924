-- MLflow 3's roles (RBAC): named sets of permissions on resource patterns (an id or `*`),
-- assigned to users; a user's effective permission folds their own grants with their roles'.
CREATE TABLE auth_roles (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    workspace   TEXT NOT NULL,
    description TEXT,
    UNIQUE (workspace, name)
);

CREATE TABLE auth_role_permissions (
    id               INTEGER PRIMARY KEY,
    role_id          INTEGER NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    resource_type    TEXT NOT NULL,
    resource_pattern TEXT NOT NULL,
    permission       TEXT NOT NULL,
    UNIQUE (role_id, resource_type, resource_pattern)
);
CREATE INDEX auth_role_permissions_resource ON auth_role_permissions (resource_type, resource_pattern);

CREATE TABLE auth_role_users (
    id      INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    UNIQUE (user_id, role_id)
);
CREATE INDEX auth_role_users_role ON auth_role_users (role_id);
