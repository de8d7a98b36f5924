#!/usr/bin/env bash
# The whole test suite, from a fresh machine: lint, build, Rust unit/integration/end-to-end
# tests, then the compatibility suite with the real `mlflow` client against the real binary.
# `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Kubernetes manifests: kustomize render + schema validation, offline (scripts/validate-k8s.sh)"
scripts/validate-k8s.sh

step "ONNX Runtime for the serving tests (from PyPI's onnxruntime wheel)"
LOOPML_ORT_LIB=$(scripts/setup-ort.sh)
export LOOPML_ORT_LIB
# The serving tests fail, rather than skip, when the library is missing.
export LOOPML_REQUIRE_ORT=1

# Tests run in the release profile so the compat suite reuses the same build.
step "cargo test (unit, integration, end-to-end)"
cargo test --workspace --release --locked

# `cargo test` above built target/release/loopml for the binary's integration tests, with the
# workspace's test feature set; a separate `cargo build --bin loopml` would resolve features
# without the dev-dependencies and rebuild a dozen crates (4-5 minutes on 2 cores) for nothing.
step "the loopml binary (built by cargo test)"
test -x target/release/loopml || cargo build --release --locked --bin loopml
target/release/loopml --version

step "python venv with the real mlflow client"
scripts/setup-venv.sh

step "compatibility suite: real mlflow client against loopml server"
export LOOPML_BIN="$PWD/target/release/loopml"
.venv/bin/python -m pytest compat/mlflow -q -p no:cacheprovider

# The same behaviour on the parts a team scales out to: Debian's PostgreSQL (started here, no
# systemd; one fresh database per test or per compat server), an S3-compatible server (moto,
# from PyPI; one prefix per test or per compat server) and Debian's Redis (change notes).
step "PostgreSQL, S3 and Redis for the scale-out tests (scripts/postgres.sh, s3.sh, redis.sh)"
# A folder and a free port of this run's own for each service: a server left behind by an
# earlier run, or another run on the same machine, can neither collide with it nor be reused.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
services_dir=$(mktemp -d /tmp/loopml-test-services.XXXXXX)
chmod 755 "$services_dir"
pg_port=$(free_port)
s3_port=$(free_port)
redis_port=$(free_port)
export LOOPML_PG_DIR="$services_dir/pg" LOOPML_PG_PORT="$pg_port"
export LOOPML_S3_DIR="$services_dir/s3" LOOPML_S3_PORT="$s3_port"
export LOOPML_REDIS_DIR="$services_dir/redis" LOOPML_REDIS_PORT="$redis_port"
trap 'scripts/postgres.sh stop; scripts/s3.sh stop; scripts/redis.sh stop; rm -rf "$services_dir"' EXIT
PG_URL=$(scripts/postgres.sh start)
S3_URL=$(scripts/s3.sh start)
REDIS_URL=$(scripts/redis.sh start)
eval "$(scripts/s3.sh env)"
echo "PostgreSQL: $PG_URL  S3: $S3_URL  Redis: $REDIS_URL"

# Same workspace and features as above, so cargo reuses the build: every crate's unit tests
# (the store's conformance suite and artifact backends among them) and the service-level
# integration tests.
step "cargo test on PostgreSQL + S3 (store conformance, artifact backends, tracking, registry, datasets, gateway keys, traces)"
LOOPML_TEST_DATABASE_URL="$PG_URL" LOOPML_TEST_DATABASE_CA=$(scripts/postgres.sh ca) \
  LOOPML_TEST_ARTIFACTS_URL=s3://loopml-test LOOPML_TEST_REDIS_URL="$REDIS_URL" cargo test --workspace --release --locked \
  --lib --test api --test webhooks --test versions --test keys --test traces

step "compatibility suite on PostgreSQL + S3 + Redis: real mlflow client against loopml --database-url postgres:// --artifacts-destination s3:// --redis-url redis://"
COMPAT_DATABASE_URL="$PG_URL" COMPAT_ARTIFACTS_URL=s3://loopml-test COMPAT_REDIS_URL="$REDIS_URL" \
  .venv/bin/python -m pytest compat/mlflow -q -p no:cacheprovider

# Replicas without Redis converge on their timers: the same replica tests, on those.
step "replica tests on PostgreSQL without Redis (timers instead of change notes)"
COMPAT_DATABASE_URL="$PG_URL" .venv/bin/python -m pytest compat/mlflow/test_replicas.py -q -p no:cacheprovider
