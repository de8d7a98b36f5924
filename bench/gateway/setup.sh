#!/usr/bin/env bash
# Makes bench/gateway/.venv with the LiteLLM proxy from PyPI, pinned.
#
# litellm 1.108.7 is the newest release whose `[proxy]` extra installs from PyPI: from 1.108.8
# on, the extra requires `litellm-proxy==<same version>`, which PyPI does not serve ("No
# matching distribution found for litellm-proxy==1.110.2"), and pip's resolver itself falls
# back to 1.108.7 for an unpinned `litellm[proxy]`.
#
# LiteLLM's virtual keys, budgets and spend logs need its database (DATABASE_URL, through
# prisma-client-py). That needs Prisma's query engine, a native binary that prisma downloads
# from binaries.prisma.sh at `prisma generate`; neither PyPI (`prisma` 0.15.0 ships no engine)
# nor npm (`prisma`, `@prisma/engines` download it in postinstall) carries it, and that host is
# not reachable here, so this venv has no `prisma` and LiteLLM runs without a database (see
# README.md). setup.sh still records what installing prisma would do: BENCH_TRY_PRISMA=1 installs
# `prisma` into a scratch venv and runs `prisma --version`, which prints the download error.
#
# Env: BENCH_VENV (default bench/gateway/.venv).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${BENCH_VENV:-$here/.venv}
litellm_version=1.108.7

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() {
  [[ -x $venv/bin/litellm ]] &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys
sys.exit(m.version('litellm') != '$litellm_version')" 2>/dev/null &&
    "$venv/bin/python" -c "import fastapi, uvicorn, orjson, backoff, apscheduler" 2>/dev/null
}

if have; then
  log "reusing $venv (litellm $litellm_version)"
else
  log "creating $venv with litellm[proxy]==$litellm_version from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$litellm_version" >&2
  have || { log "litellm[proxy]==$litellm_version did not install"; exit 1; }
fi

if [[ ${BENCH_TRY_PRISMA:-0} == 1 ]]; then
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/gw-prisma.XXXXXX")
  log "BENCH_TRY_PRISMA=1: pip install prisma into $scratch/venv, then prisma --version"
  python3 -m venv "$scratch/venv"
  "$scratch/venv/bin/pip" install -q --disable-pip-version-check prisma >&2
  PRISMA_HOME_DIR=$scratch/home timeout 300 "$scratch/venv/bin/prisma" --version >&2 ||
    log "prisma --version failed (rc=$?): the engines cannot be fetched here"
  rm -rf "$scratch"
fi
