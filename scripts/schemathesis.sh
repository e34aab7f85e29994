#!/usr/bin/env bash
# Contract test of the HTTP API: starts a real `attune-host serve` (SQLite in a temp dir, the
# example packs copied there, in-process bus) and runs schemathesis against its OpenAPI document
# with the first admin token: every check, the stateful phase, a bounded budget. Exits non-zero
# on any failure. Called by .ci/run after the tests (which built the debug binary); runnable
# alone: `scripts/schemathesis.sh [extra schemathesis args]`.
#
# Budget: SCHEMATHESIS_MAX_EXAMPLES (default 25 per operation) and SCHEMATHESIS_MAX_TIME
# (default 100 s for the whole run).
set -euo pipefail
cd "$(dirname "$0")/.."

repo=$PWD
# Under target/ (ignored, never cleaned by CI), apart from the SDK's .venv.
venv=$repo/target/venv-schemathesis
version=4.32.5
host=${ATTUNE_HOST_BIN:-}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-25}
max_time=${SCHEMATHESIS_MAX_TIME:-100}

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
if [ -z "$host" ]; then
  cargo build --quiet -p attune-host --bin attune-host # nothing to do after the tests built it
  host=$repo/target/debug/attune-host
fi

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free port: bind 0, read it back, let it go.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cp -r sensors "$work/packs"
rm -rf "$work"/packs/*/inbox/*
ATTUNE_LOG=${ATTUNE_LOG:-warn} "$host" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --packs "$work/packs" \
  --cache-dir "${ATTUNE_CACHE_DIR:-$repo/target/attune-cache}" --runtimes-dir "${ATTUNE_RUNTIMES_DIR:-$repo/build/runtimes}" \
  >"$work/serve.log" 2>&1 &
server=$!
ready() {
  [ -s "$work/data/admin.token" ] &&
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$port/ready" 2>/dev/null
}
for _ in $(seq 120); do
  ready && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; echo "attune-host serve exited" >&2; exit 1; }
  sleep 0.5
done
ready || { cat "$work/serve.log"; echo "attune-host serve not ready within 60 s" >&2; exit 1; }
token=$(cat "$work/data/admin.token")

# One worker: with more, hypothesis describes strategies from several threads at once and
# CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth mismatch").
status=0
(cd "$work" && "$venv/bin/schemathesis" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$max_examples" \
  --max-time "$max_time" \
  --request-timeout 10 \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --report-dir "$work/report" \
  "$@") || status=$?
if [ "$status" -ne 0 ]; then
  echo "== attune-host serve log (last 50 lines)"
  tail -n 50 "$work/serve.log"
fi
exit "$status"
