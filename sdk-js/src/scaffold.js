// `attune-sensor new`: a pack with one tested sensor, ready for `attune-host pack validate`.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** This SDK's directory: what a new pack's `@attune/sensor` dependency points at by default. */
export const SDK_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** The longest ref the host takes (attune_rules::MAX_REF_BYTES). */
const MAX_REF_BYTES = 128;
/** The longest of the refs a new pack declares, less the pack's name. */
const LONGEST_SUFFIX = '.on_new_item';

/** Why `name` cannot be a pack ref (as host/src/pack.rs checks one), or null when it can. */
export function badPackName(name) {
  if (!/^[A-Za-z0-9_]+$/.test(name)) return `"${name}" is not a pack ref: use letters, digits and _ only`;
  if (name.length + LONGEST_SUFFIX.length > MAX_REF_BYTES) {
    return `"${name}" is too long: the pack's refs (${name}${LONGEST_SUFFIX}) must be at most ${MAX_REF_BYTES} bytes`;
  }
  return null;
}

/**
 * Writes the pack `name` into `parent/name` and returns its directory. The pack depends on the
 * SDK at `sdk` (a `file:` path, relative to the pack). Throws when the name is not a pack ref or
 * the directory exists.
 */
export function createPack(name, { parent = '.', typescript = false, sdk = SDK_DIR } = {}) {
  const problem = badPackName(name);
  if (problem) throw new Error(problem);
  const dir = path.resolve(parent, name);
  if (existsSync(dir)) throw new Error(`${dir} already exists; pick another name or --dir`);
  if (!existsSync(path.join(sdk, 'package.json'))) throw new Error(`--sdk ${sdk}: not the @attune/sensor package (no package.json)`);
  const sdkSpec = `file:${path.relative(dir, path.resolve(sdk)).split(path.sep).join('/')}`;
  for (const [file, text] of Object.entries(packFiles(name, { typescript, sdkSpec }))) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

/** The endpoint the new sensor polls until its author points it elsewhere. */
const URL = 'http://127.0.0.1:8765/items.json';

/** Every file of a new pack, by path. */
function packFiles(name, { typescript, sdkSpec }) {
  const ext = typescript ? 'ts' : 'js';
  return {
    'pack.yaml': packYaml(name),
    'triggers/new_item.yaml': triggerYaml(name),
    'sensors/items.yaml': sensorYaml(name, typescript),
    [`sensors/items.${ext}`]: typescript ? SENSOR_TS : SENSOR_JS,
    'rules/on_new_item.yaml': ruleYaml(name),
    'test/items.test.js': testJs(typescript),
    'test/fixtures/items.json': FIXTURES,
    'package.json': packageJson(name, typescript, sdkSpec),
    '.gitignore': `node_modules/\n# attune-host sensor run keeps the sensor's state here\ndata/\n${typescript ? '# npm run build\n' : '# npm run runtime\n'}build/\n`,
    'README.md': readme(name, typescript),
  };
}

const packYaml = (name) => `ref: ${name}
version: 0.1.0
description: Reports each new item of a JSON endpoint once.
# JSON Schema of the pack's settings below; sensors read them as {{ pack.config.<key> }}.
config_schema:
  type: object
  properties:
    url:
      type: string
      description: 'The JSON endpoint to poll, answering {"items": [{"id": 1, ...}, ...]} or a bare list of items.'
  required: [url]
  additionalProperties: false
config:
  # Change it together with capabilities.http in sensors/items.yaml, which must grant its host.
  url: "${URL}"
`;

const triggerYaml = (name) => `ref: ${name}.new_item
description: An item that appeared at the polled endpoint since the previous poll.
# Every payload the sensor yields must match this (checked by the host and by the test kit).
payload_schema:
  type: object
  properties:
    id:
      type: integer
      description: The item's id; ids only grow, so the highest one seen is the sensor's cursor.
    title:
      type: string
      description: The item's title ("" when it has none).
    item:
      type: object
      description: The item as the endpoint returned it.
  required: [id, title, item]
  additionalProperties: false
`;

function sensorYaml(name, typescript) {
  const code = typescript
    ? `# Built from items.ts by \`npm run build\` (attune-sensor build); the .wasm is not committed.
runtime: component
entry: ../build/items.wasm`
    : `runtime: javascript
entry: items.js`;
  return `ref: ${name}.items
description: Polls a JSON endpoint and yields each item with an id above the last one yielded.
triggers: [${name}.new_item]
${code}
poll_interval: 10
# The host's defaults, written out to be tuned.
limits:
  fuel: 1000000000
  memory_mib: 64
  timeout_ms: 2000
  max_payload_bytes: 262144
  max_events_per_poll: 1000
capabilities:
  # The hosts the sensor may call: the host of pack.yaml's config.url.
  http: ["127.0.0.1"]
config:
  url: "{{ pack.config.url }}"
`;
}

const SENSOR_JS = `// Polls config.url, a JSON endpoint answering {"items": [{"id": 1, ...}, ...]} (or a bare list
// of items), and yields each item whose id is above the cursor kept in the state store: every
// item once, across restarts too. The host keeps the cursor only if the poll succeeds.
import { http, log, state } from '@attune/sensor';

export function* poll(config) {
  const response = http.get(config.url, { headers: { accept: 'application/json' } });
  if (response.status !== 200) throw new Error(\`GET \${config.url} answered \${response.status}, expected 200\`);
  const body = response.json();
  const items = Array.isArray(body) ? body : body.items;

  const cursor = state.getJson('cursor', 0);
  const fresh = items.filter((item) => item.id > cursor).sort((a, b) => a.id - b.id);
  for (const item of fresh) {
    yield { id: item.id, title: item.title ?? '', item };
  }
  if (fresh.length > 0) {
    state.setJson('cursor', fresh[fresh.length - 1].id);
    log.info(\`\${fresh.length} new item(s) from \${config.url}\`);
  }
}
`;

const SENSOR_TS = `// Polls config.url, a JSON endpoint answering {"items": [{"id": 1, ...}, ...]} (or a bare list
// of items), and yields each item whose id is above the cursor kept in the state store: every
// item once, across restarts too. The host keeps the cursor only if the poll succeeds.
import { http, log, state } from '@attune/sensor';

interface Config {
  url: string;
}

interface Item {
  id: number;
  title?: string;
  [key: string]: unknown;
}

/** One payload of the trigger new_item (see triggers/new_item.yaml). */
export interface NewItem {
  id: number;
  title: string;
  item: Item;
}

export function* poll(config: Config): Generator<NewItem> {
  const response = http.get(config.url, { headers: { accept: 'application/json' } });
  if (response.status !== 200) throw new Error(\`GET \${config.url} answered \${response.status}, expected 200\`);
  const body = response.json<Item[] | { items: Item[] }>();
  const items = Array.isArray(body) ? body : body.items;

  const cursor = state.getJson<number>('cursor', 0);
  const fresh = items.filter((item) => item.id > cursor).sort((a, b) => a.id - b.id);
  for (const item of fresh) {
    yield { id: item.id, title: item.title ?? '', item };
  }
  if (fresh.length > 0) {
    state.setJson('cursor', fresh[fresh.length - 1].id);
    log.info(\`\${fresh.length} new item(s) from \${config.url}\`);
  }
}
`;

const ruleYaml = (name) => `ref: ${name}.on_new_item
trigger: ${name}.new_item
enabled: true
# No conditions: every new item. Add some, e.g. {all: [{field: payload.title, operator: icontains, value: urgent}]}.
conditions: {}
action:
  ref: core.echo
  parameters:
    message: "new item {{ event.payload.id }}: {{ event.payload.title }}"
`;

function testJs(typescript) {
  const source = typescript ? `\n// The kit runs the TypeScript source, bundled as \`npm run build\` bundles it.\nconst source = new URL('../sensors/items.ts', import.meta.url);\n` : '';
  const load = (extra) => `loadSensor(pack, { http: fixtures${typescript ? ', source' : ''}${extra} })`;
  return `// Runs the sensor in plain Node against the fake host of @attune/sensor/testing: HTTP answers
// come from test/fixtures/items.json, and every payload is checked against the trigger's
// payload_schema, as the host checks it.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { loadSensor, replay } from '@attune/sensor/testing';

const pack = new URL('..', import.meta.url);
const fixtures = new URL('fixtures/items.json', import.meta.url);
const recording = new URL('recording/', import.meta.url);${source}
const url = '${URL}';

test('the first poll yields every item, lowest id first, and moves the cursor', async () => {
  const sensor = await ${load('')};
  assert.deepEqual(sensor.poll(), [
    { id: 1, title: 'first', item: { id: 1, title: 'first' } },
    { id: 2, title: 'second', item: { id: 2, title: 'second', tags: ['b'] } },
  ]);
  assert.equal(sensor.state.getJson('cursor'), 2);
});

test('the cursor: the next poll yields nothing until a new item appears', async () => {
  const sensor = await ${load('')};
  sensor.poll();
  assert.deepEqual(sensor.poll(), []);
  sensor.http.on('GET', url, { json: { items: [{ id: 2, title: 'second' }, { id: 3, title: 'third' }] } });
  assert.deepEqual(sensor.poll(), [{ id: 3, title: 'third', item: { id: 3, title: 'third' } }]);
});

test('an error answer fails the poll and keeps the cursor', async () => {
  const sensor = await ${load(', state: { cursor: 1 }')};
  sensor.http.on('GET', url, { status: 503, body: 'try again later' });
  assert.throws(() => sensor.poll(), { name: 'SensorError', sensorMessage: \`Error: GET \${url} answered 503, expected 200\` });
  assert.equal(sensor.state.getJson('cursor'), 1);
});

// test/recording, made with \`attune-host sensor run . --record test/recording\` against the real
// endpoint, replayed into the sensor's current code in the real sandbox (needs attune-host).
const recorded = existsSync(new URL('recording.json', recording));
test('test/recording replays in the real sandbox', { skip: !recorded && 'no recording yet: attune-host sensor run . --record test/recording' }, () => {
  replay(recording);
});
`;
}

const FIXTURES = `[
  {
    "method": "GET",
    "url": "${URL}",
    "status": 200,
    "json": { "items": [{ "id": 2, "title": "second", "tags": ["b"] }, { "id": 1, "title": "first" }] }
  }
]
`;

function packageJson(name, typescript, sdkSpec) {
  const scripts = typescript
    ? { build: 'attune-sensor build sensors/items.ts -o build/items.wasm', test: 'node --test' }
    : { runtime: 'attune-sensor build-runtime -o build/runtimes/javascript.wasm', test: 'node --test' };
  const pkg = {
    name: `attune-pack-${name.toLowerCase()}`,
    version: '0.1.0',
    private: true,
    description: `The Attune pack ${name}`,
    type: 'module',
    scripts,
    devDependencies: { '@attune/sensor': sdkSpec },
  };
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

function readme(name, typescript) {
  const file = typescript ? 'sensors/items.ts' : 'sensors/items.js';
  const build = typescript
    ? `The sensor is TypeScript, built into a WebAssembly component of its own:

\`\`\`sh
npm run build              # attune-sensor build sensors/items.ts -o build/items.wasm
\`\`\`

\`sensors/items.yaml\` runs \`build/items.wasm\` (\`runtime: component\`), so build before
\`pack validate\`, \`sensor run\` or \`serve\`, and after every change. \`build/\` is not committed;
whatever deploys the pack runs \`npm run build\`. A thrown error's traceback names
\`${file}\` and its line (the component carries a source map). \`attune-sensor build\` and
the tests strip the types without checking them: your editor or \`tsc\` checks them, against the
SDK's \`index.d.ts\`.`
    : `The sensor is plain JavaScript (\`runtime: javascript\`): the host runs \`${file}\` in its
JavaScript runtime component, so it may import only \`@attune/sensor\` (for npm packages, build
a component: \`attune-sensor build\`, \`runtime: component\`). \`attune-host\` needs that runtime:
\`npm run runtime\` builds it into \`build/runtimes/javascript.wasm\`, where \`attune-host\` run
from this directory finds it (elsewhere, set \`ATTUNE_RUNTIMES_DIR\` to its directory).`;
  const first = typescript ? 'npm run build                         # build/items.wasm, after every change\n' : 'npm run runtime                       # once: build/runtimes/javascript.wasm\n';
  return `# ${name}

An Attune pack: the sensor \`${name}.items\` polls a JSON endpoint (\`config.url\` in
\`pack.yaml\`) and fires the trigger \`${name}.new_item\` once per new item; the rule
\`${name}.on_new_item\` echoes each one (\`core.echo\`).

| file | what |
|---|---|
| \`pack.yaml\` | the pack: ref, version, \`config_schema\` and \`config\` (the endpoint's \`url\`) |
| \`triggers/new_item.yaml\` | the trigger and its \`payload_schema\` |
| \`sensors/items.yaml\` | the sensor's manifest: runtime, entry, poll interval, limits, \`capabilities.http\` |
| \`${file}\` | the sensor |
| \`rules/on_new_item.yaml\` | a rule on the trigger |
| \`test/items.test.js\`, \`test/fixtures/items.json\` | its tests, and the HTTP answers they get |

## Test

\`\`\`sh
npm install                # links @attune/sensor (see package.json)
npm test                   # node --test: runs test/*.test.js in plain Node
\`\`\`

The tests load the sensor with \`@attune/sensor/testing\`, which runs it as the host would
against fakes: HTTP answers from \`test/fixtures/items.json\` (by method and URL; a request
without one fails the test, naming it), the state store, the clock, the filesystem and the log.
Each payload is checked against the trigger's \`payload_schema\`. Edit the sensor, the schema
and the tests together; the SDK's README documents the kit.

${build}

## Check, run, record, serve

With \`attune-host\` on your PATH:

\`\`\`sh
${first}attune-host pack validate .           # manifests, schemas, config, rules; loads the sensor's code
attune-host sensor run . --polls 2    # two polls against the real endpoint, one payload per line
\`\`\`

\`sensor run\` keeps the sensor's state in \`data/sensor-state/${name}.items.json\` (delete it to
start over). For something to poll, serve a file on the configured address:

\`\`\`sh
mkdir -p /tmp/items && echo '{"items": [{"id": 1, "title": "first"}]}' > /tmp/items/items.json
python3 -m http.server 8765 --bind 127.0.0.1 --directory /tmp/items
\`\`\`

To point the sensor elsewhere, change \`config.url\` in \`pack.yaml\` and grant its host in
\`capabilities.http\` of \`sensors/items.yaml\` (\`sensor run --config '{"url": ".."}'\` overrides
it for one run).

Record a run against the real endpoint, then replay it offline as a test:

\`\`\`sh
attune-host sensor run . --polls 2 --record test/recording
attune-host sensor test test/recording
\`\`\`

Serve it: \`attune-host serve\` loads every pack directory under \`--packs\` (default
\`sensors\`), so from this pack's parent directory:

\`\`\`sh
attune-host serve --packs .${typescript ? '' : ` --runtimes-dir ${name}/build/runtimes`}
\`\`\`

(or copy the pack into the packs directory of a running host and reload its packs:
\`POST /api/v1/packs/reload\`).
`;
}
