// The plain-source transform (src/source.js), run directly in Node.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { evaluateSource, moduleToFunction, sourceTraceback } from '../src/source.js';

const sdk = { log: 'LOG', state: 'STATE', http: 'HTTP' };

test('imports from @attune/sensor read from the SDK object: named, renamed, multi-line, namespace', () => {
  const source = `import { log, state as kv } from '@attune/sensor';
import {
  http,
} from "@attune/sensor"
import * as sdk from '@attune/sensor';
export function poll() { return [log, kv, http, sdk.log]; }`;
  assert.deepEqual(evaluateSource(source, 's.js', sdk).poll(), ['LOG', 'STATE', 'HTTP', 'LOG']);
});

test('export forms become the returned namespace', () => {
  const source = `export function* poll() {}
export async function a() {}
export class B {}
export const c = 1;
export let d = 2;
export var e = 3;
const f = 4, g = 5;
export { f, g as h };
function init() {}
export {
  init,
};`;
  assert.deepEqual(Object.keys(evaluateSource(source, 's.js', sdk)), ['poll', 'a', 'B', 'c', 'd', 'e', 'f', 'h', 'init']);
});

test('every line keeps its number', () => {
  const source = `import {
  log,
} from '@attune/sensor';
export {
  poll,
};
function poll() {
  throw new Error('here');
}`;
  assert.equal(moduleToFunction(source, 's.js').split('\n').length, source.split('\n').length + 1);
  // Node names eval'd code `<anonymous>`; the wrapper opens on line 1, so positions match the file.
  assert.throws(() => evaluateSource(source, 's.js', sdk).poll(), (err) => /<anonymous>:8:\d+/.test(err.stack));
});

test('unsupported imports and exports are errors naming the line', () => {
  const cases = [
    ["import x from 'lodash';", 'imports other than @attune/sensor need `attune-sensor build` (s.js, line 2)'],
    ["import './local.js';", 'imports other than @attune/sensor need `attune-sensor build` (s.js, line 2)'],
    ["import sdk from '@attune/sensor';", "import from @attune/sensor as `import { log, state } from '@attune/sensor'` (s.js, line 2)"],
    ['export default function poll() {}', 'unsupported export; use `export function`, `export const` or `export { .. }` (s.js, line 2)'],
    ['export const { a } = {};', 'unsupported export; use `export function`, `export const` or `export { .. }` (s.js, line 2)'],
  ];
  for (const [line, message] of cases) {
    assert.throws(() => moduleToFunction(`// first\n${line}\nexport function poll() {}`, 's.js'), { name: 'SyntaxError', message });
  }
});

test('identifiers that merely start with import/export are left alone', () => {
  const source = 'const exported = 1, imports = 2;\nexport function poll() { return [exported, imports]; }';
  assert.deepEqual(evaluateSource(source, 's.js', sdk).poll(), [1, 2]);
});

test('a file that ends inside a block is reported at its last line', () => {
  // Node's eval SyntaxErrors carry no line; QuickJS's do, and give this message and line.
  assert.throws(() => evaluateSource('export function poll() {\n  return [];\n', 'open.js', sdk), {
    name: 'SyntaxError',
    message: /\(open\.js\)$/,
  });
});

test('tracebacks keep the sensor frames, named after its file', () => {
  const quickjsStack = '    at check (<input>:4:27)\n    at poll (<input>:9:9)\n    at from (native)\n    at payloads (componentize-qjs:user.js:235:29)\n';
  assert.equal(sourceTraceback(quickjsStack, 'throws.js'), '    at check (throws.js:4:27)\n    at poll (throws.js:9:9)');
  assert.equal(sourceTraceback('    at checkSensor (componentize-qjs:user.js:212:61)\n', 'x.js'), null);
});
