# shellcheck shell=bash
# Source me: `source tests/cluster/env.sh`
# Exports KUBECONFIG for the test cluster and puts the cached v1.20.2
# Kubernetes binaries (kubectl included) first on PATH, so the matching
# kubectl is used instead of any other one on the machine.
_weir_env_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$_weir_env_dir/lib.sh"
export KUBECONFIG="$KUBECONFIG_FILE"
case ":$PATH:" in
  *":$K8S_BIN:"*) ;;
  *) export PATH="$K8S_BIN:$PATH" ;;
esac
export CONTAINERD_ADDRESS="$CONTAINERD_SOCK" # used by `ctr`
export CONTAINERD_NAMESPACE=k8s.io
unset _weir_env_dir
