#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl (v1.20.2, from Debian's `kubernetes` source package, with two fixes
# needed with Debian's Go 1.19: reflect2 v1.0.2's mapiterinit, and
# kube-openapi#230's zero-value check) and a static `pause` binary, and cache
# them in $WEIR_CACHE/k8s-$K8S_VERSION/bin (with a PATCHES stamp). Does
# nothing if the cache is complete and was built with the same patches.
#
# Usage: tests/cluster/build-k8s.sh            (takes ~8-10 min on 2 cores)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause)
# The patches applied to the tree; a cache built with another set is rebuilt.
PATCH_LEVEL="reflect2-v1.0.2-mapiterinit kube-openapi-230-zero-value"
STAMP="$(dirname "$K8S_BIN")/PATCHES"

cache_complete() {
  local b
  for b in "${BINS[@]}"; do [[ -x "$K8S_BIN/$b" ]] || return 1; done
  [[ "$(cat "$STAMP" 2>/dev/null)" == "$PATCH_LEVEL" ]]
}

if cache_complete; then
  log "k8s $K8S_VERSION binaries cached in $K8S_BIN"
  exit 0
fi

need_root
command -v go >/dev/null || die "golang-go missing: run tests/cluster/install-deps.sh"
command -v rsync >/dev/null || die "rsync missing: run tests/cluster/install-deps.sh"

# 1. deb-src entry (copy of the machine's Debian deb entry), only if missing.
SRC_LIST=/etc/apt/sources.list.d/weir-deb-src.sources
if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding deb-src entry $SRC_LIST"
  python3 - "$SRC_LIST" <<'PY'
import glob, sys
out = []
for path in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
    for stanza in open(path).read().split('\n\n'):
        lines = [l for l in stanza.splitlines() if l.strip() and not l.lstrip().startswith('#')]
        fields = dict(l.split(':', 1) for l in lines if ':' in l and not l.startswith(' '))
        if fields.get('Types', '').split() == ['deb'] and 'deb.debian.org/debian' in fields.get('URIs', '') \
                and 'security' not in fields.get('URIs', ''):
            out.append('\n'.join('Types: deb-src' if l.startswith('Types:') else l for l in lines))
if not out:
    sys.exit('no Debian deb entry found in /etc/apt/sources.list.d/*.sources')
open(sys.argv[1], 'w').write('\n\n'.join(out) + '\n')
PY
  apt-get update -q
fi

WORK="$WEIR_CACHE/k8s-src"
mkdir -p "$WORK"
cd "$WORK"

# 2. source package
if ! ls kubernetes_*.dsc >/dev/null 2>&1; then
  log "downloading Debian source package kubernetes"
  apt-get source --download-only kubernetes
fi
SRC_DIR="$WORK/src"
if [[ ! -f "$SRC_DIR/.extracted" ]]; then
  rm -rf "$SRC_DIR"
  mkdir -p "$SRC_DIR"
  ORIG="$(ls kubernetes_*.orig.tar.* | head -1)"
  log "extracting $ORIG"
  tar -xf "$ORIG" -C "$SRC_DIR" --strip-components=1
  touch "$SRC_DIR/.extracted"
fi
cd "$SRC_DIR"
[[ -d vendor/github.com/modern-go/reflect2 ]] || die "vendor/ missing in $SRC_DIR"

# 3. patches for building v1.20 with Go >= 1.18 (both idempotent):
#    reflect2 v1.0.2's 3-argument mapiterinit (apiserver SIGSEGV otherwise)
python3 "$WEIR_CLUSTER_SCRIPTS/patch-reflect2.py" vendor/github.com/modern-go/reflect2
#    kube-openapi#230 (empty strings in custom resources rejected as null otherwise)
python3 "$WEIR_CLUSTER_SCRIPTS/patch-openapi-zero.py" .

# 4. build with the tree's make rules
export KUBE_GIT_VERSION="$K8S_VERSION" KUBE_BUILD_PLATFORMS=linux/amd64
export KUBE_GIT_TREE_STATE=clean
log "building kubernetes $K8S_VERSION (this takes ~8-10 minutes on 2 cores)"
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl"

OUT="$SRC_DIR/_output/local/bin/linux/amd64"
[[ -d "$OUT" ]] || OUT="$SRC_DIR/_output/bin"

# 5. pause, static
log "building static pause"
mkdir -p "$OUT"
gcc -Os -Wall -Werror -static -DVERSION=v3.4.1-weir -o "$OUT/pause" build/pause/linux/pause.c

TMP_BIN="$K8S_BIN.tmp.$$"
rm -rf "$TMP_BIN"
mkdir -p "$TMP_BIN"
for b in "${BINS[@]}"; do cp "$OUT/$b" "$TMP_BIN/$b"; done
rm -rf "$K8S_BIN"
mv "$TMP_BIN" "$K8S_BIN"
echo "$PATCH_LEVEL" >"$STAMP"
"$K8S_BIN/kubectl" version --client --short || true
log "cached: $(ls "$K8S_BIN" | tr '\n' ' ') in $K8S_BIN"
