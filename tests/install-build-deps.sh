#!/usr/bin/env bash
# Installs what building and testing Weir needs on Debian 12, idempotently:
# the C toolchain pieces of the Rust dependencies (RocksDB; librdkafka with TLS
# (libssl-dev), SASL (libsasl2-dev), gzip (zlib1g-dev) and zstd (libzstd-dev)), the
# test services (aiosmtpd for SMTP, redis-server, prometheus-alertmanager for the Alertmanager
# channel, s3s-fs for S3, tansu for Kafka, stunnel4 as the TLS terminator in front of tansu,
# openssl for test certificates), and the local Kubernetes cluster's dependencies
# (tests/cluster/install-deps.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/cluster/lib.sh"

PKGS=(clang libclang-dev cmake pkg-config libssl-dev libcurl4-openssl-dev libsasl2-dev zlib1g-dev libzstd-dev redis-server stunnel4 openssl prometheus-alertmanager)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

bash "$here/cluster/install-deps.sh"

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import aiosmtpd' 2>/dev/null; then
  log "installing aiosmtpd (real SMTP server for the email tests)"
  "$PY" -m pip install -q aiosmtpd
fi

# Rust tools installed from crates.io, cached under $WEIR_CACHE/cargo/bin.
export PATH="$WEIR_CACHE/cargo/bin:$PATH"
if ! command -v s3s-fs >/dev/null 2>&1; then
  log "cargo install s3s-fs (S3-protocol server on a local directory; cached)"
  cargo install -q --locked --root "$WEIR_CACHE/cargo" s3s-fs@0.14.1 --features binary  # 0.17 needs rustc 1.96
fi
if ! command -v tansu >/dev/null 2>&1; then
  log "cargo install tansu (Kafka-protocol broker for the Kafka tests, memory storage; cached; ~8 min on 2 cores)"
  nice -n 19 cargo install -q --locked --root "$WEIR_CACHE/cargo" tansu --features dynostore
fi
log "build dependencies ready"
