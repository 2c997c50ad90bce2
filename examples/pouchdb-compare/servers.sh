# The servers and the seeding that run.sh and profile.sh share; sourced, not run. The caller
# defines die, SEED, BATCH and SYNC_SERVER (the measured build; for pouchdb-server also
# POUCHDB_SERVER and POUCH_ARGS), and stops the server on exit.

# --- servers ---------------------------------------------------------------------------------

SERVER_PID=""
BASE=""       # http://127.0.0.1:PORT of the running server
OURS_DURABILITY="" # the durability the server reports as it starts (journal_mode, synchronous)

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# Ours binds port 0 and logs the port it got (JSON logs: the "listening on" line has "addr").
# $2 is the binary.
start_ours() {
  local dir=$1 binary=$2 line="" addr=""
  env -u SYNC_CONFIG -u SYNC_BIND -u SYNC_DB -u SYNC_STATIC_DIR RUST_LOG=info \
    "$binary" --bind 127.0.0.1:0 --db "$dir/sync.db" --log-format json \
    >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    line=$(grep -m1 '"message":"listening on' "$dir/server.log" || true)
    [[ -n $line ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "sync-server did not start: see $dir/server.log"
    sleep 0.1
  done
  addr=$(jq -r '.fields.addr' <<<"$line")
  [[ $addr == 127.0.0.1:* ]] || die "sync-server did not log its address: see $dir/server.log"
  # An earlier build may not report it: the figure is the measured build's.
  if [[ $binary == "$SYNC_SERVER" ]]; then OURS_DURABILITY=$(jq -r .fields.durability <<<"$line"); fi
  BASE=http://$addr
  curl -fsS "$BASE/healthz" >/dev/null || die "sync-server does not answer /healthz"
}

# pouchdb-server takes port 0 for "the default" (5984), so a free port is picked at random:
# one nothing answers on, and the server must then start there and answer as pouchdb-server.
start_pouch() {
  local dir=$1 port
  mkdir -p "$dir/db"
  for _ in $(seq 10); do
    port=$(( 20000 + RANDOM % 40000 ))
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
    # cwd is the run's directory: pouchdb-server writes its log.txt there.
    (cd "$dir" && exec node "$POUCHDB_SERVER" --host 127.0.0.1 --port "$port" \
       --dir "$dir/db" --config "$dir/config.json" --no-stdout-logs "${POUCH_ARGS[@]}") >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      if curl -fsS "http://127.0.0.1:$port/" 2>/dev/null | grep -q '"express-pouchdb"'; then
        BASE=http://127.0.0.1:$port
        return 0
      fi
      sleep 0.1
    done
    stop_server
  done
  die "pouchdb-server did not start: see $dir/server.log"
}

# --- seeding ---------------------------------------------------------------------------------

hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F; }  # 2×$1 hex digits

# The objects numbered $2+1 .. $2+BATCH of prefix $1, as ids, one a line.
batch_ids() { local i; for ((i = $2 + 1; i <= $2 + BATCH; i++)); do printf '%s0000%08X\n' "$1" "$i"; done; }

# A push body of those objects, in the shape push.lua sends: kind $1, prefix $2, offset $3.
batch_body() {
  local key=id i item body=""
  if [[ $1 == pouch ]]; then key=_id; fi
  for ((i = $3 + 1; i <= $3 + BATCH; i++)); do
    printf -v item '{"%s":"%s0000%08X","title":"Task %s0000%08X","done":false}' "$key" "$2" "$i" "$2" "$i"
    body+=${body:+,}$item
  done
  if [[ $1 == pouch ]]; then echo "{\"docs\":[$body]}"; else echo "[$body]"; fi
}

post() { curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @- "$1"; }

# Seeds SEED objects and sets PULL_URL to a delta pull answering exactly the last push's objects.
seed() {
  local kind=$1 prefix=$2 dir=$3 offset answer cursor=0 ok
  for ((offset = 0; offset < SEED; offset += BATCH)); do
    if [[ $kind == ours ]]; then
      answer=$(batch_body ours "$prefix" "$offset" | post "$BASE/taskChanges")
      jq -e '.status == "ok"' <<<"$answer" >/dev/null || die "seed push refused: $answer"
      # Every object of a push gets _lastChange = its `now`: pulling since the `now` of the
      # push before the last answers exactly the last push's objects.
      if (( offset + BATCH < SEED )); then cursor=$(jq -r .now <<<"$answer"); fi
    else
      # update_seq before the last push: _changes since it lists exactly that push's docs.
      if (( offset + BATCH == SEED )); then cursor=$(curl -fsS "$BASE/bench" | jq -r .update_seq); fi
      answer=$(batch_body pouch "$prefix" "$offset" | post "$BASE/bench/_bulk_docs")
      ok=$(jq '[.[] | select(.ok == true)] | length' <<<"$answer")
      (( ok == BATCH )) || die "seed push stored $ok of $BATCH docs: $answer"
    fi
  done
  if [[ $kind == ours ]]; then
    PULL_URL="$BASE/taskChanges?since=$cursor"
  else
    PULL_URL="$BASE/bench/_changes?include_docs=true&since=$cursor"
  fi
  # Check the answer: exactly the ids of the last seed push.
  PULL_BYTES=$(curl -fsS -o "$dir/pull.json" -w '%{size_download}' "$PULL_URL")
  if [[ $kind == ours ]]; then jq -r '.updates[].id' "$dir/pull.json"; else jq -r '.results[].id' "$dir/pull.json"; fi \
    | sort >"$dir/pull.ids"
  batch_ids "$prefix" $(( SEED - BATCH )) | sort | cmp -s - "$dir/pull.ids" \
    || die "$kind: the delta pull $PULL_URL does not answer exactly the last $BATCH objects (see $dir/pull.json)"
}

# Objects stored: ours counts a full pull, pouch its doc_count.
stored_objects() {
  if [[ $1 == ours ]]; then curl -fsS "$BASE/taskChanges?since=0" | jq '.updates | length'
  else curl -fsS "$BASE/bench" | jq .doc_count; fi
}
