#!/usr/bin/env bash
# What logins cost per request (issue 20: < 50 µs p99 with a cached credential check), side by
# side with mlflow's basic-auth app. Each server is started twice on the same machine, without
# and with logins; the load generator drives both in interleaved rounds with the same sequential
# requests (GET experiments/get, one-metric POST runs/log-batch) as an admin and as a regular
# user in its own experiment, and reports p50/p99 and "auth on − auth off".
#
# Usage: bench/tracking/auth.sh            (loopml and mlflow, a few minutes)
# Env:   BENCH_SERVERS (default loopml,mlflow), BENCH_REQUESTS (2000 loopml / 500 mlflow per
#        round), BENCH_ROUNDS (5), LOOPML_BIN (skip building loopml), BENCH_KEEP=1 keeps the logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
servers=${BENCH_SERVERS:-loopml,mlflow}
rounds=${BENCH_ROUNDS:-5}
work=$(mktemp -d /tmp/loopml-bench-auth.XXXXXX)
pgids=()
log() { printf '[auth-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
cleanup() {
  for g in "${pgids[@]+"${pgids[@]}"}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 1
  for g in "${pgids[@]+"${pgids[@]}"}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

log "building the load generator (release)"
(cd "$here/loadgen" && cargo build --release --quiet) || die "cannot build bench/tracking/loadgen"
lg="$here/loadgen/target/release/loadgen"
if [[ -n ${LOOPML_BIN:-} ]]; then
  loopml_bin=$LOOPML_BIN
elif [[ $servers == *loopml* ]]; then
  log "building loopml (cargo build --release -p loopml)"
  (cd "$root" && cargo build --release --quiet -p loopml) || die "cannot build loopml"
  loopml_bin="$root/target/release/loopml"
fi
if [[ $servers == *mlflow* && ! -x $root/.venv/bin/mlflow ]]; then
  "$root/scripts/setup-venv.sh" >&2 || die "cannot set up .venv"
fi

admin_pw="bench-Admin-$(date +%s)-pw"
user_pw="bench-User-$(date +%s)-pw"
b64() { printf '%s' "$1" | base64 -w0; }
admin_auth="Basic $(b64 "admin:$admin_pw")"
user_auth="Basic $(b64 "bench:$user_pw")"

# start NAME DIR PORT on|off: a server in its own process group.
start() {
  local name=$1 dir=$2 port=$3 mode=$4 cmd
  mkdir -p "$dir"
  case $name in
    loopml)
      cmd=("$loopml_bin" server --host 127.0.0.1 --port "$port" --data-dir "$dir/data")
      [[ $mode == on ]] && cmd+=(--auth) ;;
    mlflow)
      cmd=("$root/.venv/bin/mlflow" server --backend-store-uri "sqlite:///$dir/mlflow.db"
        --artifacts-destination "$dir/art" --host 127.0.0.1 --port "$port")
      [[ $mode == on ]] && cmd+=(--app-name basic-auth) ;;
  esac
  # setsid (not in a subshell) keeps $! as the group leader, so cleanup reaches the workers.
  MLFLOW_AUTH_ADMIN_PASSWORD="$admin_pw" MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_FLASK_SERVER_SECRET_KEY="bench-$(date +%s)" \
    setsid env -C "$dir" "${cmd[@]}" >"$dir/server.log" 2>&1 </dev/null &
  pgids+=("$!")
}

results=()
for s in ${servers//,/ }; do
  case $s in loopml|mlflow) ;; *) die "unknown server '$s'" ;; esac
  p_off=$("$lg" freeport | sed 's/[^0-9]//g')
  p_on=$("$lg" freeport | sed 's/[^0-9]//g')
  while [[ $p_on == "$p_off" ]]; do p_on=$("$lg" freeport | sed 's/[^0-9]//g'); done
  log "$s: starting without logins on $p_off and with them on $p_on"
  start "$s" "$work/$s-off" "$p_off" off
  start "$s" "$work/$s-on" "$p_on" on
  "$lg" ready --url "http://127.0.0.1:$p_off" --path /health --timeout-s 180 >/dev/null ||
    die "$s (off) did not start: $(tail -n 5 "$work/$s-off/server.log")"
  "$lg" ready --url "http://127.0.0.1:$p_on" --path /health --timeout-s 180 >/dev/null ||
    die "$s (on) did not start: $(tail -n 5 "$work/$s-on/server.log")"
  for g in "${pgids[@]}"; do "$lg" settle --pid "$g" --max-s 60 >/dev/null || true; done
  code=$(curl -s -o "$work/$s-user.json" -w '%{http_code}' -X POST \
    -H "Authorization: $admin_auth" -H 'Content-Type: application/json' \
    -d "{\"username\": \"bench\", \"password\": \"$user_pw\"}" \
    "http://127.0.0.1:$p_on/api/2.0/mlflow/users/create")
  [[ $code == 200 ]] || die "$s: cannot create the bench user ($code): $(cat "$work/$s-user.json")"
  default_requests=2000
  [[ $s == mlflow ]] && default_requests=500
  log "$s: measuring (${BENCH_REQUESTS:-$default_requests} requests x 3 targets x 2 kinds x $rounds rounds)"
  out=$("$lg" auth-overhead --off "http://127.0.0.1:$p_off" --on "http://127.0.0.1:$p_on" \
    --admin-auth "$admin_auth" --user-auth "$user_auth" \
    --requests "${BENCH_REQUESTS:-$default_requests}" --rounds "$rounds") ||
    die "$s: the load generator failed: $out"
  results+=("{\"server\": \"$s\", \"result\": $out}")
  for g in "${pgids[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 2
  pgids=()
done

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
printf '[%s]\n' "$(IFS=,; echo "${results[*]}")" >"$here/results/auth-$stamp.json"
python3 - "$here/results/auth-$stamp.json" <<'EOF'
import json, sys

runs = json.load(open(sys.argv[1]))
print("| server | request | off p50 / p99 (µs) | admin p50 / p99 | user p50 / p99 | added p99: admin | added p99: user |")
print("|---|---|---|---|---|---|---|")
for r in runs:
    for kind, label in [("get", "GET experiments/get"), ("log", "POST runs/log-batch")]:
        t = r["result"]["results"][kind]
        cell = lambda k: f'{t[k]["p50_us"]:.0f} / {t[k]["p99_us"]:.0f}'
        print(f'| {r["server"]} | {label} | {cell("off")} | {cell("admin")} | {cell("user")} '
              f'| {t["admin"]["added_p99_us"]:+.0f} µs | {t["user"]["added_p99_us"]:+.0f} µs |')
print()
print("Medians over", runs[0]["result"]["rounds"], "interleaved rounds; 'added' = auth on - auth off, same build, same machine.")
print("results:", sys.argv[1])
EOF
