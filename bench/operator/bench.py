#!/usr/bin/env python3
"""Operator at scale: apply N StreamJobs at once to the real test apiserver and measure how long
until every one has its children (ConfigMap, Service, StatefulSet) and its status written, the
reconcile durations, the operator's peak RSS and CPU seconds, and its steady-state CPU with the
N jobs idle. Writes bench/results/operator.{md,json}.

The jobs live in a dedicated namespace `weir-bench` with a ResourceQuota of `pods: 0`: the
StatefulSets are created but no pod can start (the test cluster is one 2-core node), so this
measures the operator and the apiserver, not the runtime. The namespace is deleted and the
operator stopped at the end.

A benchmark, not a test: prints numbers, never fails on speed. Run: bash bench/operator/run.sh
"""

import argparse
import atexit
import base64
import json
import os
import re
import resource
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/weir/target"))
OPERATOR = os.environ.get("WEIR_BENCH_OPERATOR", os.path.join(TARGET, "release", "weir-operator"))
NS = "weir-bench"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[operator-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cluster_env():
    out = subprocess.run(["bash", "-c", f"source {REPO}/tests/cluster/env.sh && env -0"],
                         check=True, capture_output=True).stdout
    return dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv)


ENV = None


def kubectl(*args, check=True, input_text=None, timeout=300):
    r = subprocess.run(["kubectl", *args], env=ENV, capture_output=True, text=True,
                       input=input_text, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_rss_kib(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                vals[k] = int(v.split()[0])
    return vals


CLUSTER_PROCESSES = ("kube-apiserver", "etcd", "kube-controller")


def cluster_pids():
    """{process name: pid} of the test cluster's control plane (comm is cut to 15 chars)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in CLUSTER_PROCESSES:
            out[comm] = int(pid)
    return out


def cluster_cpu(pids):
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = proc_cpu_seconds(pid)
        except OSError:
            pass
    return out


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load_average():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def manifest(i):
    return f"""---
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: job-{i:04d}, namespace: {NS}}}
spec:
  image: docker.io/local/weir-runtime:0.1.0
  imagePullPolicy: Never
  checkpoint: {{interval: 30s, retain: 3, storage: "file:///var/lib/weir/checkpoints"}}
  pipeline:
    sources:
      - {{name: events, generator: {{kind: adEvents, seed: {i}}}, eventTime: {{field: ts, maxOutOfOrderness: 5s}}}}
    operators:
      - {{name: clicks, input: events, filter: "e.type == 'click'"}}
      - name: per-ad
        input: clicks
        window: {{type: tumbling, size: 3m, key: "e.adId", aggregates: [{{name: clicks, op: count}}]}}
    sinks:
      - {{name: out, input: per-ad, file: {{path: /var/lib/weir/output}}}}
"""


class ApiServer:
    """Direct GETs against the apiserver with the kubeconfig's token, over one connection
    pool, so that polling for progress costs the machine little (no kubectl process per poll;
    children are listed as metadata only)."""

    META = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

    def __init__(self):
        cfg = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
        cluster = cfg["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.token = cfg["users"][0]["user"]["token"]
        ca = tempfile.NamedTemporaryFile(delete=False, suffix=".crt")
        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        ca.close()
        atexit.register(os.unlink, ca.name)
        self.ctx = ssl.create_default_context(cafile=ca.name)

    def list(self, path, metadata_only):
        req = urllib.request.Request(self.server + path, headers={
            "Authorization": f"Bearer {self.token}",
            "Accept": self.META if metadata_only else "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=120) as r:
            return json.loads(r.read())["items"]


API = None

CHILDREN = {"configmaps": f"/api/v1/namespaces/{NS}/configmaps",
            "services": f"/api/v1/namespaces/{NS}/services",
            "statefulsets": f"/apis/apps/v1/namespaces/{NS}/statefulsets"}


def progress(n):
    """(jobs with all three children, jobs with status written for their generation)."""
    owners = {}
    for kind, path in CHILDREN.items():
        for o in API.list(path, metadata_only=True):
            for ref in o["metadata"].get("ownerReferences", []):
                if ref.get("kind") == "StreamJob":
                    owners.setdefault(ref["name"], set()).add(kind)
    children = sum(1 for v in owners.values() if len(v) == 3)
    status = 0
    for j in API.list(f"/apis/weir.dev/v1alpha1/namespaces/{NS}/streamjobs", metadata_only=False):
        st = j.get("status") or {}
        if st.get("phase") and st.get("observedGeneration") == j["metadata"].get("generation"):
            status += 1
    return children, status


def counters(text, name, label):
    """{label value: count} of a counter family, e.g. the reconcile triggers."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf'{name}_total\{{(.*)\}} (\S+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = "/".join(labels[k] for k in label)
            out[key] = out.get(key, 0) + float(m.group(2))
    return out


def histogram(text, name):
    buckets, total, count = [], 0.0, 0.0
    for line in text.splitlines():
        m = re.match(rf'{name}_bucket\{{le="([^"]+)"\}} (\S+)', line)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
        elif line.startswith(f"{name}_sum"):
            total = float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count = float(line.split()[-1])

    def q(p):
        for le, c in sorted(buckets):
            if count and c >= p * count:
                return le
        return None

    return {"count": count, "mean_s": total / count if count else None, "p50_le_s": q(0.5),
            "p99_le_s": q(0.99), "buckets": sorted(buckets)}


def main():
    global ENV, API
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--idle-seconds", type=int, default=120)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--apply-parallel", type=int, default=8,
                    help="kubectl apply processes submitting the jobs side by side (kubectl "
                    "submits one object at a time: with 1, submission itself takes tens of seconds)")
    ap.add_argument("--server-side", action="store_true",
                    help="kubectl apply --server-side (one request per object instead of a GET "
                    "and a create)")
    ap.add_argument("--results", default=os.path.join(BENCH, "results"))
    args = ap.parse_args()
    ENV = cluster_env()
    if kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
        log("cluster not ready: bash tests/cluster/up.sh")
        subprocess.run(["bash", os.path.join(REPO, "tests", "cluster", "up.sh")], check=True)
    if not os.path.exists(OPERATOR):
        log("building weir-operator (release)")
        subprocess.run(["cargo", "build", "--release", "-p", "weir-operator", "--bin", "weir-operator"],
                       cwd=REPO, env=dict(os.environ, CARGO_TARGET_DIR=TARGET), check=True)
    API = ApiServer()
    kubectl("apply", "-f", os.path.join(REPO, "crds"))
    kubectl("wait", "--for=condition=Established", "crd/streamjobs.weir.dev", "--timeout=60s")
    if kubectl("get", "namespace", NS, check=False).returncode == 0:
        sys.exit(f"namespace {NS} exists already (a previous run?): delete it first")
    kubectl("create", "namespace", NS)
    kubectl("apply", "-f", "-", input_text=f"""apiVersion: v1
kind: ResourceQuota
metadata: {{name: no-pods, namespace: {NS}}}
spec: {{hard: {{pods: "0"}}}}
""")
    port = 18000 + os.getpid() % 1000
    op_log = open(os.path.join("/tmp", f"weir-operator-bench-{os.getpid()}.log"), "w")
    op = subprocess.Popen([OPERATOR, "run", "--namespaces", NS, "--admin-port", str(port),
                           "--leader-election", "false", "--log-level", "warn"],
                          env=ENV, stdout=op_log, stderr=subprocess.STDOUT)
    result = {"jobs": args.jobs, "operator_pid": op.pid, "log": op_log.name}
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(2)
        cpu0 = proc_cpu_seconds(op.pid)
        pids = cluster_pids()
        cluster0 = cluster_cpu(pids)
        kubectl0 = children_cpu_seconds()
        result["load_before"] = load_average()
        n = max(1, args.apply_parallel)
        chunks = ["".join(manifest(i) for i in range(k, args.jobs, n)) for k in range(n)]
        log(f"applying {args.jobs} StreamJobs with {n} kubectl process(es)")
        t0 = time.monotonic()
        apply = ["kubectl", "apply", "-f", "-"] + (["--server-side"] if args.server_side else [])
        procs = [subprocess.Popen(apply, env=ENV, stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in chunks]
        for p, c in zip(procs, chunks):
            p.stdin.write(c)
            p.stdin.close()
        for p in procs:
            if p.wait(timeout=600) != 0:
                raise RuntimeError(f"kubectl apply: {p.stderr.read().strip()}")
        applied = time.monotonic() - t0
        result["kubectl_apply_cpu_s"] = children_cpu_seconds() - kubectl0
        result["apply_parallel"] = n
        result["apply_mode"] = "server-side" if args.server_side else "client-side"
        log(f"applied in {applied:.1f}s; waiting for children and status")
        children = status = 0
        t_children = t_status = None
        polls = []
        while time.monotonic() - t0 < args.timeout:
            p0 = time.monotonic()
            children, status = progress(args.jobs)
            polls.append(time.monotonic() - p0)
            now = time.monotonic() - t0
            if children >= args.jobs and t_children is None:
                t_children = now
            if status >= args.jobs and t_status is None:
                t_status = now
            log(f"t={now:5.1f}s children {children}/{args.jobs}, status {status}/{args.jobs}")
            if t_children is not None and t_status is not None:
                break
            time.sleep(1)
        result["poll_s_max"] = max(polls) if polls else None
        converge_cpu = proc_cpu_seconds(op.pid) - cpu0
        cluster1 = cluster_cpu(pids)
        result["cluster_cpu_s_to_converge"] = {k: cluster1[k] - cluster0[k]
                                               for k in cluster1 if k in cluster0}
        rss = proc_rss_kib(op.pid)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        result.update({
            "apply_s": applied, "all_children_s": t_children, "all_status_s": t_status,
            "done_s": max(t_children or 0, t_status or 0) if t_children and t_status else None,
            "children_done": children, "status_done": status,
            "cpu_s_to_converge": converge_cpu, "peak_rss_kib_converge": rss.get("VmHWM"),
            "reconcile": histogram(metrics, "weir_operator_reconcile_duration_seconds"),
            "triggers": counters(metrics, "weir_operator_reconcile_triggers", ["trigger"]),
            "writes": counters(metrics, "weir_operator_writes", ["kind", "outcome"]),
            "load_after_converge": load_average(),
        })
        log(f"idle: measuring CPU for {args.idle_seconds}s")
        time.sleep(10)
        c1, w1 = proc_cpu_seconds(op.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        c2, w2 = proc_cpu_seconds(op.pid), time.monotonic()
        rss = proc_rss_kib(op.pid)
        result.update({"idle_cpu_cores": (c2 - c1) / (w2 - w1), "idle_window_s": w2 - w1,
                       "peak_rss_kib": rss.get("VmHWM"), "rss_kib_idle": rss.get("VmRSS"),
                       "cpu_s_total": proc_cpu_seconds(op.pid), "load_idle": load_average()})
    finally:
        log(f"deleting namespace {NS} (the operator removes its finalizers)")
        r = kubectl("delete", "namespace", NS, "--timeout=300s", check=False, timeout=400)
        if r.returncode != 0:
            log(f"namespace deletion did not finish: {r.stderr.strip()}")
        op.terminate()
        try:
            op.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.kill()
    os.makedirs(args.results, exist_ok=True)
    result["taken"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(os.path.join(args.results, "operator.json"), "w") as f:
        json.dump(result, f, indent=1)
    rec = result.get("reconcile", {})

    def s(x, d=1):
        return "-" if x is None else f"{x:.{d}f}"

    def listing(d):
        return ", ".join(f"{k} {v:.0f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"

    md = f"""# Operator at scale ({result['jobs']} StreamJobs applied at once)

Taken {result['taken']}; load average {result.get('load_before')} before, {result.get('load_after_converge')} after
converging, {result.get('load_idle')} while idle. Real test apiserver (tests/cluster, Kubernetes v1.20.2),
operator release build on the host watching only namespace `{NS}` (ResourceQuota `pods: 0`: children and status
are written, no pod starts).

| figure | value | target |
|---|---:|---:|
| `kubectl apply` ({result.get('apply_mode')}) of all jobs ({result.get('apply_parallel')} kubectl process(es); the clock starts here) | {s(result.get('apply_s'))} s | |
| every job has ConfigMap + Service + StatefulSet (first poll that saw it; a poll every second, the longest took {s(result.get('poll_s_max'))} s) | {s(result.get('all_children_s'))} s | |
| every job has its status written (phase, observedGeneration) | {s(result.get('all_status_s'))} s | |
| total (both) | {s(result.get('done_s'))} s | < 60 s |
| reconciles | {s(rec.get('count'), 0)} | |
| reconcile triggers (several can be served by one reconcile; job_status_only / job_unchanged are dropped) | {listing(result.get('triggers', {}))} | |
| writes by the reconciles (unchanged = skipped) | {listing(result.get('writes', {}))} | |
| reconcile duration p50 / p99 (histogram bucket bound) | ≤ {s(rec.get('p50_le_s'), 2)} s / ≤ {s(rec.get('p99_le_s'), 2)} s | |
| reconcile duration mean | {s((rec.get('mean_s') or 0) * 1000)} ms | |
| CPU seconds until converged: operator / {' / '.join(result.get('cluster_cpu_s_to_converge', {}))} / the kubectl applies | {s(result.get('cpu_s_to_converge'))} / {' / '.join(s(v) for v in result.get('cluster_cpu_s_to_converge', {}).values())} / {s(result.get('kubectl_apply_cpu_s'))} | |
| operator peak RSS (VmHWM) | {s((result.get('peak_rss_kib') or 0) / 1024)} MiB | < 64 MiB |
| steady-state CPU with {result['jobs']} idle jobs | {s((result.get('idle_cpu_cores') or 0) * 1000)} millicores (over {s(result.get('idle_window_s'), 0)} s) | |
"""
    with open(os.path.join(args.results, "operator.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
