#!/usr/bin/env bash
# The README's first command: brings up the local Kubernetes cluster, builds
# Weir, installs it with its Helm chart, applies the quickstart StreamJob and
# shows `kubectl get sj`. Leaves the cluster running (stop it with
# `bash tests/cluster/down.sh`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tests/cluster/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WEIR_CACHE/target}"

bash tests/install-build-deps.sh
bash tests/cluster/build-k8s.sh
bash tests/cluster/up.sh
source tests/cluster/env.sh

log "building Weir (release)"
cargo build --release --locked -p weir-operator -p weir-runtime
bash tests/cluster/image.sh weir-operator 0.1.0 "$CARGO_TARGET_DIR/release/weir-operator"
bash tests/cluster/image.sh weir-runtime 0.1.0 "$CARGO_TARGET_DIR/release/weir-runtime"

log "installing the chart (the operator watches the default namespace only: the end-to-end
suites install their own operators, and two operators acting on one job would fight)"
kubectl create namespace weir-system --dry-run=client -o yaml | kubectl apply -f -
python3 tests/cluster/helm.py upgrade --install weir charts/weir --namespace weir-system \
  --set hostNetwork=true --set apiServerOverride.host=127.0.0.1 --set apiServerOverride.port=6443 \
  --set 'watchNamespaces={default}'
kubectl -n weir-system rollout status deployment/weir-operator --timeout=180s

log "applying examples/quickstart.yaml"
kubectl apply -f examples/quickstart.yaml
for _ in $(seq 1 90); do
  phase="$(kubectl get sj quickstart -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  [[ "$phase" == Running ]] && break
  sleep 2
done
kubectl get sj
kubectl get pods -l weir.dev/job=quickstart -o wide
