// The plain-source runtime (world `source-runtime`) and the glue it shares with built sensors,
// run in Node: src/runtime.js imported as it is, the host being the test kit's fake.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { setHost } from '../src/host/node.js';
import { FakeHost } from '../testing/index.js';

const fixture = (name) => readFileSync(new URL(`../../tests/fixtures/js/${name}`, import.meta.url), 'utf8');

let runtime;
before(async () => {
  runtime = await import('../src/runtime.js');
});

/** A fresh fake host, installed for everything the test runs after. */
function installHost(options) {
  const host = new FakeHost(options);
  setHost(host.wit);
  return host;
}

/** Loads `source` and runs init; returns the runtime's guest. */
function start(source, { config = {}, filename = 'sensor.js' } = {}) {
  // QuickJS has no compiled form for the host to keep: `load` returns an empty list.
  assert.deepEqual(runtime.sourceLoader.load(filename, source, null), new Uint8Array(0));
  runtime.guest.init(JSON.stringify(config));
  return runtime.guest;
}

/** The sensor-error a call throws. */
function errorOf(call) {
  try {
    call();
  } catch (err) {
    return err;
  }
  assert.fail('expected a sensor-error');
}

const jsonOf = (payloads) => payloads.map((p) => JSON.parse(p.json));

describe('poll results', () => {
  test('a generator yields one payload per item, for the only trigger', () => {
    installHost();
    const guest = start('export function* poll(config) { yield {status: 500}; yield {n: config.n}; }', { config: { n: 7 } });
    assert.deepEqual(guest.poll(), [
      { trigger: null, rule: null, json: '{"status":500}' },
      { trigger: null, rule: null, json: '{"n":7}' },
    ]);
  });

  test('an array, nothing, or null is fine', () => {
    installHost();
    assert.deepEqual(jsonOf(start('export function poll() { return [{a: 1}, 2, "x"]; }').poll()), [{ a: 1 }, 2, 'x']);
    assert.deepEqual(start('export function poll() {}').poll(), []);
    assert.deepEqual(start('export function poll() { return null; }').poll(), []);
  });

  test('emit addresses a payload to a named trigger', () => {
    installHost();
    const source = `import { emit } from '@attune/sensor';
export function* poll() { yield emit('pack.a', {x: 1}); yield {y: 2}; }`;
    assert.deepEqual(start(source).poll(), [
      { trigger: 'pack.a', rule: null, json: '{"x":1}' },
      { trigger: null, rule: null, json: '{"y":2}' },
    ]);
    assert.match(errorOf(() => start(`import { emit } from '@attune/sensor';\nexport function poll() { return [emit('', 1)]; }`).poll()).message, /^TypeError: emit\(triggerRef, payload\) needs a trigger ref/);
  });

  test('emit with {rule} addresses one rule; a bad rule is an error that says what to pass', () => {
    installHost();
    const source = `import { emit } from '@attune/sensor';
export function* poll() { yield emit('pack.a', {x: 1}, {rule: 'pack.r'}); yield emit('pack.a', {x: 2}, {rule: null}); yield emit('pack.a', 3, {}); }`;
    assert.deepEqual(start(source).poll(), [
      { trigger: 'pack.a', rule: 'pack.r', json: '{"x":1}' },
      { trigger: 'pack.a', rule: null, json: '{"x":2}' },
      { trigger: 'pack.a', rule: null, json: '3' },
    ]);
    const bad = `import { emit } from '@attune/sensor';\nexport function poll() { return [emit('pack.a', 1, {rule: 7})]; }`;
    assert.equal(errorOf(() => start(bad).poll()).message, 'TypeError: emit(triggerRef, payload, {rule}) needs rule to be a rule ref such as "mypack.my_rule", or null');
  });

  test('instances are listed afresh on every poll, params parsed, each emitting to its own rule', () => {
    const host = installHost({ instances: [{ rule: 'p.check_a', trigger: 'p.status', params: { url: 'http://a/', expect_status: 204 } }] });
    const guest = start(`import { instances } from '@attune/sensor';
export function* poll() {
  for (const instance of instances.list()) yield instance.emit({ rule: instance.rule, trigger: instance.trigger, url: instance.params.url });
}`);
    assert.deepEqual(guest.poll(), [{ trigger: 'p.status', rule: 'p.check_a', json: '{"rule":"p.check_a","trigger":"p.status","url":"http://a/"}' }]);
    host.instances.push({ rule: 'p.check_b', trigger: 'p.status', params: { url: 'http://b/' } });
    assert.deepEqual(guest.poll().map((p) => [p.rule, JSON.parse(p.json).url]), [['p.check_a', 'http://a/'], ['p.check_b', 'http://b/']]);
    host.instances.length = 0;
    assert.deepEqual(guest.poll(), []);
  });

  test('instance params that are not a JSON object are an error naming the rule', () => {
    installHost({ instances: [{ rule: 'p.bad', trigger: 'p.status', params: [1] }] });
    const guest = start(`import { instances } from '@attune/sensor';\nexport function poll() { return instances.list(); }`);
    assert.equal(errorOf(() => guest.poll()).message, 'TypeError: trigger_params of rule p.bad must be a JSON object, not array');
  });

  test('an item JSON cannot hold is an error naming its index', () => {
    installHost();
    const cases = {
      'undefined': /^TypeError: poll item 1 cannot be serialized as JSON: it is undefined$/,
      '() => 1': /^TypeError: poll item 1 cannot be serialized as JSON: it is function$/,
      '{big: 1n}': /^TypeError: poll item 1 cannot be serialized as JSON: .+/,
      '(() => { const o = {}; o.self = o; return o; })()': /^TypeError: poll item 1 cannot be serialized as JSON: .+/,
    };
    for (const [item, message] of Object.entries(cases)) {
      const error = errorOf(() => start(`export function* poll() { yield {ok: 1}; yield ${item}; }`).poll());
      assert.match(error.message, message, item);
    }
  });

  test('a returned object or Promise is an error that says what to do', () => {
    installHost();
    assert.match(errorOf(() => start('export function poll() { return {a: 1}; }').poll()).message, /^TypeError: poll\(config\) returned object: yield each payload/);
    assert.match(errorOf(() => start('export async function poll() { return [1]; }').poll()).message, /^TypeError: poll\(config\) returned a Promise: .*drop `async`/);
  });
});

describe('errors', () => {
  test('a thrown error becomes "Name: message" with the sensor frames as traceback', () => {
    installHost();
    const error = errorOf(() => start(fixture('throws.js'), { filename: 'throws.js' }).poll());
    assert.equal(error.message, 'TypeError: bad item');
    // Node names eval'd frames differently from QuickJS; the frame filter itself is tested below.
    assert.ok(error.traceback === null || typeof error.traceback === 'string');
  });

  test('a thrown non-Error is reported as such', () => {
    installHost();
    assert.deepEqual(errorOf(() => start("export function poll() { throw 'oops'; }").poll()), { message: 'Uncaught oops', traceback: null });
    assert.deepEqual(errorOf(() => start('export function poll() { throw {code: 42}; }').poll()), { message: 'Uncaught {"code":42}', traceback: null });
  });

  test('init errors and bad config come back as sensor-errors', () => {
    installHost();
    runtime.sourceLoader.load('s.js', "export function init(c) { if (!c.url) throw new Error('config.url is required'); }\nexport function poll() {}");
    assert.equal(errorOf(() => runtime.guest.init('{}')).message, 'Error: config.url is required');
    assert.match(errorOf(() => runtime.guest.init('{bad')).message, /^SyntaxError: /);
  });

  test('a syntax error names the file and line', () => {
    installHost();
    const error = errorOf(() => runtime.sourceLoader.load('bad.js', 'export function* poll() {\n  yield {a: 1;\n}\n'));
    // Node's own SyntaxErrors carry no position; QuickJS's give the line (checked in components).
    assert.match(error.message, /^SyntaxError: .+ \(bad\.js(, line \d+)?\)$/);
    assert.equal(error.traceback, null);
  });

  test('a module without poll, or with another import, is refused at load', () => {
    installHost();
    assert.deepEqual(errorOf(() => runtime.sourceLoader.load('no_poll.js', fixture('no_poll.js'))), {
      message: 'Error: no_poll.js defines no poll(config) function',
      traceback: null,
    });
    const source = "// a sensor\nimport { log } from '@attune/sensor';\nimport leftPad from 'left-pad';\nexport function poll() {}";
    assert.equal(
      errorOf(() => runtime.sourceLoader.load('deps.js', source)).message,
      'SyntaxError: imports other than @attune/sensor need `attune-sensor build` (deps.js, line 3)',
    );
  });

  test('init or poll before load is an error, not a crash', async () => {
    installHost();
    const fresh = await import('../src/runtime.js?another-instance');
    assert.match(errorOf(() => fresh.guest.init('{}')).message, /^Error: no sensor source loaded/);
  });
});

describe('sdk', () => {
  test('state: strings, JSON helpers, keys, delete, host errors', () => {
    const host = installHost();
    const guest = start(`import { state } from '@attune/sensor';
export function* poll() {
  yield [state.get('missing'), state.getJson('missing', 5), state.getJson('missing')];
  state.set('a', 'x'); state.setJson('b', {n: 1});
  yield [state.get('a'), state.getJson('b'), state.keys()];
  state.delete('a');
  yield state.keys();
  try { state.set('big', 'x'.repeat(70000)); } catch (e) { yield e.message; }
  try { state.set('n', 1); } catch (e) { yield e.message; }
}`);
    assert.deepEqual(jsonOf(guest.poll()), [
      [null, 5, null],
      ['x', { n: 1 }, ['a', 'b']],
      ['b'],
      'state value for `big` is 70000 bytes (limit 65536)',
      'state.set("n") needs a string value; use state.setJson for other values',
    ]);
    host.state.commit();
    assert.deepEqual(host.state.toObject(), { b: '{"n":1}' });
  });

  test('log levels reach the host log; clock reads the host clock', () => {
    const host = installHost({ clock: 1700000000000 });
    const guest = start(`import { log, clock } from '@attune/sensor';
export function poll() { log.debug('d'); log.info({a: 1}); log.warn('w'); log.error(new RangeError('e')); log.trace('t'); return [clock.nowMs()]; }`);
    assert.deepEqual(jsonOf(guest.poll()), [1700000000000]);
    assert.deepEqual(host.logs.map(({ level, message }) => [level, message]), [['debug', 'd'], ['info', '{"a":1}'], ['warn', 'w'], ['error', 'RangeError: e'], ['trace', 't']]);
  });

  test('without a console (as in QuickJS) the SDK provides one that writes to the host log', async () => {
    const host = installHost();
    const nodeConsole = globalThis.console;
    delete globalThis.console;
    try {
      await import('../index.js?an-instance-that-sees-no-console');
      globalThis.console.log('n =', 1, { a: [2] });
      globalThis.console.error(new TypeError('t'));
    } finally {
      globalThis.console = nodeConsole;
    }
    assert.deepEqual(host.logs, [{ level: 'info', message: 'n = 1 {"a":[2]}' }, { level: 'error', message: 'TypeError: t' }]);
  });

  test('http: request shape, response helpers, lower-case headers', () => {
    const response = {
      status: 201,
      headers: [['Content-Type', 'application/json'], ['Set-Cookie', 'a=1'], ['set-cookie', 'b=2']],
      body: '{"é":"ü"}',
    };
    const host = installHost({
      http: ['https://api.example.com/x', 'https://api.example.com/y', 'https://api.example.com/z'].map((url, i) => ({ method: ['POST', 'GET', 'PUT'][i], url, ...response })),
    });
    // What reaches the WIT import, before the fake reads it.
    const sent = [];
    const send = host.wit.http.send;
    host.wit.http.send = (request) => (sent.push(request), send(request));
    const guest = start(`import { http } from '@attune/sensor';
export function* poll() {
  const r = http.post('https://api.example.com/x', { json: {a: 'é'}, headers: {Authorization: 'Bearer t'}, timeoutMs: 500 });
  yield { status: r.status, headers: r.headers, text: r.text(), json: r.json(), bytes: r.body.length };
  http.get('https://api.example.com/y', { headers: [['X-N', 1]] });
  http.request({ method: 'put', url: 'https://api.example.com/z', body: 'raw' });
}`);
    assert.deepEqual(jsonOf(guest.poll()), [
      { status: 201, headers: { 'content-type': 'application/json', 'set-cookie': 'a=1, b=2' }, text: '{"é":"ü"}', json: { é: 'ü' }, bytes: 11 },
    ]);
    const [post, get, put] = sent;
    assert.deepEqual({ ...post, body: Buffer.from(post.body).toString() }, {
      method: 'POST',
      url: 'https://api.example.com/x',
      headers: [['Authorization', 'Bearer t'], ['content-type', 'application/json']],
      body: '{"a":"é"}',
      timeoutMs: 500,
    });
    assert.deepEqual(get, { method: 'GET', url: 'https://api.example.com/y', headers: [['X-N', '1']], body: null, timeoutMs: null });
    assert.equal(put.method, 'PUT');
    assert.equal(Buffer.from(put.body).toString(), 'raw');
  });

  test('http: host failures throw HttpError with kind and a clear message', () => {
    installHost({
      http: [
        { url: 'https://bad.example/', error: 'invalid-request', detail: 'unsupported scheme' },
        { url: 'https://slow.example/', error: 'timeout' },
        { url: 'https://big.example/', error: 'too-large', detail: 1024 },
        { url: 'https://down.example/', error: 'transport', detail: 'connection refused' },
      ],
    }).http.deny('denied.example');
    const messages = ['denied', 'bad', 'slow', 'big', 'down'].map((host) => jsonOf(start(fixture('http_get.js'), { config: { url: `https://${host}.example/` } }).poll())[0]);
    assert.deepEqual(messages, [
      {
        error: "GET https://denied.example/: host not allowed by the sensor's capabilities.http (denied.example:443 is not an allowed host (allowed: any host but denied.example); grant it in the sensor manifest's capabilities.http)",
        kind: 'denied',
      },
      { error: 'GET https://bad.example/: invalid request: unsupported scheme', kind: 'invalid-request' },
      { error: 'GET https://slow.example/: timed out', kind: 'timeout' },
      { error: "GET https://big.example/: response body larger than the host's cap of 1024 bytes", kind: 'too-large' },
      { error: 'GET https://down.example/: connection refused', kind: 'transport' },
    ]);
    const name = jsonOf(start(`import { http, HttpError } from '@attune/sensor';
export function* poll() { try { http.get('https://slow.example/'); } catch (e) { yield [e.name, e instanceof HttpError, e instanceof Error]; } }`).poll());
    assert.deepEqual(name, [['HttpError', true, true]]);
  });

  test('fs: list, read bytes and text, host errors as Error', () => {
    installHost({ fs: { '/data': { 'a.txt': 'héllo', sub: {} } }, clock: 1000 });
    const guest = start(`import { fs } from '@attune/sensor';
export function* poll() {
  yield fs.listDir('/data');
  yield [fs.readText('/data/a.txt'), fs.readFile('/data/a.txt').length];
  try { fs.readText('/etc/passwd'); } catch (e) { yield [e instanceof Error, e.message]; }
}`);
    assert.deepEqual(jsonOf(guest.poll()), [
      [
        { name: 'a.txt', isDir: false, size: 6, modifiedMs: 1000 },
        { name: 'sub', isDir: true, size: 0, modifiedMs: 0 },
      ],
      ['héllo', 6],
      [true, '/etc/passwd: access denied (not under a granted path)'],
    ]);
  });
});
