#!/usr/bin/env bash
# Profiles the sync server under run.sh's delta-pull load: a fresh server (embedded SQLite),
# SEED objects pushed BATCH per request, then `perf record -g` of the server for 10 s while wrk
# pulls the last push's objects at CONNECTIONS connections; prints each part of a request's share
# of the server's samples (parts.py).
#   ./profile.sh [SERVER_BINARY] [OUT.perf]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SYNC_SERVER=${1:-$HERE/../../target/release/sync-server}
PERF_OUT=${2:-$(mktemp -d)/delta-pull.perf}
SEED=${SEED:-10000} BATCH=${BATCH:-50} THREADS=${THREADS:-2} CONNECTIONS=${CONNECTIONS:-32}

die() { echo "profile.sh: $*" >&2; exit 1; }
for tool in perf wrk curl jq od python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -x $SYNC_SERVER ]] || die "no server binary at $SYNC_SERVER: cargo build --release -p sync-server --bin sync-server"

# shellcheck source=servers.sh
source "$HERE/servers.sh"
DIR=$(mktemp -d)
trap 'stop_server; rm -rf "$DIR"' EXIT

start_ours "$DIR" "$SYNC_SERVER"
seed ours "$(hex 10)" "$DIR"
wrk -t"$THREADS" -c"$CONNECTIONS" -d14s "$PULL_URL" >"$DIR/wrk" &
WRK=$!
sleep 2
perf record -F 2000 -e cpu-clock -g -p "$SERVER_PID" -o "$PERF_OUT" -- sleep 10 >/dev/null 2>&1
wait "$WRK"
grep 'Requests/sec' "$DIR/wrk"
python3 "$HERE/parts.py" "$PERF_OUT"
echo "profile: $PERF_OUT"
