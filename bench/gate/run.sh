#!/usr/bin/env bash
# The fair gate's scoring (two versions on one holdout, ROC AUC + paired bootstrap):
# loopml's POST /api/2.0/loopml/models/compare vs the same in Python (pandas + onnxruntime +
# sklearn). Env: BENCH_ROWS (100000), BENCH_RESAMPLES (1000), BENCH_REPEAT (3), LOOPML_BIN.
# Uses the compat venv (.venv: mlflow, scikit-learn, skl2onnx, onnxruntime).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
loopml_bin=${LOOPML_BIN:-$root/target/release/loopml}
py=$root/.venv/bin/python
[[ -x $py ]] || bash "$root/scripts/setup-venv.sh"
[[ -x $loopml_bin ]] || (cd "$root" && cargo build --release -p loopml)
ort=${LOOPML_ORT_LIB:-$root/.cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0}
[[ -f $ort ]] || bash "$root/scripts/setup-ort.sh" >&2
export LOOPML_ORT_LIB=$ort MLFLOW_DISABLE_TELEMETRY=true
work=$(mktemp -d /tmp/loopml-bench-gate.XXXXXX)
"$loopml_bin" server --port 0 --data-dir "$work/data" >"$work/out" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [[ -s $work/out ]] && break; sleep 0.1; done
url=$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["url"])' "$work/out")
"$py" "$here/bench.py" --url "$url" --loopml "$loopml_bin" --rows "${BENCH_ROWS:-100000}" \
  --resamples "${BENCH_RESAMPLES:-1000}" --repeat "${BENCH_REPEAT:-3}"
