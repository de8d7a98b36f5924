-- Counters every replica adds to (requests, errors, shadow copies, bandit rewards per variant):
-- an upsert that adds, so replicas never overwrite each other's counts. They used to live in
-- deployments.state; a server restoring an old state seeds them from there once.
CREATE TABLE deployment_counters (
    deployment       TEXT    NOT NULL,
    variant          TEXT    NOT NULL,
    requests         BIGINT NOT NULL DEFAULT 0,
    errors           BIGINT NOT NULL DEFAULT 0,
    shadow_requests  BIGINT NOT NULL DEFAULT 0,
    shadow_errors    BIGINT NOT NULL DEFAULT 0,
    rewards          BIGINT NOT NULL DEFAULT 0,
    reward_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, variant)
);

-- Each replica's latest outcomes per variant (one row per share, about once a second, holding
-- the latencies in µs, negative for a failure): the newest rows of every replica together are
-- the window a canary is judged on. Pruned to the newest window's worth of rows per variant.
CREATE TABLE deployment_outcomes (
    deployment  TEXT    NOT NULL,
    variant     TEXT    NOT NULL,
    at_us       BIGINT  NOT NULL,
    replica     TEXT    NOT NULL,
    outcomes    TEXT    NOT NULL,
    PRIMARY KEY (deployment, variant, at_us, replica)
);
