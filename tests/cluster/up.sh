#!/usr/bin/env bash
# Bring up a single-node Kubernetes v1.20.2 test cluster on this machine:
# etcd, kube-apiserver (127.0.0.1:6443), kube-controller-manager,
# kube-scheduler, containerd (own root/state/socket), CNI bridge, kubelet.
# No kube-proxy and no CoreDNS (see README.md).
#
# Usage: tests/cluster/up.sh          then: source tests/cluster/env.sh
# Idempotent: components already running (by recorded PID) are left alone;
# if everything is up and healthy it returns at once.
# Needs: tests/cluster/install-deps.sh and tests/cluster/build-k8s.sh first.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
T0=$(date +%s)

D="$WEIR_CLUSTER_DIR"
PKI="$D/pki"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause; do
  [[ -x "$K8S_BIN/$b" ]] || die "$K8S_BIN/$b missing: run tests/cluster/build-k8s.sh"
done
for b in etcd containerd runc ctr containerd-shim-runc-v2 openssl curl ip; do
  command -v "$b" >/dev/null || die "$b missing: run tests/cluster/install-deps.sh"
done
[[ -x /usr/lib/cni/bridge ]] || die "CNI plugins missing: run tests/cluster/install-deps.sh"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)

apiserver_ready() {
  [[ -f "$PKI/admin.token" ]] &&
    curl -sf --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$PKI/admin.token")" \
      "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null
}
node_ready() {
  [[ "$(kc get node "$WEIR_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
kubelet_healthy() {
  curl -sf --max-time 2 http://127.0.0.1:10248/healthz >/dev/null
}
# node Ready with a heartbeat from the current kubelet (after a down/up the
# node object still says Ready from before, until the grace period runs out)
node_ready_since() { # RFC3339 UTC timestamp
  local s
  s="$(kc get node "$WEIR_NODE_NAME" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null)"
  [[ "${s%% *}" == True && ! "${s#* }" < "$1" ]]
}
default_sa_ready() {
  [[ -n "$(kc -n default get serviceaccount default -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ]]
}

# Bump when the kubelet configuration below changes: a running cluster is then brought up again
# (the kubelet restarts with the new configuration; pods keep running).
KUBELET_CONFIG_VERSION=2
all_up=1
for c in "${COMPONENTS[@]}"; do pid_alive "$c" || all_up=0; done
[[ "$(cat "$D/kubelet/config-version" 2>/dev/null)" == "$KUBELET_CONFIG_VERSION" ]] || all_up=0
if ((all_up)) && apiserver_ready && kubelet_healthy && node_ready; then
  log "cluster already up (node $WEIR_NODE_NAME Ready); KUBECONFIG=$KUBECONFIG_FILE"
  exit 0
fi

mkdir -p "$D"/{pids,logs,pki,etcd,containerd,cni/net.d,cni/ipam,kubelet,images}
chmod 700 "$PKI"

# start_daemon NAME BINARY ARGS... : start in its own session, record the PID
start_daemon() {
  local name="$1" pid
  shift
  if pid="$(pid_of "$name")"; then
    log "$name already running (pid $pid)"
    return 0
  fi
  echo "=== $(date -Is) starting: $*" >>"$D/logs/$name.log"
  setsid "$@" >>"$D/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$D/pids/$name.pid"
  sleep 0.5
  pid_alive "$name" || die "$name exited at once; see $D/logs/$name.log:
$(tail -20 "$D/logs/$name.log")"
  log "started $name (pid $(cat "$D/pids/$name.pid")), log $D/logs/$name.log"
}

# --------------------------------------------------------------------------
# certificates (throwaway CA), tokens, kubeconfigs — made once per cluster dir
# --------------------------------------------------------------------------
# mkcert NAME SUBJECT EXT_KEY_USAGE [SANS]
mkcert() {
  local name="$1" subj="$2" eku="$3" sans="${4:-}"
  [[ -f "$PKI/$name.crt" ]] && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    [[ -z "$sans" ]] || echo "subjectAltName = $sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

if [[ ! -f "$PKI/ca.crt" ]]; then
  log "creating throwaway CA and certificates in $PKI"
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=weir-test-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
fi
mkcert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:$WEIR_NODE_IP,IP:${WEIR_SERVICE_CIDR%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
mkcert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
mkcert kubelet "/CN=$WEIR_NODE_NAME" serverAuth "IP:$WEIR_NODE_IP,DNS:$WEIR_NODE_NAME"
mkcert kubelet-client "/O=system:nodes/CN=system:node:$WEIR_NODE_NAME" clientAuth
if [[ ! -f "$PKI/sa.key" ]]; then
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
if [[ ! -f "$PKI/admin.token" ]]; then
  openssl rand -hex 24 >"$PKI/admin.token"
  echo "$(cat "$PKI/admin.token"),weir-admin,weir-admin,system:masters" >"$PKI/tokens.csv"
fi
chmod 600 "$PKI"/*.key "$PKI/admin.token" "$PKI/tokens.csv"

CA_DATA="$(base64 -w0 "$PKI/ca.crt")"
write_kubeconfig() { # FILE USER-STANZA
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: weir
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $CA_DATA
contexts:
- name: weir
  context: {cluster: weir, user: $2, namespace: default}
current-context: weir
users:
- name: $2
  user:
$3
KC
  chmod 600 "$1"
}
write_kubeconfig "$KUBECONFIG_FILE" weir-admin "    token: $(cat "$PKI/admin.token")"
write_kubeconfig "$D/kubelet/kubeconfig" "system:node:$WEIR_NODE_NAME" \
  "    client-certificate: $PKI/kubelet-client.crt
    client-key: $PKI/kubelet-client.key"

# --------------------------------------------------------------------------
# node network: our own bridge with the node IP (pods get 10.244.77.x on it)
# --------------------------------------------------------------------------
if ! ip link show "$WEIR_BRIDGE" >/dev/null 2>&1; then
  ip link add "$WEIR_BRIDGE" type bridge
  touch "$D/bridge-created-by-up"
  log "created bridge $WEIR_BRIDGE"
fi
ip addr show dev "$WEIR_BRIDGE" | grep -F " $WEIR_NODE_IP/" >/dev/null ||
  ip addr add "$WEIR_NODE_IP/${WEIR_POD_CIDR#*/}" dev "$WEIR_BRIDGE"
ip link set "$WEIR_BRIDGE" up

cat >"$D/cni/net.d/10-weir.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "weir",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$WEIR_BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$WEIR_POD_CIDR", "gateway": "$WEIR_NODE_IP"}]],
        "dataDir": "$D/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
  ]
}
CNI

# --------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------
start_daemon etcd etcd --name weir --data-dir "$D/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "weir=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --log-level warn --logger zap
wait_for "etcd health" 60 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" ||
  die "etcd not healthy; see $D/logs/etcd.log"

# --------------------------------------------------------------------------
# kube-apiserver
# --------------------------------------------------------------------------
start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --insecure-port 0 \
  --advertise-address "$WEIR_NODE_IP" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --token-auth-file "$PKI/tokens.csv" \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range "$WEIR_SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --allow-privileged=true \
  --kubelet-preferred-address-types InternalIP \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --profiling=false --v 1
wait_for "kube-apiserver /readyz" 120 apiserver_ready ||
  die "kube-apiserver not ready; see $D/logs/kube-apiserver.log"
log "kube-apiserver ready on https://127.0.0.1:$APISERVER_PORT"

# --------------------------------------------------------------------------
# controller-manager and scheduler
# --------------------------------------------------------------------------
start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false \
  --bind-address 127.0.0.1 --port 0 \
  --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials=true \
  --service-cluster-ip-range "$WEIR_SERVICE_CIDR" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --profiling=false --v 1
start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false \
  --bind-address 127.0.0.1 --port 0 --profiling=false --v 1

# --------------------------------------------------------------------------
# containerd
# --------------------------------------------------------------------------
CD="$D/containerd"
mkdir -p "$CD"/{root,state,opt,runc}
containerd config default | sed \
  -e "s#^root = .*#root = \"$CD/root\"#" \
  -e "s#^state = .*#state = \"$CD/state\"#" \
  -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$CONTAINERD_SOCK\"#" \
  -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
  -e "s#netns_mounts_under_state_dir = false#netns_mounts_under_state_dir = true#" \
  -e "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#" \
  -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" \
  -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$D/cni/net.d\"#" \
  -e "s#path = \"/opt/containerd\"#path = \"$CD/opt\"#" \
  -e "s#Root = \"\"#Root = \"$CD/runc\"#" \
  >"$CD/config.toml.new"
mv "$CD/config.toml.new" "$CD/config.toml"
start_daemon containerd containerd --config "$CD/config.toml" \
  --root "$CD/root" --state "$CD/state" --address "$CONTAINERD_SOCK"
wait_for "containerd socket" 60 ctr --address "$CONTAINERD_SOCK" version ||
  die "containerd not answering; see $D/logs/containerd.log"

# pause image (static binary from the kubernetes tree), imported locally
if ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -xF "$PAUSE_IMAGE" >/dev/null; then
  log "building and importing $PAUSE_IMAGE"
  "$WEIR_CLUSTER_SCRIPTS/image.sh" pause "${PAUSE_IMAGE##*:}" "$K8S_BIN/pause" >/dev/null
fi

# --------------------------------------------------------------------------
# kubelet
# --------------------------------------------------------------------------
KL="$D/kubelet"
mkdir -p "$KL/root" "$KL/volume-plugins"
old_kubelet_config="$(cat "$KL/config.yaml" 2>/dev/null || true)"
cat >"$KL/config.yaml" <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $WEIR_NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
# no KUBE-FIREWALL/KUBE-MARK-* iptables chains on the host (no kube-proxy here)
makeIPTablesUtilChains: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 110
serializeImagePulls: false
# no image garbage collection: the images are imported from local binaries and cannot be
# pulled again, so a collected image would leave its pods in ErrImageNeverPull for good
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
  nodefs.inodesFree: 2%
KCFG
if pid="$(pid_of kubelet)" && [[ "$(cat "$KL/config.yaml")" != "$old_kubelet_config" ]]; then
  log "the kubelet configuration changed: restarting the kubelet (pid $pid; its pods keep running)"
  kill "$pid"
  for _ in $(seq 1 50); do pid_alive kubelet || break; sleep 0.2; done
fi
echo "$KUBELET_CONFIG_VERSION" >"$KL/config-version"
KUBELET_T0="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
pid_alive kubelet && KUBELET_T0=""
start_daemon kubelet "$K8S_BIN/kubelet" \
  --config "$KL/config.yaml" \
  --kubeconfig "$KL/kubeconfig" \
  --root-dir "$KL/root" \
  --cert-dir "$KL/pki" \
  --volume-plugin-dir "$KL/volume-plugins" \
  --hostname-override "$WEIR_NODE_NAME" \
  --node-ip "$WEIR_NODE_IP" \
  --container-runtime remote \
  --container-runtime-endpoint "unix://$CONTAINERD_SOCK" \
  --runtime-request-timeout 15m \
  --pod-infra-container-image "$PAUSE_IMAGE" \
  --v 1

wait_for "kubelet healthz" 120 kubelet_healthy ||
  die "kubelet not healthy; see $D/logs/kubelet.log"
if [[ -n "$KUBELET_T0" ]]; then
  wait_for "node $WEIR_NODE_NAME Ready (heartbeat from this kubelet)" 180 node_ready_since "$KUBELET_T0" ||
    die "node not Ready; see $D/logs/kubelet.log"
else
  wait_for "node $WEIR_NODE_NAME Ready" 180 node_ready ||
    die "node not Ready; see $D/logs/kubelet.log"
fi
wait_for "default service account and its token" 120 default_sa_ready ||
  die "default service account not ready; see $D/logs/kube-controller-manager.log"

log "cluster up in $(($(date +%s) - T0))s: node $WEIR_NODE_NAME Ready ($WEIR_NODE_IP), KUBECONFIG=$KUBECONFIG_FILE"
log "use it with: source $WEIR_CLUSTER_SCRIPTS/env.sh"
