// `attune-sensor new`: the pack it writes passes its own tests and `attune-host pack validate`.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI, attuneHost, run } from './host.js';

const parent = mkdtempSync(path.join(tmpdir(), 'attune-new-'));
after(() => rmSync(parent, { recursive: true, force: true }));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** `attune-sensor new <args>` in `parent`. */
const create = (...args) => run(process.execPath, [CLI, 'new', ...args, '--dir', parent]);

/** Installs the pack's dependencies (its `file:` link to this SDK) and runs its tests as its author would. */
async function installAndTest(dir) {
  const install = await run(npm, ['install', '--offline', '--no-audit', '--no-fund'], { cwd: dir });
  assert.equal(install.code, 0, install.stderr);
  // Without NODE_TEST_CONTEXT, which would make the pack's runner report to this one, not print.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const tests = await run(npm, ['test'], { cwd: dir, env });
  assert.equal(tests.code, 0, tests.stdout + tests.stderr);
  // Three offline tests, and the replay of test/recording, skipped until one is made.
  assert.match(tests.stdout, /^# pass 3$/m);
  assert.match(tests.stdout, /^# skipped 1$/m);
  assert.match(tests.stdout, /^# fail 0$/m);
}

describe('a JavaScript pack', () => {
  const dir = path.join(parent, 'acme_feed');

  test('is written with its refs, tests and README, and says what to do next', async () => {
    const { code, stdout, stderr } = await create('acme_feed');
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^created the pack acme_feed in .*acme_feed; next:\n/);
    for (const file of ['pack.yaml', 'triggers/new_item.yaml', 'sensors/items.yaml', 'sensors/items.js', 'rules/on_new_item.yaml', 'test/items.test.js', 'test/fixtures/items.json', 'package.json', 'README.md', '.gitignore']) {
      assert.ok(existsSync(path.join(dir, file)), file);
    }
    const manifest = readFileSync(path.join(dir, 'sensors/items.yaml'), 'utf8');
    for (const line of ['ref: acme_feed.items', 'triggers: [acme_feed.new_item]', 'runtime: javascript', 'entry: items.js']) {
      assert.ok(manifest.split('\n').includes(line), line);
    }
    const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
    assert.equal(pkg.devDependencies['@attune/sensor'], `file:${path.relative(dir, path.dirname(path.dirname(CLI)))}`);
  });

  test('passes its own tests', () => installAndTest(dir));

  test('passes attune-host pack validate', async () => {
    const { code, stdout, stderr } = await attuneHost(['pack', 'validate', '.'], dir);
    assert.equal(code, 0, stdout + stderr);
    assert.match(stdout, /^acme_feed 0\.1\.0: ok \(1 triggers, 1 sensors, 1 rules\)$/m);
  });
});

describe('a TypeScript pack', () => {
  const dir = path.join(parent, 'acme_ts');

  test('is written with a TypeScript sensor built into build/items.wasm', async () => {
    const { code, stderr } = await create('acme_ts', '--typescript');
    assert.equal(code, 0, stderr);
    assert.ok(existsSync(path.join(dir, 'sensors/items.ts')));
    assert.ok(!existsSync(path.join(dir, 'sensors/items.js')));
    assert.match(readFileSync(path.join(dir, 'sensors/items.yaml'), 'utf8'), /^runtime: component\nentry: \.\.\/build\/items\.wasm$/m);
  });

  test('passes its own tests', () => installAndTest(dir));

  test('passes attune-host pack validate once built', async () => {
    const built = await run(npm, ['run', 'build'], { cwd: dir });
    assert.equal(built.code, 0, built.stderr);
    assert.ok(existsSync(path.join(dir, 'build/items.wasm')));
    const { code, stdout, stderr } = await attuneHost(['pack', 'validate', '.'], dir);
    assert.equal(code, 0, stdout + stderr);
    assert.match(stdout, /^acme_ts 0\.1\.0: ok \(1 triggers, 1 sensors, 1 rules\)$/m);
  });
});

test('a name that is not a pack ref, a name too long, an existing directory and a wrong --sdk are refused', async () => {
  const refused = async (args, message) => {
    const { code, stdout, stderr } = await create(...args);
    assert.deepEqual([code, stdout, stderr], [1, '', `attune-sensor: ${message}\n`]);
  };
  await refused(['my-pack'], '"my-pack" is not a pack ref: use letters, digits and _ only');
  await refused(['x'.repeat(117)], `"${'x'.repeat(117)}" is too long: the pack's refs (${'x'.repeat(117)}.on_new_item) must be at most 128 bytes`);
  mkdirSync(path.join(parent, 'taken'));
  await refused(['taken'], `${path.join(parent, 'taken')} already exists; pick another name or --dir`);
  await refused(['fine', '--sdk', parent], `--sdk ${parent}: not the @attune/sensor package (no package.json)`);
  assert.ok(!existsSync(path.join(parent, 'fine')));
  const longest = await create('y'.repeat(116));
  assert.equal(longest.code, 0, longest.stderr);
});
