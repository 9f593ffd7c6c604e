#!/usr/bin/env bash
# Alerting on the real test cluster (tests/cluster must be up): breach → notification time and
# the operator's CPU/RSS while scraping N runtime pods every 10 s.
#   bash bench/alerting/run.sh [--pods 100] [--window 120] [--trials 3]
# Writes bench/results/alerting.md and alerting.json. See bench/README.md.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
exec python3 "$(dirname "$0")/bench.py" "$@"
