// Building sensor components in Node: esbuild bundles, componentize-qjs makes the component.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from 'componentize-qjs';
import * as esbuild from 'esbuild';

const SDK_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
/** The WIT the components are built against (a copy of the repository's wit/sensor.wit). */
export const WIT_DIR = path.join(SDK_DIR, 'wit');

/** `@attune/sensor` is this SDK; `attune:sensor/*` stay imports, which the component's WIT supplies. */
const attunePlugin = {
  name: 'attune',
  setup(build) {
    build.onResolve({ filter: /^@attune\/sensor$/ }, () => ({ path: path.join(SDK_DIR, 'index.js') }));
    build.onResolve({ filter: /^attune:sensor\// }, (args) => ({ path: args.path, external: true }));
  },
};

/**
 * One ES module: the entry (esbuild's `stdin` or `entryPoints`) and everything it imports but
 * `attune:sensor/*`. `plugins` run before the SDK's own (tests map `attune:sensor/*` to fakes).
 */
async function bundle(entry, plugins) {
  const result = await esbuild.build({
    ...entry,
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    // `neutral` looks at no package.json field by default; npm packages name their entry here.
    mainFields: ['module', 'main'],
    plugins: [...plugins, attunePlugin],
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

/**
 * The JavaScript for a sensor component (world `sensor`): the sensor at `sensorPath` (.js or
 * .ts) with its npm dependencies, exporting `guest` through the shared glue.
 */
export async function bundleSensor(sensorPath, plugins = []) {
  const sensor = JSON.stringify(path.resolve(sensorPath));
  const glue = JSON.stringify(path.join(SDK_DIR, 'src', 'glue.js'));
  const filename = path.basename(sensorPath);
  const entry = 'attune-sensor-entry.js';
  // The named import makes esbuild refuse a sensor without `poll`, at build time.
  const contents = `import { poll } from ${sensor};
import * as sensor from ${sensor};
import { checkSensor, makeGuest } from ${glue};
export const guest = makeGuest(() => checkSensor(sensor, ${JSON.stringify(filename)}));
`;
  try {
    return await bundle({ stdin: { contents, resolveDir: SDK_DIR, sourcefile: entry } }, plugins);
  } catch (err) {
    // esbuild reports this against the generated entry; name the sensor, as the runtime does.
    if (err.errors?.some((e) => e.location?.file === entry && e.text.includes('"poll"'))) {
      throw new Error(`${filename} defines no poll(config) function`);
    }
    throw err;
  }
}

/** The JavaScript for the shared runtime component (world `source-runtime`). */
export function bundleRuntime(plugins = []) {
  return bundle({ entryPoints: [path.join(SDK_DIR, 'src', 'runtime.js')] }, plugins);
}

/** Makes the component for `world` from bundled `js` and writes it to `out`. */
export async function writeComponent(js, world, out) {
  // `sync`: the host calls exports without the component-model async ABI.
  const { component } = await componentize({ witPath: WIT_DIR, jsSource: js, world, sync: true });
  await mkdir(path.dirname(path.resolve(out)), { recursive: true });
  await writeFile(out, component);
  return component.length;
}

/** esbuild's errors as `file:line:column: message` lines; other errors as their message. */
export function describeBuildError(err) {
  if (!Array.isArray(err.errors)) return err.message;
  return err.errors
    .map(({ text, location: at }) => (at ? `${at.file}:${at.line}:${at.column + 1}: ${text}` : text))
    .join('\n');
}
