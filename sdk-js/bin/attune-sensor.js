#!/usr/bin/env node
// attune-sensor: start a pack, and build JavaScript/TypeScript sensors (and the shared runtime)
// into components.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { WIT_DIR, bundleRuntime, bundleSensor, describeBuildError, writeComponent } from '../src/build.js';
import { SDK_DIR, createPack } from '../src/scaffold.js';

const USAGE = `usage:
  attune-sensor new <name> [--dir <parent>] [--typescript] [--sdk <path>]
                                                             start a pack <parent>/<name> with one tested sensor (--sdk: the
                                                             @attune/sensor its package.json links to; default ${SDK_DIR})
  attune-sensor build <sensor.js|sensor.ts> -o <out.wasm>   bundle a sensor and its npm dependencies into a component (world sensor)
  attune-sensor build-runtime -o <javascript.wasm>          build the runtime behind plain-source .js sensors (world source-runtime)
  attune-sensor wit-dir                                      print the directory of the WIT the components target`;

function fail(message) {
  process.stderr.write(`attune-sensor: ${message}\n`);
  process.exit(1);
}

async function build(what, out, world, makeJs) {
  const started = performance.now();
  let size;
  try {
    size = await writeComponent(await makeJs(), world, out);
  } catch (err) {
    fail(`building ${what} failed:\n${describeBuildError(err)}`);
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`attune-sensor: built ${out} from ${what} (world ${world}, ${(size / 1e6).toFixed(1)} MB) in ${seconds} s\n`);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      dir: { type: 'string' },
      typescript: { type: 'boolean' },
      sdk: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}
const { positionals: [command, ...rest], values } = args;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
} else if (command === 'new' && rest.length === 1) {
  const [name] = rest;
  let dir;
  try {
    dir = createPack(name, { parent: values.dir ?? '.', typescript: values.typescript, sdk: values.sdk ?? SDK_DIR });
  } catch (err) {
    fail(err.message);
  }
  const shown = path.relative('.', dir) || '.';
  const first = values.typescript ? 'npm run build' : 'npm run runtime';
  process.stdout.write(`created the pack ${name} in ${shown}; next:
  cd ${shown}
  npm install && npm test
  ${first} && attune-host pack validate . && attune-host sensor run . --polls 2
(see ${path.join(shown, 'README.md')})
`);
} else if (command === 'wit-dir' && rest.length === 0) {
  process.stdout.write(`${WIT_DIR}\n`);
} else if (command === 'build' && rest.length === 1 && values.output) {
  const [sensor] = rest;
  if (!existsSync(sensor)) fail(`no such file: ${sensor}`);
  await build(path.basename(sensor), values.output, 'sensor', () => bundleSensor(sensor));
} else if (command === 'build-runtime' && rest.length === 0 && values.output) {
  await build('the JavaScript runtime', values.output, 'source-runtime', () => bundleRuntime());
} else {
  fail(USAGE);
}
