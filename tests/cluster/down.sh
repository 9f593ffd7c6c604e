#!/usr/bin/env bash
# Stop the test cluster started by tests/cluster/up.sh: only the processes
# whose PIDs up.sh recorded in $WEIR_CLUSTER_DIR/pids (and the containerd
# shims/containers started by that containerd), then unmount what they left
# under $WEIR_CLUSTER_DIR. Caches (k8s binaries) and cluster state (etcd
# data, certificates, imported images) are kept, so `up.sh` again is fast and
# brings back the same cluster.
#
# Usage: tests/cluster/down.sh [--purge]
#   --purge  also delete $WEIR_CLUSTER_DIR (etcd data, certs, images) so the
#            next up.sh starts a fresh cluster.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
D="$WEIR_CLUSTER_DIR"
PURGE=0
[[ "${1:-}" == "--purge" ]] && PURGE=1

stop_pid() { # NAME PID [TIMEOUT]
  local name="$1" pid="$2" t="${3:-20}" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) did not stop in ${t}s, killing"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

stop_component() {
  local name="$1" pid
  if pid="$(pid_of "$name")"; then
    stop_pid "$name" "$pid" "${2:-20}"
  fi
  rm -f "$D/pids/$name.pid"
}

[[ -d "$D" ]] || { log "nothing to stop ($D does not exist)"; exit 0; }

# 1. kubelet first, so it does not restart containers we stop next
stop_component kubelet

# 2. containers and sandboxes of our containerd (namespace k8s.io)
if pid_alive containerd && [[ -S "$CONTAINERD_SOCK" ]]; then
  CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
  mapfile -t tasks < <("${CTR[@]}" tasks ls -q 2>/dev/null || true)
  if ((${#tasks[@]})); then
    log "killing ${#tasks[@]} container tasks"
    for t in "${tasks[@]}"; do "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    sleep 1
    for t in "${tasks[@]}"; do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
  fi
fi

# 3. shims started by our containerd (their command line names our socket)
for p in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
  if [[ "$cmd" == *containerd-shim* && "$cmd" == *"$CONTAINERD_SOCK"* ]]; then
    stop_pid containerd-shim "${p#/proc/}" 5
  fi
done

# 4. containerd and the control plane (the three kube-* in parallel), etcd last
stop_component containerd
for c in kube-scheduler kube-controller-manager kube-apiserver; do stop_component "$c" & done
wait
stop_component etcd

# 5. mounts left under the cluster dir (pod volumes, rootfs, netns), deepest first
mapfile -t mounts < <(awk -v d="$D/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
for m in "${mounts[@]}"; do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
done
((${#mounts[@]})) && log "unmounted ${#mounts[@]} mounts under $D"

# 6. pod IP allocations (all pods are gone) and the bridge if up.sh made it
rm -rf "$D/cni/ipam"
if [[ -f "$D/bridge-created-by-up" ]]; then
  ip link del "$WEIR_BRIDGE" 2>/dev/null || true
  rm -f "$D/bridge-created-by-up"
  log "deleted bridge $WEIR_BRIDGE"
fi

# 7. iptables chains that older up.sh versions' kubelet created (kubelet runs
#    with makeIPTablesUtilChains: false now); only if no kubelet is running
if command -v iptables >/dev/null && ! pgrep -x kubelet >/dev/null; then
  for spec in "filter INPUT KUBE-FIREWALL" "filter OUTPUT KUBE-FIREWALL" "nat POSTROUTING KUBE-POSTROUTING"; do
    read -r table chain target <<<"$spec"
    while iptables -t "$table" -S "$chain" 2>/dev/null | grep -- "-j $target\b" >/dev/null; do
      rule="$(iptables -t "$table" -S "$chain" | grep -- "-j $target\b" | head -1 | sed "s/^-A /-D /")"
      eval "iptables -t $table $rule" || break
    done
  done
  for spec in "filter KUBE-FIREWALL" "filter KUBE-KUBELET-CANARY" "nat KUBE-KUBELET-CANARY" "nat KUBE-MARK-DROP" \
    "nat KUBE-MARK-MASQ" "nat KUBE-POSTROUTING" "mangle KUBE-KUBELET-CANARY"; do
    read -r table chain <<<"$spec"
    if iptables -t "$table" -S "$chain" >/dev/null 2>&1; then
      iptables -t "$table" -F "$chain" && iptables -t "$table" -X "$chain" 2>/dev/null || true
    fi
  done
fi

if ((PURGE)); then
  rm -rf "$D"
  log "purged $D"
fi
log "cluster down (caches kept in $WEIR_CACHE)"
