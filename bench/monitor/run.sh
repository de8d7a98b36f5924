#!/usr/bin/env bash
# Monitor evaluation cost: a drift check over a 100,000-prediction window, loopml's monitor
# (inference log read + window written + drift of every column) vs Evidently 0.7's
# DataDriftPreset on the same reference and window. See README.md.
#
# Env: BENCH_ROWS (window size, default 100000), BENCH_REPEAT (evaluations, default 5),
#      LOOPML_BIN (default target/release/loopml), BENCH_VENV (default bench/data/.venv, made by
#      bench/data/setup.sh: pandas, pyarrow, evidently).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rows=${BENCH_ROWS:-100000}
repeat=${BENCH_REPEAT:-5}
venv=${BENCH_VENV:-$root/bench/data/.venv}
loopml_bin=${LOOPML_BIN:-$root/target/release/loopml}
export RUST_BACKTRACE=0 DO_NOT_TRACK=1
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[[ -x $loopml_bin ]] || (cd "$root" && cargo build --release -p loopml)
[[ -x $venv/bin/python ]] || bash "$root/bench/data/setup.sh"
ort=${LOOPML_ORT_LIB:-$root/.cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0}
[[ -f $ort ]] || bash "$root/scripts/setup-ort.sh" >&2
export LOOPML_ORT_LIB=$ort
model=$root/bench/serving/work/rf.onnx
[[ -f $model ]] || bash "$root/bench/serving/setup.sh"

work=$(mktemp -d /tmp/loopml-bench-monitor.XXXXXX)
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/deployment.yaml" <<YAML
name: scored
variants:
  - {name: main, model: '$model'}
policy: {strategy: single}
YAML
setsid "$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$work/data" \
  --deployment "$work/deployment.yaml" >"$work/server.log" 2>&1 &
pid=$!
trap 'kill -- -$pid 2>/dev/null || kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
log "loopml server on :$port (pid $pid), work dir $work"
"$venv/bin/python" "$here/bench.py" --url "http://127.0.0.1:$port" --loopml "$loopml_bin" \
  --work "$work" --rows "$rows" --repeat "$repeat" --evidently "$root/bench/data/evidently_drift.py" \
  --venv-python "$venv/bin/python" --out "$here/results/$(date -u +%Y%m%dT%H%M%SZ).json"
