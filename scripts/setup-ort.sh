#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library for model serving: the `onnxruntime` wheel from PyPI
# (the ort crate's own download step needs a CDN that is not reachable here), unpacked into
# .cache/onnxruntime/. Idempotent: nothing is downloaded when the library is already there.
# Prints the library's path on stdout (the last line); progress goes to stderr.
#
# Env: LOOPML_ORT_VERSION (default 1.32.0; ort 2.0.0-rc.15 with api-24 needs >= 1.24).
set -euo pipefail
cd "$(dirname "$0")/.."

version=${LOOPML_ORT_VERSION:-1.32.0}
dir=.cache/onnxruntime/$version
lib="$dir/libonnxruntime.so.$version"

if [ -f "$lib" ]; then
  echo "$PWD/$lib"
  exit 0
fi

python=python3
command -v "$python" >/dev/null || { echo "error: python3 is needed to download the onnxruntime wheel" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A Python without pip (Debian's python3 without python3-pip) gets a throwaway venv, which has it.
if ! "$python" -m pip --version >/dev/null 2>&1; then
  "$python" -m venv "$tmp/venv" >&2 || { echo "error: python3 has no pip and cannot create a venv (install python3-venv)" >&2; exit 1; }
  python="$tmp/venv/bin/python"
fi
echo "downloading onnxruntime $version from PyPI" >&2
# The wheel's Python tag does not matter for the shared library; pin one for reproducibility.
if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 \
    "onnxruntime==$version" -d "$tmp" >&2; then
  echo "error: could not download onnxruntime==$version from PyPI" >&2
  exit 1
fi
wheel=$(ls "$tmp"/onnxruntime-*.whl)
"$python" - "$wheel" "$tmp/x" "$version" <<'PY'
import sys, zipfile
wheel, out, version = sys.argv[1:]
name = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z:
    z.extract(name, out)
PY
mkdir -p "$dir"
mv "$tmp/x/onnxruntime/capi/libonnxruntime.so.$version" "$lib.partial"
mv "$lib.partial" "$lib"
echo "onnxruntime $version ready: $lib" >&2
echo "$PWD/$lib"
