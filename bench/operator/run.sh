#!/usr/bin/env bash
# Operator at scale against the real test apiserver (starts tests/cluster if it is not up):
#   bash bench/operator/run.sh [--jobs 500] [--idle-seconds 120]
# Writes bench/results/operator.md and operator.json. See bench/README.md.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
exec python3 "$(dirname "$0")/bench.py" "$@"
