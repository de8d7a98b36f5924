#!/usr/bin/env bash
# bench/genai: loopml vs `mlflow server` 3.17.2 on MLflow 3's GenAI API, side by side on this
# machine, SQLite for both: trace ingestion (10-span traces, 8 clients), search_traces over
# 100,000 traces (tag filter, and none), get_trace of a 200-span trace, load_prompt by alias;
# peak RSS and CPU. Prints a Markdown table with ratios and writes
# bench/genai/results/<UTC timestamp>.json. See README.md.
#
# Env: BENCH_SMOKE=1 (a short run: 400 traces, 2,000 seeded, fewer repetitions),
#      BENCH_TRACES (ingestion traces, default 5000), BENCH_SEARCH_TRACES (default 100000),
#      BENCH_SERVERS (default loopml,mlflow), BENCH_PHASES (default search,main),
#      BENCH_MLFLOW_SEED (store|http, default store: mlflow's 100k traces through its own
#      SqlAlchemyStore before the server starts), LOOPML_BIN (skip building loopml),
#      BENCH_TIMEOUT_S (per phase per server, default 3600), BENCH_KEEP=1 (keep the temp dir).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py="$root/.venv/bin/python"
smoke=${BENCH_SMOKE:-0}
if [[ $smoke == 1 ]]; then
  traces=${BENCH_TRACES:-400}
  search_traces=${BENCH_SEARCH_TRACES:-2000}
  reps=(--reps 20 --warmup 3)
  main_reps=(--get-reps 30 --get-warmup 3 --prompt-reps 50 --prompt-warmup 5)
else
  traces=${BENCH_TRACES:-5000}
  search_traces=${BENCH_SEARCH_TRACES:-100000}
  reps=(--reps 50 --warmup 5)
  main_reps=(--get-reps 100 --get-warmup 10 --prompt-reps 200 --prompt-warmup 20)
fi
servers=${BENCH_SERVERS:-loopml,mlflow}
phases=${BENCH_PHASES:-search,main}
mlflow_seed=${BENCH_MLFLOW_SEED:-store}
timeout_s=${BENCH_TIMEOUT_S:-3600}
mlflow_version=3.17.2
export MLFLOW_DISABLE_TELEMETRY=true
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
has() { [[ ",$servers," == *",$1,"* ]]; }
wants() { [[ ",$phases," == *",$1,"* ]]; }
for s in ${servers//,/ }; do case $s in loopml | mlflow) ;; *) die "unknown server '$s'" ;; esac done
for p in ${phases//,/ }; do case $p in search | main) ;; *) die "unknown phase '$p'" ;; esac done
[[ $mlflow_seed == store || $mlflow_seed == http ]] || die "BENCH_MLFLOW_SEED must be store or http"

# ------------------------------------------------------------------------------------------------
# Processes: every server in its own session (setsid), so its whole tree (mlflow's uvicorn
# workers and job consumers) is one process group; the trap stops them all.
pgids=()
work=""
child_pid=""
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
  if [[ -n "$child_pid" ]]; then kill -TERM "$child_pid" 2>/dev/null || true; fi
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

# in_bg CMD...: runs CMD in the background and waits, so INT/TERM reach the trap at once.
in_bg() {
  local rc=0
  "$@" &
  child_pid=$!
  wait "$child_pid" || rc=$?
  child_pid=""
  return "$rc"
}

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

# start_server NAME DIR PORT: sets srv_pid (also the process group id)
start_server() {
  local name=$1 dir=$2 port=$3 cmd
  case $name in
    loopml) cmd=("$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$dir/data") ;;
    mlflow) cmd=("$root/.venv/bin/mlflow" server --backend-store-uri "sqlite:///$dir/mlflow.db"
      --serve-artifacts --artifacts-destination "$dir/art" --host 127.0.0.1 --port "$port") ;;
  esac
  (cd "$dir" && exec setsid "${cmd[@]}" >"$dir/server.log" 2>&1 </dev/null) &
  srv_pid=$!
  pgids+=("$srv_pid")
}

# wait_ready NAME DIR URL PID: /health, then an API call that needs the store, then idle
wait_ready() {
  local name=$1 dir=$2 url=$3 pid=$4
  if ! in_bg "$lg" ready --url "$url" --path /health --timeout-s 180 >"$dir/ready.json" ||
    ! in_bg "$lg" ready --url "$url" --path '/api/2.0/mlflow/experiments/get?experiment_id=0' \
      --timeout-s 60 >/dev/null; then
    log "$name did not become ready; last lines of its log:"
    tail -n 20 "$dir/server.log" >&2 || true
    return 1
  fi
  # mlflow keeps starting job-consumer processes after its first 200: time nothing until the
  # tree is idle (bench/tracking/README.md).
  in_bg "$lg" settle --pid "$pid" --max-s 60 >"$dir/settle.json" || true
  log "$name ready: $(cat "$dir/ready.json") settle $(cat "$dir/settle.json")"
}

# ------------------------------------------------------------------------------------------------
# Setup
[[ -x "$py" ]] || die "$py missing: create .venv (scripts/setup-venv.sh) with mlflow==$mlflow_version"
have=$("$py" -c 'import mlflow; print(mlflow.__version__)')
[[ $have == "$mlflow_version" ]] || log "warning: .venv has mlflow $have, not $mlflow_version"
"$py" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, requests' ||
  die ".venv lacks opentelemetry-proto or requests"

log "building the load generator (bench/genai/loadgen, release)"
(cd "$here/loadgen" && cargo build --release --quiet) || die "cannot build bench/genai/loadgen"
lg="$here/loadgen/target/release/genload"
export GENLOAD=$lg

mkdir -p "$here/work"
if has loopml; then
  if [[ -n "${LOOPML_BIN:-}" ]]; then
    src_bin=$LOOPML_BIN
    loopml_rev="LOOPML_BIN=$LOOPML_BIN"
  else
    log "building loopml (cargo build --release -p loopml)"
    (cd "$root" && cargo build --release --quiet -p loopml) || die "cannot build loopml"
    src_bin="$root/target/release/loopml"
    loopml_rev="git $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo '+dirty')"
  fi
  [[ -x "$src_bin" ]] || die "loopml binary not found at $src_bin (set LOOPML_BIN)"
  # A private copy: a later build (another engineer's) cannot swap the binary mid-run.
  loopml_bin="$here/work/loopml"
  cp "$src_bin" "$loopml_bin.tmp" && mv "$loopml_bin.tmp" "$loopml_bin"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/loopml-genai.XXXXXX")
raw="$work/raw"
mkdir -p "$raw"
salt=$(date -u +%Y%m%dT%H%M%SZ)
stamp=$salt
# Trace 0 starts two days ago (seeded traces are 10 ms apart: 100,000 of them span 17 min).
base_ns=$((($(date +%s) - 2 * 86400) * 1000000000))
t_start=$SECONDS

{
  if has loopml; then
    printf 'loopml\t%s (%s)\t%s\n' "$("$loopml_bin" --version 2>/dev/null | head -1)" "$loopml_rev" \
      "loopml server --host 127.0.0.1 --port P --data-dir DIR/data"
  fi
  if has mlflow; then
    printf 'mlflow\t%s\t%s\n' "$("$py" -c 'import mlflow; print(mlflow.__version__)') (uvicorn, default workers)" \
      "mlflow server --backend-store-uri sqlite:///DIR/mlflow.db --serve-artifacts --artifacts-destination DIR/art --host 127.0.0.1 --port P"
  fi
} >"$work/versions.tsv"

# run_phase SERVER PHASE: a fresh server and data dir; the phase's JSON into $raw
run_phase() {
  local s=$1 phase=$2 dir port url extra=()
  dir=$(mktemp -d "$work/$s-$phase.XXXX")
  port=$("$lg" freeport | tr -dc 0-9)
  url="http://127.0.0.1:$port"
  if [[ $phase == search && $s == mlflow && $mlflow_seed == store ]]; then
    log "mlflow: seeding $search_traces traces in process (SqlAlchemyStore on $dir/mlflow.db)"
    if ! in_bg timeout -k 10 "$timeout_s" "$py" "$here/bench.py" seed-mlflow --db "$dir/mlflow.db" \
      --traces "$search_traces" --salt "$salt" --base-ns "$base_ns" >"$raw/mlflow-seed.json"; then
      log "mlflow: seeding failed"
      printf '{"error": "seeding failed"}\n' >"$raw/$s-$phase.json"
      return
    fi
    extra=(--experiment-id "$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["experiment_id"])' "$raw/mlflow-seed.json")"
      --seed-json "$(cat "$raw/mlflow-seed.json")")
  fi
  local t0=$SECONDS
  start_server "$s" "$dir" "$port"
  local pid=$srv_pid
  if ! wait_ready "$s" "$dir" "$url" "$pid"; then
    printf '{"error": "server not ready"}\n' >"$raw/$s-$phase.json"
    stop_server "$pid"
    return
  fi
  local args=()
  if [[ $phase == search ]]; then
    args=(search --traces "$search_traces" "${reps[@]}" "${extra[@]+"${extra[@]}"}")
  else
    args=(main --traces "$traces" "${main_reps[@]}")
  fi
  log "$s: phase $phase"
  local rc=0
  in_bg timeout -k 10 "$timeout_s" "$py" "$here/bench.py" "${args[@]}" --server "$s" --url "$url" \
    --pid "$pid" --salt "$salt" --base-ns "$base_ns" --work "$dir" >"$raw/$s-$phase.json.tmp" || rc=$?
  if [[ $rc -eq 0 ]]; then
    mv "$raw/$s-$phase.json.tmp" "$raw/$s-$phase.json"
  else
    log "$s: phase $phase failed (rc=$rc); last lines of the server log:"
    tail -n 15 "$dir/server.log" >&2 || true
    printf '{"error": "phase failed (rc=%s)"}\n' "$rc" >"$raw/$s-$phase.json"
  fi
  stop_server "$pid"
  log "$s: phase $phase done in $((SECONDS - t0)) s"
}

log "run $salt: ingest $traces traces × 10 spans (8 clients); search over $search_traces traces;" \
  "servers $servers; phases $phases; mlflow seeding: $mlflow_seed"
for phase in search main; do
  wants "$phase" || continue
  for s in ${servers//,/ }; do run_phase "$s" "$phase"; done
done

mkdir -p "$here/results"
wall=$((SECONDS - t_start))
python3 "$here/report.py" --raw "$raw" --versions "$work/versions.tsv" --servers "$servers" \
  --json "$here/results/$stamp.json" --wall-s "$wall" \
  --params "traces=$traces,search_traces=$search_traces,smoke=$smoke,mlflow_seed=$mlflow_seed,salt=$salt"
log "results: bench/genai/results/$stamp.json (wall $wall s)"
