#!/usr/bin/env python3
"""A small Helm CLI over the `helm-sdkpy` package (Helm 4's Go library).

Usage (KUBECONFIG selects the cluster; `source tests/cluster/env.sh` first):
  helm.py lint CHART [--strict]
  helm.py install RELEASE CHART [-n NS] [--create-namespace] [--set k=v ...]
                  [--set-string k=v ...] [-f FILE ...] [--wait] [--timeout S]
  helm.py upgrade RELEASE CHART [-n NS] [--install] [same value flags]
                  [--reuse-values] [--reset-values] [--wait] [--timeout S]
  helm.py uninstall RELEASE [-n NS] [--wait] [--timeout S]
  helm.py list [-n NS] [-a]
  helm.py status RELEASE [-n NS]
  helm.py get-values RELEASE [-n NS] [-a]

Values: -f/--values files are merged in order, then --set / --set-string
(helm's syntax: a.b=1,c=x; lists as {a,b}; a[0]=x; escape commas with \\,).
--set infers types like helm (true/false/null/integers); --set-string does not.
Output of install/upgrade/list/status is JSON on stdout. By default nothing
waits for readiness (like the helm CLI); pass --wait to wait.

Notes on helm-sdkpy 0.1.32: lint reports only severities and paths (the Go
error values are serialised as {} so the messages are lost); there is no
template/dry-run entry point.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import Any

try:
    import helm_sdkpy as helm
except ImportError:  # pragma: no cover
    sys.exit("helm-sdkpy is not installed: run tests/cluster/install-deps.sh "
             "(pip install --ignore-requires-python helm-sdkpy)")

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------
def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def split_unescaped(s: str, sep: str) -> list[str]:
    parts, cur, i, depth = [], [], 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def typed(v: str, as_string: bool) -> Any:
    if as_string:
        return unescape(v)
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() == "null":
        return None
    if v == "0" or (v and v[0] != "0" and re.fullmatch(r"[-+]?[0-9]+", v)):
        return int(v)
    return unescape(v)


def parse_value(v: str, as_string: bool) -> Any:
    if v.startswith("{") and v.endswith("}"):
        inner = v[1:-1]
        return [] if inner == "" else [typed(x, as_string) for x in split_unescaped(inner, ",")]
    return typed(v, as_string)


def set_path(root: dict, key: str, value: Any) -> None:
    # key: a.b[0].c ; dots may be escaped as \.
    tokens: list[str | int] = []
    for part in split_unescaped(key, "."):
        m = re.fullmatch(r"(.*?)((?:\[\d+\])*)", part)
        name, idx = m.group(1), m.group(2)
        if name:
            tokens.append(unescape(name))
        tokens.extend(int(x) for x in re.findall(r"\[(\d+)\]", idx))
    cur: Any = root
    for i, tok in enumerate(tokens):
        last = i == len(tokens) - 1
        nxt: Any = None if last else ([] if isinstance(tokens[i + 1], int) else {})
        if isinstance(tok, int):
            if not isinstance(cur, list):
                raise ValueError(f"--set {key}: index on a non-list")
            while len(cur) <= tok:
                cur.append(None)
            if last:
                cur[tok] = value
            else:
                if not isinstance(cur[tok], (dict, list)):
                    cur[tok] = nxt
                cur = cur[tok]
        else:
            if last:
                cur[tok] = value
            else:
                if not isinstance(cur.get(tok), (dict, list)):
                    cur[tok] = nxt
                cur = cur[tok]


def collect_values(args) -> dict:
    values: dict = {}
    for f in args.values or []:
        import yaml  # PyYAML

        with open(f) as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            sys.exit(f"{f}: values file must be a mapping")
        values = deep_merge(values, data)
    for spec_list, as_string in ((args.set or [], False), (args.set_string or [], True)):
        for spec in spec_list:
            for pair in split_unescaped(spec, ","):
                if not pair:
                    continue
                if "=" not in pair:
                    sys.exit(f"--set {pair!r}: expected key=value")
                k, v = pair.split("=", 1)
                set_path(values, k, parse_value(v, as_string))
    return values


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------
def config(ns: str) -> "helm.Configuration":
    kubeconfig = os.environ.get("KUBECONFIG") or None
    if kubeconfig and ":" in kubeconfig:
        kubeconfig = kubeconfig.split(":")[0]
    return helm.Configuration(namespace=ns, kubeconfig=kubeconfig)


def summarize(rel: Any) -> Any:
    """Drop the bulky rendered chart from a release for printing."""
    if isinstance(rel, dict):
        return {k: v for k, v in rel.items() if k not in ("chart", "manifest")} | (
            {"chart": (rel.get("chart") or {}).get("metadata", {}).get("name")}
            if isinstance(rel.get("chart"), dict) else {})
    return rel


def out(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_lint(a) -> int:
    chart = os.path.abspath(a.chart)
    res = asyncio.run(helm.Lint(config(a.namespace)).run(chart))
    worst = 0
    for m in res.get("Messages") or []:
        sev = m.get("Severity", 0)
        worst = max(worst, sev)
        err = m.get("Err")
        text = err if isinstance(err, str) else (json.dumps(err) if err else "")
        print(f"[{SEVERITY.get(sev, sev)}] {m.get('Path')}: {text or '(message not exposed by helm-sdkpy)'}")
    errors = res.get("Errors") or []
    failed = bool(errors) or worst >= 3 or (a.strict and worst >= 2)
    n = res.get("TotalChartsLinted", 0)
    print(f"{n} chart(s) linted, {'FAILED' if failed else 'no failures'}")
    return 1 if failed else 0


def cmd_install(a) -> int:
    res = asyncio.run(helm.Install(config(a.namespace)).run(
        a.release, os.path.abspath(a.chart) if os.path.exists(a.chart) else a.chart,
        values=collect_values(a), create_namespace=a.create_namespace,
        wait=a.wait, timeout=a.timeout))
    out(summarize(res))
    return 0


def cmd_upgrade(a) -> int:
    res = asyncio.run(helm.Upgrade(config(a.namespace)).run(
        a.release, os.path.abspath(a.chart) if os.path.exists(a.chart) else a.chart,
        values=collect_values(a), install=a.install, create_namespace=a.create_namespace,
        wait=a.wait, timeout=a.timeout, reuse_values=a.reuse_values,
        reset_values=a.reset_values))
    out(summarize(res))
    return 0


def cmd_uninstall(a) -> int:
    res = asyncio.run(helm.Uninstall(config(a.namespace)).run(a.release, wait=a.wait, timeout=a.timeout))
    out(summarize(res) if not isinstance(res, dict) or "release" not in res
        else {**res, "release": summarize(res["release"])})
    return 0


def cmd_list(a) -> int:
    res = asyncio.run(helm.List(config(a.namespace)).run(all=a.all)) or []
    rows = []
    for r in res:
        info = r.get("info") or {}
        rows.append({
            "name": r.get("name"), "namespace": r.get("namespace"),
            "revision": r.get("version"), "status": info.get("status"),
            "updated": info.get("last_deployed"),
            "chart": ((r.get("chart") or {}).get("metadata") or {}).get("name")
            if isinstance(r.get("chart"), dict) else r.get("chart"),
        })
    out(rows)
    return 0


def cmd_status(a) -> int:
    out(summarize(asyncio.run(helm.Status(config(a.namespace)).run(a.release))))
    return 0


def cmd_get_values(a) -> int:
    out(asyncio.run(helm.GetValues(config(a.namespace)).run(a.release, all=a.all)))
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="helm.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("-n", "--namespace", default=os.environ.get("HELM_NAMESPACE", "default"))

    def valflags(sp):
        sp.add_argument("--set", action="append", metavar="K=V")
        sp.add_argument("--set-string", action="append", metavar="K=V")
        sp.add_argument("-f", "--values", action="append", metavar="FILE")
        sp.add_argument("--create-namespace", action="store_true")
        sp.add_argument("--wait", action="store_true", help="wait for resources to be ready")
        sp.add_argument("--timeout", type=int, default=300, help="seconds (default 300)")

    sp = sub.add_parser("lint"); common(sp)
    sp.add_argument("chart"); sp.add_argument("--strict", action="store_true")
    sp.set_defaults(fn=cmd_lint)

    sp = sub.add_parser("install"); common(sp); valflags(sp)
    sp.add_argument("release"); sp.add_argument("chart"); sp.set_defaults(fn=cmd_install)

    sp = sub.add_parser("upgrade"); common(sp); valflags(sp)
    sp.add_argument("release"); sp.add_argument("chart")
    sp.add_argument("-i", "--install", action="store_true")
    sp.add_argument("--reuse-values", action="store_true")
    sp.add_argument("--reset-values", action="store_true")
    sp.set_defaults(fn=cmd_upgrade)

    sp = sub.add_parser("uninstall"); common(sp)
    sp.add_argument("release"); sp.add_argument("--wait", action="store_true")
    sp.add_argument("--timeout", type=int, default=300)
    sp.set_defaults(fn=cmd_uninstall)

    sp = sub.add_parser("list"); common(sp)
    sp.add_argument("-a", "--all", action="store_true"); sp.set_defaults(fn=cmd_list)

    sp = sub.add_parser("status"); common(sp)
    sp.add_argument("release"); sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser("get-values"); common(sp)
    sp.add_argument("release"); sp.add_argument("-a", "--all", action="store_true")
    sp.set_defaults(fn=cmd_get_values)

    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except helm.HelmError as e:
        print(f"helm.py {a.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
