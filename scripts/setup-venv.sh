#!/usr/bin/env bash
# Creates (or reuses) .venv with the pinned real clients the compatibility suite drives.
# Idempotent: skips pip when the requirements have not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
req=compat/mlflow/requirements.txt
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "venv up to date ($venv)"
  exit 0
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! "$venv/bin/python" -m pip install --quiet -r "$req"; then
  echo "error: could not install $req into $venv" >&2
  exit 1
fi
"$venv/bin/python" -c "import mlflow, sklearn, pandas; print('mlflow', mlflow.__version__)"
echo "$want" > "$stamp"
