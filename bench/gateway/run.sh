#!/usr/bin/env bash
# Gateway benchmark: the LiteLLM proxy and loopml's gateway side by side, in front of the same
# local fake OpenAI upstream (a fixed delay, gwload `upstream`), under constant-rate open-loop
# load (gwload `load`), JSON and streamed chat completions. The same load straight at the
# upstream ("direct") gives the floor: added latency = gateway minus direct, same rate, mode and
# round. Then the rate is stepped up to find each one's maximum sustainable rate.
# Prints a Markdown table (stdout), progress on stderr, and writes
# bench/gateway/results/<UTC timestamp>.json. See README.md.
#
# Env: BENCH_SECONDS (measured seconds per point, default 10), BENCH_WARMUP_S (default 2),
#      BENCH_ROUNDS (default 3; medians over rounds), BENCH_RATES (default 100,500,2000),
#      BENCH_MODES (default json,stream), BENCH_TARGETS (default direct,loopml,litellm; also
#      loopml-pg: loopml on PostgreSQL), BENCH_DELAY_MS (upstream delay, default 20),
#      BENCH_TIMEOUT_S (per request, default 10), BENCH_MAX (1: find the max sustainable rate),
#      BENCH_MAX_ROUNDS (rounds that do it, default 1), BENCH_MAX_SECONDS (default 5),
#      BENCH_MAX_RATES (the ladder), BENCH_P99_CAP_MS (sustained only if p99 is under this;
#      default delay + 200), BENCH_LITELLM_WORKERS (default: LiteLLM's own, 1),
#      BENCH_LITELLM_DATABASE_URL (give LiteLLM a database; needs prisma's engines, which
#      cannot be installed here), LOOPML_BIN (default: cargo build --release -p loopml, copied
#      to bench/gateway/work/loopml), BENCH_VENV (default bench/gateway/.venv), BENCH_KEEP=1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP_S:-2}
rounds=${BENCH_ROUNDS:-3}
rates=${BENCH_RATES:-100,500,2000}
modes=${BENCH_MODES:-json,stream}
targets=${BENCH_TARGETS:-direct,loopml,litellm}
delay_ms=${BENCH_DELAY_MS:-20}
timeout_s=${BENCH_TIMEOUT_S:-10}
do_max=${BENCH_MAX:-1}
max_rounds=${BENCH_MAX_ROUNDS:-1}
max_seconds=${BENCH_MAX_SECONDS:-5}
max_warmup=${BENCH_MAX_WARMUP_S:-1}
max_rates=${BENCH_MAX_RATES:-25,50,75,150,200,300,400,700,1000,1500,3000,4000,5000,6000,7000,8000,10000,12000,15000,20000}
p99_cap_ms=${BENCH_P99_CAP_MS:-$((delay_ms + 200))}
litellm_workers=${BENCH_LITELLM_WORKERS:-}
litellm_db=${BENCH_LITELLM_DATABASE_URL:-}
venv=${BENCH_VENV:-$here/.venv}
workdir=$here/work
master=sk-bench-master
model=bench
ready_timeout_s=180
export RUST_BACKTRACE=0 DO_NOT_TRACK=1
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$targets," == *",$1,"* ]]; }
posnum() { awk -v s="$1" 'BEGIN { exit !(s + 0 > 0) }'; }

posnum "$seconds" || die "BENCH_SECONDS must be a positive number (got '$seconds')"
posnum "$max_seconds" || die "BENCH_MAX_SECONDS must be a positive number"
[[ $warmup =~ ^[0-9.]+$ ]] || die "BENCH_WARMUP_S must be a number"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
for r in ${rates//,/ } ${max_rates//,/ }; do [[ $r =~ ^[1-9][0-9]*$ ]] || die "bad rate '$r'"; done
for m in ${modes//,/ }; do [[ $m == json || $m == stream ]] || die "bad mode '$m' (json, stream)"; done
for t in ${targets//,/ }; do
  [[ ,direct,loopml,loopml-pg,litellm, == *",$t,"* ]] || die "unknown target '$t' (direct, loopml, loopml-pg, litellm)"
done
command -v python3 >/dev/null || die "python3 is needed for the report"
command -v curl >/dev/null || die "curl is needed"

# ------------------------------------------------------------------------------------------------
# Process bookkeeping (as bench/serving/run.sh): every server runs in its own session, so its
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

stop_group() {
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
# Setup: the LiteLLM venv, the load generator, the loopml binary
if has litellm; then
  BENCH_VENV=$venv bash "$here/setup.sh" || die "setup.sh failed"
fi
log "building the load generator and fake upstream (bench/gateway/loadgen, release)"
(cd "$here/loadgen" && cargo build --release --quiet) || die "cannot build bench/gateway/loadgen"
lg=$here/loadgen/target/release/gwload

mkdir -p "$workdir"
loopml_bin=""
if has loopml || has loopml-pg; then
  if [[ -n ${LOOPML_BIN:-} ]]; then
    [[ -x $LOOPML_BIN ]] || die "LOOPML_BIN=$LOOPML_BIN is not an executable"
    loopml_bin=$LOOPML_BIN
  else
    log "building loopml (cargo build --release -p loopml)"
    (cd "$root" && cargo build --release --quiet -p loopml) || die "cannot build loopml"
    # A private copy: other builds in this checkout must not swap the binary mid-run.
    cp "$root/target/release/loopml" "$workdir/loopml.new"
    mv "$workdir/loopml.new" "$workdir/loopml"
    loopml_bin=$workdir/loopml
  fi
  "$loopml_bin" gateway --help 2>/dev/null | grep -q -- --data-dir ||
    die "$loopml_bin has no 'gateway --data-dir' (too old?)"
fi

pg_url=""
if has loopml-pg; then
  export LOOPML_PG_DIR=${LOOPML_PG_DIR:-/tmp/loopml-pg-bench-gateway}
  pg_url=$(bash "$root/scripts/postgres.sh" start) || die "scripts/postgres.sh start failed"
  log "PostgreSQL at $pg_url"
fi

# Many connections are open at once when a server falls behind (open loop).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d "${TMPDIR:-/tmp}/loopml-bench-gateway.XXXXXX")
raw=$work/raw
mkdir -p "$raw"

# ------------------------------------------------------------------------------------------------
# The fake upstream: one for the whole run, in its own session.
up_port=$("$lg" freeport | tr -dc 0-9)
setsid "$lg" upstream --host 127.0.0.1 --port "$up_port" --delay-ms "$delay_ms" >"$work/upstream.log" 2>&1 </dev/null &
up_pid=$!
pgids+=("$up_pid")
up_url=http://127.0.0.1:$up_port
"$lg" ready --url "$up_url" --path /health --timeout-s 10 >/dev/null || die "the fake upstream did not start"
log "fake upstream at $up_url (delay ${delay_ms} ms, pid $up_pid)"

# The gateways' config: LiteLLM's config.yaml, the same file for both.
cat >"$work/config.yaml" <<YAML
model_list:
  - model_name: $model
    litellm_params:
      model: openai/gpt-bench
      api_base: "$up_url/v1"
      api_key: sk-upstream
    model_info:
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
general_settings:
  master_key: $master
YAML

# THE place that says how each server is started. server_cmd TARGET PORT DIR sets cmd (argv),
# ready (readiness path) and envs (extra environment, NAME=VALUE words).
server_cmd() {
  local t=$1 port=$2 dir=$3
  envs=()
  case $t in
    loopml)
      cmd=("$loopml_bin" --config "$work/config.yaml" gateway --host 127.0.0.1 --port "$port" --data-dir "$dir/data")
      ready=/health
      ;;
    loopml-pg)
      cmd=("$loopml_bin" --config "$work/config.yaml" gateway --host 127.0.0.1 --port "$port" --data-dir "$dir/data"
        --database-url "$pg_db_url")
      ready=/health
      ;;
    litellm)
      cmd=("$venv/bin/litellm" --config "$work/config.yaml" --host 127.0.0.1 --port "$port")
      [[ -z $litellm_workers ]] || cmd+=(--num_workers "$litellm_workers")
      # The bundled price map instead of a fetch from GitHub at start-up (unreachable here).
      envs=(LITELLM_LOCAL_MODEL_COST_MAP=True)
      [[ -z $litellm_db ]] || envs+=("DATABASE_URL=$litellm_db")
      ready=/health/liveliness
      ;;
  esac
}

# Versions and command lines for the results file.
{
  if [[ -n $loopml_bin ]]; then
    printf 'loopml\t%s (%s, built %s)\n' "$("$loopml_bin" --version 2>/dev/null | head -1)" \
      "$(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')" \
      "$(date -u -r "$loopml_bin" +%Y-%m-%dT%H:%M:%SZ)"
  fi
  if has litellm; then
    printf 'litellm\t%s\n' "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
    "$venv/bin/python" -c 'import importlib.metadata as m
for p in ("litellm-proxy-extras", "litellm-enterprise", "fastapi", "uvicorn", "uvloop", "httpx", "aiohttp", "openai", "pydantic"):
    try: print(p, m.version(p), sep="\t")
    except Exception: pass
try: import prisma; print("prisma", m.version("prisma"), sep="\t")
except Exception: print("prisma", "not installed (no database)", sep="\t")'
    printf 'python\t%s\n' "$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  fi
  printf 'rustc\t%s\n' "$(rustc --version 2>/dev/null || echo unknown)"
  printf 'cpu\t%s\n' "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') x $(nproc)"
} >"$work/versions.tsv"
{
  for t in ${targets//,/ }; do
    [[ $t == direct ]] && continue
    pg_db_url=DBURL
    server_cmd "$t" P DIR
    printf '%s\t%s %s\n' "$t" "${envs[*]+"${envs[*]}"}" "${cmd[*]}" | sed "s#$root/##g; s#$work/##g; s#$HOME#~#g"
  done
} >"$work/commands.tsv"

# ------------------------------------------------------------------------------------------------
# A server's life: start, ready, settle, idle RSS, a key, a check request pair.
srv_pid="" srv_url="" srv_key="" srv_dir="" srv_pre=""

start_server() {
  local t=$1 r=$2 pre=$3 port t0
  srv_pre=$pre
  srv_dir=$(mktemp -d "$work/$t.r$r.XXXX")
  port=$("$lg" freeport | tr -dc 0-9)
  if [[ $t == loopml-pg ]]; then
    # A fresh database per start, like loopml's fresh data dir.
    local db=gwbench_$(date +%s%N | tail -c 9)
    psql "$pg_url" -q -c "CREATE DATABASE $db" >/dev/null 2>&1 || die "cannot create database $db"
    pg_db_url=${pg_url%/*}/$db
  fi
  server_cmd "$t" "$port" "$srv_dir"
  srv_url=http://127.0.0.1:$port
  t0=$(date +%s.%N)
  env ${envs[@]+"${envs[@]}"} setsid "${cmd[@]}" >"$srv_dir/server.log" 2>&1 </dev/null &
  srv_pid=$!
  pgids+=("$srv_pid")
  log "$t (round $r): starting (pid $srv_pid)"
  if ! "$lg" ready --url "$srv_url" --path "$ready" --timeout-s "$ready_timeout_s" >"$pre.ready.json" 2>"$srv_dir/ready.err"; then
    log "$t: not ready; last lines of its log:"
    tail -n 15 "$srv_dir/server.log" >&2 || true
    return 1
  fi
  local ready_s
  ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  in_bg "$lg" settle --pid "$srv_pid" --max-s 60 >"$pre.settle.json" || true
  "$lg" rss --pid "$srv_pid" >"$pre.idle.json"
  # A virtual key with a budget and limits high enough never to refuse: admission, budget and
  # the spend log are on the path of every request.
  local keyjson key_kind=virtual
  keyjson=$(curl -s -m 30 -X POST "$srv_url/key/generate" -H "Authorization: Bearer $master" \
    -H 'content-type: application/json' \
    -d '{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000}' || true)
  srv_key=$(printf '%s' "$keyjson" | python3 -c 'import json, sys
try: print(json.load(sys.stdin)["key"])
except Exception: pass')
  if [[ -z $srv_key ]]; then
    if [[ $t == litellm && -z $litellm_db ]]; then
      # LiteLLM without a database has no virtual keys (/key/generate answers 500 "No
      # connected db"): the master key is its closest configuration.
      srv_key=$master key_kind="master (no database: /key/generate -> $(printf '%s' "$keyjson" | head -c 80))"
    else
      log "$t: /key/generate failed: $(printf '%s' "$keyjson" | head -c 300)"
      return 1
    fi
  fi
  local check rc=0
  check=$("$lg" check --url "$srv_url" --key "$srv_key" --model "$model" 2>&1) || rc=$?
  if ((rc != 0)); then
    log "$t: check failed: $check"
    return 1
  fi
  python3 - "$pre.server.json" "$t" "$ready_s" "$key_kind" "$check" "$pre.idle.json" "$pre.settle.json" <<'PY'
import json, sys
out, t, ready_s, kind, check, idle, settle = sys.argv[1:]
json.dump({"target": t, "ready_s": float(ready_s), "key": kind, "check": json.loads(check),
           "idle": json.load(open(idle)), "settle": json.load(open(settle))}, open(out, "w"))
PY
  log "$t: ready in ${ready_s}s, idle RSS $(sed 's/.*"rss_kb":\([0-9]*\).*/\1/' "$pre.idle.json") kB, key: $key_kind"
}

# Spend the server recorded, read back through its own API once the load is over.
record_spend() {
  local t=$1 pre=$srv_pre out
  [[ $t == loopml || $t == loopml-pg || -n $litellm_db ]] || return 0
  out=$(curl -s -m 30 "$srv_url/global/spend" -H "Authorization: Bearer $master" || true)
  printf '%s\n' "${out:-null}" >"$pre.spend.json"
}

# One point: load at RATE in MODE against URL; writes FILE; 0 when sustained.
point() {
  local url=$1 key=$2 rate=$3 mode=$4 secs=$5 warm=$6 out=$7 watch=$8 lrc=0
  local stream=0
  [[ $mode == stream ]] && stream=1
  in_bg timeout -k 10 "$(awk -v s="$secs" -v w="$warm" -v t="$timeout_s" 'BEGIN { print int(s + w + t + 60) }')" \
    "$lg" load --url "$url" --key "$key" --model "$model" --rate "$rate" --duration-s "$secs" \
    --warmup-s "$warm" --stream "$stream" --timeout-s "$timeout_s" --watch "$watch" \
    >"$out.tmp" 2>"$out.err" || lrc=$?
  if ((lrc != 0)); then
    log "  load generator failed (rc=$lrc): $(tail -n 3 "$out.err" | tr '\n' ' ' | cut -c1-300)"
    printf '{"error": "load generator failed", "target_rps": %s}\n' "$rate" >"$out"
    return 1
  fi
  mv "$out.tmp" "$out"
  python3 "$here/report.py" --verdict "$out" --p99-cap-ms "$p99_cap_ms"
}

# Runs the fixed rates, then (when asked) the ladder, for one target in one round.
run_target() {
  local t=$1 r=$2 pre=$raw/r$r.$t url key watch
  if [[ $t == direct ]]; then
    url=$up_url key=none watch="upstream=$up_pid"
  else
    if ! start_server "$t" "$r" "$pre"; then
      printf '{"target": "%s", "error": "server did not start or failed its check"}\n' "$t" >"$pre.server.json"
      stop_group "$srv_pid"
      return
    fi
    url=$srv_url key=$srv_key watch="server=$srv_pid,upstream=$up_pid"
  fi
  local mode rate best failed_at v
  for mode in ${modes//,/ }; do
    best=0 failed_at=""
    for rate in ${rates//,/ }; do
      if [[ -n $failed_at ]]; then
        log "$t $mode ${rate}/s: skipped (not sustained at ${failed_at}/s)"
        printf '{"skipped": "not sustained at %s/s", "target_rps": %s}\n' "$failed_at" "$rate" >"$pre.$mode.$rate.json"
        continue
      fi
      v=$(point "$url" "$key" "$rate" "$mode" "$seconds" "$warmup" "$pre.$mode.$rate.json" "$watch") && best=$rate || failed_at=$rate
      log "$t $mode ${rate}/s: $v"
      after_point "$t" "$r" "$pre" || return 0
      [[ $t == direct ]] || url=$srv_url key=$srv_key watch="server=$srv_pid,upstream=$up_pid"
    done
    if [[ $do_max == 1 ]] && ((r <= max_rounds)); then
      # Step up from the highest fixed rate it sustained; a step counts as failed when it
      # fails twice in a row (one retry absorbs a noisy moment on a shared machine).
      local lrate try ok
      for lrate in ${max_rates//,/ }; do
        ((lrate > best)) || continue
        ok=0
        for try in 1 2; do
          if v=$(point "$url" "$key" "$lrate" "$mode" "$max_seconds" "$max_warmup" "$pre.$mode.max.$lrate.t$try.json" "$watch"); then
            ok=1
          fi
          log "$t $mode ladder ${lrate}/s (try $try): $v"
          after_point "$t" "$r" "$pre" || return 0
          [[ $t == direct ]] || url=$srv_url key=$srv_key watch="server=$srv_pid,upstream=$up_pid"
          ((ok == 0)) || break
        done
        ((ok == 1)) || break
        best=$lrate
      done
      log "$t $mode: max sustained ${best}/s"
      printf '{"max_sustained_rps": %s}\n' "$best" >"$pre.$mode.max.json"
    fi
  done
  if [[ $t != direct ]]; then
    record_spend "$t"
    "$lg" rss --pid "$srv_pid" >"$pre.end.json" || true
    stop_group "$srv_pid"
  fi
}

# After a point: the server must still be alive; an overloaded one gets time to drain, and is
# restarted (fresh, new key) when it does not go idle.
after_point() {
  local t=$1 r=$2 pre=$3
  [[ $t == direct ]] && return 0
  if ! group_alive "$srv_pid"; then
    log "$t: server died; last lines of its log:"
    tail -n 15 "$srv_dir/server.log" >&2 || true
    # The rest of this round is not measured for it; the report says it died.
    python3 -c 'import json, sys; json.dump({"died": True, "log_tail": open(sys.argv[2], errors="replace").read()[-3000:],
        "kernel": sys.argv[3]}, open(sys.argv[1], "w"))' "$srv_pre.died.json" "$srv_dir/server.log" \
      "$(dmesg 2>/dev/null | grep -E "\[$srv_pid\]|\($srv_pid\)" | tail -n 2 || true)" || true
    return 1
  fi
  local s
  s=$("$lg" settle --pid "$srv_pid" --max-s 60 || true)
  if [[ $s == *'"settled":false'* ]]; then
    log "$t: still busy 60 s after the load; restarting it"
    record_spend "$t"
    stop_group "$srv_pid"
    start_server "$t" "$r" "$pre.restart$(date +%s)" || return 1
  fi
  return 0
}

log "targets: $targets; modes $modes; rates $rates/s; ${seconds}s per point after ${warmup}s warm-up; $rounds round(s); max ladder: $([[ $do_max == 1 ]] && echo "rounds 1-$max_rounds, ${max_seconds}s per step" || echo off); sustained: achieved >= 95%, errors < 1%, p99 <= ${p99_cap_ms} ms"
# Is the machine idle? CPU charged to processes (user+nice+system) over one second.
cpu_procs() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }
b0=$(cpu_procs)
sleep 1
busy=$(($(cpu_procs) - b0))
if ((busy > 10)); then
  log "warning: other processes use ${busy}% of a core: the numbers will be low and noisy (see the table's other CPU column)"
fi
t_start=$SECONDS
for ((r = 1; r <= rounds; r++)); do
  for t in ${targets//,/ }; do run_target "$t" "$r"; done
done
log "measured in $((SECONDS - t_start)) s"

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 "$here/report.py" --raw "$raw" --versions "$work/versions.tsv" --commands "$work/commands.tsv" \
  --targets "$targets" --modes "$modes" --rates "$rates" --rounds "$rounds" --root "$root" \
  --p99-cap-ms "$p99_cap_ms" --max-rates "$max_rates" \
  --params "rounds=$rounds,seconds=$seconds,warmup_s=$warmup,delay_ms=$delay_ms,timeout_s=$timeout_s,max=$do_max,max_rounds=$max_rounds,max_seconds=$max_seconds,max_warmup_s=$max_warmup,p99_cap_ms=$p99_cap_ms,litellm_workers=${litellm_workers:-default},litellm_database=$([[ -n $litellm_db ]] && echo yes || echo no)" \
  --json "$here/results/$stamp.json"
log "results: bench/gateway/results/$stamp.json"
