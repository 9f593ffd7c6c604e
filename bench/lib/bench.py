#!/usr/bin/env python3
"""Weir vs Flink runtime benchmark: runs each benchmark on both engines over the same input
file, measures each process from outside (CPU seconds, peak RSS, wall time), reads their
checkpoints, compares their results, and writes bench/results/results.{md,json}.

A benchmark, not a test: it prints numbers and checks correctness, never fails on speed.
Run it through bench/run.sh (see bench/README.md).
"""

import argparse
import collections
import datetime
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
CACHE = os.path.expanduser("~/.cache/weir")
FLINK_HOME = os.environ.get("WEIR_BENCH_FLINK", os.path.join(CACHE, "flink"))
FLINK_LIB = os.path.join(FLINK_HOME, "pyflink", "lib")
FLINK_SLF4J_REPORTER = os.path.join(FLINK_HOME, "pyflink", "plugins", "metrics-slf4j")
FLINK_CLASSES = os.path.join(CACHE, "flink-bench-classes")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
WEIR_BIN = os.environ.get("WEIR_BENCH_RUNTIME", os.path.join(TARGET, "release", "weir-runtime"))
FLINK_JVM_OPTS = os.environ.get("WEIR_BENCH_FLINK_JVM", "-Xmx1g").split()

# What Weir cannot run yet, with the reason (shown in the table instead of figures).
NOT_EXPRESSIBLE = {}


# Known runtime defects that change a benchmark's result (shown next to its comparison).
KNOWN_ISSUES = {}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_average():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# ---------------------------------------------------------------- the benchmarks

def proj(*fields):
    """Canonical form of an output row: the named fields, in order (scalars)."""
    return lambda r: tuple(r.get(f) for f in fields)


def ts_ms(value):
    """Epoch ms of a Flink TIMESTAMP(3) written by the json format (UTC session zone)."""
    if isinstance(value, (int, float)):
        return int(value)
    s = str(value).rstrip("Z").replace("T", " ")
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in s else "%Y-%m-%d %H:%M:%S"
    dt = datetime.datetime.strptime(s, fmt).replace(tzinfo=datetime.timezone.utc)
    return int(round(dt.timestamp() * 1000))


def q5_weir(rows):
    rows = list(rows)
    return sorted((r["windowStart"], r["maxNum"], tuple(sorted(r["auctions"]))) for r in rows)


def q5_flink(rows):
    per = collections.defaultdict(list)
    for r in rows:
        per[ts_ms(r["window_start"])].append((r["num"], r["auction"]))
    return sorted((ws, v[0][0], tuple(sorted(a for _, a in v))) for ws, v in per.items())


def q4_weir(rows):
    """Replays Weir's changelog (upserts; `retract: true` deletes) to the final (category,
    average) pairs, the average as Flink's AVG(BIGINT) computes it (integer division)."""
    final = {}
    for r in rows:
        if r["retract"]:
            final.pop(r["key"], None)
        else:
            final[r["key"]] = r
    return sorted((k, r["total"] // r["auctions"]) for k, r in final.items())


def q4_flink(rows):
    """Replays Flink's debezium-json changelog ("c" adds a row, "d" removes one)."""
    rows_now = collections.Counter()
    for r in rows:
        if r.get("op") == "c":
            rows_now[(r["after"]["category"], r["after"]["avgprice"])] += 1
        elif r.get("op") == "d":
            rows_now[(r["before"]["category"], r["before"]["avgprice"])] -= 1
    return sorted(k for k, n in rows_now.items() for _ in range(max(n, 0)))


def splice_totals(rows):
    """Per request: samples' summed counts, earliest firstSeen, latest lastSeen, ads."""
    per = {}
    for r in rows:
        t = per.setdefault(r["requestId"], [0, 0, 0, 0, None, None, []])
        t[0] += r["impressions"]
        t[1] += r["clicks"]
        t[2] += r["heartbeats"]
        t[3] += r["heartbeatMsTotal"] or 0
        t[4] = r["firstSeen"] if t[4] is None else min(t[4], r["firstSeen"])
        t[5] = r["lastSeen"] if t[5] is None else max(t[5], r["lastSeen"])
        t[6].extend(r.get("impressedAds") or [])
    return sorted((k, *v[:6], tuple(sorted(v[6]))) for k, v in per.items())


def stable_hash(x):
    """A hash of a canonical item that is the same in every process (Python's own `hash` of a
    string is salted per process), so digests can be stored and compared across runs."""
    return int.from_bytes(hashlib.blake2b(repr(x).encode(), digest_size=8).digest(), "little")


def multiset(fn):
    """A row-by-row canonical form, kept as a multiset of hashes (outputs can be millions of rows)."""
    def canon(rows):
        return collections.Counter(stable_hash(fn(r)) for r in rows)
    return canon


def digest(counter):
    """One sha256 for a canonical multiset: equal digests mean equal results."""
    h = hashlib.sha256()
    for k, n in sorted(counter.items()):
        h.update(f"{k}:{n};".encode())
    return h.hexdigest()


BENCHMARKS = {
    # name: (input kind, Weir pipeline, Flink SQL, Flink --process, weir canonical, flink canonical, what is compared)
    "q0": ("nexmark", "nexmark/q0.yaml", "q0.sql", None,
           multiset(proj("auction", "bidder", "price", "dateTime", "extra")), None,
           "every output row (auction, bidder, price, dateTime, extra)"),
    "q1": ("nexmark", "nexmark/q1.yaml", "q1.sql", None,
           multiset(proj("auction", "bidder", "price", "dateTime", "extra")), None,
           "every output row (converted price included)"),
    "q2": ("nexmark", "nexmark/q2.yaml", "q2.sql", None,
           multiset(proj("auction", "price")), None, "every output row"),
    "q3": ("nexmark", "nexmark/q3.yaml", "q3.sql", None,
           multiset(proj("name", "city", "state", "id")), None, "every joined row"),
    "q4": ("nexmark", "nexmark/q4.yaml", "q4.sql", None, q4_weir, q4_flink,
           "final average winning price per category (changelogs replayed; integer average)"),
    "q5": ("nexmark", "nexmark/q5.yaml", "q5.sql", None, q5_weir, q5_flink,
           "per sliding window: max count and the set of auctions with it"),
    "q7": ("nexmark", "nexmark/q7.yaml", "q7.sql", None,
           lambda rows: sorted(proj("auction", "price", "bidder", "dateTime")(b)
                               for r in rows for b in r["top"]),
           multiset(proj("auction", "price", "bidder", "dateTime")),
           "every highest bid (auction, price, bidder, dateTime)"),
    "q8": ("nexmark", "nexmark/q8.yaml", "q8.sql", None,
           lambda rows: sorted((r["id"], r["name"], r["starttime"]) for r in rows),
           lambda rows: sorted((r["id"], r["name"], ts_ms(r["starttime"])) for r in rows),
           "every (person, name, window start)"),
    "splice": ("ad", "workloads/splice.yaml", "splice.sql", "splice", splice_totals, None,
               "per request: summed counts over its samples, first/last seen, impressed ads"),
    "impression-click": ("ad", "workloads/impression-click.yaml", "impression-click.sql", None,
                         multiset(proj("requestId", "adId", "impressionTs", "clicks")), None,
                         "every match (request, ad, impression ts, clicks)"),
    "effective-click": ("ad-slow", "workloads/effective-click.yaml", "effective-click.sql",
                        "effective-click",
                        multiset(proj("requestId", "adId", "clickTs", "heartbeats", "watchedUntil")),
                        None, "every effective click"),
    "window-3m": ("ad", "workloads/window-3m.yaml", "window-3m.sql", None,
                  lambda rows: sorted((r["key"], r["windowStart"], r["impressions"], r["requests"]) for r in rows),
                  lambda rows: sorted((r["key"], ts_ms(r["window_start"]), r["impressions"], r["requests"]) for r in rows),
                  "every (ad, window start, impressions, distinct requests)"),
}
WORKLOADS = {"splice", "impression-click", "effective-click", "window-3m"}

# ---------------------------------------------------------------- setup


def ensure_weir(build):
    if os.path.exists(WEIR_BIN) and not build:
        return
    log("building weir-runtime (release)")
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    subprocess.run(["cargo", "build", "--release", "-p", "weir-runtime", "--bin", "weir-runtime"],
                   cwd=REPO, env=env, check=True)


def ensure_flink():
    if not os.path.isdir(FLINK_LIB):
        log(f"installing apache-flink-libraries into {FLINK_HOME} (about 330 MB, once)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", FLINK_HOME,
                        "apache-flink-libraries"], check=True)
    src = os.path.join(BENCH, "flink", "WeirFlinkBench.java")
    stamp = os.path.join(FLINK_CLASSES, ".source-sha256")
    digest = hashlib.sha256(open(src, "rb").read()).hexdigest()
    if os.path.exists(stamp) and open(stamp).read() == digest:
        return
    log("compiling bench/flink/WeirFlinkBench.java")
    os.makedirs(FLINK_CLASSES, exist_ok=True)
    subprocess.run(["javac", "-nowarn", "-d", FLINK_CLASSES, "-cp", FLINK_LIB + "/*", src], check=True)
    with open(stamp, "w") as f:
        f.write(digest)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- inputs

GENERATOR_JOB = """
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: bench-input}}
spec:
  image: bench
  checkpoint: {{interval: 1h, retain: 1}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: {kind}, seed: 42, count: {count}, partitions: 1, options: {options}}}
    operators:
      - {{name: all, input: gen, filter: "true"}}
    sinks:
      - {{name: out, input: all, file: {{path: "{out}"}}}}
"""

INPUT_KINDS = {
    # kind: (generator kind, options, what)
    "nexmark": ("nexmark", {"outOfOrderMs": 1000}, "Nexmark, 1 event per ms of event time, up to 1 s out of order"),
    "ad": ("adEvents", {}, "ad events (impressions, clicks, heartbeats), 1 event per ms"),
    "ad-slow": ("adEvents", {"eventIntervalMicros": 100000},
                "ad events, 1 event per 100 ms (sessions reach 6 minutes of heartbeats)"),
}


def prepare_input(work, kind, count):
    """The JSON-lines input file: Weir's deterministic generator written once and cached."""
    gen, options, _ = INPUT_KINDS[kind]
    path = os.path.join(work, "inputs", f"{kind}-{count}.jsonl")
    if os.path.exists(path):
        return path
    log(f"generating input {os.path.basename(path)}")
    tmp = os.path.join(work, "inputs", f"tmp-{kind}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    job = os.path.join(tmp, "gen.yaml")
    with open(job, "w") as f:
        f.write(GENERATOR_JOB.format(kind=gen, count=count, options=json.dumps(options),
                                     out=os.path.join(tmp, "out")))
    subprocess.run([WEIR_BIN, "run", "-f", job, "--state-dir", os.path.join(tmp, "state"),
                    "--checkpoint-dir", os.path.join(tmp, "ck"), "--restore-from", "none", "-q"],
                   check=True, stderr=subprocess.DEVNULL)
    parts = glob.glob(os.path.join(tmp, "out", "part-*.jsonl"))
    parts.sort(key=lambda p: int(re.search(r"-(\d+)\.jsonl$", p).group(1)))
    with open(path + ".tmp", "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst)
    os.rename(path + ".tmp", path)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


# ---------------------------------------------------------------- measuring a process


def timed(cmd, log_path, poll=None):
    """Runs cmd under /usr/bin/time; returns (rc, wall s, cpu s, peak RSS KiB, last poll result)."""
    time_out = log_path + ".time"
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", time_out] + cmd
    last = {}
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def poller():
            while not stop.wait(0.5):
                try:
                    last["value"] = poll()
                except Exception:  # noqa: BLE001 - the endpoint comes and goes with the process
                    pass

        t = None
        if poll:
            t = threading.Thread(target=poller, daemon=True)
            t.start()
        rc = proc.wait()
        stop.set()
        if t:
            t.join()
    with open(time_out) as f:
        parts = f.read().strip().splitlines()[-1].split()
    wall, user, sys_, rss = float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])
    return rc, wall, user + sys_, rss, last.get("value")


def histogram_p99(metrics_text, name):
    """p99 (bucket upper bound, seconds) of a Prometheus histogram, summed over its series."""
    buckets = collections.defaultdict(float)
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket"):
            m = re.search(r'le="([^"]+)"[^}]*\}\s+(\S+)', line)
            if m:
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets[le] += float(m.group(2))
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    for b in bounds:
        if buckets[b] >= 0.99 * total:
            return b
    return None


def natural_key(path):
    """Numbers in a file name compare as numbers (part-0-10 after part-0-9), so a changelog
    spread over part files is read in the order it was written."""
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", path)]


def output_files(out_dir, pattern):
    return [p for p in sorted(glob.glob(os.path.join(out_dir, "**", pattern), recursive=True),
                              key=natural_key)
            if not os.path.basename(p).startswith(".")]


def read_rows(files):
    """The output rows of `files`, one at a time."""
    for p in files:
        with open(p) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def run_weir(name, spec, input_path, work, generator_count=None):
    """Runs the Weir pipeline over the input file, or (generator_count set) with the file source
    replaced by the generator that wrote the file (same events, no JSON parsing)."""
    kind, pipeline, *_ = spec
    d = os.path.join(work, "runs", name, "weir-gen" if generator_count else "weir")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    out = os.path.join(d, "out")
    with open(os.path.join(BENCH, pipeline)) as f:
        text = f.read()
    if generator_count:
        gen, options, _ = INPUT_KINDS[kind]
        source = ('generator: {kind: %s, seed: 42, count: %d, partitions: 1, options: %s}'
                  % (gen, generator_count, json.dumps(options)))
        if 'file: {path: "${INPUT}"}' not in text:
            raise RuntimeError(f"{pipeline}: no 'file: {{path: \"${{INPUT}}\"}}' source to replace")
        text = text.replace('file: {path: "${INPUT}"}', source)
    text = text.replace("${INPUT}", input_path).replace("${OUT}", out)
    job = os.path.join(d, "job.yaml")
    with open(job, "w") as f:
        f.write(text)
    port = free_port()

    def poll():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return r.read().decode()

    ck = os.path.join(d, "ck")
    cmd = [WEIR_BIN, "run", "-f", job, "--state-dir", os.path.join(d, "state"), "--checkpoint-dir", ck,
           "--restore-from", "none", "-q", "--admin-port", str(port)]
    rc, wall, cpu, rss, metrics = timed(cmd, os.path.join(d, "log"), poll)
    markers = []
    for p in glob.glob(os.path.join(ck, "**", "_COMPLETED"), recursive=True):
        with open(p) as f:
            markers.append(json.load(f))
    markers.sort(key=lambda m: m["checkpointId"])
    ckpts = None
    if markers:
        def dur(m):
            a = datetime.datetime.fromisoformat(m["startedAt"].replace("Z", "+00:00"))
            b = datetime.datetime.fromisoformat(m["completedAt"].replace("Z", "+00:00"))
            return (b - a).total_seconds() * 1000
        ckpts = {"count": markers[-1]["checkpointId"], "max_ms_retained": max(dur(m) for m in markers),
                 "last_ms": dur(markers[-1]), "last_size_bytes": markers[-1]["totalSizeBytes"],
                 "retained": [{"id": m["checkpointId"], "ms": dur(m), "size": m["totalSizeBytes"],
                               "uploaded": m.get("uploadedBytes"), "final": m.get("isFinal")}
                              for m in markers]}
    p99 = histogram_p99(metrics or "", "weir_task_latency_seconds")
    return {"rc": rc, "wall_s": wall, "cpu_s": cpu, "peak_rss_kib": rss, "checkpoints": ckpts,
            "latency_p99_s": p99, "files": output_files(out, "part-*.jsonl") if rc == 0 else None,
            "log": os.path.join(d, "log")}


CKPT_LINE = re.compile(r"Completed checkpoint (\d+) for job \S+ \((\d+) bytes, checkpointDuration=(\d+) ms")
LATENCY_LINE = re.compile(r"\.latency: count=\d+.*?p99=([\d.E-]+)")
CPU_LINE = re.compile(r"process cpu before submit ([\d.]+) s, at end ([\d.]+) s")


def run_flink(name, spec, input_path, work):
    kind, _, sql, process, *_ = spec
    d = os.path.join(work, "runs", name, "flink")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    source = "_nexmark_source.sql" if kind == "nexmark" else "_ad_source.sql"
    script = os.path.join(d, "job.sql")
    with open(script, "w") as f:
        for part in (source, sql):
            with open(os.path.join(BENCH, "flink", "sql", part)) as s:
                f.write(s.read() + "\n")
    out = os.path.join(d, "out")
    cmd = (["java"] + FLINK_JVM_OPTS
           + ["-Dlog4j.configurationFile=" + os.path.join(BENCH, "flink", "log4j2.properties"),
              "-cp", ":".join([FLINK_LIB + "/*", FLINK_SLF4J_REPORTER + "/*", FLINK_CLASSES]),
              "WeirFlinkBench",
              "--sql", script, "--input", input_path, "--out", out, "--checkpoints", os.path.join(d, "ck")])
    if process:
        cmd += ["--process", process]
    log_path = os.path.join(d, "log")
    rc, wall, cpu, rss, _ = timed(cmd, log_path)
    text = open(log_path, errors="replace").read()
    done = [(int(a), int(b), int(c)) for a, b, c in CKPT_LINE.findall(text)]
    ckpts = None
    if done:
        ckpts = {"count": len(done), "max_ms": max(c for _, _, c in done), "last_ms": done[-1][2],
                 "last_size_bytes": done[-1][1]}
    # Latency markers: the largest p99 among the operators' source -> operator histograms in
    # the last report (the sink's, normally), ms.
    p99s = [float(x) for x in LATENCY_LINE.findall(text)]
    last_report = text.rfind("Starting metrics report")
    if last_report >= 0:
        p99s = [float(x) for x in LATENCY_LINE.findall(text[last_report:])] or p99s
    m = CPU_LINE.search(text)
    startup_cpu = float(m.group(1)) if m else None
    result = {"rc": rc, "wall_s": wall, "cpu_s": cpu, "peak_rss_kib": rss, "checkpoints": ckpts,
              "startup_cpu_s": startup_cpu, "latency_p99_s": max(p99s) / 1000 if p99s else None,
              "files": output_files(out, "part-*") if rc == 0 else None, "log": log_path}
    # kept next to the output so that later Weir-only runs can be compared with it (--merge)
    with open(os.path.join(d, FLINK_RUN_RECORD), "w") as f:
        json.dump(dict(result, input=input_path, events=count_lines(input_path),
                       finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), f, indent=1)
    return result


FLINK_RUN_RECORD = "run.json"


def stored_flink_run(name, input_path, work):
    """The last Flink run of `name` over the same input in the work directory, if it finished."""
    path = os.path.join(work, "runs", name, "flink", FLINK_RUN_RECORD)
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError):
        return None
    if run.get("rc") != 0 or run.get("input") != input_path or not run.get("files"):
        return None
    if run.get("events") != count_lines(input_path) or not all(os.path.exists(p) for p in run["files"]):
        return None
    return run


def canonical_counter(fn, files):
    canon = fn(read_rows(files))
    if isinstance(canon, collections.Counter):
        return canon
    return collections.Counter(stable_hash(x) for x in canon)


IMPRESSION_CLICK_DELAY_MS = 5000  # maxOutOfOrderness of bench/workloads/impression-click.yaml
IMPRESSION_CLICK_WITHIN_MS = 5 * 60 * 1000  # the pattern's `within`


def late_events(input_path, delay_ms):
    """Per event index: whether the event is behind a watermark that follows every event at
    once (max event time so far minus `delay_ms`). Both engines' real watermarks lag that one
    (Flink emits it periodically, Weir per batch), so an event either engine treats as late is
    late here too: lateness here is necessary, not sufficient, for an engine to see it late."""
    late, max_ts = [], None
    for ev in read_rows([input_path]):
        ts = ev["ts"]
        late.append(max_ts is not None and ts <= max_ts - delay_ms)
        max_ts = ts if max_ts is None else max(max_ts, ts)
    return late


def explain_impression_click_extras(weir_files, only_weir_hashes, input_path):
    """Which of the matches only Weir found could be explained by late events: the impression
    or every click of that request and ad within 5 minutes after it is behind the watermark
    (Flink's MATCH_RECOGNIZE drops late rows; Weir's pattern still matches them, see
    bench/README.md). Returns (explained, total)."""
    fn = proj("requestId", "adId", "impressionTs", "clicks")
    extra = [fn(r) for r in read_rows(weir_files) if stable_hash(fn(r)) in only_weir_hashes]
    wanted = {(m[0], m[1]) for m in extra}
    late = late_events(input_path, IMPRESSION_CLICK_DELAY_MS)
    events = collections.defaultdict(list)  # (request, ad) -> [(type, ts, late)]
    for i, ev in enumerate(read_rows([input_path])):
        key = (ev.get("requestId"), ev.get("adId"))
        if key in wanted and ev.get("type") in ("impression", "click"):
            events[key].append((ev["type"], ev["ts"], late[i]))
    explained = 0
    for request, ad, imp_ts, _clicks in extra:
        evs = events[(request, ad)]
        imp_late = any(t == "impression" and ts == imp_ts and lt for t, ts, lt in evs)
        clicks = [lt for t, ts, lt in evs
                  if t == "click" and imp_ts <= ts <= imp_ts + IMPRESSION_CLICK_WITHIN_MS]
        if imp_late or (clicks and all(clicks)):
            explained += 1
    return explained, len(extra)


def compare_with_digest(spec, weir, flink_compare, source):
    """The fresh Weir output against Flink's stored digest (a `--merge` run without Flink)."""
    *_, weir_fn, _flink_fn, _what = spec
    if weir["files"] is None:
        return {"same": None, "note": "a run failed"}
    ca = canonical_counter(weir_fn, weir["files"])
    wd = digest(ca)
    res = {"same": wd == flink_compare["flink_digest"], "weir_items": sum(ca.values()),
           "flink_items": flink_compare["flink_items"], "weir_digest": wd,
           "flink_digest": flink_compare["flink_digest"], "against": source}
    if wd == flink_compare.get("weir_digest"):
        # the same output as the Weir run compared with Flink's in full: its differences hold
        for k in ("only_weir", "only_flink", "examples_only_weir", "examples_only_flink",
                  "only_weir_late", "only_weir_checked"):
            if k in flink_compare:
                res[k] = flink_compare[k]
    return res


def compare(spec, weir, flink, input_path=None):
    *_, weir_fn, flink_fn, _what = spec
    if weir["files"] is None or flink["files"] is None:
        return {"same": None, "note": "a run failed"}

    ca = canonical_counter(weir_fn, weir["files"])
    cb = canonical_counter(flink_fn or weir_fn, flink["files"])
    only_w, only_f = ca - cb, cb - ca
    res = {"same": not only_w and not only_f, "weir_items": sum(ca.values()),
           "flink_items": sum(cb.values()), "only_weir": sum(only_w.values()),
           "only_flink": sum(only_f.values()), "weir_digest": digest(ca), "flink_digest": digest(cb)}
    if only_w or only_f:
        res["examples_only_weir"] = [k for k, _ in list(only_w.items())[:3]]
        res["examples_only_flink"] = [k for k, _ in list(only_f.items())[:3]]
    if only_w and input_path and spec[2] == "impression-click.sql":
        explained, total = explain_impression_click_extras(weir["files"], set(only_w), input_path)
        res["only_weir_late"] = explained
        res["only_weir_checked"] = total
    return res


# ---------------------------------------------------------------- report


def fmt_num(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def ckpt_text(c, key="max_ms"):
    if not c:
        return "none"
    ms = c.get(key, c.get("max_ms_retained"))
    return f"{c['count']} / {ms:.0f} ms / {c['last_size_bytes'] / 1024:.0f} KiB"


def write_results(results, meta, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    lines = [
        "# Weir vs Flink, same machine, same input",
        "",
        f"Taken {meta['started']} – {meta['finished']} on {meta['machine']}; load average "
        f"{meta['load_before']} before, {meta['load_after']} after. Weir: {meta['weir_binary']}, "
        f"repository at {meta['repo_commit']}. Flink 2.3 JVM options: {' '.join(meta['flink_jvm_opts'])}. "
        f"Inputs: {meta['inputs']}. "
        "Both engines: one task (parallelism 1), JSON-lines file in, JSON-lines file out, "
        "RocksDB state, checkpoints every 10 s. See bench/README.md for what each column means.",
        "",
        "| benchmark | events | Weir ev/CPU-s | Flink ev/CPU-s | ratio | Flink ev/CPU-s excl. startup | "
        "Weir ev/CPU-s, generator source | "
        "Weir wall s | Flink wall s | Weir peak RSS MiB | Flink peak RSS MiB | RSS ratio | "
        "Weir ckpts n / max / last size | Flink ckpts n / max / last size | p99 latency Weir / Flink | same result? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for r in results:
        w, fl = r.get("weir"), r.get("flink")
        if r.get("not_expressible"):
            fe = (fmt_num(r["events"] / fl["cpu_s"]) if fl and fl.get("rc") == 0
                  else f"did not finish (stopped after {fl['cpu_s']:.0f} CPU-s)" if fl else "-")
            lines.append(f"| {r['name']} | {r['events']:,} | {r['not_expressible']} | {fe} | | | | | "
                         f"{fmt_num(fl['wall_s'], 1) if fl else '-'} | | "
                         f"{fmt_num(fl['peak_rss_kib'] / 1024, 0) if fl else '-'} | | | "
                         f"{ckpt_text(fl['checkpoints']) if fl else '-'} | | |")
            continue
        wv = r["events"] / w["cpu_s"] if w and w["rc"] == 0 else None
        fv = r["events"] / fl["cpu_s"] if fl and fl["rc"] == 0 else None
        ftext = (fmt_num(fv) if fv else f"did not finish (stopped after {fl['cpu_s']:.0f} CPU-s)"
                 if fl else "-")
        fx = (r["events"] / (fl["cpu_s"] - fl["startup_cpu_s"])
              if fl and fl["rc"] == 0 and fl.get("startup_cpu_s") else None)
        ratio = f"{wv / fv:.1f}×" if wv and fv else "-"
        g = r.get("weir_gen")
        gv = r["events"] / g["cpu_s"] if g and g["rc"] == 0 else None
        gsame = (r.get("weir_gen_same_as_file") or {}).get("same")
        gtext = fmt_num(gv) + ("" if gsame in (True, None) else " (output differs from the file run!)")
        rss_ratio = (f"1/{fl['peak_rss_kib'] / w['peak_rss_kib']:.0f}"
                     if w and fl and w["peak_rss_kib"] else "-")
        c = r.get("compare") or {}
        if c.get("same") is True:
            same = f"yes ({c['weir_items']:,} items)"
        elif c.get("same") is False and "only_weir" in c:
            same = (f"**no**: Weir {c['weir_items']:,}, Flink {c['flink_items']:,}, only Weir "
                    f"{c['only_weir']:,}, only Flink {c['only_flink']:,}")
            if "only_weir_late" in c:
                same += (f"; of the {c['only_weir_checked']:,} matches only Weir found, "
                         f"{c['only_weir_late']:,} have a late impression or only late clicks "
                         "(behind max event time − 5 s), which MATCH_RECOGNIZE drops")
        elif c.get("same") is False:
            same = (f"**no**: Weir {c['weir_items']:,}, Flink {c['flink_items']:,} (differs from "
                    "the stored digest of Flink's result)")
        else:
            same = c.get("note", "-")
        if r["name"] in KNOWN_ISSUES and c.get("same") is not True:
            same += f" ({KNOWN_ISSUES[r['name']]})"
        p99 = w.get("latency_p99_s") if w else None
        fp99 = fl.get("latency_p99_s") if fl else None
        lat = (("≤ " + fmt_num(p99 * 1000, 1) + " ms" if p99 is not None else "-") + " / "
               + (fmt_num(fp99 * 1000, 1) + " ms" if fp99 is not None else "-"))
        lines.append(
            f"| {r['name']} | {r['events']:,} | {fmt_num(wv)} | {ftext} | {ratio} | {fmt_num(fx)} | {gtext} | "
            f"{fmt_num(w['wall_s'], 1) if w else '-'} | {fmt_num(fl['wall_s'], 1) if fl else '-'} | "
            f"{fmt_num(w['peak_rss_kib'] / 1024, 1) if w else '-'} | "
            f"{fmt_num(fl['peak_rss_kib'] / 1024, 0) if fl else '-'} | {rss_ratio} | "
            f"{ckpt_text(w['checkpoints'], 'max_ms_retained') if w else '-'} | "
            f"{ckpt_text(fl['checkpoints']) if fl else '-'} | "
            f"{lat} | {same} |")
    for note in ("latency_note", "notes"):
        if meta.get(note):
            lines += ["", meta[note]]
    merged = [r for r in results if r.get("merged_at")]
    if merged:
        lines += ["", "Rows re-measured after the run above and merged into this table (figures of "
                  "engines not re-run are kept; the ratio is recomputed; \"same result?\" compares the "
                  "fresh output with Flink's, directly or through the stored digest of Flink's result):", ""]
        for r in merged:
            lines.append(f"- {r['name']}: " + "; ".join(r["merged_at"]))
    lines += ["", "What was compared for \"same result?\":", ""]
    for r in results:
        if not r.get("not_expressible"):
            lines.append(f"- {r['name']}: {BENCHMARKS[r['name']][6]}")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def machine():
    cpus = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024 // 1024} GiB RAM"
    except OSError:
        pass
    return f"{cpus} cores ({model}), {mem}, {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(BENCHMARKS),
                    help="comma-separated benchmarks (default: all): " + ",".join(BENCHMARKS))
    ap.add_argument("--engines", default="weir,weir-gen,flink",
                    help="comma-separated: weir (file source), weir-gen (Weir with the generator "
                    "source instead of the file), flink (default: all three)")
    ap.add_argument("--nexmark-events", type=int, default=5_000_000)
    ap.add_argument("--ad-events", type=int, default=2_000_000)
    ap.add_argument("--work", default=os.environ.get("WEIR_BENCH_WORK", "/tmp/weir-bench"))
    ap.add_argument("--results", default=os.path.join(BENCH, "results"))
    ap.add_argument("--build", action="store_true", help="rebuild weir-runtime even if it exists")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other engines' figures from the existing results.json and replace "
                    "only what this run measures (same benchmarks and event counts expected)")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    for n in names:
        if n not in BENCHMARKS:
            sys.exit(f"unknown benchmark '{n}' (known: {', '.join(BENCHMARKS)})")
    engines = set(args.engines.split(","))
    ensure_weir(args.build)
    if "flink" in engines:
        ensure_flink()
    os.makedirs(os.path.join(args.work, "inputs"), exist_ok=True)
    counts = {"nexmark": args.nexmark_events, "ad": args.ad_events, "ad-slow": args.ad_events}
    meta = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "load_before": load_average(), "flink_jvm_opts": FLINK_JVM_OPTS,
            "weir_binary": f"{WEIR_BIN} (built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(os.path.getmtime(WEIR_BIN)))})",
            "repo_commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                                          capture_output=True, text=True).stdout.strip(),
            "inputs": "; ".join(f"{k}: {counts[k]:,} events ({INPUT_KINDS[k][2]})"
                                for k in sorted({BENCHMARKS[n][0] for n in names}))}
    old = None
    if args.merge and os.path.exists(os.path.join(args.results, "results.json")):
        with open(os.path.join(args.results, "results.json")) as f:
            old = json.load(f)
    old_rows = {r["name"]: r for r in old["results"]} if old else {}
    results = []
    for name in names:
        spec = BENCHMARKS[name]
        input_path = prepare_input(args.work, spec[0], counts[spec[0]])
        events = count_lines(input_path)
        row = {"name": name, "events": events, "input": input_path, "load_at_start": load_average(),
               "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if spec[1] is None:
            row["not_expressible"] = NOT_EXPRESSIBLE[name]
        if "weir" in engines and spec[1] is not None:
            log(f"{name}: weir")
            row["weir"] = run_weir(name, spec, input_path, args.work)
            w = row["weir"]
            log(f"{name}: weir rc={w['rc']} {w['wall_s']:.1f}s wall, {w['cpu_s']:.1f} CPU-s, "
                f"{events / max(w['cpu_s'], 1e-9):,.0f} ev/CPU-s, peak RSS {w['peak_rss_kib'] / 1024:.1f} MiB")
        if "weir-gen" in engines and spec[1] is not None:
            log(f"{name}: weir with the generator source")
            row["weir_gen"] = run_weir(name, spec, input_path, args.work, counts[spec[0]])
            g = row["weir_gen"]
            log(f"{name}: weir-gen rc={g['rc']} {g['wall_s']:.1f}s wall, {g['cpu_s']:.1f} CPU-s, "
                f"{events / max(g['cpu_s'], 1e-9):,.0f} ev/CPU-s, peak RSS {g['peak_rss_kib'] / 1024:.1f} MiB")
            if row.get("weir"):
                gspec = spec[:5] + (None,) + spec[6:]
                row["weir_gen_same_as_file"] = compare(gspec, row["weir"], g)
                log(f"{name}: generator run = file run: {row['weir_gen_same_as_file']}")
        if "flink" in engines:
            log(f"{name}: flink")
            row["flink"] = run_flink(name, spec, input_path, args.work)
            fl = row["flink"]
            log(f"{name}: flink rc={fl['rc']} {fl['wall_s']:.1f}s wall, {fl['cpu_s']:.1f} CPU-s, "
                f"{events / max(fl['cpu_s'], 1e-9):,.0f} ev/CPU-s, peak RSS {fl['peak_rss_kib'] / 1024:.0f} MiB")
        if row.get("weir") and row.get("flink"):
            row["compare"] = compare(spec, row["weir"], row["flink"], input_path)
            log(f"{name}: same result: {row['compare']}")
        elif row.get("weir") and spec[1] is not None:
            # Weir only: compare with Flink's output of an earlier run in the work directory,
            # else with the digest of Flink's result stored in results.json
            stored = stored_flink_run(name, input_path, args.work)
            old_compare = (old_rows.get(name) or {}).get("compare") or {}
            if stored:
                row["compare"] = compare(spec, row["weir"], stored, input_path)
                row["compare"]["against"] = f"Flink's output of {stored['finished']} in {args.work}"
            elif old_compare.get("flink_digest"):
                row["compare"] = compare_with_digest(
                    spec, row["weir"], old_compare,
                    "the digest of Flink's result stored in results.json")
            else:
                row["compare"] = {"same": None, "note": "not compared: no Flink output or digest to compare with"}
            log(f"{name}: same result: {row['compare']}")
        row["load_at_end"] = load_average()
        for e in ("weir", "weir_gen", "flink"):
            if row.get(e):
                files = row[e].pop("files")
                row[e]["output_rows"] = None if files is None else sum(1 for _ in read_rows(files))
        results.append(row)
    if old:
        fresh = {r["name"]: r for r in results}
        merged = []
        for r in old["results"]:
            new_row = fresh.pop(r["name"], None)
            if new_row:
                if new_row["events"] != r["events"]:
                    sys.exit(f"--merge: {r['name']} has {r['events']} events in results.json, "
                             f"{new_row['events']} now")
                for k, v in new_row.items():
                    if k in ("weir", "weir_gen", "flink", "weir_gen_same_as_file", "compare"):
                        r[k] = v
                engines_run = [e for e in ("weir", "weir_gen", "flink") if e in new_row]
                r.setdefault("merged_at", []).append(
                    f"{new_row['started']} ({', '.join(engines_run)}; "
                    f"load {new_row['load_at_start']} at start, {new_row['load_at_end']} at end; "
                    f"weir-runtime {meta['weir_binary']}, repository {meta['repo_commit']})")
            merged.append(r)
        merged.extend(fresh.values())
        results = merged
        # the header keeps describing the run the table started from; merges are listed
        merges = old["meta"].get("merges", []) + [{
            k: meta[k] for k in ("started", "load_before", "weir_binary", "repo_commit")}]
        merges[-1].update(only=names, engines=sorted(engines),
                          finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          load_after=load_average())
        meta = dict(old["meta"], merges=merges)
        write_results(results, meta, args.results)
        log(f"wrote {args.results}/results.md and results.json (merged)")
        print(open(os.path.join(args.results, "results.md")).read())
        return
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta["load_after"] = load_average()
    write_results(results, meta, args.results)
    log(f"wrote {args.results}/results.md and results.json")
    print(open(os.path.join(args.results, "results.md")).read())


if __name__ == "__main__":
    main()
