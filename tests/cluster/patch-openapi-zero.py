#!/usr/bin/env python3
"""Remove go-openapi's incorrect zero-value check from a Kubernetes v1.20
vendor/ tree (upstream fix: kubernetes/kube-openapi#230, "Remove incorrect
zero value check"; bug: kubernetes/kubernetes#99804).

typeValidator.Validate treats a value as null when
    reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))
That comparison never held before Go 1.16 (reflect.Zero returned a unique
pointer); since Go 1.16 reflect.Zero shares zero values, so with Debian's Go
1.19 every empty string in a custom resource (and every `default: ''` in a
CRD schema) is rejected: `in body must be of type string: "null"`.
The fix keeps only the `data == nil` test.

Usage: patch-openapi-zero.py K8S_SOURCE_DIR     (idempotent)
"""
import pathlib
import sys

src = pathlib.Path(sys.argv[1])
files = [
    src / "vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go",
    src / "vendor/github.com/go-openapi/validate/type.go",
]
old = "if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {"
new = "if data == nil { // weir: kube-openapi#230, zero values are not null"
for f in files:
    if not f.exists():
        continue
    text = f.read_text()
    if new in text:
        print(f"already patched: {f}")
        continue
    if text.count(old) != 1:
        sys.exit(f"unexpected {f}: zero-value check not found")
    text = text.replace(old, new)
    # `reflect` may now be unused in this file; keep it referenced.
    if text.count("reflect.") == 0:
        text += "\nvar _ = reflect.TypeOf\n"
    f.write_text(text)
    print(f"patched (kube-openapi#230): {f}")
