#!/usr/bin/env bash
# Install the host packages the Weir test cluster needs (Debian 12), and the
# helm-sdkpy Python package used by tests/cluster/helm.py. Idempotent: only
# missing packages are installed.
#
# Usage: tests/cluster/install-deps.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

PKGS=(
  # cluster runtime
  etcd-server containerd runc containernetworking-plugins
  iproute2 iptables openssl ca-certificates procps util-linux kmod
  # building kubernetes v1.20.2 from Debian's source package, and pause
  golang-go rsync make gcc libc6-dev dpkg-dev xz-utils
  # image.sh / helm.py
  tar gzip coreutils python3 python3-pip python3-yaml
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "all Debian packages present"
fi

# helm-sdkpy (Helm 4's Go library with Python bindings). It declares
# Python >= 3.12; on Debian 12's 3.11 it works with --ignore-requires-python.
# Use whichever python3 is first on PATH (that is the one helm.py runs with).
PY="${PYTHON:-python3}"
if "$PY" -c 'import helm_sdkpy' 2>/dev/null; then
  log "helm-sdkpy present ($("$PY" -m pip show helm-sdkpy 2>/dev/null | sed -n 's/^Version: //p'))"
else
  log "installing helm-sdkpy with $PY"
  "$PY" -m pip install --ignore-requires-python --break-system-packages helm-sdkpy 2>/dev/null \
    || "$PY" -m pip install --ignore-requires-python helm-sdkpy
fi
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  "$PY" -m pip install --break-system-packages pyyaml 2>/dev/null || "$PY" -m pip install pyyaml
fi
log "dependencies ready"
