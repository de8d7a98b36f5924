#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and benchmarks, started without systemd.
#   scripts/postgres.sh start   initialise (first time) and start; prints the admin URL
#   scripts/postgres.sh stop    stop it (fast shutdown)
#   scripts/postgres.sh kill    stop it like a crash (-m immediate)
#   scripts/postgres.sh url     print the admin URL
#   scripts/postgres.sh ca      print the path of the test CA that signed the server's certificate
# TLS is on (a certificate for localhost / 127.0.0.1 from a test CA, made on first start), so the
# tests can connect with sslmode=require / verify-full as well as without TLS.
# Settings: LOOPML_PG_DIR (default /tmp/loopml-pg-PORT), LOOPML_PG_PORT (default 55432).
# Uses Debian's PostgreSQL 15 (on the machine image; installed with apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Outside the checkout: the postgres user must be able to reach it (a clone under /root is not).
dir=${LOOPML_PG_DIR:-/tmp/loopml-pg-${LOOPML_PG_PORT:-55432}}
port=${LOOPML_PG_PORT:-55432}
url="postgres://postgres@127.0.0.1:$port/postgres"

bin=""
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/initdb" ] && bin=$d
done
if [ -z "$bin" ]; then
  echo "postgres.sh: installing Debian's postgresql package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && bin=$d
  done
fi

# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/bash -c "$*"
  else
    bash -c "$*"
  fi
}

start() {
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb -D '$dir/data' -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8" >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if as_pg "$bin/pg_ctl -D '$dir/data' status" >/dev/null 2>&1; then
    echo "$url"
    return
  fi
  if [ ! -f "$dir/server.crt" ] && command -v openssl >/dev/null; then
    # A test CA, and a server certificate it signs (webpki refuses a CA certificate presented
    # as the server's own, which a bare `req -x509` would make).
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=loopml test CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 3650 -extfile "$dir/server.ext" -out "$dir/server.crt" >/dev/null 2>&1
    chmod 600 "$dir/server.key"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/server.key" "$dir/server.crt"; fi
  fi
  # Tuned for tests on a small machine: more connections than replicas x pool need, and
  # fsync on (the crash tests rely on real durability).
  # TLS when the certificate could be made (openssl is on Debian's image; without it the
  # server runs without TLS and the TLS test skips).
  tls=""
  if [ -f "$dir/server.crt" ]; then
    tls="-c ssl=on -c ssl_cert_file='$dir/server.crt' -c ssl_key_file='$dir/server.key'"
  fi
  # A server that died without cleaning up leaves its lock file; in a container its PID may
  # now belong to another process, and PostgreSQL would refuse to start.
  rm -f "$dir/data/postmaster.pid"
  if ! as_pg "$bin/pg_ctl -D '$dir/data' -l '$dir/log' -w -t 60 start \
    -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300 \
        -c shared_buffers=128MB $tls\"" >&2; then
    echo "postgres.sh: PostgreSQL did not start on port $port; its log ($dir/log) ends:" >&2
    tail -n 30 "$dir/log" >&2 || true
    exit 1
  fi
  echo "$url"
}

case "${1:-start}" in
  start) start ;;
  stop) as_pg "$bin/pg_ctl -D '$dir/data' -m fast -w stop" >&2 || true ;;
  kill) as_pg "$bin/pg_ctl -D '$dir/data' -m immediate -w stop" >&2 || true ;;
  url) echo "$url" ;;
  ca) echo "$dir/ca.crt" ;;
  *) echo "usage: $0 start|stop|kill|url|ca" >&2; exit 2 ;;
esac
