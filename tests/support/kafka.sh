#!/usr/bin/env bash
# A throwaway Kafka-protocol broker (tansu, memory storage) for tests.
#
#   tests/support/kafka.sh install            # cargo install tansu (cached) if missing
#   tests/support/kafka.sh start PORT         # start on 127.0.0.1:PORT, wait until it listens
#   tests/support/kafka.sh topic NAME PARTITIONS
#   tests/support/kafka.sh stop
#
# State (PID, port, log) lives in $WEIR_KAFKA_DIR (default ${TMPDIR:-/tmp}/weir-tansu), so
# several brokers can run side by side with different directories.
set -euo pipefail

WEIR_CACHE="${WEIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}"
export PATH="$WEIR_CACHE/cargo/bin:$PATH"
DIR="${WEIR_KAFKA_DIR:-${TMPDIR:-/tmp}/weir-tansu}"
mkdir -p "$DIR"

die() { echo "kafka.sh: $*" >&2; exit 1; }

install_tansu() {
  command -v tansu >/dev/null 2>&1 && return 0
  echo "kafka.sh: installing tansu into $WEIR_CACHE/cargo (cached; ~8 min on 2 cores)" >&2
  nice -n 19 cargo install --locked --root "$WEIR_CACHE/cargo" tansu --features dynostore
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local port="${1:?usage: kafka.sh start PORT}"
  install_tansu
  if [[ -f "$DIR/pid" ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    die "a broker from $DIR is already running (pid $(cat "$DIR/pid")); run 'kafka.sh stop' first"
  fi
  listening "$port" && die "port $port is already in use"
  tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$DIR/broker.log" 2>&1 &
  echo $! >"$DIR/pid"
  echo "$port" >"$DIR/port"
  for _ in $(seq 1 200); do
    listening "$port" && { echo "kafka.sh: tansu pid $(cat "$DIR/pid") on 127.0.0.1:$port" >&2; return 0; }
    kill -0 "$(cat "$DIR/pid")" 2>/dev/null || { cat "$DIR/broker.log" >&2; die "tansu exited"; }
    sleep 0.1
  done
  die "tansu did not listen on $port within 20s (log: $DIR/broker.log)"
}

stop() {
  [[ -f "$DIR/pid" ]] || return 0
  local pid; pid="$(cat "$DIR/pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$DIR/pid"
}

topic() {
  local name="${1:?usage: kafka.sh topic NAME PARTITIONS}" partitions="${2:?usage: kafka.sh topic NAME PARTITIONS}"
  [[ -f "$DIR/port" ]] || die "no broker started from $DIR"
  tansu topic create --broker "tcp://127.0.0.1:$(cat "$DIR/port")" --partitions "$partitions" "$name"
}

case "${1:-}" in
  install) install_tansu ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  topic) shift; topic "$@" ;;
  *) die "usage: kafka.sh install | start PORT | topic NAME PARTITIONS | stop" ;;
esac
