#!/usr/bin/env bash
# Creates bench/serving/.venv (git-ignored) with the pinned Python side of the serving benchmark:
# mlflow 3.17.2 (for `mlflow models serve --env-manager local`), scikit-learn 1.9.1 (the forest),
# skl2onnx + onnx (conversion, the heavy MLP) and onnxruntime 1.32.0 (checks the models; lets
# mlflow serve the ONNX file too). The same versions as the loopml-serving test fixtures
# (crates/loopml-serving/tests/fixtures/gen_models.py). Idempotent: a marker file records the
# pins the venv was built with; when it matches, nothing is done.
#
# Env: BENCH_VENV (default bench/serving/.venv), PYTHON (default /usr/bin/python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${BENCH_VENV:-$here/.venv}
python=${PYTHON:-/usr/bin/python3}
[[ -x $python ]] || python=$(command -v python3)

pins=(
  "mlflow==3.17.2"
  "mlflow-skinny==3.17.2"
  "scikit-learn==1.9.1"
  "pandas==3.1.1"
  "numpy==2.4.6"
  "scipy==1.17.1"
  "skl2onnx==1.20.0"
  "onnx==1.23.2"
  "onnxruntime==1.32.0"
  "protobuf==7.36.2"
)
marker="$venv/.bench-serving-pins"
want=$(printf '%s\n' "${pins[@]}")

export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PIP_DISABLE_PIP_VERSION_CHECK=1

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
# A newer pip is nice to have, not required.
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install --quiet "${pins[@]}"
"$venv/bin/python" - <<'PY'
import mlflow, sklearn, pandas, numpy, skl2onnx, onnx, onnxruntime
print("setup: mlflow", mlflow.__version__, "| scikit-learn", sklearn.__version__,
      "| pandas", pandas.__version__, "| numpy", numpy.__version__, "| skl2onnx", skl2onnx.__version__,
      "| onnx", onnx.__version__, "| onnxruntime", onnxruntime.__version__)
PY
[[ -x $venv/bin/mlflow ]] || { echo "setup: $venv has no mlflow command" >&2; exit 1; }
printf '%s\n' "$want" >"$marker"
