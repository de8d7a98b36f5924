#!/usr/bin/env bash
# Side-by-side model registry benchmark: loopml vs `mlflow server` 3.17.2, both on SQLite on
# 127.0.0.1: search_model_versions("name='<model>'") and get_model_version_by_alias(<model>,
# "champion") over 1,000 registered models × 20 versions, sequential and with 8 clients, plus a
# broad tag search. Prints Markdown tables and writes bench/registry/results/<timestamp>.json.
# See README.md.
#
# Env: BENCH_SCALE (default 1: 1,000 models), BENCH_SERVERS (default loopml,mlflow),
#      BENCH_MLFLOW_POPULATE (store: in-process through mlflow's SqlAlchemyStore, the default;
#      http: over HTTP like loopml), MLFLOW_VENV (a venv with mlflow==3.17.2; default .venv),
#      LOOPML_BIN (skip building loopml), BENCH_TIMEOUT_S (limit per step, default 2400),
#      BENCH_KEEP=1 (keep the temp dir with server logs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scale=${BENCH_SCALE:-1}
servers=${BENCH_SERVERS:-loopml,mlflow}
mlflow_populate=${BENCH_MLFLOW_POPULATE:-store}
timeout_s=${BENCH_TIMEOUT_S:-2400}
ready_timeout_s=180
# Readiness = first 200 on an API call that needs the metadata store (as bench/tracking). The
# registry endpoints are probed by the load generator, which names a missing one.
ready_path='/api/2.0/mlflow/experiments/get?experiment_id=0'
mlflow_version=3.17.2
export MLFLOW_DISABLE_TELEMETRY=true
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$servers," == *",$1,"* ]]; }
# scaled BASE MIN: round(BASE × BENCH_SCALE), at least MIN
scaled() { awk -v b="$1" -v s="$scale" -v m="$2" 'BEGIN { v = int(b * s + 0.5); if (v < m) v = m; print v }'; }

awk -v s="$scale" 'BEGIN { exit !(s > 0) }' || die "BENCH_SCALE must be a positive number (got '$scale')"
for s in ${servers//,/ }; do
  case $s in loopml | mlflow | loopml-pg | mlflow-pg) ;;
    *) die "unknown server '$s' in BENCH_SERVERS (loopml, mlflow, loopml-pg, mlflow-pg)" ;;
  esac
done
case $mlflow_populate in store | http) ;; *) die "BENCH_MLFLOW_POPULATE must be store or http" ;; esac

models=$(scaled 1000 10)
versions=20
clients=8
queries=$(scaled 500 100)     # sequential queries per workload (and again with new connections)
per_client=$(scaled 250 25)   # per client in the 8-client phases
broad_queries=$(scaled 50 10) # tags.team='x' searches
warmup=16

# ------------------------------------------------------------------------------------------------
# Process bookkeeping (as bench/tracking): every server runs in its own session (setsid), so its
# whole tree (mlflow's uvicorn workers and job consumers included) is one process group.
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

# start_server NAME DIR PORT LOG: sets srv_pid (also the process group id)
# pg_database DIR NAME: the PostgreSQL database of DIR (created on first use, kept in DIR/pg.url
# so the query phase reopens what the populate phase wrote).
pg_database() {
  local dir=$1 name="bench_reg_${2//-/_}_$(date +%s%N)"
  if [[ ! -f "$dir/pg.url" ]]; then
    psql -q -v ON_ERROR_STOP=1 "$pg_admin_url" -c "CREATE DATABASE $name" >/dev/null ||
      die "cannot create database $name"
    printf '%s\n' "${pg_admin_url%/*}/$name" >"$dir/pg.url"
  fi
  cat "$dir/pg.url"
}

start_server() {
  local name=$1 dir=$2 port=$3 logf=$4
  local cmd
  case $name in
    loopml) cmd=("$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$dir/data") ;;
    loopml-pg) cmd=("$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$dir/data"
      --database-url "$(pg_database "$dir" "$name")") ;;
    mlflow-pg) cmd=("$venv/bin/mlflow" server --backend-store-uri "postgresql://$(pg_database "$dir" "$name" | sed 's|^postgres://||')"
      --artifacts-destination "$dir/art" --host 127.0.0.1 --port "$port") ;;
    mlflow) cmd=("$venv/bin/mlflow" server --backend-store-uri "sqlite:///$dir/mlflow.db"
      --artifacts-destination "$dir/art" --host 127.0.0.1 --port "$port") ;;
  esac
  setsid "${cmd[@]}" >>"$logf" 2>&1 </dev/null &
  srv_pid=$!
  pgids+=("$srv_pid")
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
# Setup: load generator (shared with bench/tracking), mlflow venv, loopml binary
log "building the load generator (release)"
(cd "$root/bench/tracking/loadgen" && cargo build --release --quiet) || die "cannot build bench/tracking/loadgen"
lg="$root/bench/tracking/loadgen/target/release/loadgen"

venv=""
if has mlflow || has mlflow-pg; then
  if [[ -n "${MLFLOW_VENV:-}" ]]; then
    venv=$MLFLOW_VENV
    log "using MLFLOW_VENV=$venv"
  else
    venv="$root/.venv"
    if [[ -f "$root/scripts/setup-venv.sh" ]]; then
      log "ensuring .venv via scripts/setup-venv.sh"
      bash "$root/scripts/setup-venv.sh" >&2 || die "scripts/setup-venv.sh failed"
    elif [[ ! -x "$venv/bin/mlflow" ]]; then
      log "creating .venv with mlflow==$mlflow_version"
      python3 -m venv "$venv"
      "$venv/bin/python" -m pip install --quiet "mlflow==$mlflow_version" || die "cannot install mlflow"
    fi
  fi
  [[ -x "$venv/bin/mlflow" ]] || die "$venv has no mlflow (set MLFLOW_VENV to a venv with mlflow==$mlflow_version)"
  have=$("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)')
  [[ $have == "$mlflow_version" ]] || log "warning: $venv has mlflow $have, not $mlflow_version"
  if has mlflow-pg && ! "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
    log "installing psycopg[binary] into $venv (SQLAlchemy 2.1's postgresql:// driver)"
    "$venv/bin/python" -m pip install --quiet 'psycopg[binary]' || die "cannot install psycopg"
  fi
fi
pg_admin_url=""
if has loopml-pg || has mlflow-pg; then
  log "starting PostgreSQL (scripts/postgres.sh)"
  pg_admin_url=$("$root/scripts/postgres.sh" start) || die "cannot start PostgreSQL"
fi

if has loopml || has loopml-pg; then
  if [[ -n "${LOOPML_BIN:-}" ]]; then
    loopml_bin=$LOOPML_BIN
  else
    log "building loopml (cargo build --release -p loopml)"
    (cd "$root" && cargo build --release --quiet -p loopml) || die "cannot build loopml"
    loopml_bin="$root/target/release/loopml"
  fi
  [[ -x "$loopml_bin" ]] || die "loopml binary not found at $loopml_bin (set LOOPML_BIN)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/loopml-bench-registry.XXXXXX")
raw="$work/raw"
mkdir -p "$raw"

{
  if has loopml || has loopml-pg; then
    v=$("$loopml_bin" --version 2>/dev/null | head -1 || echo unknown)
    if [[ -n "${LOOPML_BIN:-}" ]]; then
      v="$v (LOOPML_BIN)"
    else
      v="$v (git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty'))"
    fi
    has loopml && printf 'loopml\t%s\t%s\n' "$v" "loopml server --host 127.0.0.1 --port P --data-dir DIR/data"
    has loopml-pg && printf 'loopml-pg\t%s\t%s\n' "$v" "loopml server --host 127.0.0.1 --port P --data-dir DIR/data --database-url postgres://…/fresh_db"
  fi
  if has mlflow-pg; then
    v=$("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)')
    printf 'mlflow-pg\t%s\t%s\n' "$v (uvicorn, default 4 workers, psycopg 3)" \
      "mlflow server --backend-store-uri postgresql://…/fresh_db --artifacts-destination DIR/art --host 127.0.0.1 --port P"
  fi
  if has mlflow; then
    v=$("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)')
    printf 'mlflow\t%s\t%s\n' "$v (uvicorn, default 4 workers, plus its job-runner/huey consumers)" \
      "mlflow server --backend-store-uri sqlite:///DIR/mlflow.db --artifacts-destination DIR/art --host 127.0.0.1 --port P"
  fi
} >"$work/versions.tsv"

# fail SERVER MSG: records the server's failure for the report.
fail() {
  local server=$1 msg=$2
  msg=$(printf '%s' "$msg" | tr '\n"\\' '   ' | cut -c1-600)
  log "$server: FAILED: $msg"
  printf '{"error": "%s"}\n' "$msg" >"$raw/$server-query.json"
}

# up SERVER DIR TAG: starts the server on DIR, waits for readiness and for its tree to go idle.
# Sets srv_pid and url; returns 1 (after logging) when it does not come up.
up() {
  local server=$1 dir=$2 tag=$3 port
  port=$("$lg" freeport | tr -dc 0-9)
  start_server "$server" "$dir" "$port" "$dir/server.log"
  url="http://127.0.0.1:$port"
  if ! in_bg "$lg" ready --url "$url" --path "$ready_path" --timeout-s "$ready_timeout_s" >"$raw/$server-$tag.ready.json"; then
    log "$server did not become ready; last lines of its log:"
    tail -n 20 "$dir/server.log" >&2 || true
    stop_server "$srv_pid"
    return 1
  fi
  # mlflow keeps spawning processes (job consumers) after its first 200: time nothing until the
  # server's process tree is idle.
  in_bg "$lg" settle --pid "$srv_pid" --max-s 60 >"$raw/$server-$tag.settle.json" || true
  log "$server ($tag) ready at $url, settle: $(cat "$raw/$server-$tag.settle.json")"
}

# step NAME OUT CMD...: runs a load-generator step under the time limit; on failure returns 1
# with the reason in $step_err.
step() {
  local name=$1 out=$2 rc=0
  shift 2
  in_bg timeout -k 10 "$timeout_s" "$@" >"$out.tmp" 2>"$out.err" || rc=$?
  if [[ $rc -eq 0 ]]; then
    mv "$out.tmp" "$out"
    return 0
  fi
  step_err=$(grep -v '^registry-' "$out.err" | tail -n 3)
  [[ $rc -eq 124 ]] && step_err="timed out after ${timeout_s}s; $step_err"
  step_err="$name failed (rc=$rc): $step_err"
  return 1
}

run_server() {
  local server=$1 dir method
  dir=$(mktemp -d "$work/$server.XXXX")
  method=http
  [[ $server == mlflow || $server == mlflow-pg ]] && method=$mlflow_populate

  # 1. Populate.
  if [[ $method == store ]]; then
    log "$server: populating $models models × $versions versions in-process (SqlAlchemyStore)"
    local target=(--db "$dir/mlflow.db")
    [[ $server == mlflow-pg ]] && target=(--uri "postgresql://$(pg_database "$dir" "$server" | sed 's|^postgres://||')")
    if ! step "populate" "$raw/$server-populate.json" \
      "$venv/bin/python" "$here/populate_mlflow.py" "${target[@]}" --models "$models" --versions "$versions"; then
      fail "$server" "$step_err"
      return
    fi
  else
    up "$server" "$dir" populate || { fail "$server" "server not ready within ${ready_timeout_s}s"; return; }
    log "$server: populating $models models × $versions versions over HTTP ($clients clients)"
    if ! step "populate" "$raw/$server-populate.json" "$lg" registry-populate --url "$url" \
      --models "$models" --versions "$versions" --clients "$clients" --watch-pid "$srv_pid"; then
      stop_server "$srv_pid"
      fail "$server" "$step_err"
      return
    fi
    stop_server "$srv_pid"
  fi
  log "$server: populated: $(cat "$raw/$server-populate.json" | cut -c1-200)"
  local kb
  if [[ -f "$dir/pg.url" ]]; then
    kb=$(psql -qAt "$(cat "$dir/pg.url")" -c "SELECT pg_database_size(current_database()) / 1024")
  else
    kb=$(du -sk "$dir" --exclude=server.log --exclude=art | cut -f1)
  fi
  printf '{"disk_kb": %s}\n' "$kb" >"$raw/$server-disk.json"

  # 2. Queries, on a server started fresh on the populated data (as mlflow is, after an
  #    in-process populate).
  up "$server" "$dir" query || { fail "$server" "server not ready within ${ready_timeout_s}s"; return; }
  "$lg" rss --pid "$srv_pid" >"$raw/$server-idle.json"
  log "$server: idle before queries: $(cat "$raw/$server-idle.json")"
  if ! step "queries" "$raw/$server-query.json" "$lg" registry-query --url "$url" --models "$models" \
    --versions "$versions" --queries "$queries" --clients "$clients" --conc-queries "$per_client" \
    --broad-queries "$broad_queries" --warmup "$warmup" --watch-pid "$srv_pid"; then
    stop_server "$srv_pid"
    fail "$server" "$step_err"
    return
  fi
  stop_server "$srv_pid"
  log "$server: done"
}

log "scale $scale: $models models × $versions versions; $queries sequential queries per workload;" \
  "$clients clients × $per_client; $broad_queries broad searches; servers: $servers; mlflow populate: $mlflow_populate"
for s in ${servers//,/ }; do run_server "$s"; done

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 "$here/report.py" --raw "$raw" --versions "$work/versions.tsv" --servers "$servers" \
  --scale "$scale" --json "$here/results/$stamp.json" \
  --params "models=$models,versions=$versions,clients=$clients,queries=$queries,per_client=$per_client,broad_queries=$broad_queries,warmup=$warmup,mlflow_populate=$mlflow_populate,ready_path=$ready_path"
log "results: bench/registry/results/$stamp.json"
