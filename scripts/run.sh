#!/usr/bin/env bash
# The main job on a fresh machine: fetches ONNX Runtime for model serving when it is missing
# (scripts/setup-ort.sh, from PyPI), then builds and runs `loopml server` on the embedded
# defaults (SQLite + ./loopml-data). Arguments go to `loopml server`, e.g. --port 5001 or
# --model churn=model.onnx. Without network the server still starts; only loading a model then
# reports the missing library.
set -euo pipefail
cd "$(dirname "$0")/.."
if lib=$(scripts/setup-ort.sh); then
  export LOOPML_ORT_LIB="${LOOPML_ORT_LIB:-$lib}"
else
  echo "warning: ONNX Runtime could not be fetched; serving models will not work" >&2
fi
exec cargo run --release --locked --bin loopml -- server "$@"
