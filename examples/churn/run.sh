#!/usr/bin/env bash
# The churn demo, end to end, on a loopml server of its own:
#   train v1 → register → deploy as champion → traffic → drifted traffic → monitor alerts →
#   pipeline retrains on fresh data → gate passes → v2 promoted → serving answers with v2.
#
# Usage: examples/churn/run.sh
#
# Environment:
#   LOOPML_BIN       the loopml binary (default: the newer of target/release/loopml and
#                    target/debug/loopml)
#   LOOPML_ORT_LIB   ONNX Runtime library (default: .cache/onnxruntime/1.32.0/…, from
#                    scripts/setup-ort.sh)
#   CHURN_WORK_DIR   where the server's data, the copied example and the logs go; kept afterwards
#                    (default: a temp folder, removed at exit)
#
# Each step prints what it did for people and a line `STEP <name> key=value …` for machines
# (compat/mlflow/test_churn_demo.py). Any unexpected transition stops the script with
# `FAILED: …` and a non-zero status.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOTAL=12
CURRENT="setup"
T0=$(date +%s%N)

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
secs() { awk -v ms="$(ms_since "$T0")" 'BEGIN { printf "%.1f", ms / 1000 }'; }
say() {
  CURRENT="$2"
  printf '\n[%s/%s] %s  (%s s)\n' "$1" "$TOTAL" "$3" "$(secs)"
}
fail() {
  echo "FAILED: [$CURRENT] $*" >&2
  echo "STEP failed at=$CURRENT"
  exit 1
}

# -- what the demo needs ----------------------------------------------------------------------
if [ -z "${LOOPML_BIN:-}" ]; then
  for b in "$ROOT/target/release/loopml" "$ROOT/target/debug/loopml"; do
    if [ -x "$b" ] && { [ -z "${LOOPML_BIN:-}" ] || [ "$b" -nt "$LOOPML_BIN" ]; }; then
      LOOPML_BIN=$b
    fi
  done
fi
[ -n "${LOOPML_BIN:-}" ] && [ -x "$LOOPML_BIN" ] \
  || fail "no loopml binary: build it (cargo build --release -p loopml) or set LOOPML_BIN"
LOOPML_BIN=$(cd "$(dirname "$LOOPML_BIN")" && pwd)/$(basename "$LOOPML_BIN")

if [ -x "$ROOT/.venv/bin/python" ]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
python -c "
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in
             ['mlflow', 'sklearn', 'skl2onnx', 'onnx', 'onnxruntime', 'pandas', 'requests']))" \
  || fail "python lacks mlflow/scikit-learn/skl2onnx/onnx/onnxruntime: run scripts/setup-venv.sh"

ort="$ROOT/.cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0"
if [ -z "${LOOPML_ORT_LIB:-}" ] && [ -z "${ORT_DYLIB_PATH:-}" ]; then
  [ -f "$ort" ] || fail "no ONNX Runtime for the server: run scripts/setup-ort.sh (or set LOOPML_ORT_LIB)"
  export LOOPML_ORT_LIB="$ort"
fi
for cmd in "data add" "deploy apply" "monitor evaluate"; do
  # shellcheck disable=SC2086
  "$LOOPML_BIN" $cmd --help >/dev/null 2>&1 || fail "$LOOPML_BIN has no \`loopml $cmd\` command"
done

# Settings from the caller's shell that would send clients elsewhere or reconfigure the server.
unset MLFLOW_RUN_ID MLFLOW_EXPERIMENT_ID MLFLOW_EXPERIMENT_NAME MLFLOW_REGISTRY_URI \
  MLFLOW_TRACKING_TOKEN MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD LOOPML_CONFIG \
  LOOPML_WINDOW_DATASET
export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_HTTP_REQUEST_MAX_RETRIES=2 PYTHONUNBUFFERED=1

if [ -n "${CHURN_WORK_DIR:-}" ]; then
  WORK=$CHURN_WORK_DIR
  mkdir -p "$WORK"
  [ -z "$(ls -A "$WORK")" ] || fail "CHURN_WORK_DIR $WORK is not empty"
  KEEP=1
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/loopml-churn.XXXXXX")
  KEEP=0
fi
WORK=$(cd "$WORK" && pwd)
EX="$WORK/churn"            # a copy of this folder: runs leave nothing in the repository
mkdir -p "$EX" "$WORK/bin" "$WORK/data"
cp "$HERE"/*.py "$HERE"/*.yaml "$EX/"
# Pipeline steps call `loopml data add`; the server passes its PATH on to pipelines it starts.
ln -s "$LOOPML_BIN" "$WORK/bin/loopml"
export PATH="$WORK/bin:$PATH"

SERVER_PID=""
cleanup() {
  status=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- last lines of the server log ($WORK/server.log) ---" >&2
    tail -n 25 "$WORK/server.log" >&2 || true
  fi
  if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

demo() { python "$EX/demo.py" "$@"; }
loopml() { "$LOOPML_BIN" "$@"; }

# -- 1. server --------------------------------------------------------------------------------
say 1 server "start a loopml server of our own"
PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
(cd "$WORK" && NO_COLOR=1 exec "$LOOPML_BIN" server --host 127.0.0.1 --port "$PORT" --data-dir "$WORK/data") \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do
  kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited at start (see $WORK/server.log)"
  [ "$(curl -s -m 1 "$URL/health" 2>/dev/null)" = "OK" ] && break
  sleep 0.05
done
[ "$(curl -s -m 1 "$URL/health")" = "OK" ] || fail "the server did not answer /health within 10 s"
export MLFLOW_TRACKING_URI="$URL" LOOPML_SERVER="$URL"
echo "loopml $("$LOOPML_BIN" --version | awk '{print $2}') at $URL (binary $LOOPML_BIN, data $WORK/data)"
echo "STEP server url=$URL"
cd "$EX"

# -- 2. reference data ------------------------------------------------------------------------
say 2 data "generate the reference data (original population) and store it as a dataset version"
python generate.py --rows 4000 --shift 0 --seed 7 --out data/reference.csv 2>&1
added=$(loopml data add --name churn-train data/reference.csv) || fail "loopml data add failed"
echo "$added"
ref=$(echo "$added" | awk '{print $1}')
[ "$ref" = "churn-train@1" ] || fail "expected churn-train@1 (the monitor's reference), got '$ref'"
echo "STEP data reference=$ref rows=4000"

# -- 3. train v1 ------------------------------------------------------------------------------
say 3 train "train v1 (scikit-learn → ONNX, logged with the MLflow client)"
out=$(python train.py --data data/reference.csv --dataset-name churn-train 2>&1) \
  || { echo "$out"; fail "train.py failed"; }
echo "$out" | grep -v '^🏃\|^🧪' || true
line=$(echo "$out" | grep '^train: run_id=') || fail "train.py printed no run id"
V1_RUN=$(echo "$line" | sed 's/.*run_id=\([0-9a-f]*\).*/\1/')
V1_AUC=$(echo "$line" | sed 's/.*roc_auc=\([0-9.]*\).*/\1/')
echo "STEP train model=v1 run_id=$V1_RUN roc_auc=$V1_AUC"

# -- 4. register ------------------------------------------------------------------------------
say 4 register "register v1 as churn version 1 and point the alias champion at it"
demo register --run-id "$V1_RUN" --model churn --alias champion 2>&1 \
  | grep -v 'Waiting up to\|^Successfully registered\|^Created version' \
  || fail "registering v1 failed"

# -- 5. deploy --------------------------------------------------------------------------------
say 5 deploy "deploy churn (single variant on models:/churn@champion)"
loopml deploy apply deployment.yaml || fail "loopml deploy apply failed"
demo wait-serving --deployment churn --version 1 --timeout 10 || fail "churn does not serve v1"
echo "STEP deploy name=churn strategy=single version=1"

# -- 6. traffic -------------------------------------------------------------------------------
say 6 traffic "send 300 requests from the original population, labels as feedback"
demo send --deployment churn --rows 300 --shift 0 --seed 21 --phase reference --feedback \
  || fail "sending reference traffic failed"

# -- 7. monitor, before -----------------------------------------------------------------------
say 7 monitor "apply the monitor and evaluate it: everything should be ok"
loopml monitor apply monitor.yaml || fail "loopml monitor apply failed"
set +e
loopml monitor evaluate churn-health
rc=$?
set -e
[ "$rc" = 0 ] || fail "loopml monitor evaluate exited $rc before any drift (expected 0)"
demo monitor --name churn-health --phase before --expect ok || fail "the monitor is not ok before drift"

# -- 8. drifted traffic -----------------------------------------------------------------------
say 8 drift "send 300 requests from the shifted population, labels as feedback"
demo send --deployment churn --rows 300 --shift 1 --seed 22 --phase drifted --feedback \
  || fail "sending drifted traffic failed"

# -- 9. monitor, after ------------------------------------------------------------------------
say 9 alert "evaluate the monitor again: drift and lost performance should raise alerts"
DRIFT_MS=$(( $(date +%s%N) / 1000000 ))
set +e
loopml monitor evaluate churn-health
rc=$?
set -e
[ "$rc" = 1 ] || fail "loopml monitor evaluate exited $rc after drift (expected 1: breached)"
demo monitor --name churn-health --phase after --expect breach \
  --require-breach feature_drift --require-breach performance_roc_auc \
  || fail "the monitor did not breach as expected"
demo wait-alert --name churn-health --timeout 30 --out "$WORK/alerts.json" \
  || fail "no alert was delivered"
STARTED=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["started"])' "$WORK/alerts.json")

# -- 10. pipeline -----------------------------------------------------------------------------
say 10 pipeline "the retraining pipeline runs on fresh data (generate → validate → train → register → gate → promote)"
if [ "$STARTED" = "True" ]; then
  echo "the server started the pipeline from the alert; waiting for it to finish"
  BY=server
else
  echo "the alert did not start the pipeline (see above): running it here instead"
  BY=fallback
  loopml pipeline --help >/dev/null 2>&1 \
    || fail "the server did not start the pipeline and this loopml has no \`pipeline\` command"
  # The window the server stored when the checks breached, as the server would pass it.
  window=$(demo window-dataset --name churn-health) || fail "cannot list datasets"
  echo "window dataset: ${window:-none}"
  set +e
  LOOPML_WINDOW_DATASET=$window loopml pipeline run pipeline.yaml --server "$URL" --param rows=4000
  rc=$?
  set -e
  case $rc in
    0) ;;
    3) fail "loopml pipeline run: the gate rejected the challenger (exit 3)" ;;
    *) fail "loopml pipeline run failed (exit $rc)" ;;
  esac
fi
demo pipeline-report --pipeline churn-retrain --experiment churn --after "$DRIFT_MS" \
  --started-by "$BY" --timeout 150 || fail "the pipeline did not succeed"

# -- 11. promoted -----------------------------------------------------------------------------
say 11 promote "the alias champion moves to version 2"
demo wait-alias --model churn --alias champion --version 2 --timeout 30 \
  || fail "champion was not promoted to v2"

# -- 12. serving v2 ---------------------------------------------------------------------------
say 12 serve "the deployment follows the alias: answers come from version 2"
demo wait-serving --deployment churn --version 2 --timeout 30 || fail "churn does not serve v2"
demo send --deployment churn --rows 300 --shift 1 --seed 23 --phase after-retrain \
  || fail "sending traffic to v2 failed"

echo
echo "== lineage of the new champion =="
loopml lineage models:/churn/2 || echo "(loopml lineage failed; not part of the checked loop)"
echo
echo "== deployment =="
loopml deploy status churn || true
SECS=$(secs)
echo
echo "churn demo: done in $SECS s: v1 (roc_auc $V1_AUC) → drift alert → pipeline ($BY) → v2 champion, serving v2"
echo "STEP done seconds=$SECS"
