#!/usr/bin/env bash
# Creates bench/data/.venv (git-ignored) with the pinned Python side of the data benchmark:
# Evidently 0.7 (DataDriftPreset) and Great Expectations 1.x, on pandas 2 (Evidently 0.7 does
# not import with pandas 3 but does not pin pandas<3). Idempotent: a marker file records the
# pins the venv was built with; when it matches, nothing is done.
#
# Env: BENCH_VENV (default bench/data/.venv), PYTHON (default /usr/bin/python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${BENCH_VENV:-$here/.venv}
python=${PYTHON:-/usr/bin/python3}
[[ -x $python ]] || python=$(command -v python3)

pins=(
  "evidently==0.7.23"
  "great_expectations==1.24.1"
  "pandas==2.3.3"
  "pyarrow==26.0.1"
  "numpy==2.4.6"
  "scipy==1.17.1"
)
marker="$venv/.bench-data-pins"
want=$(printf '%s\n' "${pins[@]}")

export DO_NOT_TRACK=1 GX_ANALYTICS_ENABLED=false PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ -f $marker && "$(cat "$marker")" == "$want" && -x $venv/bin/python ]]; then
  echo "setup: $venv is up to date" >&2
  exit 0
fi

if [[ ! -x $venv/bin/python ]]; then
  echo "setup: creating $venv with $python" >&2
  "$python" -m venv "$venv"
fi
rm -f "$marker"
echo "setup: installing ${pins[*]}" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${pins[@]}"
# Both tools must import (Evidently fails at import with a wrong pandas).
"$venv/bin/python" - <<'PY'
import evidently, great_expectations, pandas, pyarrow, numpy, scipy
from evidently import Report, Dataset, DataDefinition
from evidently.presets import DataDriftPreset
print("setup: evidently", evidently.__version__, "| great_expectations", great_expectations.__version__,
      "| pandas", pandas.__version__, "| pyarrow", pyarrow.__version__, "| numpy", numpy.__version__,
      "| scipy", scipy.__version__)
PY
printf '%s\n' "$want" >"$marker"
