#!/usr/bin/env bash
# Compares sync-server (embedded SQLite) with pouchdb-server (LevelDB, or memory) on loopback:
#   1. seed:       SEED objects pushed in batches of BATCH (50) objects per request
#   2. delta pull: wrk GETs of an answer holding exactly the last seed push's BATCH objects
#   3. push:       wrk POSTs of BATCH new objects per request (push.lua)
# Runs alternate between the servers (ours, pouch, ours, ...), each run on a freshly started
# server with empty storage. Prints a table of medians and writes OUT/summary.json.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-5}                 # runs per server
DURATION=${DURATION:-10s}       # each wrk run
THREADS=${THREADS:-2}           # wrk -t
CONNECTIONS=${CONNECTIONS:-32}  # wrk -c
SEED=${SEED:-10000}             # objects seeded before measuring
BATCH=${BATCH:-50}              # objects per push
LOCK=${BENCH_LOCK:-/tmp/bench.lock}  # every timed wrk run holds this lock (flock)
SYNC_SERVER=${SYNC_SERVER:-$ROOT/target/release/sync-server}
POUCHDB_SERVER=$HERE/node_modules/pouchdb-server/bin/pouchdb-server
OUT=${OUT:-$HERE/out/$(date -u +%Y%m%dT%H%M%SZ)}
KEEP_DATA=${KEEP_DATA:-0}       # 1: keep each run's database and server log
POUCH_STORAGE=${POUCH_STORAGE:-leveldb}  # pouchdb-server's storage: leveldb (on disk) or memory
BASELINE_SERVER=${BASELINE_SERVER:-}  # another sync-server binary (an earlier build), measured in the same runs

die() { echo "run.sh: $*" >&2; exit 1; }

for tool in wrk curl jq flock node od; do
  command -v "$tool" >/dev/null || die "$tool is not installed (see README.md)"
done
[[ -x $SYNC_SERVER ]] || die "no server binary at $SYNC_SERVER: cargo build --release -p sync-server --bin sync-server"
[[ -f $POUCHDB_SERVER ]] || die "pouchdb-server is not installed: (cd $HERE && npm ci --ignore-scripts)"
(( RUNS >= 3 )) || die "RUNS must be at least 3 (medians of fewer runs mean little)"
case $POUCH_STORAGE in
  leveldb) POUCH_ARGS=() POUCH_WRITES="LevelDB, writes without sync" ;;
  memory)  POUCH_ARGS=(--in-memory) POUCH_WRITES="in memory, nothing written to disk" ;;
  *) die "POUCH_STORAGE must be leveldb or memory, not $POUCH_STORAGE" ;;
esac
(( SEED >= 2 * BATCH && SEED % BATCH == 0 )) || die "SEED must be a multiple of BATCH, at least 2 × BATCH"

mkdir -p "$OUT"
# The binary is copied so that a rebuild during the runs cannot change what is measured.
cp "$SYNC_SERVER" "$OUT/sync-server"
SYNC_SERVER=$OUT/sync-server
SYNC_SERVER_SHA256=$(sha256sum "$SYNC_SERVER" | awk '{ print $1 }')
SERVERS=(ours pouch)
BASELINE_SHA256=""
if [[ -n $BASELINE_SERVER ]]; then
  [[ -x $BASELINE_SERVER ]] || die "no baseline server binary at $BASELINE_SERVER"
  cp "$BASELINE_SERVER" "$OUT/sync-server-baseline"
  BASELINE_SERVER=$OUT/sync-server-baseline
  BASELINE_SHA256=$(sha256sum "$BASELINE_SERVER" | awk '{ print $1 }')
  SERVERS=(ours baseline pouch)
fi

# shellcheck source=servers.sh
source "$HERE/servers.sh"

cleanup() {
  stop_server
  # The copy of the binary is large; its checksum is in the summary.
  if [[ $KEEP_DATA != 1 ]]; then rm -f "$OUT/sync-server" "$OUT/sync-server-baseline"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- wrk ---------------------------------------------------------------------------------------

# wrk prints latencies as 850.00us, 1.23ms, 1.02s, 1.50m.
to_ms() { awk -v v="$1" 'BEGIN {
  n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
  if (f < 0) exit 1; printf "%.2f", n * f }'; }

# Runs wrk under the lock, writes its output to $1, fails on any non-2xx answer or socket
# error, and sets RPS, REQUESTS, P50, P99 (ms).
bench() {
  local file=$1; shift
  flock "$LOCK" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency "$@" >"$file"
  if grep -E 'Non-2xx|Socket errors' "$file" >&2; then die "wrk saw failed requests: see $file"; fi
  RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$file")
  REQUESTS=$(awk '/ requests in / { print $1 }' "$file")
  P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$file")")
  P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$file")")
  [[ -n $RPS && -n $REQUESTS ]] || die "cannot read wrk's output: $file"
}

# --- runs --------------------------------------------------------------------------------------

RESULTS=$OUT/runs.tsv
printf 'run\tserver\tpull_rps\tpull_p50_ms\tpull_p99_ms\tpull_bytes\tpush_rps\tpush_objects_per_s\tpush_p50_ms\tpush_p99_ms\n' >"$RESULTS"

# one_run RUN SERVER: SERVER is ours, baseline (the same protocol, another binary) or pouch.
one_run() {
  local run=$1 server=$2 dir=$OUT/run-$1-$2 prefix kind=ours
  local pull_rps pull_p50 pull_p99 before after extra objects
  mkdir -p "$dir"
  prefix=$(hex 10)
  case $server in
    ours) start_ours "$dir" "$SYNC_SERVER" ;;
    baseline) start_ours "$dir" "$BASELINE_SERVER" ;;
    pouch) kind=pouch; start_pouch "$dir" ;;
  esac
  if [[ $kind == pouch ]]; then
    curl -fsS -X PUT "$BASE/bench" | jq -e .ok >/dev/null || die "PUT /bench failed"
  fi

  seed "$kind" "$prefix" "$dir"
  bench "$dir/pull.wrk" "$PULL_URL"
  pull_rps=$RPS pull_p50=$P50 pull_p99=$P99

  before=$(stored_objects "$kind")
  if [[ $kind == ours ]]; then
    bench "$dir/push.wrk" -s "$HERE/push.lua" "$BASE/taskChanges" -- ours "$prefix" "$BATCH"
  else
    bench "$dir/push.wrk" -s "$HERE/push.lua" "$BASE/bench/_bulk_docs" -- pouch "$prefix" "$BATCH"
  fi
  # Every answered push stored BATCH new objects; pushes still in flight when wrk stopped may
  # have stored theirs too (at most one per connection).
  after=$(stored_objects "$kind")
  extra=$(( after - before - REQUESTS * BATCH ))
  (( extra >= 0 && extra <= CONNECTIONS * BATCH && extra % BATCH == 0 )) \
    || die "$server: $REQUESTS pushes answered, but $(( after - before )) objects were stored"
  stop_server

  objects=$(awk -v r="$RPS" -v b="$BATCH" 'BEGIN { printf "%.0f", r * b }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$server" "$pull_rps" "$pull_p50" "$pull_p99" \
    "$PULL_BYTES" "$RPS" "$objects" "$P50" "$P99" >>"$RESULTS"
  printf 'run %d %-8s  delta pull %9.1f req/s (p99 %s ms)   push %8.1f req/s = %7d objects/s (p99 %s ms)\n' \
    "$run" "$server" "$pull_rps" "$pull_p99" "$RPS" "$objects" "$P99"
  [[ $KEEP_DATA == 1 ]] || rm -rf "$dir/sync.db" "$dir/sync.db-wal" "$dir/sync.db-shm" "$dir/db" "$dir/server.log" "$dir/log.txt"
}

POUCH_VERSION=$(jq -r .version "$HERE/node_modules/pouchdb-server/package.json")
echo "sync-server (sha256 ${SYNC_SERVER_SHA256:0:16}…) vs pouchdb-server $POUCH_VERSION ($POUCH_STORAGE), node $(node --version)"
if [[ -n $BASELINE_SERVER ]]; then echo "baseline: sync-server (sha256 ${BASELINE_SHA256:0:16}…)"; fi
echo "$RUNS runs each, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $SEED objects seeded, $BATCH per push; output in $OUT"
for ((run = 1; run <= RUNS; run++)); do
  for server in "${SERVERS[@]}"; do one_run "$run" "$server"; done
done

# --- summary -----------------------------------------------------------------------------------

# median COLUMN SERVER: of the runs.tsv column, over that server's runs
median() {
  awk -F'\t' -v col="$1" -v kind="$2" 'NR > 1 && $2 == kind { print $col }' "$RESULTS" | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

COLUMNS_=(3:pull_rps 4:pull_p50_ms 5:pull_p99_ms 6:pull_answer_bytes 7:push_rps 8:push_objects_per_s 9:push_p50_ms 10:push_p99_ms)
declare -A M
for kind in "${SERVERS[@]}"; do
  json=""
  for c in "${COLUMNS_[@]}"; do
    M[$kind.${c#*:}]=$(median "${c%%:*}" "$kind")
    json+=${json:+,}"\"${c#*:}\":${M[$kind.${c#*:}]}"
  done
  M[$kind.json]="{$json}"
done
PULL_RATIO=$(ratio "${M[ours.pull_rps]}" "${M[pouch.pull_rps]}")
PUSH_RATIO=$(ratio "${M[ours.push_rps]}" "${M[pouch.push_rps]}")

echo
echo "Medians of $RUNS runs each (wrk -t$THREADS -c$CONNECTIONS -d$DURATION; pushes of $BATCH objects):"
row() { printf '%-28s %18s %18s %11s\n' "$@"; }
row "" "sync-server" "pouchdb-server" "ours/pouch"
row "delta pull, requests/s" "${M[ours.pull_rps]}" "${M[pouch.pull_rps]}" "$PULL_RATIO"
row "delta pull p50 / p99, ms" "${M[ours.pull_p50_ms]} / ${M[ours.pull_p99_ms]}" "${M[pouch.pull_p50_ms]} / ${M[pouch.pull_p99_ms]}" ""
row "delta pull answer, bytes" "${M[ours.pull_answer_bytes]}" "${M[pouch.pull_answer_bytes]}" ""
row "push, requests/s" "${M[ours.push_rps]}" "${M[pouch.push_rps]}" "$PUSH_RATIO"
row "push, objects/s" "${M[ours.push_objects_per_s]}" "${M[pouch.push_objects_per_s]}" "$PUSH_RATIO"
row "push p50 / p99, ms" "${M[ours.push_p50_ms]} / ${M[ours.push_p99_ms]}" "${M[pouch.push_p50_ms]} / ${M[pouch.push_p99_ms]}" ""
echo "sync-server store: SQLite, $OURS_DURABILITY; pouchdb-server: $POUCH_WRITES"
BASELINE_JSON=null
if [[ -n $BASELINE_SERVER ]]; then
  BASE_PULL_RATIO=$(ratio "${M[ours.pull_rps]}" "${M[baseline.pull_rps]}")
  BASE_PUSH_RATIO=$(ratio "${M[ours.push_rps]}" "${M[baseline.push_rps]}")
  echo
  row "" "sync-server" "baseline" "ours/base"
  row "delta pull, requests/s" "${M[ours.pull_rps]}" "${M[baseline.pull_rps]}" "$BASE_PULL_RATIO"
  row "delta pull p50 / p99, ms" "${M[ours.pull_p50_ms]} / ${M[ours.pull_p99_ms]}" "${M[baseline.pull_p50_ms]} / ${M[baseline.pull_p99_ms]}" ""
  row "push, objects/s" "${M[ours.push_objects_per_s]}" "${M[baseline.push_objects_per_s]}" "$BASE_PUSH_RATIO"
  row "push p50 / p99, ms" "${M[ours.push_p50_ms]} / ${M[ours.push_p99_ms]}" "${M[baseline.push_p50_ms]} / ${M[baseline.push_p99_ms]}" ""
  BASELINE_JSON=$(jq -nc --arg sha256 "$BASELINE_SHA256" --argjson medians "${M[baseline.json]}" \
    --argjson pull "$BASE_PULL_RATIO" --argjson push "$BASE_PUSH_RATIO" \
    '{sha256: $sha256, medians: $medians, ratios_ours_over_baseline: {delta_pull_rps: $pull, push_rps: $push}}')
fi

WRK_VERSION=$(wrk --version 2>&1 | awk 'NR == 1 { print $2 }' || true)
REVISION=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
jq -nc \
  --arg revision "$REVISION" --arg sha256 "$SYNC_SERVER_SHA256" --arg durability "$OURS_DURABILITY" --arg pouchdb_server "$POUCH_VERSION" --arg pouchdb_storage "$POUCH_STORAGE" \
  --arg node "$(node --version)" --arg wrk "$WRK_VERSION" --arg duration "$DURATION" \
  --argjson runs "$RUNS" --argjson threads "$THREADS" --argjson connections "$CONNECTIONS" \
  --argjson seed "$SEED" --argjson batch "$BATCH" \
  --argjson ours "${M[ours.json]}" --argjson pouch "${M[pouch.json]}" \
  --argjson pull_ratio "$PULL_RATIO" --argjson push_ratio "$PUSH_RATIO" --argjson baseline "$BASELINE_JSON" \
  '{versions: {sync_server_revision: $revision, sync_server_sha256: $sha256, sync_server_durability: $durability, pouchdb_server: $pouchdb_server, pouchdb_storage: $pouchdb_storage,
               node: $node, wrk: $wrk},
    setup: {runs: $runs, threads: $threads, connections: $connections, duration: $duration, seed: $seed, batch: $batch},
    medians: {sync_server: $ours, pouchdb_server: $pouch},
    ratios_ours_over_pouch: {delta_pull_rps: $pull_ratio, push_rps: $push_ratio},
    baseline_sync_server: $baseline}' >"$OUT/summary.json"
echo "SUMMARY $(cat "$OUT/summary.json")"
echo "written: $OUT/summary.json, per run: $RESULTS"
