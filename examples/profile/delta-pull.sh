#!/usr/bin/env bash
# Profiles the server during delta pulls: seeds 10,000 objects in pushes of 50 into a fresh
# server (embedded SQLite), then records `perf record -g` of the server for 10 s while wrk pulls
# the last push's 50 objects at 32 connections, and prints the share of the server's samples
# spent in each part of a request (parts.py).
#   ./delta-pull.sh [SERVER_BINARY] [OUT.perf]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${1:-$HERE/../../target/release/sync-server}
OUT=${2:-$(mktemp -d)/delta-pull.perf}
for tool in perf wrk curl jq python3; do
  command -v "$tool" >/dev/null || { echo "delta-pull.sh: $tool is not installed" >&2; exit 1; }
done
[[ -x $SERVER ]] || { echo "delta-pull.sh: no server binary at $SERVER" >&2; exit 1; }
DIR=$(mktemp -d) PID=""
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
env -u SYNC_CONFIG RUST_LOG=info "$SERVER" --bind 127.0.0.1:0 --db "$DIR/sync.db" --log-format json >"$DIR/log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  line=$(grep -m1 '"message":"listening on' "$DIR/log" || true)
  [[ -n $line ]] && break
  sleep 0.1
done
ADDR=$(jq -r .fields.addr <<<"$line")
# 200 pushes of 50; the cursor before the last one answers exactly its 50 objects.
SINCE=$(python3 - "$ADDR" <<'PY'
import http.client, json, sys
conn, since = http.client.HTTPConnection(sys.argv[1]), 0
for b in range(200):
    body = json.dumps([{"id": "%08X%024X" % (b, i), "title": "Task %d" % i, "done": False} for i in range(50)])
    conn.request("POST", "/taskChanges", body, {"Content-Type": "application/json"})
    now = json.loads(conn.getresponse().read())["now"]
    if b < 199:
        since = now
print(since)
PY
)
URL="http://$ADDR/taskChanges?since=$SINCE"
[[ $(curl -fsS "$URL" | jq '.updates | length') == 50 ]] || { echo "delta-pull.sh: the delta is not 50 objects" >&2; exit 1; }
wrk -t2 -c32 -d14s "$URL" >"$DIR/wrk" &
WRK=$!
sleep 2
perf record -F 2000 -e cpu-clock -g -p "$PID" -o "$OUT" -- sleep 10 >/dev/null 2>&1
wait "$WRK"
grep 'Requests/sec' "$DIR/wrk"
python3 "$HERE/parts.py" "$OUT"
echo "profile: $OUT"
