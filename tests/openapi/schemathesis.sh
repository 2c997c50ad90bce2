#!/usr/bin/env bash
# Property-based testing of the HTTP API against its description: schemathesis reads the
# description a running server serves (GET /_sync/openapi.yaml), generates requests for every
# operation (valid ones, and invalid ones that must be refused with a 4xx), and checks that no
# answer is a 5xx and that every status, header, content type and body is one the description
# allows. The server is the shipped binary over a fresh SQLite file, with the admin API on (and
# one subscription, so the outbox holds events) and long-polls bounded to a second.
#
# Exits non-zero on any failure. Settings: SYNC_SERVER_BIN (the binary; built when missing),
# SCHEMATHESIS_EXAMPLES (examples per operation, default 40), SCHEMATHESIS_SEED (default: random,
# printed so that a failure can be replayed), SCHEMATHESIS_VENV (where schemathesis is installed).
set -euo pipefail
cd "$(dirname "$0")/../.."

version="4.32.5"
bin="${SYNC_SERVER_BIN:-$PWD/target/debug/sync-server-under-test}"
venv="${SCHEMATHESIS_VENV:-$PWD/target/openapi/venv-$version}"
examples="${SCHEMATHESIS_EXAMPLES:-40}"
seed="${SCHEMATHESIS_SEED:-$RANDOM$RANDOM}"

test -x "$bin" || cargo build -p sync-tests --bin sync-server-under-test --locked
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

password="the operator passphrase of the schemathesis run"
hash="$(printf '%s\n' "$password" | "$bin" hash-password)"
cat >"$work/config.toml" <<EOF
[long_poll]
max_wait_secs = 1

# Nothing listens on port 9: deliveries fail and the events stay in the outbox for the admin API.
[[webhook]]
name = "erp"
url = "http://127.0.0.1:9/"
secrets = ["whsec_dGhlIHJlY2VpdmVyIHNlY3JldCwgMzIgYnl0ZXMgb2s="]

[[admin.users]]
user = "ops"
password_hash = "$hash"
EOF

RUST_LOG=warn,sync_server::startup=info "$bin" --bind 127.0.0.1:0 --db "$work/sync.db" \
  --config "$work/config.toml" --log-format text 2>"$work/server.log" &
server_pid=$!
base_url=""
for _ in $(seq 1 300); do
  base_url="$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -n1 | sed 's/^listening on //')" || true
  [ -n "$base_url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "the server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base_url" ] || { cat "$work/server.log" >&2; echo "the server did not listen" >&2; exit 1; }
echo "server at $base_url; schemathesis $version, $examples examples per operation, seed $seed"

status=0
"$venv/bin/schemathesis" --config-file tests/openapi/schemathesis.toml run "$base_url/_sync/openapi.yaml" \
  --checks all \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 2 \
  --auth "ops:$password" \
  --request-timeout 10 \
  --suppress-health-check too_slow \
  --no-color || status=$?

if grep -E '"level":"ERROR"|ERROR' "$work/server.log" | grep -v 'webhook\|delivery\|outbox' >"$work/errors.log"; then
  echo "the server logged errors:" >&2
  head -n 50 "$work/errors.log" >&2
  status=1
fi
exit "$status"
