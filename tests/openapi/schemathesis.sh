#!/usr/bin/env bash
# Property-based testing of the HTTP API against its description: schemathesis reads the
# description a running server serves (GET /_sync/openapi.yaml), generates requests for every
# operation (valid ones, and invalid ones that must be refused with a 4xx), and checks that no
# answer is a 5xx and that every status, header, content type and body is one the description
# allows. The server is the shipped binary over a fresh SQLite file, with the admin API on (and
# one subscription, so the outbox holds events) and long-polls bounded to a second; one pass runs
# with authentication off (the default), one with bearer tokens required on entity paths.
#
# Exits non-zero on any failure. Settings: SYNC_SERVER_BIN (the binary; built when missing),
# SCHEMATHESIS_EXAMPLES (examples per operation, default 20), SCHEMATHESIS_SEED (default: random,
# printed so that a failure can be replayed), SCHEMATHESIS_VENV (where schemathesis is installed).
# One worker: CPython 3.11 before 3.11.8 can fail parsing source in two threads at once
# ("AST constructor recursion depth mismatch"), which hypothesis does while it builds strategies.
set -euo pipefail
cd "$(dirname "$0")/../.."

version="4.32.5"
bin="${SYNC_SERVER_BIN:-$PWD/target/debug/sync-server-under-test}"
venv="${SCHEMATHESIS_VENV:-$PWD/target/openapi/venv-$version}"
examples="${SCHEMATHESIS_EXAMPLES:-20}"
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
jwt_secret="the secret of the schemathesis run"
hash="$(printf '%s\n' "$password" | "$bin" hash-password)"
# An HS256 token for the pass with authentication on, valid for an hour.
token="$(JWT_SECRET="$jwt_secret" python3 -c '
import base64, hashlib, hmac, json, os, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "schemathesis", "exp": int(time.time()) + 3600}).encode())
mac = hmac.new(os.environ["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(mac)}")')"

status=0

# One pass, named $1: a fresh server with the common configuration and $2 added, and schemathesis
# with tests/openapi/schemathesis.toml and $3 (the credentials of each security scheme) added.
run_pass() {
  local name="$1" server_extra="$2" auth="$3" base_url=""
  {
    printf '[long_poll]\nmax_wait_secs = 1\n\n'
    printf '# Nothing listens on port 9: deliveries fail, and the events stay for the admin API.\n'
    printf '[[webhook]]\nname = "erp"\nurl = "http://127.0.0.1:9/"\n'
    printf 'secrets = ["whsec_dGhlIHJlY2VpdmVyIHNlY3JldCwgMzIgYnl0ZXMgb2s="]\n\n'
    printf '[[admin.users]]\nuser = "ops"\npassword_hash = "%s"\n\n%s\n' "$hash" "$server_extra"
  } >"$work/$name.toml"
  { cat tests/openapi/schemathesis.toml; printf '\n%s\n' "$auth"; } >"$work/$name-schemathesis.toml"

  RUST_LOG=warn,sync_server::startup=info "$bin" --bind 127.0.0.1:0 --db "$work/$name.db" \
    --config "$work/$name.toml" --log-format text 2>"$work/$name.log" &
  server_pid=$!
  for _ in $(seq 1 300); do
    base_url="$(grep -o 'listening on http://[0-9.:]*' "$work/$name.log" | head -n1 | sed 's/^listening on //')" || true
    [ -n "$base_url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/$name.log" >&2; echo "the server exited" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$base_url" ] || { cat "$work/$name.log" >&2; echo "the server did not listen" >&2; exit 1; }
  echo "== $name: server at $base_url; schemathesis $version, $examples examples per operation, seed $seed"

  "$venv/bin/schemathesis" --config-file "$work/$name-schemathesis.toml" run "$base_url/_sync/openapi.yaml" \
    --checks all \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 10 \
    --suppress-health-check too_slow \
    --no-color || status=1

  kill "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  # A fault that no answer showed (a 5xx is caught above): a panic of a handler or a task.
  if grep -E 'panicked at' "$work/$name.log" >"$work/$name-panics.log"; then
    echo "== $name: the server panicked:" >&2
    head -n 50 "$work/$name-panics.log" >&2
    status=1
  fi
}

admin_auth="$(printf '[auth.openapi.adminBasic]\nusername = "ops"\npassword = "%s"' "$password")"

run_pass open "" "$admin_auth"

# The failure limit is out of the way: schemathesis sends refused credentials on purpose.
run_pass authenticated \
  "$(printf '[auth]\nmax_failures = 1000000\n\n[auth.jwt]\nalgorithms = ["HS256"]\nsecret = "%s"' "$jwt_secret")" \
  "$(printf '%s\n\n[auth.openapi.bearerAuth]\nbearer = "%s"' "$admin_auth" "$token")"

exit "$status"
