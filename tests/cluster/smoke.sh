#!/usr/bin/env bash
# Smoke test of a running test cluster (after up.sh):
#  1. image.sh builds docker.io/local/weir-smoke:0.1 from host binaries
#     (/bin/sh, /bin/sleep, curl — all dynamically linked);
#  2. a 2-replica StatefulSet of it reaches Running with pod IPs from the
#     node bridge ($WEIR_POD_CIDR), and `kubectl logs` shows its output;
#  3. a hostNetwork pod reaches the apiserver at 127.0.0.1:6443 with its
#     mounted service-account token and CA (the operator's in-cluster setup);
#  4. if redis-server is installed: a redis pod behind a headless Service
#     answers PING from the host at its Endpoint IP and via kubectl port-forward;
#  5. everything is deleted again.
# Usage: tests/cluster/smoke.sh        (exit 0 = all checks passed)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T0=$(date +%s)
NS=weir-smoke

"$WEIR_CLUSTER_SCRIPTS/image.sh" weir-smoke 0.1 /bin/sh /bin/sleep /usr/bin/curl >/dev/null

# start clean (a failed run leaves its namespace behind for inspection)
kc delete namespace "$NS" --ignore-not-found --wait=true --timeout=120s >/dev/null
kc create namespace "$NS" >/dev/null
wait_for "default service account token in $NS" 60 \
  bash -c "[[ -n \"\$('$K8S_BIN/kubectl' --kubeconfig '$KUBECONFIG_FILE' -n $NS get sa default -o jsonpath='{.secrets[0].name}')\" ]]"

kc -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: smoke}
spec:
  clusterIP: None
  selector: {app: smoke}
  ports: [{name: x, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: smoke}
spec:
  serviceName: smoke
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: docker.io/local/weir-smoke:0.1
          imagePullPolicy: Never
          command: ["/usr/local/bin/sh", "-c", "echo hello from \$HOSTNAME; exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: apicheck}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
    - name: main
      image: docker.io/local/weir-smoke:0.1
      imagePullPolicy: Never
      env:
        - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
        - {name: KUBERNETES_SERVICE_PORT, value: "$APISERVER_PORT"}
      command:
        - /usr/local/bin/sh
        - -c
        - >-
          SA=/var/run/secrets/kubernetes.io/serviceaccount;
          read -r TOKEN < \$SA/token;
          curl -sS --cacert \$SA/ca.crt -H "Authorization: Bearer \$TOKEN"
          https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$NS/secrets
YAML

pods_running() {
  [[ "$(kc -n "$NS" get pods -l app=smoke -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Running$')" == 2 ]]
}
if ! wait_for "2 smoke pods Running" 180 pods_running; then
  kc -n "$NS" get pods -o wide
  kc -n "$NS" describe pods | tail -40
  die "smoke StatefulSet did not reach Running"
fi
kc -n "$NS" get pods -o wide
prefix="${WEIR_POD_CIDR%.*}."
for p in smoke-0 smoke-1; do
  ip="$(kc -n "$NS" get pod "$p" -o jsonpath='{.status.podIP}')"
  [[ "$ip" == "$prefix"* ]] || die "$p has IP '$ip', not from $WEIR_POD_CIDR"
  wait_for "logs of $p" 30 bash -c "'$K8S_BIN/kubectl' --kubeconfig '$KUBECONFIG_FILE' -n $NS logs $p | grep -q 'hello from $p'" ||
    die "kubectl logs $p did not show the greeting"
  log "ok: $p Running, IP $ip, logs: $(kc -n "$NS" logs "$p")"
done
# pod-to-pod over the bridge: nothing listens in smoke-1, so the connection
# from smoke-0 must be refused at once (a TCP answer), not time out
ip1="$(kc -n "$NS" get pod smoke-1 -o jsonpath='{.status.podIP}')"
p2p="$(kc -n "$NS" exec smoke-0 -- curl -sS --max-time 5 "http://$ip1:80/" 2>&1 || true)"
if grep -q 'Failed to connect.*after [0-9]* ms: Co' <<<"$p2p"; then
  log "ok: smoke-0 reaches smoke-1 ($ip1) over the bridge (refused at once, as nothing listens); kubectl exec works"
else
  die "pod-to-pod check from smoke-0 to $ip1 failed"
fi

apicheck_done() { [[ "$(kc -n "$NS" get pod apicheck -o jsonpath='{.status.phase}')" =~ ^(Succeeded|Failed)$ ]]; }
wait_for "apicheck pod to finish" 120 apicheck_done || die "apicheck pod did not finish"
phase="$(kc -n "$NS" get pod apicheck -o jsonpath='{.status.phase}')"
out="$(kc -n "$NS" logs apicheck)"
# authenticated as the pod's service account (which may not list secrets: 403)
[[ "$phase" == Succeeded && "$out" == *"system:serviceaccount:$NS:default"* ]] ||
  die "hostNetwork pod could not reach the apiserver with its service account: $phase $out"
log "ok: hostNetwork pod reached https://127.0.0.1:$APISERVER_PORT with its SA token + CA: $(tr -d '\n ' <<<"$out" | cut -c1-80)"

# a real TCP server in a pod (redis-server, if installed): headless Service
# Endpoints, host -> pod IP, and kubectl port-forward
redis_ping() { # HOST PORT -> prints the reply to PING
  local reply=""
  exec 3<>"/dev/tcp/$1/$2" || return 1
  printf 'PING\r\n' >&3
  read -r -t 5 reply <&3 || true
  exec 3<&-
  [[ "${reply%$'\r'}" == "+PONG" ]]
}
if command -v redis-server >/dev/null; then
  "$WEIR_CLUSTER_SCRIPTS/image.sh" weir-smoke-redis 0.1 "$(command -v redis-server)" >/dev/null
  kc -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  clusterIP: None
  selector: {app: redis}
  ports: [{name: redis, port: 6379}]
---
apiVersion: v1
kind: Pod
metadata: {name: redis, labels: {app: redis}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: docker.io/local/weir-smoke-redis:0.1
      imagePullPolicy: Never
      args: ["--port", "6379", "--protected-mode", "no", "--save", ""]
      readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 1}
YAML
  redis_endpoint() { [[ -n "$(kc -n "$NS" get endpoints redis -o jsonpath='{.subsets[0].addresses[0].ip}' 2>/dev/null)" ]]; }
  wait_for "redis Endpoints" 120 redis_endpoint || die "redis pod never became a ready endpoint"
  rip="$(kc -n "$NS" get endpoints redis -o jsonpath='{.subsets[0].addresses[0].ip}')"
  redis_ping "$rip" 6379 || die "host could not PING redis at $rip:6379"
  log "ok: headless Service endpoint $rip:6379 answers PING from the host"
  kc -n "$NS" port-forward pod/redis 16379:6379 >/dev/null 2>&1 &
  pf=$!
  wait_for "port-forward" 20 redis_ping 127.0.0.1 16379 || { kill "$pf"; die "kubectl port-forward to redis failed"; }
  kill "$pf" 2>/dev/null || true
  log "ok: kubectl port-forward 127.0.0.1:16379 -> redis:6379 answers PING"
fi

kc delete namespace "$NS" --wait=true --timeout=120s >/dev/null
log "smoke test passed in $(($(date +%s) - T0))s"
