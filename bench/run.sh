#!/usr/bin/env bash
# The Weir vs Flink runtime benchmark, one command:
#   bash bench/run.sh [--only q0,q1,splice] [--engines weir,flink] [--nexmark-events N] [--ad-events N]
# Writes bench/results/results.md and results.json. See bench/README.md.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
exec python3 "$(dirname "$0")/lib/bench.py" "$@"
