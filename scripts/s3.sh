#!/usr/bin/env bash
# A throwaway S3-compatible server for the tests and benchmarks: moto's server (PyPI
# `moto[s3]` + flask-cors, installed into .venv by scripts/setup-venv.sh), in memory.
#   scripts/s3.sh start   start it (if not running) and create the test bucket; prints the endpoint
#   scripts/s3.sh stop    stop it (everything stored is gone)
#   scripts/s3.sh env     print the AWS_* settings a loopml process needs, as `export` lines
# Settings: LOOPML_S3_PORT (default 59100). The bucket is `loopml-test`; give each server a prefix
# of its own (s3://loopml-test/<prefix>).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${LOOPML_S3_PORT:-59100}
endpoint="http://127.0.0.1:$port"
bucket=loopml-test
dir=${LOOPML_S3_DIR:-/tmp/loopml-s3-$port}
pidfile="$dir/moto.pid"

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

answers() {
  .venv/bin/python - "$endpoint" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/", timeout=1).read()
PY
}

start() {
  if [ ! -x .venv/bin/moto_server ]; then
    scripts/setup-venv.sh >&2
  fi
  mkdir -p "$dir"
  if ! running; then
    # moto checks no signature by default: any key id / secret works.
    nohup .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      answers && break
      running || { cat "$dir/moto.log" >&2; echo "s3.sh: moto_server exited" >&2; exit 1; }
      sleep 0.1
    done
    answers || { cat "$dir/moto.log" >&2; echo "s3.sh: moto_server does not answer on $endpoint" >&2; exit 1; }
  fi
  .venv/bin/python - "$endpoint/$bucket" <<'PY' >&2
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PUT"), timeout=5).read()
PY
  echo "$endpoint"
}

stop() {
  if running; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env)
    echo "export AWS_ENDPOINT_URL=$endpoint"
    echo "export AWS_ACCESS_KEY_ID=loopml-test"
    echo "export AWS_SECRET_ACCESS_KEY=loopml-test"
    echo "export AWS_REGION=us-east-1"
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
