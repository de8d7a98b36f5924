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

step "ONNX Runtime for the serving tests (from PyPI's onnxruntime wheel)"
LOOPML_ORT_LIB=$(scripts/setup-ort.sh)
export LOOPML_ORT_LIB
# The serving tests fail, rather than skip, when the library is missing.
export LOOPML_REQUIRE_ORT=1

# Tests run in the release profile so the compat suite reuses the same build.
step "cargo test (unit, integration, end-to-end)"
cargo test --workspace --release --locked

step "build the loopml binary"
cargo build --release --locked --bin loopml

step "python venv with the real mlflow client"
scripts/setup-venv.sh

step "compatibility suite: real mlflow client against loopml server"
export LOOPML_BIN="$PWD/target/release/loopml"
.venv/bin/python -m pytest compat/mlflow -q -p no:cacheprovider
