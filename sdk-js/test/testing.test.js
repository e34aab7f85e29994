// @attune/sensor/testing: the kit a pack author tests sensors with, in plain Node.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FakeHttp, PayloadError, SensorError, loadSensor, replay } from '@attune/sensor/testing';

const fixture = (name) => fileURLToPath(new URL(`../../tests/fixtures/js/${name}`, import.meta.url));
const EXAMPLES_FILES = fileURLToPath(new URL('../../sensors/examples_files', import.meta.url));
const tmp = mkdtempSync(path.join(tmpdir(), 'attune-kit-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Writes `files` ({relative path: text}) under a new directory and returns it. */
function writeTree(name, files) {
  const dir = path.join(tmp, name);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

/** A pack `p` whose one sensor `s` (plain source `sensor`) feeds trigger `p.t` with `payload_schema`. */
function pack(name, sensor, { manifest = '', trigger = '', packYaml = '', extra = {} } = {}) {
  return writeTree(name, {
    'pack.yaml': `ref: p\nversion: 0.1.0\n${packYaml}`,
    'triggers/t.yaml': `ref: p.t
payload_schema:
  type: object
  properties:
    id: {type: integer}
    tags: {type: array, items: {type: string}}
  required: [id]
  additionalProperties: false
${trigger}`,
    'sensors/s.yaml': `ref: p.s\ntriggers: [p.t]\nruntime: javascript\nentry: s.js\n${manifest}`,
    'sensors/s.js': sensor,
    ...extra,
  });
}

describe('loading', () => {
  test('a plain-source file runs as the runtime runs it; state outlives a restart', async () => {
    const sensor = await loadSensor(fixture('counter.js'));
    assert.equal(sensor.ref, 'local.counter');
    assert.deepEqual([...sensor.poll(), ...sensor.poll()], [{ n: 1 }, { n: 2 }]);
    await sensor.restart();
    assert.deepEqual(sensor.poll(), [{ n: 3 }]);
    assert.deepEqual(sensor.state.toObject({ json: true }), { n: 3 });
  });

  test('a pack: the manifest picks the file, config templates are filled, the pack rules are the instances', async () => {
    const dir = pack('templates', "export function* poll(config) { yield { id: config.n, tags: [config.label] }; }", {
      packYaml: 'config: {n: 7, name: x}\n',
      manifest: 'config:\n  n: "{{ pack.config.n }}"\n  label: "name={{ pack.config.name }} n={{ pack.config.n }}"\n',
      extra: { 'rules/r.yaml': 'ref: p.r\ntrigger: p.t\naction: {ref: core.noop}\n' },
    });
    const sensor = await loadSensor(dir);
    assert.deepEqual(sensor.config, { n: 7, label: 'name=x n=7' });
    assert.deepEqual(sensor.pollEvents(), [{ trigger: 'p.t', rule: null, payload: { id: 7, tags: ['name=x n=7'] } }]);
    assert.deepEqual(sensor.instances, [{ rule: 'p.r', trigger: 'p.t', params: {} }]);
    // The same sensor by its manifest, with config given over the manifest's.
    const byManifest = await loadSensor(path.join(dir, 'sensors', 's.yaml'), { config: { n: 8 } });
    assert.deepEqual(byManifest.poll(), [{ id: 8, tags: ['name=x n=7'] }]);
  });

  test('a template naming nothing is an error naming the file and field', async () => {
    const dir = pack('missing_template', 'export function poll() {}', { manifest: 'config: {token: "{{ pack.config.token }}"}\n' });
    await assert.rejects(loadSensor(dir), {
      message: `${path.join(dir, 'sensors', 's.yaml')}: config: token: template \`{{ pack.config.token }}\` names a missing value`,
    });
  });

  test('load errors come back as the runtime reports them', async () => {
    await assert.rejects(loadSensor(fixture('no_poll.js')), { name: 'SensorError', sensorMessage: 'Error: no_poll.js defines no poll(config) function' });
    const deps = writeTree('deps', { 'deps.js': "import pad from 'left-pad';\nexport function poll() {}\n" });
    await assert.rejects(loadSensor(path.join(deps, 'deps.js')), {
      sensorMessage: 'SyntaxError: imports other than @attune/sensor need `attune-sensor build` (deps.js, line 1)',
    });
  });

  test('a component sensor runs from its source, named with {source}; without it the error says so', async () => {
    const dir = writeTree('component', {
      'pack.yaml': 'ref: c\nversion: 0.1.0\n',
      'triggers/t.yaml': 'ref: c.t\n',
      'sensors/s.yaml': 'ref: c.s\ntriggers: [c.t]\nruntime: component\nentry: ../build/s.wasm\n',
      'build/s.wasm': '',
      'sensors/s.ts': 'export function* poll(): Generator<{ ok: boolean }> { yield { ok: true }; }\n',
    });
    await assert.rejects(loadSensor(dir), { message: /sensors\/s\.yaml runs the built component .*build\/s\.wasm, which Node cannot run; pass \{source: / });
    const sensor = await loadSensor(dir, { source: path.join(dir, 'sensors', 's.ts') });
    assert.deepEqual(sensor.poll(), [{ ok: true }]);
  });
});

describe('errors and tracebacks', () => {
  test('what a plain-source sensor throws is a SensorError whose traceback names its file and line', async () => {
    const sensor = await loadSensor(fixture('throws.js'));
    const error = captured(() => sensor.poll());
    assert.ok(error instanceof SensorError);
    assert.equal(error.sensorMessage, 'TypeError: bad item');
    assert.match(error.traceback, /^ {4}at check \(.*tests\/fixtures\/js\/throws\.js:4:\d+\)\n {4}at .*poll \(.*throws\.js:9:\d+\)$/);
    assert.equal(error.message, `local.throws: sensor error: TypeError: bad item\n${error.traceback}`);
  });

  test('a TypeScript sensor is bundled, and its traceback maps back to the .ts lines', async () => {
    const dir = writeTree('ts_throws', {
      'sensors/deep.ts': `export interface Item { id: number }

export function check(item: Item): Item {
  if (item.id < 0) {
    throw new RangeError(\`bad id \${item.id}\`);
  }
  return item;
}
`,
      'sensors/main.ts': `import { check, type Item } from './deep';

const items: Item[] = [{ id: 1 }, { id: -1 }];

export function* poll(): Generator<Item> {
  for (const item of items) yield check(item);
}
`,
    });
    const sensor = await loadSensor(path.join(dir, 'sensors', 'main.ts'));
    const error = captured(() => sensor.poll());
    assert.equal(error.sensorMessage, 'RangeError: bad id -1');
    const frames = error.traceback.split('\n');
    assert.match(frames[0], /^ {4}at check \(.*ts_throws\/sensors\/deep\.ts:5:\d+\)$/);
    assert.ok(frames.some((frame) => /ts_throws\/sensors\/main\.ts:6:\d+\)$/.test(frame)), error.traceback);
    // Only the author's frames: none of the SDK's glue, none of Node's.
    assert.ok(frames.every((frame) => /ts_throws\/sensors\/(deep|main)\.ts:\d+:\d+\)$/.test(frame)), error.traceback);
  });
});

/** What `call` throws. */
function captured(call) {
  try {
    call();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error');
}

describe('http', () => {
  test('a request without a fixture fails the poll, naming it and the fixtures there are, even when the sensor catches it', async () => {
    const http = new FakeHttp([
      { url: 'https://api.example.com/a', json: { a: 1 } },
      { method: 'POST', url: 'https://api.example.com/b' },
    ]);
    const sensor = await loadSensor(fixture('http_get.js'), { http, config: { url: 'https://api.example.com/c?x=1' } });
    assert.throws(() => sensor.poll(), {
      message: 'no HTTP fixture for GET https://api.example.com/c?x=1; fixtures: GET https://api.example.com/a, POST https://api.example.com/b',
    });
    const none = await loadSensor(fixture('http_get.js'), { config: { url: 'http://127.0.0.1:9/' } });
    assert.throws(() => none.poll(), { message: 'no HTTP fixture for GET http://127.0.0.1:9/; fixtures: none' });
  });

  test('fixtures answer by method and URL with status, headers and body; requests are recorded', async () => {
    const sensor = await loadSensor(fixture('http_get.js'), {
      config: { url: 'https://api.example.com/a' },
      http: [{ url: 'https://api.example.com/a', status: 404, headers: { 'x-why': 'gone' }, body: 'nothing here' }],
    });
    assert.deepEqual(sensor.poll(), [{ status: 404, body: 'nothing here' }]);
    sensor.http.on('GET', 'https://api.example.com/a', { json: [1] });
    assert.deepEqual(sensor.poll(), [{ status: 200, body: '[1]' }]);
    assert.deepEqual(sensor.http.requests.map((r) => `${r.method} ${r.url}`), ['GET https://api.example.com/a', 'GET https://api.example.com/a']);
  });

  test("a host outside the manifest's capabilities.http, or denied by the test, gets the host's denied error", async () => {
    const dir = pack('denied', "import { http } from '@attune/sensor';\nexport function* poll(config) { http.get(config.url); }\n", {
      manifest: 'capabilities: {http: ["api.example.com", "*.example.org:8443"]}\n',
    });
    const http = [{ url: 'https://api.example.com/' }, { url: 'https://x.example.org:8443/' }];
    const sensorFor = (url) => loadSensor(dir, { http, config: { url } });
    assert.deepEqual((await sensorFor('https://api.example.com/')).poll(), []);
    assert.deepEqual((await sensorFor('https://x.example.org:8443/')).poll(), []);
    const refusal = async (url, deny) => {
      const sensor = await sensorFor(url);
      if (deny) sensor.http.deny(deny);
      return captured(() => sensor.poll()).sensorMessage;
    };
    assert.equal(
      await refusal('https://other.example.com/'),
      "HttpError: GET https://other.example.com/: host not allowed by the sensor's capabilities.http (other.example.com:443 is not an allowed host (allowed: api.example.com, *.example.org:8443); grant it in the sensor manifest's capabilities.http)",
    );
    assert.match(await refusal('https://x.example.org/'), /\(x\.example\.org:443 is not an allowed host/);
    assert.match(await refusal('https://x.example.org:8443/', 'x.example.org'), /x\.example\.org:8443 is not an allowed host \(allowed: api\.example\.com, \*\.example\.org:8443 but x\.example\.org\)/);
  });

  test('fixtures for requests that get no response, and the checks the host makes first', async () => {
    const sensor = await loadSensor(fixture('http_get.js'), {
      config: { url: 'https://slow.example/' },
      http: [{ url: 'https://slow.example/', error: 'timeout' }],
    });
    assert.deepEqual(sensor.poll(), [{ error: 'GET https://slow.example/: timed out', kind: 'timeout' }]);
    const ftp = await loadSensor(fixture('http_get.js'), { config: { url: 'ftp://files.example/' } });
    assert.deepEqual(ftp.poll(), [{ error: 'GET ftp://files.example/: invalid request: ftp://files.example/: only http and https are supported', kind: 'invalid-request' }]);
  });

  test('a fixture file that is not an array of fixtures is named', () => {
    const file = path.join(writeTree('bad_fixtures', { 'f.json': '{"url": "x"}' }), 'f.json');
    assert.throws(() => new FakeHttp(file), { message: `HTTP fixtures ${file}: must be a JSON array of {method, url, status, headers, json | body}` });
  });
});

describe('payloads are checked as the host checks them', () => {
  test("a payload its trigger's payload_schema refuses fails the poll, naming each path and reason; state is not kept", async () => {
    const dir = pack('schema', `import { state } from '@attune/sensor';
export function* poll() {
  state.set('cursor', 'moved');
  yield { id: 1 };
  yield { id: 'two', tags: ['a', 3], extra: true };
}`);
    const sensor = await loadSensor(dir, { state: { cursor: 'start' } });
    const error = captured(() => sensor.poll());
    assert.ok(error instanceof PayloadError);
    assert.equal(error.index, 1);
    assert.deepEqual(error.errors, [
      { field: 'payload.extra', message: 'is not allowed by the schema' },
      { field: 'payload.id', message: 'must be integer' },
      { field: 'payload.tags[1]', message: 'must be string' },
    ]);
    assert.equal(
      error.message,
      'p.s: payload 1: does not match the payload_schema of `p.t`: payload.extra: is not allowed by the schema; payload.id: must be integer; payload.tags[1]: must be string',
    );
    assert.equal(sensor.state.get('cursor'), 'start');
  });

  test('a missing required property is named by its path; a schema with an $id loads again', async () => {
    const dir = pack('required', 'export function poll() { return [{ tags: [] }]; }', { trigger: '  $id: https://example.com/t.json\n' });
    for (let i = 0; i < 2; i++) {
      const sensor = await loadSensor(dir);
      assert.throws(() => sensor.poll(), { name: 'PayloadError', errors: [{ field: 'payload.id', message: 'is required' }] });
    }
  });

  test('undeclared triggers, rules that are not instances, non-objects and size and count limits', async () => {
    const cases = {
      "return [emit('p.other', { id: 1 })];": 'p.s: payload 0: undeclared trigger: payload is for `p.other`, sensor declares [p.t]',
      "return [emit('p.t', { id: 1 }, { rule: 'p.nope' })];": 'p.s: payload 0: rule `p.nope` is not an instance of this sensor (instances: [])',
      'return [{ id: 1 }, [1]];': 'p.s: payload 1: a payload must be a JSON object',
      "return [{ id: 1, tags: ['x'.repeat(100)] }];": 'p.s: payload 0: payload too large: 120 bytes (limit 100)',
      'return [{ id: 1 }, { id: 2 }, { id: 3 }];': 'p.s: too many payloads: 3 in one poll (limit 2)',
    };
    for (const [body, message] of Object.entries(cases)) {
      const dir = pack(`limits_${Object.keys(cases).indexOf(body)}`, `import { emit } from '@attune/sensor';\nexport function poll() { ${body} }`, {
        manifest: 'limits: {max_payload_bytes: 100, max_events_per_poll: 2}\n',
      });
      const sensor = await loadSensor(dir);
      assert.throws(() => sensor.poll(), { name: 'PayloadError', message }, body);
    }
  });

  test("instances must fit their trigger's param_schema; each payload for one reaches its rule", async () => {
    const dir = pack('instances', `import { instances } from '@attune/sensor';
export function* poll() { for (const i of instances.list()) yield i.emit({ id: i.params.n }); }`, {
      trigger: 'param_schema:\n  type: object\n  properties: {n: {type: integer}}\n  required: [n]\n',
    });
    const sensor = await loadSensor(dir, { instances: [{ rule: 'p.b', trigger: 'p.t', params: { n: 2 } }, { rule: 'p.a', trigger: 'p.t', params: { n: 1 } }] });
    assert.deepEqual(sensor.pollEvents(), [
      { trigger: 'p.t', rule: 'p.a', payload: { id: 1 } },
      { trigger: 'p.t', rule: 'p.b', payload: { id: 2 } },
    ]);
    sensor.instances.push({ rule: 'p.c', trigger: 'p.t', params: { n: 'three' } });
    assert.throws(() => sensor.poll(), { message: 'instance p.c: trigger_params.n: must be integer' });
  });
});

describe('the fakes', () => {
  test('state: initial values, the host limits, inspection between polls', async () => {
    const sensor = await loadSensor(
      writeTree('state', {
        's.js': `import { state } from '@attune/sensor';
export function* poll() {
  yield { seen: state.getJson('seen'), raw: state.get('raw'), keys: state.keys() };
  state.setJson('seen', (state.getJson('seen') ?? 0) + 1);
  try { state.set('k'.repeat(300), 'v'); } catch (e) { yield { error: e.message }; }
}`,
      }) + '/s.js',
      { state: { seen: 1, raw: 'text' } },
    );
    assert.deepEqual(sensor.poll(), [{ seen: 1, raw: 'text', keys: ['raw', 'seen'] }, { error: 'state key must be 1 to 256 bytes' }]);
    assert.deepEqual(sensor.state.toObject(), { raw: 'text', seen: '2' });
    sensor.state.delete('raw');
    sensor.state.commit();
    assert.deepEqual(sensor.poll()[0], { seen: 2, raw: null, keys: ['seen'] });
  });

  test('clock: the sensor sees the fake time, set and advanced by the test', async () => {
    const file = path.join(writeTree('clock', { 'c.js': "import { clock } from '@attune/sensor';\nexport function poll() { return [{ now: clock.nowMs() }]; }" }), 'c.js');
    const sensor = await loadSensor(file, { clock: '2026-01-01T00:00:00Z' });
    assert.deepEqual(sensor.poll(), [{ now: Date.UTC(2026, 0, 1) }]);
    sensor.clock.advance(1500);
    assert.deepEqual(sensor.poll(), [{ now: Date.UTC(2026, 0, 1) + 1500 }]);
    sensor.clock.set(new Date(0));
    assert.deepEqual(sensor.poll(), [{ now: 0 }]);
    assert.throws(() => sensor.clock.set('yesterday'), { message: /"yesterday" is not a time/ });
  });

  test('fs in memory: the examples_files watcher, with files written and removed between polls', async () => {
    const sensor = await loadSensor(EXAMPLES_FILES, { fs: { inbox: { 'b.txt': 'bb', 'a.txt': 'a', '.gitkeep': '', sub: {} } }, clock: 1000 });
    assert.deepEqual(sensor.poll(), [
      { path: 'inbox/a.txt', name: 'a.txt', size: 1, modified_ms: 1000 },
      { path: 'inbox/b.txt', name: 'b.txt', size: 2, modified_ms: 1000 },
    ]);
    assert.deepEqual(sensor.poll(), []);
    sensor.fs.remove('inbox/a.txt');
    sensor.clock.advance(1);
    sensor.fs.write('inbox/c.txt', 'c');
    assert.deepEqual(sensor.poll(), [{ path: 'inbox/c.txt', name: 'c.txt', size: 1, modified_ms: 1001 }]);
    assert.deepEqual(sensor.state.getJson('seen'), ['b.txt', 'c.txt']);
  });

  test('fs on disk: a real directory, granted as the host grants one; errors as the host words them', async () => {
    const dir = writeTree('disk', { 'in/a.txt': 'héllo', 'secret.txt': 's' });
    const sensor = await loadSensor(fixture('path_read.js'), { fs: path.join(dir, 'in'), config: { path: path.join(dir, 'in', 'a.txt') } });
    assert.deepEqual(sensor.poll(), [{ content: 'héllo' }]);
    const read = async (p) => (await loadSensor(fixture('path_read.js'), { fs: path.join(dir, 'in'), config: { path: p } })).poll()[0];
    assert.deepEqual(await read(path.join(dir, 'secret.txt')), { error: `${path.join(dir, 'secret.txt')}: access denied (not under a granted path)` });
    assert.deepEqual(await read(path.join(dir, 'in', 'nope')), { error: `${path.join(dir, 'in', 'nope')}: No such file or directory (os error 2)` });
    assert.deepEqual(await read(path.join(dir, 'in')), { error: `${path.join(dir, 'in')}: not a regular file (a directory)` });
  });

  test("log: log.* and console.* lines are captured; Node's console is left alone", async () => {
    const file = path.join(
      writeTree('log', { 'l.js': "import { log } from '@attune/sensor';\nexport function poll() { log.warn({ a: 1 }); console.log('n =', 2); console.error(new TypeError('t')); }" }),
      'l.js',
    );
    const nodeConsole = globalThis.console;
    const sensor = await loadSensor(file);
    sensor.poll();
    assert.equal(globalThis.console, nodeConsole);
    assert.deepEqual(sensor.logs, [
      { level: 'warn', message: '{"a":1}' },
      { level: 'info', message: 'n = 2' },
      { level: 'error', message: 'TypeError: t' },
    ]);
  });
});

describe('replay', () => {
  // A stand-in for attune-host, named by ATTUNE_HOST, answering `sensor test` as told.
  const standIn = (code, out, err) => {
    const dir = mkdtempSync(path.join(tmp, 'replay-'));
    mkdirSync(path.join(dir, 'recording'));
    writeFileSync(path.join(dir, 'recording', 'recording.json'), '{}');
    const host = path.join(dir, 'attune-host');
    writeFileSync(host, `#!/bin/sh\n[ "$1 $2" = 'sensor test' ] || exit 9\necho '${out}'\necho '${err}' >&2\nexit ${code}\n`, { mode: 0o755 });
    process.env.ATTUNE_HOST = host;
    return path.join(dir, 'recording');
  };
  after(() => delete process.env.ATTUNE_HOST);

  test('a matching recording passes with the host\'s report', () => {
    const recording = standIn(0, 'ok: recording: 2 polls, 10 host calls, 2 payloads replayed', '');
    assert.equal(replay(recording), 'ok: recording: 2 polls, 10 host calls, 2 payloads replayed');
  });

  test('a difference fails naming it', () => {
    const recording = standIn(1, '', 'FAILED: recording: poll 1: host call 2: the recording has http.send GET x');
    assert.throws(() => replay(recording), { name: 'AssertionError', message: /poll 1: host call 2: the recording has http\.send GET x/ });
  });

  test('no recording says how to make one', () => {
    assert.throws(() => replay('/nonexistent/recording'), /attune-host sensor run \. --record/);
  });
});
