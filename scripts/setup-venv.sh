#!/usr/bin/env bash
# Creates (or reuses) <repo>/.venv with the pinned real clients the compatibility suite drives.
# Idempotent: pip runs only when compat/mlflow/requirements.txt changed since the last successful
# install (a sha256 stamp inside the venv). Any failure stops the script with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."

req=compat/mlflow/requirements.txt
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  if ! python3 -m venv "$venv"; then
    echo "error: python3 -m venv $venv failed (is the python3-venv package installed?)" >&2
    exit 1
  fi
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "venv up to date ($venv, $req unchanged)"
  exit 0
fi

echo "installing $req into $venv"
# A newer pip is nice to have, not required: an offline mirror may not carry one.
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! "$venv/bin/python" -m pip install --quiet -r "$req"; then
  echo "error: could not install $req into $venv" >&2
  exit 1
fi

# The pinned client must be the one that imports.
pinned=$(sed -n 's/^mlflow==\([^ ;#]*\).*/\1/p' "$req")
if ! got=$("$venv/bin/python" -c "import mlflow, sklearn, pandas, pytest, requests; print(mlflow.__version__)"); then
  echo "error: the suite's packages do not import from $venv" >&2
  exit 1
fi
if [ "$got" != "$pinned" ]; then
  echo "error: $venv has mlflow $got, $req pins $pinned" >&2
  exit 1
fi
echo "mlflow $got ready in $venv"
echo "$want" > "$stamp"
