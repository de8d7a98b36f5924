#!/usr/bin/env bash
# A throwaway Redis server for the tests and benchmarks, started without systemd.
#   scripts/redis.sh start   start it (installing Debian's redis-server when missing); prints its URL
#   scripts/redis.sh stop    stop it
#   scripts/redis.sh url     print its URL
# Settings: LOOPML_REDIS_PORT (default 56379). Nothing is persisted (no RDB, no AOF).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${LOOPML_REDIS_PORT:-56379}
dir=${LOOPML_REDIS_DIR:-/tmp/loopml-redis-$port}
url="redis://127.0.0.1:$port"

if ! command -v redis-server >/dev/null; then
  echo "redis.sh: installing Debian's redis-server package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >&2; }
fi

ping() {
  redis-cli -p "$port" ping 2>/dev/null | grep -q PONG
}

case "${1:-}" in
  start)
    mkdir -p "$dir"
    if ! ping; then
      redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
      for _ in $(seq 1 100); do ping && break; sleep 0.05; done
      ping || { cat "$dir/redis.log" >&2; echo "redis.sh: redis-server does not answer" >&2; exit 1; }
    fi
    echo "$url"
    ;;
  stop)
    if ping; then redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; fi
    ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
