// Building sensor components in Node: esbuild bundles, componentize-qjs makes the component.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

/** The package.json `imports` condition that binds `#host` to the WIT imports (src/host/component.js). */
const COMPONENT_CONDITION = 'attune-component';

/** The file name componentize-qjs gives the bundled code: stack frames of a component name it. */
const COMPONENT_BUNDLE = 'componentize-qjs:user.js';

/** The generated entry of a sensor bundle, as esbuild's stdin names it. */
const ENTRY = 'attune-sensor-entry.js';

/** Where a sensor component keeps its source map (set by the bundle's last line). */
const MAP_GLOBAL = '__attuneSourceMap';

/**
 * One ES module: the entry (esbuild's `stdin` or `entryPoints`) and everything it imports but
 * `attune:sensor/*`, `#host` bound to the component's WIT imports. `plugins` run before the
 * SDK's own. With `sourceMap`, returns `{js, map}`, the map as `sourceMapper` takes it; else
 * the JavaScript alone.
 */
async function bundle(entry, { plugins = [], sourceMap = false } = {}) {
  const result = await esbuild.build({
    ...entry,
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    // `neutral` looks at no package.json field by default; npm packages name their entry here.
    mainFields: ['module', 'main'],
    conditions: [COMPONENT_CONDITION],
    plugins: [...plugins, attunePlugin],
    logLevel: 'silent',
    // Nothing is written; `outfile` only makes the map's `sources` relative to the working directory.
    ...(sourceMap && { sourcemap: 'external', sourcesContent: false, outfile: path.resolve('bundle.js') }),
  });
  if (!sourceMap) return result.outputFiles[0].text;
  const output = (ext) => result.outputFiles.find((f) => f.path.endsWith(ext)).text;
  const { sources, mappings } = JSON.parse(output('.map'));
  return { js: output('.js'), map: { sources: sources.map(authorSource), mappings } };
}

/** A source map source as the author should see it: their own files; null for the SDK's and the generated entry. */
function authorSource(source) {
  const file = path.resolve(source);
  return file.startsWith(SDK_DIR + path.sep) || source === ENTRY ? null : source;
}

/**
 * The JavaScript for a sensor component (world `sensor`): the sensor at `sensorPath` (.js or
 * .ts) with its npm dependencies, exporting `guest` through the shared glue. The bundle carries
 * its source map, so an error's traceback names the author's files and lines.
 */
export async function bundleSensor(sensorPath) {
  const sensor = JSON.stringify(path.resolve(sensorPath));
  const sdk = (file) => JSON.stringify(path.join(SDK_DIR, 'src', file));
  const filename = path.basename(sensorPath);
  // The named import makes esbuild refuse a sensor without `poll`, at build time. The map is
  // appended once the bundle exists (it describes the bundle) and read only at error time.
  const contents = `import { poll } from ${sensor};
import * as sensor from ${sensor};
import { checkSensor, makeGuest } from ${sdk('glue.js')};
import { mapStack, sourceMapper } from ${sdk('sourcemap.js')};
let mapper;
const traceback = (stack) => mapStack(stack, ${JSON.stringify(COMPONENT_BUNDLE)}, (mapper ??= sourceMapper(globalThis.${MAP_GLOBAL})));
export const guest = makeGuest(() => checkSensor(sensor, ${JSON.stringify(filename)}), traceback);
`;
  let bundled;
  try {
    bundled = await bundle({ stdin: { contents, resolveDir: SDK_DIR, sourcefile: ENTRY } }, { sourceMap: true });
  } catch (err) {
    // esbuild reports this against the generated entry; name the sensor, as the runtime does.
    if (err.errors?.some((e) => e.location?.file === ENTRY && e.text.includes('"poll"'))) {
      throw new Error(`${filename} defines no poll(config) function`);
    }
    throw err;
  }
  return `${bundled.js}\nglobalThis.${MAP_GLOBAL} = ${JSON.stringify(bundled.map)};\n`;
}

/** The JavaScript for the shared runtime component (world `source-runtime`). */
export function bundleRuntime() {
  return bundle({ entryPoints: [path.join(SDK_DIR, 'src', 'runtime.js')] });
}

/**
 * A sensor module and its npm dependencies as one ES module for Node, with its source map
 * (`{js, map}`), for the test kit: bundled as `attune-sensor build` bundles it, but importing
 * `@attune/sensor` from this SDK (the module the kit installs its fake host under).
 */
export function bundleForNode(sensorPath) {
  const sdk = pathToFileURL(path.join(SDK_DIR, 'index.js')).href;
  const external = {
    name: 'attune-sdk-external',
    setup(build) {
      build.onResolve({ filter: /^@attune\/sensor$/ }, () => ({ path: sdk, external: true }));
    },
  };
  return bundle({ entryPoints: [path.resolve(sensorPath)] }, { plugins: [external], sourceMap: true });
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
