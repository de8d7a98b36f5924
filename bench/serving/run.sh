#!/usr/bin/env bash
# Serving benchmark: the same scikit-learn forest served by `mlflow models serve` (sklearn pyfunc;
# also the ONNX file through mlflow's onnx flavor) and by loopml, with a minimal axum + ort server
# (rawort/) as the floor; plus a heavy MLP for dynamic batching on/off. Batch-1 requests at
# concurrency 1, 16 and 64 from one load generator (bench/tracking/loadgen `infer`), each server
# started fresh on 127.0.0.1 with RUST_BACKTRACE=0 and checked for correct answers before timing.
# Prints a Markdown table (stdout), progress on stderr, and writes
# bench/serving/results/<timestamp>.json. See README.md.
#
# Env: BENCH_SECONDS (measured seconds per concurrency, default 10), BENCH_WARMUP_S (default 2),
#      BENCH_ROUNDS (default 3: every case is run that many times, round-robin, and the table
#      gives medians; this machine's noise between runs is ±20%),
#      BENCH_MLFLOW_SECONDS (default BENCH_SECONDS), BENCH_CONCURRENCY (default 1,16,64),
#      BENCH_SERVERS (default: all cases, see below), BENCH_MLFLOW_WORKERS (default 1, mlflow's
#      own default), BENCH_BATCH_MAX (default 64), BENCH_BATCH_DELAY_US (default 200),
#      LOOPML_BIN (default target/release/loopml, built with cargo only when missing),
#      BENCH_ORT_LIB (default .cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0, fetched by
#      scripts/setup-ort.sh when missing), BENCH_VENV (default bench/serving/.venv, made by
#      setup.sh), BENCH_KEEP=1 (keep the temp dir with server logs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP_S:-2}
mlflow_seconds=${BENCH_MLFLOW_SECONDS:-$seconds}
concurrency=${BENCH_CONCURRENCY:-1,16,64}
rounds=${BENCH_ROUNDS:-3}
all_cases=mlflow-sklearn,mlflow-onnx,rawort-rf,rawort-rf-threads,loopml-rf,loopml-rf-batch,rawort-mlp,loopml-mlp,loopml-mlp-batch
cases=${BENCH_SERVERS:-$all_cases}
mlflow_workers=${BENCH_MLFLOW_WORKERS:-1}
batch_max=${BENCH_BATCH_MAX:-64}
batch_delay_us=${BENCH_BATCH_DELAY_US:-200}
venv=${BENCH_VENV:-$here/.venv}
ort_lib=${BENCH_ORT_LIB:-$root/.cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0}
loopml_bin=${LOOPML_BIN:-$root/target/release/loopml}
work_models=$here/work
ready_timeout_s=180
export RUST_BACKTRACE=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$cases," == *",$1,"* ]]; }
posnum() { awk -v s="$1" 'BEGIN { exit !(s + 0 > 0) }'; }

posnum "$seconds" || die "BENCH_SECONDS must be a positive number (got '$seconds')"
posnum "$mlflow_seconds" || die "BENCH_MLFLOW_SECONDS must be a positive number"
[[ $warmup =~ ^[0-9.]+$ ]] || die "BENCH_WARMUP_S must be a number"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
for c in ${concurrency//,/ }; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_CONCURRENCY entry '$c'"; done
for s in ${cases//,/ }; do [[ ",$all_cases," == *",$s,"* ]] || die "unknown case '$s' in BENCH_SERVERS ($all_cases)"; done

# ------------------------------------------------------------------------------------------------
# How each server is started. case_cmd CASE PORT DIR sets: cmd (argv), model (rf|mlp), name (the
# model's name in the URL), format (oip|mlflow|mlflow-inputs), ready (readiness path).

# THE place that says how loopml is started (it will become `loopml serve --deployment FILE`).
# loopml_cmd NAME FILE PORT DIR BATCHING(on|off)
loopml_cmd() {
  local name=$1 file=$2 port=$3 dir=$4 batching=$5
  cmd=("$loopml_bin" serve --host 127.0.0.1 --port "$port" --data-dir "$dir/data"
    --model "$name=$file")
  if [[ $batching == on ]]; then
    cmd+=(--max-batch-size "$batch_max" --max-queue-delay-us "$batch_delay_us")
  fi
}

case_cmd() {
  local c=$1 port=$2 dir=$3
  case $c in
    mlflow-sklearn | mlflow-onnx)
      local m=rf_sklearn
      format=mlflow
      if [[ $c == mlflow-onnx ]]; then m=rf_onnx format=mlflow-inputs; fi
      cmd=("$venv/bin/mlflow" models serve -m "$work_models/$m" --env-manager local
        --host 127.0.0.1 -p "$port")
      [[ $mlflow_workers == 1 ]] || cmd+=(-w "$mlflow_workers")
      model=rf name=rf ready=/ping
      ;;
    rawort-rf | rawort-mlp | rawort-rf-threads)
      model=${c#rawort-}
      model=${model%-threads}
      cmd=("$here/rawort/target/release/rawort" --host 127.0.0.1 --port "$port"
        --model "$model=$work_models/$model.onnx")
      # The same per-session inference threads as loopml: the "same threading" floor.
      [[ $c == *-threads ]] && cmd+=(--threads)
      name=$model format=oip ready=/v2/models/$model/ready
      ;;
    loopml-*)
      local rest=${c#loopml-} batching=off
      [[ $rest == *-batch ]] && batching=on
      model=${rest%-batch}
      loopml_cmd "$model" "$work_models/$model.onnx" "$port" "$dir" "$batching"
      name=$model format=oip ready=/v2/models/$model/ready
      ;;
  esac
}

# ------------------------------------------------------------------------------------------------
# Process bookkeeping (as bench/tracking/run.sh): every server runs in its own session, so its
# whole tree is one process group; a trap stops them all on exit, Ctrl-C or TERM.
pgids=()
work=""
lg_pid=""
group_alive() {
  local p st
  for p in $(pgrep -g "$1" 2>/dev/null); do
    st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1) || continue
    [[ -n $st && $st != Z ]] && return 0
  done
  return 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$lg_pid" ]]; then kill -TERM "$lg_pid" 2>/dev/null || true; fi
  for g in "${pgids[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for g in "${pgids[@]}"; do
    local end=$((SECONDS + 5))
    while group_alive "$g" && ((SECONDS < end)); do sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  if [[ -n "$work" && -d "$work" ]]; then
    if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then log "kept $work"; else rm -rf "$work"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_server() {
  local g=$1
  kill -TERM -- "-$g" 2>/dev/null || true
  local end=$((SECONDS + 15))
  while group_alive "$g" && ((SECONDS < end)); do sleep 0.1; done
  kill -KILL -- "-$g" 2>/dev/null || true
  wait "$g" 2>/dev/null || true
  local keep=()
  for p in "${pgids[@]}"; do [[ $p == "$g" ]] || keep+=("$p"); done
  pgids=("${keep[@]+"${keep[@]}"}")
}

# in_bg CMD...: runs CMD in the background and waits, so that INT/TERM reach the trap at once.
in_bg() {
  local rc=0
  "$@" &
  lg_pid=$!
  wait "$lg_pid" || rc=$?
  lg_pid=""
  return "$rc"
}

# ------------------------------------------------------------------------------------------------
# Setup: venv, models, ONNX Runtime, the Rust pieces
BENCH_VENV=$venv bash "$here/setup.sh" || die "setup.sh failed"
py=$venv/bin/python
# `mlflow models serve` runs `bash -c "exec uvicorn ..."`: uvicorn must be on PATH.
export PATH="$venv/bin:$PATH"

if [[ -f $work_models/models.json && -f $work_models/rf.onnx && -f $work_models/mlp.onnx ]] &&
  cmp -s "$here/gen_models.py" "$work_models/gen_models.py.used"; then
  log "reusing models in $work_models"
else
  log "generating models into $work_models"
  "$py" "$here/gen_models.py" "$work_models" >"$work_models.gen.log" 2>&1 || {
    tail -n 20 "$work_models.gen.log" >&2
    die "gen_models.py failed"
  }
  cp "$here/gen_models.py" "$work_models/gen_models.py.used"
  rm -f "$work_models.gen.log"
fi

if [[ ! -f $ort_lib ]]; then
  [[ -z ${BENCH_ORT_LIB:-} ]] || die "BENCH_ORT_LIB=$BENCH_ORT_LIB does not exist"
  log "fetching ONNX Runtime (scripts/setup-ort.sh)"
  bash "$root/scripts/setup-ort.sh" >&2 || die "scripts/setup-ort.sh failed"
  [[ -f $ort_lib ]] || die "no $ort_lib after scripts/setup-ort.sh"
fi
export ORT_DYLIB_PATH=$ort_lib LOOPML_ORT_LIB=$ort_lib

log "building the load generator and the raw ort server (release)"
(cd "$root/bench/tracking/loadgen" && cargo build --release --quiet) || die "cannot build bench/tracking/loadgen"
lg="$root/bench/tracking/loadgen/target/release/loadgen"
if [[ ",$cases," == *",rawort-"* ]]; then
  (cd "$here/rawort" && cargo build --release --quiet) || die "cannot build bench/serving/rawort"
fi

if [[ ",$cases," == *",loopml-"* ]]; then
  if [[ ! -x $loopml_bin ]]; then
    [[ -z ${LOOPML_BIN:-} ]] || die "LOOPML_BIN=$LOOPML_BIN is not an executable"
    log "building loopml (cargo build --release --locked -p loopml)"
    (cd "$root" && cargo build --release --locked --quiet -p loopml) || die "cannot build loopml"
  fi
  "$loopml_bin" serve --help 2>/dev/null | grep -q -- --max-batch-size ||
    die "$loopml_bin has no 'serve --max-batch-size' (too old?)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/loopml-bench-serving.XXXXXX")
raw=$work/raw
mkdir -p "$raw"

# Versions and exact command lines (with placeholders) for the results file.
{
  if [[ ",$cases," == *",loopml-"* ]]; then
    v=$("$loopml_bin" --version 2>/dev/null | head -1 || echo unknown)
    if [[ -n ${LOOPML_BIN:-} ]]; then v="$v ($LOOPML_BIN, modified $(date -u -r "$loopml_bin" +%Y-%m-%dT%H:%M:%SZ))"; fi
    printf 'loopml\t%s\n' "$v"
  fi
  "$py" -c 'import importlib.metadata as m
for p in ("mlflow", "scikit-learn", "pandas", "numpy", "skl2onnx", "onnx", "onnxruntime", "uvicorn", "fastapi"):
    print(p, m.version(p), sep="\t")'
  printf 'libonnxruntime\t%s\n' "$(basename "$ort_lib")"
  printf 'rustc\t%s\n' "$(rustc --version 2>/dev/null || echo unknown)"
  printf 'python\t%s\n' "$("$py" -c 'import sys; print(sys.version.split()[0])')"
} >"$work/versions.tsv"
{
  for c in ${cases//,/ }; do
    case_cmd "$c" P DIR
    printf '%s\t%s\n' "$c" "${cmd[*]}" | sed "s#$root/##g; s#$HOME#~#g"
  done
} >"$work/commands.tsv"

# ------------------------------------------------------------------------------------------------
# One case: start the server, wait until ready and idle, verify its answers, then each
# concurrency in turn (each with its own warm-up), then stop it.
run_case() {
  local c=$1 r=$2 dir port pid url secs
  local pre=$raw/$c.r$r
  dir=$(mktemp -d "$work/$c.r$r.XXXX")
  port=$("$lg" freeport | tr -dc 0-9)
  case_cmd "$c" "$port" "$dir"
  url="http://127.0.0.1:$port"
  secs=$seconds
  [[ $c == mlflow-* ]] && secs=$mlflow_seconds
  local t0
  t0=$(date +%s%N)
  setsid "${cmd[@]}" >"$dir/server.log" 2>&1 </dev/null &
  pid=$!
  pgids+=("$pid")
  log "$c (round $r/$rounds): starting (pid $pid): ${cmd[*]}"
  local deadline=$((SECONDS + ready_timeout_s)) up=0
  while ((SECONDS < deadline)); do
    if ! group_alive "$pid"; then break; fi
    if "$lg" ready --url "$url" --path "$ready" --since-ns "$t0" --timeout-s 2 >"$pre.ready.json" 2>/dev/null; then
      up=1
      break
    fi
  done
  if ((up == 0)); then
    log "$c: not ready (exited or timed out); last lines of its log:"
    tail -n 15 "$dir/server.log" >&2 || true
    printf '{"case": "%s", "error": "server not ready"}\n' "$c" >"$pre.case.json"
    stop_server "$pid"
    return
  fi
  in_bg "$lg" settle --pid "$pid" --max-s 30 >"$pre.settle.json" || true
  "$lg" rss --pid "$pid" >"$pre.idle.json" || echo '{}' >"$pre.idle.json"
  local verify rc=0
  verify=$("$py" "$here/verify.py" --url "$url" --format "$format" --model "$model" --name "$name" \
    --verify "$work_models/verify.json") || rc=$?
  printf '%s\n' "$verify" >"$pre.verify.json"
  log "$c: ready in $(sed 's/.*"ready_ms":\([0-9.]*\).*/\1/' "$pre.ready.json") ms; verify: $verify"
  printf '{"case": "%s", "model": "%s", "format": "%s", "seconds": %s, "warmup_s": %s}\n' \
    "$c" "$model" "$format" "$secs" "$warmup" >"$pre.case.json"
  if ((rc != 0)); then
    log "$c: wrong answers, not timed; last lines of its log:"
    tail -n 15 "$dir/server.log" >&2 || true
    stop_server "$pid"
    return
  fi
  local rows=$work_models/rows_$model.json conc
  for conc in ${concurrency//,/ }; do
    local out=$pre.c$conc.json lrc=0
    in_bg timeout -k 10 "$(awk -v s="$secs" -v w="$warmup" 'BEGIN { print int(s + w + 180) }')" \
      "$lg" infer --url "$url" --format "$format" --model "$name" --rows "$rows" \
      --concurrency "$conc" --duration-s "$secs" --warmup-s "$warmup" --watch-pid "$pid" \
      >"$out.tmp" 2>"$dir/loadgen-c$conc.err" || lrc=$?
    if ((lrc == 0)); then
      mv "$out.tmp" "$out"
      log "$c c=$conc: $("$py" -c 'import json, sys
d = json.load(open(sys.argv[1])); l = d["latency_us"]; m = d.get("memory", {})
print("%.0f req/s, p50 %s us, p99 %s us, errors %d, other CPU %.2fs" % (d["req_per_s"], l["p50"], l["p99"],
      d["errors"]["count"], m.get("other_cpu_s", 0)))' "$out")"
    else
      local msg
      msg=$(tail -n 3 "$dir/loadgen-c$conc.err" | tr '\n"\\' '   ' | cut -c1-300)
      log "$c c=$conc: load generator failed (rc=$lrc): $msg"
      printf '{"error": "%s"}\n' "$msg" >"$out"
    fi
    if ! group_alive "$pid"; then
      log "$c: server died; last lines of its log:"
      tail -n 15 "$dir/server.log" >&2 || true
      break
    fi
  done
  stop_server "$pid"
}

log "cases: $cases; concurrency $concurrency; ${seconds}s per point (mlflow ${mlflow_seconds}s) after ${warmup}s warm-up; $rounds round(s)"
# Is the machine idle? CPU charged to processes (user+nice+system) over one second.
cpu_procs() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }
b0=$(cpu_procs)
sleep 1
busy=$(($(cpu_procs) - b0))
if ((busy > 10)); then
  log "warning: other processes use ${busy}% of a core: the numbers will be low and noisy (see the table's other CPU column)"
fi
for ((r = 1; r <= rounds; r++)); do
  for c in ${cases//,/ }; do run_case "$c" "$r"; done
done

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$py" "$here/report.py" --raw "$raw" --versions "$work/versions.tsv" --commands "$work/commands.tsv" \
  --cases "$cases" --concurrency "$concurrency" --rounds "$rounds" --models "$work_models/models.json" --root "$root" \
  --params "rounds=$rounds,seconds=$seconds,mlflow_seconds=$mlflow_seconds,warmup_s=$warmup,mlflow_workers=$mlflow_workers,batch_max=$batch_max,batch_delay_us=$batch_delay_us" \
  --json "$here/results/$stamp.json"
log "results: bench/serving/results/$stamp.json"
