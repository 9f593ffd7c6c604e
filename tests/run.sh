#!/usr/bin/env bash
# Runs every Weir test: formatting and lints, CRD drift, chart lint, unit and
# integration tests, then the end-to-end suites against a real local
# Kubernetes cluster (brought up by tests/cluster/up.sh and stopped at the end).
#
#   bash tests/run.sh            # everything
#   WEIR_SKIP_E2E=1 bash tests/run.sh   # no cluster
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tests/cluster/lib.sh
# Builds are cached between runs (CI starts from a fresh clone).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WEIR_CACHE/target}"
export PATH="$WEIR_CACHE/cargo/bin:$PATH"
start=$(date +%s)
step() { log "== $* ($(( $(date +%s) - start ))s)"; }

step "dependencies"
bash tests/install-build-deps.sh

step "format"
cargo fmt --all -- --check

step "build"
cargo build --workspace --bins --tests --locked

step "lints"
# Lints only check, they never link: pointing librocksdb-sys at an empty library directory
# keeps cargo from compiling RocksDB's C++ a second time for the check profile (~25 min on
# 2 cores); the build above compiled the real one.
mkdir -p "$WEIR_CACHE/lints-no-rocksdb"
ROCKSDB_LIB_DIR="$WEIR_CACHE/lints-no-rocksdb" cargo clippy --workspace --all-targets --locked -- -D warnings

step "CRDs match the code"
"$CARGO_TARGET_DIR/debug/crdgen" --check
cmp alerts/default-rules.yaml charts/weir/files/default-rules.yaml

step "Helm chart lint"
python3 tests/cluster/helm.py lint charts/weir

step "unit and integration tests"
cargo nextest run --workspace --locked --no-fail-fast --exclude weir-e2e

if [[ "${WEIR_SKIP_E2E:-}" == 1 ]]; then
  step "end-to-end suites skipped (WEIR_SKIP_E2E=1)"
  exit 0
fi

step "local Kubernetes cluster"
bash tests/cluster/build-k8s.sh
cluster_started=1
if pid_alive kube-apiserver; then cluster_started=0; fi
bash tests/cluster/up.sh
cleanup() { if [[ $cluster_started == 1 && "${WEIR_KEEP_CLUSTER:-}" != 1 ]]; then bash tests/cluster/down.sh || true; fi; }
trap cleanup EXIT
source tests/cluster/env.sh

step "binaries for the images (stripped debug builds; the suites build and import the images)"
mkdir -p "$WEIR_CACHE/image-bin"
for b in weir-operator weir-runtime; do
  strip -o "$WEIR_CACHE/image-bin/$b" "$CARGO_TARGET_DIR/debug/$b"
done
export WEIR_E2E_OPERATOR_BIN="$WEIR_CACHE/image-bin/weir-operator"
export WEIR_E2E_RUNTIME_BIN="$WEIR_CACHE/image-bin/weir-runtime"

step "no other Weir operator acting on every namespace"
# An operator installed by hand or by an older tests/demo.sh that watches all namespaces would
# reconcile the suites' StreamJobs too (final checkpoints, pod restarts) and make them flaky.
kubectl get deployments --all-namespaces -l app.kubernetes.io/name=weir,app.kubernetes.io/component=operator -o json |
  python3 -c '
import json, sys
for d in json.load(sys.stdin)["items"]:
    ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
    env = {e["name"]: e.get("value", "") for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    if not ns.startswith("weir-e2e") and not env.get("WEIR_NAMESPACES") and d["spec"].get("replicas", 1) > 0:
        print(ns, name)
' | while read -r ns name; do
  log "scaling $ns/$name to 0: it watches every namespace, so it would act on the suites' jobs (tests/demo.sh installs it again, watching only default)"
  kubectl -n "$ns" scale deployment "$name" --replicas=0
done

step "end-to-end suites"
WEIR_E2E=1 cargo nextest run --locked -p weir-e2e --no-fail-fast --test-threads 1
step "all tests passed"
