# shellcheck shell=bash
# Shared variables and helpers for the Weir local test cluster scripts.
# Source it; it does not change shell options of the caller except what the
# calling script already set.

WEIR_CLUSTER_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export WEIR_CLUSTER_SCRIPTS
export K8S_VERSION="${K8S_VERSION:-v1.20.2}"
export WEIR_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/weir"
export WEIR_CLUSTER_DIR="${WEIR_CLUSTER_DIR:-/tmp/weir-cluster}"
export K8S_BIN="$WEIR_CACHE/k8s-$K8S_VERSION/bin"

# Network of the node's own bridge (used only by this node).
export WEIR_BRIDGE="${WEIR_BRIDGE:-weirbr0}"
export WEIR_POD_CIDR="${WEIR_POD_CIDR:-10.244.77.0/24}"
export WEIR_NODE_IP="${WEIR_NODE_IP:-10.244.77.1}"
export WEIR_SERVICE_CIDR="${WEIR_SERVICE_CIDR:-10.96.0.0/16}"
export WEIR_NODE_NAME="${WEIR_NODE_NAME:-weir-node}"

# Ports (all on loopback, kubelet on the node IP).
export ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-2379}"
export ETCD_PEER_PORT="${ETCD_PEER_PORT:-2380}"
export APISERVER_PORT="${APISERVER_PORT:-6443}"
export KUBELET_PORT="${KUBELET_PORT:-10250}"

export CONTAINERD_SOCK="$WEIR_CLUSTER_DIR/containerd/containerd.sock"
export KUBECONFIG_FILE="$WEIR_CLUSTER_DIR/kubeconfig"
export PAUSE_IMAGE="docker.io/local/pause:3.4.1"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_of NAME -> the PID recorded in $WEIR_CLUSTER_DIR/pids/NAME.pid, if that
# process is alive and is ours (its command line mentions $WEIR_CLUSTER_DIR,
# which guards against PID reuse). Returns 1 otherwise.
pid_of() {
  local f="$WEIR_CLUSTER_DIR/pids/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -F "$WEIR_CLUSTER_DIR" >/dev/null || return 1
  echo "$pid"
}
pid_alive() { pid_of "$1" >/dev/null; }

# kubectl with the cached v1.20 client and the cluster's admin kubeconfig
kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...
wait_for() {
  local what="$1" timeout="$2" i=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if (( i > timeout )); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 1
  done
}

need_root() { [[ "$(id -u)" == 0 ]] || die "must run as root"; }
