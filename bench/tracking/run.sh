#!/usr/bin/env bash
# Side-by-side tracking benchmark: loopml vs `mlflow server` 3.17.2 vs FastTrackML 0.6.0, all on
# SQLite on 127.0.0.1, same workloads, fresh server and data dir per workload. Prints a Markdown
# table and writes bench/tracking/results/<timestamp>.json. See README.md for the workloads.
#
# Env: BENCH_SCALE (default 1), BENCH_SERVERS (default loopml,mlflow,fasttrackml),
#      BENCH_WORKLOADS (default ingest,search,history,coldstart), LOOPML_BIN (skip building loopml),
#      BENCH_TIMEOUT_S (hard limit per workload per server, default 2400),
#      BENCH_INGEST_DEADLINE_S (ingest stops early and is marked partial, default 1200),
#      BENCH_KEEP=1 (keep the temp dirs with server logs).
# PostgreSQL columns: BENCH_SERVERS=loopml-pg,loopml-pg2,mlflow-pg runs loopml on PostgreSQL (one
# replica, and two replicas sharing the load), and mlflow server on the same PostgreSQL
# (scripts/postgres.sh; a fresh database per workload).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scale=${BENCH_SCALE:-1}
servers=${BENCH_SERVERS:-loopml,mlflow,fasttrackml}
workloads=${BENCH_WORKLOADS:-ingest,search,history,coldstart}
timeout_s=${BENCH_TIMEOUT_S:-2400}
ingest_deadline_s=${BENCH_INGEST_DEADLINE_S:-1200}
ready_timeout_s=180
# Readiness = first 200 on an API call that needs the metadata store, the same for every server.
ready_path='/api/2.0/mlflow/experiments/get?experiment_id=0'
mlflow_version=3.17.2
fml_version=0.6.0
export MLFLOW_DISABLE_TELEMETRY=true
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$servers," == *",$1,"* ]]; }
wants() { [[ ",$workloads," == *",$1,"* ]]; }
# scaled BASE MIN: round(BASE × BENCH_SCALE), at least MIN
scaled() { awk -v b="$1" -v s="$scale" -v m="$2" 'BEGIN { v = int(b * s + 0.5); if (v < m) v = m; print v }'; }

awk -v s="$scale" 'BEGIN { exit !(s > 0) }' || die "BENCH_SCALE must be a positive number (got '$scale')"
for s in ${servers//,/ }; do
  case $s in
    loopml | mlflow | fasttrackml | loopml-pg | loopml-pg2 | mlflow-pg) ;;
    *) die "unknown server '$s' in BENCH_SERVERS" ;;
  esac
done
for w in ${workloads//,/ }; do
  case $w in ingest | search | history | coldstart) ;; *) die "unknown workload '$w' in BENCH_WORKLOADS" ;; esac
done

ingest_clients=8
ingest_runs=$(scaled 200 1)
ingest_steps=20
ingest_metrics=50
search_runs=$(scaled 2000 20)
search_queries=$(scaled 100 10)
history_points=$(($(scaled 100 1) * 1000))
history_reps=$(scaled 20 5)
cold_reps=$(scaled 5 3)

# ------------------------------------------------------------------------------------------------
# Process bookkeeping: every server runs in its own session (setsid), so its whole tree (mlflow's
# uvicorn workers and job consumers included) is one process group we can signal.
pgids=()
work=""
lg_pid=""
# group_alive PGID: some member of the process group is still running (zombies do not count: the
# leader stays a zombie until we reap it with wait).
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

# fresh_pg_database NAME: creates an empty database on the benchmark's PostgreSQL, prints its URL.
fresh_pg_database() {
  local db="bench_${1//-/_}_$(date +%s%N)"
  psql -q -v ON_ERROR_STOP=1 "$pg_admin_url" -c "CREATE DATABASE $db" >/dev/null ||
    die "cannot create database $db on $pg_admin_url"
  printf '%s\n' "${pg_admin_url%/*}/$db"
}

# start_server NAME DIR PORT [PORT2]: sets srv_pid (also the process group id) and srv_url (for
# loopml-pg2, both replicas' URLs, comma-separated)
start_server() {
  local name=$1 dir=$2 port=$3 port2=${4:-}
  local cmd db
  srv_url="http://127.0.0.1:$port"
  case $name in
    loopml) cmd=("$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$dir/data") ;;
    loopml-pg)
      db=$(fresh_pg_database "$name")
      cmd=("$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$dir/data" --database-url "$db") ;;
    loopml-pg2)
      # Two replicas in one process group, on one database and one artifact folder.
      db=$(fresh_pg_database "$name")
      cmd=(bash -c '"$1" server --host 127.0.0.1 --port "$2" --data-dir "$4" --database-url "$5" &
        "$1" server --host 127.0.0.1 --port "$3" --data-dir "$4" --database-url "$5" & wait'
        replicas "$loopml_bin" "$port" "$port2" "$dir/data" "$db")
      srv_url="http://127.0.0.1:$port,http://127.0.0.1:$port2" ;;
    mlflow-pg)
      db=$(fresh_pg_database "$name")
      cmd=("$root/.venv/bin/mlflow" server --backend-store-uri "postgresql://${db#postgres://}"
        --artifacts-destination "$dir/art" --host 127.0.0.1 --port "$port") ;;
    mlflow) cmd=("$root/.venv/bin/mlflow" server --backend-store-uri "sqlite:///$dir/mlflow.db"
      --artifacts-destination "$dir/art" --host 127.0.0.1 --port "$port") ;;
    fasttrackml) cmd=("$fml_bin" server --database-uri "sqlite://$dir/fml.db"
      --listen-address "127.0.0.1:$port" --default-artifact-root "$dir/art") ;;
  esac
  setsid "${cmd[@]}" >"$dir/server.log" 2>&1 </dev/null &
  srv_pid=$!
  pgids+=("$srv_pid")
}

# ------------------------------------------------------------------------------------------------
# Setup: load generator, venvs, loopml binary
log "building the load generator (release)"
(cd "$here/loadgen" && cargo build --release --quiet) || die "cannot build bench/tracking/loadgen"
lg="$here/loadgen/target/release/loadgen"

if has mlflow || has mlflow-pg; then
  if [[ -f "$root/scripts/setup-venv.sh" ]]; then
    log "ensuring .venv via scripts/setup-venv.sh"
    bash "$root/scripts/setup-venv.sh" >&2 || die "scripts/setup-venv.sh failed"
  elif [[ ! -x "$root/.venv/bin/mlflow" ]]; then
    log "creating .venv with mlflow==$mlflow_version"
    python3 -m venv "$root/.venv"
    "$root/.venv/bin/python" -m pip install --quiet "mlflow==$mlflow_version" || die "cannot install mlflow"
  fi
  [[ -x "$root/.venv/bin/mlflow" ]] || die ".venv has no mlflow"
  have=$("$root/.venv/bin/python" -c 'import mlflow; print(mlflow.__version__)')
  [[ $have == "$mlflow_version" ]] || log "warning: .venv has mlflow $have, not $mlflow_version"
fi
if has mlflow-pg && ! "$root/.venv/bin/python" -c 'import psycopg' 2>/dev/null; then
  # mlflow's SQLAlchemy store needs a PostgreSQL driver; SQLAlchemy 2.1 picks psycopg (3) for postgresql://
  log "installing psycopg[binary] into .venv (mlflow on PostgreSQL: SQLAlchemy's default postgresql:// driver)"
  "$root/.venv/bin/python" -m pip install --quiet 'psycopg[binary]' || die "cannot install psycopg"
fi
pg_admin_url=""
if has loopml-pg || has loopml-pg2 || has mlflow-pg; then
  log "starting PostgreSQL (scripts/postgres.sh)"
  pg_admin_url=$("$root/scripts/postgres.sh" start) || die "cannot start PostgreSQL"
fi

fml_bin="$root/.venv-fasttrackml/bin/fml"
if has fasttrackml; then
  if [[ ! -x "$fml_bin" ]]; then
    # The wheel carries the Go server binary `fml`; its Python deps (an old mlflow client) are not
    # needed to run the server, so --no-deps keeps the venv small and the install fast.
    log "creating .venv-fasttrackml with fasttrackml==$fml_version"
    python3 -m venv "$root/.venv-fasttrackml"
    "$root/.venv-fasttrackml/bin/python" -m pip install --quiet --no-deps "fasttrackml==$fml_version" ||
      die "cannot install fasttrackml==$fml_version"
  fi
  have=$("$fml_bin" --version 2>/dev/null) || die "$fml_bin does not run"
  [[ $have == *"$fml_version"* ]] || log "warning: $fml_bin is '$have', not $fml_version"
fi

if has loopml || has loopml-pg || has loopml-pg2; then
  if [[ -n "${LOOPML_BIN:-}" ]]; then
    loopml_bin=$LOOPML_BIN
  else
    log "building loopml (cargo build --release -p loopml)"
    (cd "$root" && cargo build --release --quiet -p loopml) || die "cannot build loopml"
    loopml_bin="$root/target/release/loopml"
  fi
  [[ -x "$loopml_bin" ]] || die "loopml binary not found at $loopml_bin (set LOOPML_BIN)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/loopml-bench.XXXXXX")
raw="$work/raw"
mkdir -p "$raw"

versions() {
  local v
  if has loopml || has loopml-pg || has loopml-pg2; then
    v=$("$loopml_bin" --version 2>/dev/null | head -1 || echo unknown)
    if [[ -n "${LOOPML_BIN:-}" ]]; then
      v="$v (LOOPML_BIN)"
    else
      v="$v (git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty'))"
    fi
    has loopml && printf 'loopml\t%s\t%s\n' "$v" "loopml server --host 127.0.0.1 --port P --data-dir DIR/data"
    has loopml-pg && printf 'loopml-pg\t%s\t%s\n' "$v" "loopml server --host 127.0.0.1 --port P --data-dir DIR/data --database-url postgres://…/fresh_db"
    has loopml-pg2 && printf 'loopml-pg2\t%s\t%s\n' "$v" "two of: loopml server --port P1|P2 --database-url postgres://…/fresh_db (one database, clients alternate)"
  fi
  if has mlflow-pg; then
    v=$("$root/.venv/bin/python" -c 'import mlflow, psycopg; print(mlflow.__version__, "psycopg", psycopg.__version__)')
    printf 'mlflow-pg\t%s\t%s\n' "$v (uvicorn, default 4 workers)" "mlflow server --backend-store-uri postgresql://…/fresh_db --artifacts-destination DIR/art --host 127.0.0.1 --port P"
  fi
  if has mlflow; then
    v=$("$root/.venv/bin/python" -c 'import mlflow; print(mlflow.__version__)')
    printf 'mlflow\t%s\t%s\n' "$v (uvicorn, default 4 workers, plus its job-runner/huey consumers)" "mlflow server --backend-store-uri sqlite:///DIR/mlflow.db --artifacts-destination DIR/art --host 127.0.0.1 --port P"
  fi
  if has fasttrackml; then
    v=$("$fml_bin" --version 2>/dev/null | head -1)
    printf 'fasttrackml\t%s\t%s\n' "$v" "fml server --database-uri sqlite://DIR/fml.db --listen-address 127.0.0.1:P --default-artifact-root DIR/art"
  fi
}
versions >"$work/versions.tsv"

# in_bg CMD...: runs CMD in the background and waits, so that INT/TERM reach the trap at once
# instead of after CMD ends (bash defers traps while a foreground command runs).
in_bg() {
  local rc=0
  "$@" &
  lg_pid=$!
  wait "$lg_pid" || rc=$?
  lg_pid=""
  return "$rc"
}

# ------------------------------------------------------------------------------------------------
# One workload against one freshly started server. Writes $raw/<server>-<workload>.json.
run_one() {
  local server=$1 workload=$2
  local dir port
  local out="$raw/$server-$workload.json"
  dir=$(mktemp -d "$work/$server-$workload.XXXX")
  port=$("$lg" freeport | tr -dc 0-9)
  local port2=""
  [[ $server == loopml-pg2 ]] && port2=$("$lg" freeport | tr -dc 0-9)
  start_server "$server" "$dir" "$port" $port2
  local pid=$srv_pid url=$srv_url ready_ok=1 u
  for u in ${url//,/ }; do
    in_bg "$lg" ready --url "$u" --path "$ready_path" --timeout-s "$ready_timeout_s" >/dev/null || ready_ok=0
  done
  if [[ $ready_ok == 0 ]]; then
    log "$server did not become ready; last lines of its log:"
    tail -n 20 "$dir/server.log" >&2 || true
    printf '{"error": "server not ready within %ss"}\n' "$ready_timeout_s" >"$out"
    stop_server "$pid"
    return
  fi
  # mlflow keeps spawning processes (job consumers) after its first 200; time nothing until the
  # server's process tree is idle.
  in_bg "$lg" settle --pid "$pid" --max-s 60 >"$raw/$server-$workload.settle.json" || true
  local args=()
  case $workload in
    ingest) args=(ingest --clients "$ingest_clients" --runs "$ingest_runs" --steps "$ingest_steps"
      --metrics "$ingest_metrics" --deadline-s "$ingest_deadline_s") ;;
    search) args=(search --runs "$search_runs" --queries "$search_queries") ;;
    history) args=(history --points "$history_points" --reps "$history_reps") ;;
  esac
  log "$server: $workload (settle: $(cat "$raw/$server-$workload.settle.json"))"
  local rc=0
  in_bg timeout -k 10 "$timeout_s" "$lg" "${args[@]}" --url "$url" --watch-pid "$pid" >"$out.tmp" 2>"$dir/loadgen.err" || rc=$?
  if [[ $rc -eq 0 ]]; then
    mv "$out.tmp" "$out"
  else
    local msg
    msg=$(tail -n 3 "$dir/loadgen.err" | tr '\n"\\' '   ' | cut -c1-400)
    [[ $rc -eq 124 ]] && msg="timed out after ${timeout_s}s; $msg"
    log "$server: $workload failed (rc=$rc): $msg"
    printf '{"error": "%s"}\n' "$msg" >"$out"
  fi
  stop_server "$pid"
}

# Cold start: spawn → first 200 on $ready_path, then idle memory after 2 s, on a fresh data dir.
run_coldstart() {
  local server=$1
  local out="$raw/$server-coldstart.json" rows=() i
  for i in $(seq 1 "$cold_reps"); do
    local dir port t0 ready mem settled
    dir=$(mktemp -d "$work/$server-cold.XXXX")
    port=$("$lg" freeport | tr -dc 0-9)
    t0=$(date +%s%N)
    start_server "$server" "$dir" "$port"
    if ! in_bg "$lg" ready --url "http://127.0.0.1:$port" --path "$ready_path" --since-ns "$t0" \
      --timeout-s "$ready_timeout_s" >"$dir/ready.json"; then
      log "$server did not become ready (cold start $i)"
      tail -n 20 "$dir/server.log" >&2 || true
      stop_server "$srv_pid"
      printf '{"error": "server not ready within %ss"}\n' "$ready_timeout_s" >"$out"
      return
    fi
    ready=$(cat "$dir/ready.json")
    sleep 2
    mem=$("$lg" rss --pid "$srv_pid")
    # And once the tree has gone idle (mlflow is still starting job consumers 2 s in).
    in_bg "$lg" settle --pid "$srv_pid" --max-s 60 >"$dir/settle.json" || true
    settled=$("$lg" rss --pid "$srv_pid")
    stop_server "$srv_pid"
    rows+=("{\"ready\": $ready, \"idle\": $mem, \"settle\": $(cat "$dir/settle.json"), \"settled\": $settled}")
    log "$server: cold start $i/$cold_reps: $ready idle@2s $mem settled $settled"
  done
  local IFS=,
  printf '{"workload": "coldstart", "reps": [%s]}\n' "${rows[*]}" >"$out"
}

log "scale $scale: ingest ${ingest_clients}x${ingest_runs} runs x${ingest_steps} batches x${ingest_metrics} metrics;" \
  "search ${search_runs} runs/${search_queries} queries; history ${history_points} points x${history_reps};" \
  "cold start x${cold_reps}; servers: $servers"
for w in ingest search history coldstart; do
  wants "$w" || continue
  for s in ${servers//,/ }; do
    # The two-replica column measures what replicas are for: ingest and search across them.
    [[ $s == loopml-pg2 && ($w == history || $w == coldstart) ]] && continue
    if [[ $w == coldstart ]]; then run_coldstart "$s"; else run_one "$s" "$w"; fi
  done
done

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 "$here/report.py" --raw "$raw" --versions "$work/versions.tsv" --servers "$servers" \
  --scale "$scale" --json "$here/results/$stamp.json" \
  --params "ingest_clients=$ingest_clients,ingest_runs=$ingest_runs,ingest_steps=$ingest_steps,ingest_metrics=$ingest_metrics,search_runs=$search_runs,search_queries=$search_queries,history_points=$history_points,history_reps=$history_reps,cold_reps=$cold_reps,ready_path=$ready_path"
log "results: bench/tracking/results/$stamp.json"
