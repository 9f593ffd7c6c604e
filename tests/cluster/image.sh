#!/usr/bin/env bash
# Build an OCI image tarball from host binaries and import it into the test
# cluster's containerd as docker.io/local/NAME:TAG (namespace k8s.io).
#
# Usage: tests/cluster/image.sh NAME TAG BINARY [BINARY...]
#   - every BINARY goes to /usr/local/bin/<basename>; the first is the
#     entrypoint (pods can override with command/args);
#   - dynamically linked binaries: every library `ldd` lists and the dynamic
#     loader are copied to the same paths as on the host (usr-merge symlinks
#     /bin /lib /lib64 /sbin are reproduced);
#   - adds /etc/passwd, /etc/group, /etc/nsswitch.conf, /tmp (1777), and
#     /etc/ssl/certs if the host has it;
#   - extra files: WEIR_IMAGE_FILES="HOST_PATH:IMAGE_PATH ..." (optional).
#   - WEIR_IMAGE_NO_IMPORT=1 only writes the tarball.
# Output: $WEIR_CLUSTER_DIR/images/NAME-TAG.oci.tar (path printed on stdout).
# Pods reference the image as docker.io/local/NAME:TAG with imagePullPolicy: Never.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# >= 3)) || die "usage: $0 NAME TAG BINARY [BINARY...]"
NAME="$1" TAG="$2"
shift 2
REF="docker.io/local/$NAME:$TAG"

OUT_DIR="$WEIR_CLUSTER_DIR/images"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d "$OUT_DIR/.build-$NAME.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"

# usr-merge layout like the host's
for d in bin lib lib32 lib64 libx32 sbin; do
  if [[ -L "/$d" ]]; then
    mkdir -p "$ROOT/$(readlink "/$d" | sed 's#^/##')"
    ln -s "$(readlink "/$d")" "$ROOT/$d"
  fi
done

# copy_host_file HOST_PATH -> same location in the rootfs (directory resolved
# through host symlinks, file content dereferenced)
copy_host_file() {
  local src="$1" dir dst
  dir="$(realpath "$(dirname "$src")")"
  dst="$ROOT$dir/$(basename "$src")"
  [[ -e "$dst" ]] && return 0
  mkdir -p "$ROOT$dir"
  cp -L "$src" "$dst"
}

copy_libs() {
  local bin="$1" line
  # Lines: "libx.so => /path (0x..)", "/lib64/ld-linux... (0x..)", "linux-vdso.so.1 (0x..)"
  if ! ldd "$bin" >/dev/null 2>&1; then
    return 0 # static (ldd: "not a dynamic executable")
  fi
  while read -r line; do
    case "$line" in
      *"=> not found"*) die "$bin: missing library: $line" ;;
      *"=> /"*) copy_host_file "$(sed -E 's/.*=> ([^ ]+).*/\1/' <<<"$line")" ;;
      /*) copy_host_file "${line%% *}" ;;
    esac
  done < <(ldd "$bin")
}

ENTRY=""
mkdir -p "$ROOT/usr/local/bin"
for b in "$@"; do
  if [[ "$b" != */* ]]; then b="$(command -v "$b")" || die "binary not found: $b"; fi
  [[ -f "$b" && -x "$b" ]] || die "not an executable file: $b"
  cp -L "$b" "$ROOT/usr/local/bin/$(basename "$b")"
  copy_libs "$b"
  [[ -n "$ENTRY" ]] || ENTRY="/usr/local/bin/$(basename "$b")"
done

mkdir -p "$ROOT/etc" "$ROOT/tmp" "$ROOT/root" "$ROOT/proc" "$ROOT/dev" "$ROOT/sys" "$ROOT/var/tmp"
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
cat >"$ROOT/etc/passwd" <<'P'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
P
cat >"$ROOT/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo 'hosts: files dns' >"$ROOT/etc/nsswitch.conf"
if [[ -d /etc/ssl/certs ]]; then
  mkdir -p "$ROOT/etc/ssl"
  cp -rL /etc/ssl/certs "$ROOT/etc/ssl/certs"
fi
for spec in ${WEIR_IMAGE_FILES:-}; do
  src="${spec%%:*}" dst="${spec#*:}"
  mkdir -p "$ROOT$(dirname "$dst")"
  cp -rL "$src" "$ROOT$dst"
done

TARBALL="$OUT_DIR/$NAME-$TAG.oci.tar"
python3 - "$ROOT" "$WORK/oci" "$TARBALL" "$REF" "$TAG" "$ENTRY" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile

root, layout, out, ref, tag, entry = sys.argv[1:]

def deterministic(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = 0
    return ti

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        entries = sorted(dirnames + filenames)
        for name in entries:
            full = os.path.join(dirpath, name)
            arc = name if rel == "." else os.path.join(rel, name)
            ti = deterministic(t.gettarinfo(full, arcname=arc))
            if ti.isfile():
                with open(full, "rb") as f:
                    t.addfile(ti, f)
            else:
                t.addfile(ti)
        # do not descend into symlinked dirs (os.walk does not by default)
raw_bytes = raw.getvalue()
diff_id = "sha256:" + hashlib.sha256(raw_bytes).hexdigest()
gz = io.BytesIO()
with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
    g.write(raw_bytes)
layer = gz.getvalue()

blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + h, "size": len(data)}

layer_desc = put(layer)
config = {
    "created": "1970-01-01T00:00:00Z",
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": [entry],
        "Env": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"],
        "WorkingDir": "/",
    },
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/image.sh"}],
}
config_desc = put(json.dumps(config, sort_keys=True).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
}
manifest_desc = put(json.dumps(manifest, sort_keys=True).encode())
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **manifest_desc,
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {
            "io.containerd.image.name": ref,
            "org.opencontainers.image.ref.name": tag,
        },
    }],
}
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(index, f, sort_keys=True)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)

tmp = out + ".tmp"
with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
    for name in ["oci-layout", "index.json", "blobs"]:
        t.add(os.path.join(layout, name), arcname=name, filter=deterministic)
os.replace(tmp, out)
print(f"{ref} manifest {manifest_desc['digest']} layer {len(layer)} bytes", file=sys.stderr)
PY

if [[ -z "${WEIR_IMAGE_NO_IMPORT:-}" ]]; then
  [[ -S "$CONTAINERD_SOCK" ]] || die "containerd socket $CONTAINERD_SOCK missing: run tests/cluster/up.sh first"
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --base-name "docker.io/local/$NAME" "$TARBALL" >&2
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -xF "$REF" >/dev/null \
    || die "import did not create $REF"
  log "imported $REF"
fi
echo "$TARBALL"
