#!/usr/bin/env python3
"""Alerting at work on the real test cluster: (1) time from a threshold breach to the
notification received, and (2) the operator's CPU and memory while it scrapes N runtime pods
every 10 s. Writes bench/results/alerting.{md,json}.

The operator runs on the host (release build unless WEIR_BENCH_OPERATOR says otherwise) watching
only namespace `weir-bench-alert`, with `--scrape-interval 10s`; an AlertSubscription sends
every alert of the namespace to a webhook receiver in this script.

Breach → notification: a job whose sink has `maxRecordsPerSecond: 2` (40 records/s in) and
`backpressureHigh` thresholds 0.5 / 0.8 with `for: 0s`. The script polls the pod's own
`/metrics` every 250 ms; the breach is the end of the first 1 s window in which the task was
backpressured ≥ 0.8 of the time. The notification is the first webhook naming the job (its arrival in this script). Trials
run once with the namespace otherwise empty and once with the N load pods running.

Load: N StreamJobs of one real runtime pod each (nexmark generator at 1 record/s, filter,
stdout sink, checkpoint every 60 s on a hostPath). Once all are Ready and two scrape rounds
passed, the operator's CPU (from /proc) is sampled over a window, with its RSS and the load
average; the script also checks that every job's `status.health` was refreshed by the last
rounds, i.e. that the operator really scraped them all.

A benchmark, not a test: prints numbers, never fails on speed.
Run: bash bench/alerting/run.sh [--pods 100] [--window 120] [--trials 3]
"""

import argparse
import calendar
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/weir/target"))
OPERATOR = os.environ.get("WEIR_BENCH_OPERATOR", os.path.join(TARGET, "release", "weir-operator"))
IMAGE = os.environ.get("WEIR_BENCH_RUNTIME_IMAGE", "docker.io/local/weir-runtime:0.1.0")
NS = "weir-bench-alert"
TICK = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 10
ENV = None


def log(msg):
    print(f"[alerting-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cluster_env():
    out = subprocess.run(["bash", "-c", f"source {REPO}/tests/cluster/env.sh && env -0"],
                         check=True, capture_output=True).stdout
    return dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv)


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


def proc_mem_kib(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                vals[k] = int(v.split()[0])
    return vals


def load_average():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Inbox:
    """Webhook bodies received, with their arrival time (time.monotonic())."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, body):
        with self.lock:
            self.items.append((time.monotonic(), body))

    def first(self, needle, after):
        with self.lock:
            for t, b in self.items:
                if t >= after and needle in b:
                    return t
        return None


def start_receiver(inbox):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            inbox.add(self.rfile.read(n).decode("utf-8", "replace"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def job(name, rate, limit=None, overrides=True):
    sink = {"name": "out", "input": "bids", "stdout": {}}
    if limit is not None:
        sink["maxRecordsPerSecond"] = limit
    spec = {
        "image": IMAGE, "imagePullPolicy": "Never", "parallelism": 1,
        "podTemplate": {
            "labels": {"bench": "alerting"},
            "volumes": [{"name": "ckpt", "hostPath": {"path": "/tmp/weir-bench-alert-checkpoints",
                                                       "type": "DirectoryOrCreate"}}],
            "volumeMounts": [{"name": "ckpt", "mountPath": "/ckpt"}],
        },
        "checkpoint": {"interval": "60s", "storage": "file:///ckpt"},
        "pipeline": {
            "sources": [{"name": "gen", "generator": {"kind": "nexmark", "rate": rate, "partitions": 1}}],
            "operators": [{"name": "bids", "input": "gen", "filter": "e.type == 'bid'"}],
            "sinks": [sink],
        },
    }
    if overrides:
        spec["alerting"] = {"rules": {"backpressureHigh": {"warning": 0.5, "critical": 0.8, "for": "0s"}}}
    return {"apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": name, "namespace": NS, "labels": {"bench": "alerting"}},
            "spec": spec}


def apply(objs):
    kubectl("apply", "-f", "-", input_text="\n".join(json.dumps(o) for o in objs))


def pods(selector):
    r = kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json", timeout=120)
    return json.loads(r.stdout)["items"]


def ready(pod):
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds) and \
        not pod["metadata"].get("deletionTimestamp")


def pod_counter(ip, name):
    text = urllib.request.urlopen(f"http://{ip}:8081/metrics", timeout=2).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def latency_trial(name, inbox, timeout=300):
    """Seconds from the breach (seen on the pod) to the first webhook naming the job."""
    apply([job(name, rate=40, limit=2)])
    t0 = time.monotonic()
    ip = None
    while time.monotonic() - t0 < timeout:
        ps = [p for p in pods(f"weir.dev/job={name}") if ready(p)]
        if ps:
            ip = ps[0]["status"]["podIP"]
            break
        time.sleep(0.5)
    if ip is None:
        raise RuntimeError(f"{name}: no ready pod after {timeout}s")
    prev = None
    breach = None
    while time.monotonic() - t0 < timeout and breach is None:
        try:
            v, t = pod_counter(ip, "weir_task_backpressured_ms_total"), time.monotonic()
        except OSError:
            time.sleep(0.25)
            continue
        if prev is not None and t - prev[1] >= 1.0:
            frac = (v - prev[0]) / ((t - prev[1]) * 1000)
            if frac >= 0.8:
                breach = t
            prev = (v, t)
        elif prev is None:
            prev = (v, t)
        time.sleep(0.25)
    if breach is None:
        raise RuntimeError(f"{name}: never backpressured ≥ 0.8")
    while time.monotonic() - t0 < timeout:
        got = inbox.first(name, t0)
        if got is not None:
            return max(got - breach, 0.0)
        time.sleep(0.1)
    raise RuntimeError(f"{name}: no notification within {timeout}s")


def delete_jobs(names):
    if names:
        kubectl("delete", "streamjobs.weir.dev", "-n", NS, *names, "--wait=true", "--timeout=300s",
                check=False, timeout=400)


def health_fresh(max_age_s):
    """(jobs whose status.health was written within max_age_s and saw a task, all load jobs)."""
    r = kubectl("get", "streamjobs.weir.dev", "-n", NS, "-o", "json", timeout=120)
    now = time.time()
    fresh = total = 0
    for j in json.loads(r.stdout)["items"]:
        if not j["metadata"]["name"].startswith("load-"):
            continue
        total += 1
        h = (j.get("status") or {}).get("health") or {}
        at = h.get("scrapedAt")
        if at and h.get("tasksReporting", 0) > 0:
            t = calendar.timegm(time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S"))
            if now - t <= max_age_s:
                fresh += 1
    return fresh, total


def stats(xs):
    xs = sorted(xs)
    if not xs:
        return {}
    return {"n": len(xs), "min_s": xs[0], "median_s": xs[len(xs) // 2], "max_s": xs[-1], "all_s": xs}


def main():
    global ENV
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--window", type=int, default=120, help="CPU sampling window, s")
    ap.add_argument("--trials", type=int, default=3, help="breach→notification trials per phase")
    ap.add_argument("--results", default=os.path.join(BENCH, "results"))
    args = ap.parse_args()
    ENV = cluster_env()
    if kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
        sys.exit("cluster not ready: bash tests/cluster/up.sh")
    if not os.path.exists(OPERATOR):
        sys.exit(f"{OPERATOR} missing: cargo build --release -p weir-operator (or set WEIR_BENCH_OPERATOR)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", os.path.join(REPO, "crds"))
    if kubectl("get", "namespace", NS, check=False).returncode == 0:
        sys.exit(f"namespace {NS} exists already (a previous run?): delete it first")
    kubectl("create", "namespace", NS)
    inbox = Inbox()
    srv = start_receiver(inbox)
    hook = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook", "namespace": NS},
         "stringData": {"url": hook}},
        {"apiVersion": "weir.dev/v1alpha1", "kind": "AlertSubscription",
         "metadata": {"name": "all", "namespace": NS},
         "spec": {"minSeverity": "warning", "repeatInterval": "1h", "sendResolved": False,
                  "channels": [{"name": "hook", "webhook": {"urlSecret": {"name": "hook", "key": "url"}}}]}},
    ])
    port = 19000 + os.getpid() % 1000
    op_log = open(os.path.join("/tmp", f"weir-operator-alert-bench-{os.getpid()}.log"), "w")
    op = subprocess.Popen([OPERATOR, "run", "--namespaces", NS, "--admin-port", str(port),
                           "--leader-election", "false", "--log-level", "warn",
                           "--scrape-interval", f"{INTERVAL_S}s"],
                          env=dict(ENV, WEIR_NAMESPACE=NS), stdout=op_log, stderr=subprocess.STDOUT)
    result = {"pods": args.pods, "scrape_interval_s": INTERVAL_S, "operator": OPERATOR,
              "log": op_log.name, "machine": f"{os.cpu_count()} cores"}
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        idle = []
        for k in range(args.trials):
            name = f"lat-idle-{k}"
            idle.append(latency_trial(name, inbox))
            log(f"{name}: breach → notification {idle[-1]:.1f}s (load {load_average()})")
            delete_jobs([name])
        result["latency_idle"] = stats(idle)
        result["load_latency_idle"] = load_average()

        names = [f"load-{i:03d}" for i in range(args.pods)]
        log(f"applying {args.pods} one-pod jobs")
        apply([job(n, rate=1, overrides=False) for n in names])
        t0 = time.monotonic()
        while True:
            n = sum(1 for p in pods("bench=alerting") if ready(p) and
                    p["metadata"]["labels"].get("weir.dev/job", "").startswith("load-"))
            log(f"t={time.monotonic() - t0:5.0f}s {n}/{args.pods} load pods ready (load {load_average()})")
            if n >= args.pods:
                break
            if time.monotonic() - t0 > 1800:
                raise RuntimeError(f"only {n}/{args.pods} pods ready after 30 min")
            time.sleep(10)
        result["pods_ready_after_s"] = time.monotonic() - t0
        time.sleep(2 * INTERVAL_S + 2)
        c1, w1 = proc_cpu_seconds(op.pid), time.monotonic()
        load1 = load_average()
        time.sleep(args.window)
        c2, w2 = proc_cpu_seconds(op.pid), time.monotonic()
        mem = proc_mem_kib(op.pid)
        fresh, total = health_fresh(2 * INTERVAL_S + 5)
        result.update({"cpu_cores": (c2 - c1) / (w2 - w1), "window_s": w2 - w1,
                       "rss_kib": mem.get("VmRSS"), "peak_rss_kib": mem.get("VmHWM"),
                       "load_start": load1, "load_end": load_average(),
                       "health_fresh": fresh, "health_total": total})
        log(f"operator {result['cpu_cores'] * 1000:.0f} millicores, RSS {mem.get('VmRSS', 0) / 1024:.1f} MiB; "
            f"{fresh}/{total} jobs with fresh health")
        loaded = []
        for k in range(args.trials):
            name = f"lat-load-{k}"
            loaded.append(latency_trial(name, inbox))
            log(f"{name}: breach → notification {loaded[-1]:.1f}s (load {load_average()})")
            delete_jobs([name])
        result["latency_loaded"] = stats(loaded)
        result["load_latency_loaded"] = load_average()
    finally:
        log(f"deleting namespace {NS}")
        r = kubectl("delete", "namespace", NS, "--timeout=600s", check=False, timeout=700)
        if r.returncode != 0:
            log(f"namespace deletion did not finish: {r.stderr.strip()}")
        op.terminate()
        try:
            op.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.kill()
        srv.shutdown()
    result["taken"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "alerting.json"), "w") as f:
        json.dump(result, f, indent=1)

    def lat(key):
        s = result.get(key) or {}
        if not s:
            return "-"
        return f"{s['median_s']:.1f} s (min {s['min_s']:.1f}, max {s['max_s']:.1f}, n={s['n']})"

    md = f"""# Alerting: breach → notification, and scraping {args.pods} pods every {INTERVAL_S} s

Taken {result['taken']} on the test cluster (one {result['machine']} node shared with other work; Kubernetes
v1.20.2), operator `{os.path.relpath(OPERATOR, REPO) if OPERATOR.startswith(REPO) else OPERATOR}` on the host,
`--scrape-interval {INTERVAL_S}s`, webhook receiver in the bench script.

| figure | value |
|---|---:|
| breach → webhook received, namespace otherwise empty | {lat('latency_idle')} |
| breach → webhook received, with the {args.pods} load pods | {lat('latency_loaded')} |
| {args.pods} runtime pods ready after | {result.get('pods_ready_after_s', 0):.0f} s |
| jobs whose `status.health` the last two rounds refreshed | {result.get('health_fresh')}/{result.get('health_total')} |
| operator CPU while scraping {args.pods} pods every {INTERVAL_S} s | {result.get('cpu_cores', 0) * 1000:.0f} millicores (over {result.get('window_s', 0):.0f} s) |
| operator RSS / peak RSS | {(result.get('rss_kib') or 0) / 1024:.1f} MiB / {(result.get('peak_rss_kib') or 0) / 1024:.1f} MiB |
| load average (1/5/15 min) idle trials; start, end of the CPU window; loaded trials | {result.get('load_latency_idle')}; {result.get('load_start')}, {result.get('load_end')}; {result.get('load_latency_loaded')} |

The breach is the end of the first 1 s window in which the pod's own counters show the task
backpressured ≥ 0.8 of the time; the operator needs one scrape to see the pod and a second to
have a rate, so the expected range is one to two scrape intervals plus delivery.
"""
    with open(os.path.join(args.results, "alerting.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
