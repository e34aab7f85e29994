// Tracebacks of built sensors name the author's files and lines: the bundle's source map,
// carried in the component and read by the glue when an error is reported.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { decodeMappings, mapStack, sourceMapper } from '../src/sourcemap.js';
import { CLI, attuneHost, run } from './host.js';

test('mappings decode to absolute 0-based positions per generated line', () => {
  // The generated column restarts on each line; source, line and column run on from the
  // previous segment. Line 0: two segments, the second 2 columns on; line 1: a source line down
  // (`C` = +1), then a column back (`D` = -1), a 1-field segment (skipped), and a 5-field one
  // (with a name) in source 1.
  assert.deepEqual(decodeMappings('AAAA,EAAE;AACA,IAAD,E,ECCCA;;'), [
    [[0, 0, 0, 0], [2, 0, 0, 2]],
    [[0, 0, 1, 2], [4, 0, 1, 1], [8, 1, 2, 2]],
    [],
    [],
  ]);
  // Multi-digit values (continuation bit): 16 -> `gB`, -17 -> `jB`.
  assert.deepEqual(decodeMappings('gBAgBA,AAjBA'), [[[16, 0, 16, 0], [16, 0, -1, 0]]]);
});

test('mapStack keeps the frames that map to the author, renamed; SDK and native frames go', () => {
  const mapper = sourceMapper({ sources: ['sensors/a.ts', null], mappings: 'AAAA;AACA,IAAI;ACAA' });
  const stack = [
    '    at check (bundle.js:2:5)', // line 2 column 5 -> a.ts line 2, column 5
    '    at glue (bundle.js:3:1)', // source 1: the SDK
    '    at from (native)',
    '    at bundle.js:1:1',
  ].join('\n');
  assert.equal(mapStack(stack, 'bundle.js', mapper), '    at check (sensors/a.ts:2:5)\n    at sensors/a.ts:1:1');
  assert.equal(mapStack('    at glue (bundle.js:3:1)\n    at from (native)', 'bundle.js', mapper), null);
});

test('a built TypeScript sensor that throws reports frames in its own files through attune-host', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'attune-traceback-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'sensors'));
  writeFileSync(
    path.join(dir, 'sensors', 'check.ts'),
    `import { http } from '@attune/sensor';

export function check(url: string): number {
  // Not in capabilities.http: the SDK throws HttpError, from its own frames.
  const response = http.get(url);
  return response.status;
}
`,
  );
  writeFileSync(
    path.join(dir, 'sensors', 'items.ts'),
    `import { check } from './check';

interface Config { url: string }

export function* poll(config: Config): Generator<{ status: number }> {
  yield { status: check(config.url) };
}
`,
  );
  const built = await run(process.execPath, [CLI, 'build', 'sensors/items.ts', '-o', 'build/items.wasm'], { cwd: dir });
  assert.equal(built.code, 0, built.stderr);
  const { code, stderr } = await attuneHost(['sensor', 'run', 'build/items.wasm', '--config', '{"url": "http://127.0.0.1:9/"}', '--state-file', 'state.json'], dir);
  assert.equal(code, 1, stderr);
  const [message, ...frames] = stderr.slice(stderr.indexOf('error: ')).trimEnd().split('\n');
  assert.match(message, /^error: local\.items: sensor error: HttpError: GET http:\/\/127\.0\.0\.1:9\/: host not allowed/);
  assert.deepEqual(
    frames.map((frame) => frame.replace(/:\d+\)$/, ')')),
    ['    at check (sensors/check.ts:5)', '    at poll (sensors/items.ts:6)'],
  );
});
