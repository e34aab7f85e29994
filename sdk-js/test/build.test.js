// `attune-sensor build`: bundling a sensor with npm dependencies, and the CLI end to end.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { loadSensor } from '../testing/index.js';

const CLI = fileURLToPath(new URL('../bin/attune-sensor.js', import.meta.url));
const BUNDLED_DEP = fileURLToPath(new URL('../../tests/fixtures/js/bundled_dep/sensor.js', import.meta.url));
const tmp = mkdtempSync(path.join(tmpdir(), 'attune-sensor-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function writeSensor(name, source) {
  const file = path.join(tmp, name);
  writeFileSync(file, source);
  return file;
}

/** Runs the CLI; resolves to {code, stdout, stderr}. */
function cli(...args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

// The test kit bundles a sensor as `attune-sensor build` does (esbuild, the same options) and
// runs it behind the same glue; the components themselves are run in sourcemap.test.js.
test('a bundled sensor uses its npm dependency and the SDK through the shared glue', async () => {
  const sensor = await loadSensor(BUNDLED_DEP, { bundle: true });
  assert.deepEqual(sensor.poll(), [{ n: 1, label: '00001' }]);
  assert.deepEqual(sensor.poll(), [{ n: 2, label: '00002' }]);
});

test('TypeScript sensors build', async () => {
  const file = writeSensor('typed.ts', `import { emit, instances, type Instance } from '@attune/sensor';
interface Reading { value: number }
export function* poll(config: { scale: number }): Generator<unknown> {
  const r: Reading = { value: 2 * config.scale };
  yield emit('pack.reading', r);
  const each: Instance<{ scale: number }>[] = instances.list<{ scale: number }>();
  for (const instance of each) yield instance.emit({ value: 2 * instance.params.scale });
}`);
  const sensor = await loadSensor(file, { config: { scale: 3 }, instances: [{ rule: 'pack.per_rule', trigger: 'pack.reading', params: { scale: 5 } }] });
  assert.deepEqual(sensor.pollEvents(), [
    { trigger: 'pack.reading', rule: null, payload: { value: 6 } },
    { trigger: 'pack.reading', rule: 'pack.per_rule', payload: { value: 10 } },
  ]);
});

test('the CLI builds a component and says so on one stderr line', async () => {
  const out = path.join(tmp, 'nested', 'bundled_dep.wasm');
  const { code, stdout, stderr } = await cli('build', BUNDLED_DEP, '-o', out);
  assert.equal(code, 0, stderr);
  assert.equal(stdout, '');
  assert.match(stderr, /^attune-sensor: built .*bundled_dep\.wasm from sensor\.js \(world sensor, [\d.]+ MB\) in [\d.]+ s\n$/);
  // A component (layer 1), not a core module: "\0asm", version 0x0d, layer 0x01.
  assert.deepEqual([...readFileSync(out).subarray(0, 8)], [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);
});

test('the CLI fails clearly on a sensor without poll, a missing dependency or a missing file', async () => {
  const noPoll = await cli('build', writeSensor('no_poll.js', 'export function init() {}'), '-o', path.join(tmp, 'x.wasm'));
  assert.equal(noPoll.code, 1);
  assert.equal(noPoll.stderr, 'attune-sensor: building no_poll.js failed:\nno_poll.js defines no poll(config) function\n');
  const missing = await cli('build', writeSensor('dep.js', "import x from 'not-installed';\nexport function poll() {}"), '-o', path.join(tmp, 'x.wasm'));
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /dep\.js:1:\d+: Could not resolve "not-installed"/);
  const nofile = await cli('build', path.join(tmp, 'nope.js'), '-o', path.join(tmp, 'x.wasm'));
  assert.deepEqual([nofile.code, nofile.stderr], [1, `attune-sensor: no such file: ${path.join(tmp, 'nope.js')}\n`]);
  const usage = await cli('build');
  assert.equal(usage.code, 1);
  assert.match(usage.stderr, /^attune-sensor: usage:/);
});

test('wit-dir prints the bundled WIT directory', async () => {
  const { code, stdout } = await cli('wit-dir');
  assert.equal(code, 0);
  assert.ok(readFileSync(path.join(stdout.trim(), 'sensor.wit'), 'utf8').includes('package attune:sensor@0.2.0;'));
});
