#!/usr/bin/env bash
# Runs each example sensor with `attune-host sensor run` against real inputs: a local JSON feed
# for the HTTP poller, the pack's inbox/ for the directory watcher, and a plain .py and .js file.
# Called by `make demo` after the components are built.
set -euo pipefail
cd "$(dirname "$0")/.."
host=target/release/attune-host
state=$(mktemp -d)
feed=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$state" "$feed"' EXIT

echo '{"items": [{"id": 1, "title": "first"}, {"id": 2, "title": "second"}]}' > "$feed/items"
python3 -m http.server 8765 --bind 127.0.0.1 --directory "$feed" >/dev/null 2>&1 &
server=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8765) 2>/dev/null && break; sleep 0.1; done

echo "== examples_http.json_poller: two polls, a new item appears between them"
$host sensor run sensors/examples_http --sensor json_poller --polls 1 --state-file "$state/http.json"
echo '{"items": [{"id": 1}, {"id": 2}, {"id": 3, "title": "third"}]}' > "$feed/items"
$host sensor run sensors/examples_http --sensor json_poller --polls 1 --state-file "$state/http.json"

echo "== examples_files.dir_watcher on sensors/examples_files/inbox"
touch sensors/examples_files/inbox/demo-$$.txt
$host sensor run sensors/examples_files --envelope --state-file "$state/files.json"
rm -f sensors/examples_files/inbox/demo-$$.txt

echo "== plain source files"
printf 'def poll(config):\n    yield {"status": 500, "host": "web-1.prod"}\n' > "$state/my_sensor.py"
$host sensor run "$state/my_sensor.py" --state-file "$state/py.json"
printf 'export function* poll(config) { yield {status: 500}; }\n' > "$state/my_sensor.js"
$host sensor run "$state/my_sensor.js" --state-file "$state/js.json"
