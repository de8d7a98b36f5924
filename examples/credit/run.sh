#!/usr/bin/env bash
# The credit demo: string features, skl2onnx's default ZipMap outputs and a fair gate.
#   v1 trained on last year's loans → champion, served → a year later v2 retrains on fresh data
#   and beats v1 on the fresh holdout → promoted → a flattering v3 (an unpruned tree whose run
#   logged its training-set AUC of 1.0) is rejected: on the same holdout it is worse.
#
# Usage: examples/credit/run.sh      (LOOPML_BIN, LOOPML_ORT_LIB and CREDIT_WORK_DIR as for churn)
#
# Each step prints what it did and a line `STEP <name> key=value …` for
# compat/mlflow/test_credit_demo.py; anything unexpected stops it with `FAILED: …`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CURRENT=setup
fail() { echo "FAILED: [$CURRENT] $*" >&2; echo "STEP failed at=$CURRENT"; exit 1; }
say() { CURRENT=$1; printf '\n[%s] %s\n' "$1" "$2"; }

if [ -z "${LOOPML_BIN:-}" ]; then
  for b in "$ROOT/target/release/loopml" "$ROOT/target/debug/loopml"; do
    if [ -x "$b" ] && { [ -z "${LOOPML_BIN:-}" ] || [ "$b" -nt "$LOOPML_BIN" ]; }; then LOOPML_BIN=$b; fi
  done
fi
[ -n "${LOOPML_BIN:-}" ] && [ -x "$LOOPML_BIN" ] || fail "no loopml binary: cargo build --release -p loopml, or set LOOPML_BIN"
LOOPML_BIN=$(cd "$(dirname "$LOOPML_BIN")" && pwd)/$(basename "$LOOPML_BIN")
if [ -x "$ROOT/.venv/bin/python" ]; then export PATH="$ROOT/.venv/bin:$PATH"; fi
python -c "import mlflow, sklearn, skl2onnx, onnx, pandas, requests" 2>/dev/null \
  || fail "python lacks mlflow/scikit-learn/skl2onnx/onnx/pandas/requests: run scripts/setup-venv.sh"
ort="$ROOT/.cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0"
if [ -z "${LOOPML_ORT_LIB:-}" ] && [ -z "${ORT_DYLIB_PATH:-}" ]; then
  [ -f "$ort" ] || fail "no ONNX Runtime for the server: run scripts/setup-ort.sh (or set LOOPML_ORT_LIB)"
  export LOOPML_ORT_LIB="$ort"
fi
unset MLFLOW_RUN_ID MLFLOW_EXPERIMENT_ID MLFLOW_EXPERIMENT_NAME MLFLOW_REGISTRY_URI \
  MLFLOW_TRACKING_TOKEN MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD LOOPML_CONFIG LOOPML_SERVER
export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_HTTP_REQUEST_MAX_RETRIES=2 PYTHONUNBUFFERED=1

if [ -n "${CREDIT_WORK_DIR:-}" ]; then
  WORK=$CREDIT_WORK_DIR; mkdir -p "$WORK"; KEEP=1
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/loopml-credit.XXXXXX"); KEEP=0
fi
WORK=$(cd "$WORK" && pwd)
EX="$WORK/credit"
mkdir -p "$EX/data" "$WORK/bin" "$WORK/data"
cp "$HERE"/*.py "$HERE"/*.yaml "$EX/"
ln -sf "$LOOPML_BIN" "$WORK/bin/loopml"   # the pipeline's store-holdout step calls `loopml`
export PATH="$WORK/bin:$PATH"

SERVER_PID=""
cleanup() {
  status=$?
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ] && [ -f "$WORK/server.log" ]; then tail -n 25 "$WORK/server.log" >&2 || true; fi
  if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say server "start a loopml server on a free port"
NO_COLOR=1 "$LOOPML_BIN" server --host 127.0.0.1 --port 0 --data-dir "$WORK/data" \
  >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/server.out" ] && break; sleep 0.1; done
# --port 0: the server's first stdout line says where it listens.
URL=$(python -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["url"])' "$WORK/server.out") \
  || fail "the server printed no address"
export MLFLOW_TRACKING_URI="$URL"
echo "STEP server url=$URL"

# Runs the pipeline; prints `key=value` of the gate for the STEP lines; returns its exit status.
pipeline() {
  local name=$1; shift
  set +e
  (cd "$EX" && "$LOOPML_BIN" pipeline run pipeline.yaml --server "$URL" --json "$@") >"$WORK/$name.out" 2>&1
  local code=$?
  set -e
  python - "$WORK/$name.out" "$code" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
report = json.loads(text[text.index("\n{\n") + 1:])
steps = {s["name"]: s for s in report["steps"]}
g, t = steps["gate"], steps["train"]
out = g.get("outputs", {})
print(" ".join(f"{k}={v}" for k, v in {
    "exit": sys.argv[2], "outcome": report["outcome"], "gate": g["status"],
    "version": steps["register"]["outputs"].get("version", "-"),
    "champion": out.get("champion", "-"),
    "champion_holdout_auc": out.get("champion_value", "-"),
    "challenger_holdout_auc": out.get("challenger_value", "-"),
    "rows": out.get("rows", "-"), "bound": out.get("improvement_bound", "-"),
    "dataset": out.get("dataset", "-"),
}.items()))
for line in text.splitlines():
    if "loopml: gate:" in line:
        print("#", line.split("loopml: gate: ", 1)[1], file=sys.stderr)
PY
  return "$code"
}

say first "v1: last year's loans, logistic regression on income, debt and region (a string)"
line=$(pipeline first --param period=1) || fail "the first pipeline failed: $line"
echo "STEP first $line"
case "$line" in *"outcome=SUCCEEDED"*"version=1"*) ;; *) fail "v1 was not promoted: $line" ;; esac

say serve "deploy credit@champion and ask it about one applicant"
"$LOOPML_BIN" deploy apply "$EX/deployment.yaml" --server "$URL" >/dev/null || fail "deploy apply failed"
ask() {
  python - "$URL" <<'PY'
import json, sys, time, requests
url = sys.argv[1]
body = {"dataframe_split": {"columns": ["income", "debt", "region"], "data": [[30.0, 25.0, "south"]]}}
for _ in range(100):
    r = requests.post(f"{url}/invocations?model=credit", json=body, timeout=30)
    if r.status_code == 200:
        break
    time.sleep(0.1)
r.raise_for_status()
pred = r.json()["predictions"][0]
p1 = pred["output_probability"]["1"]
print(f"version={r.headers.get('x-loopml-model-version')} label={pred['output_label']} p_default={p1:.3f}")
PY
}
line=$(ask) || fail "serving failed"
echo "STEP serve $line"

say retrain "a year later: v2 retrains on fresh loans; the gate scores v1 and v2 on the same fresh holdout"
line=$(pipeline retrain --param period=2 --param seed=2) || fail "the retraining failed: $line"
echo "STEP retrain $line"
case "$line" in *"gate=SUCCEEDED"*"version=2"*) ;; *) fail "v2 did not pass the gate: $line" ;; esac

say flattering "v3: an unpruned tree whose run logs its training-set AUC; the same gate rejects it"
set +e
line=$(pipeline flattering --param period=2 --param seed=2 --param model=tree --param flags=--in-sample)
code=$?
set -e
[ "$code" = 3 ] || fail "a rejected gate should exit 3, got $code: $line"
own=$(python - "$URL" <<'PY'
import sys, requests
url = sys.argv[1]
def own(version):
    mv = requests.get(f"{url}/api/2.0/mlflow/model-versions/get", params={"name": "credit", "version": version}, timeout=10).json()
    run = requests.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": mv["model_version"]["run_id"]}, timeout=10).json()
    return {m["key"]: m["value"] for m in run["run"]["data"]["metrics"]}["roc_auc"]
print(f"own_v2={own('2'):.3f} own_v3={own('3'):.3f}")
PY
)
echo "STEP flattering $line $own"
case "$line" in *"gate=REJECTED"*"version=3"*) ;; *) fail "v3 was not rejected: $line" ;; esac

say after "the champion is still v2, and serving answers with it"
line=$(ask) || fail "serving failed"
echo "STEP after $line"
case "$line" in *"version=2"*) ;; *) fail "serving should answer with v2: $line" ;; esac
echo "STEP done"
