// @attune/sensor/testing: run a sensor in plain Node (`node --test`) against a fake host.
//
// `loadSensor` takes what `attune-host sensor run` takes (a pack directory, a sensor manifest or
// a sensor file), loads the sensor as the host would (plain source through the runtime's
// transform, or bundled as `attune-sensor build` bundles it) behind the shared glue, calls
// `init`, and then polls it on demand, checking each poll's payloads as the host does: their
// trigger, size and count, and their trigger's `payload_schema`.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as sdk from '../index.js';
import { checkSensor, makeGuest, sensorError } from '../src/glue.js';
import { evaluateSource } from '../src/source.js';
import { mapStack, sourceMapper } from '../src/sourcemap.js';
import { PayloadError, SensorError } from './errors.js';
import { FakeClock, FakeHost, FakeState } from './host.js';
import { FakeFs } from './fs.js';
import { FakeHttp } from './http.js';
import { DEFAULT_LIMITS, loadPackSensor, schemaErrors } from './pack.js';

export { FakeClock, FakeFs, FakeHost, FakeHttp, FakeState, PayloadError, SensorError };
export { replay } from './replay.js';

/**
 * Loads the sensor at `target` and calls its `init`; resolves to a `TestSensor`.
 *
 * `target`: a pack directory (its only sensor, or `options.sensor`), a sensor manifest
 * (`sensors/x.yaml`), or a `.js` (plain source) or `.ts` file. A pack's sensor gets the
 * manifest's config (with `{{ pack.config.* }}` filled in), its `capabilities` and limits, and
 * its payloads are checked against the pack's triggers.
 *
 * Options: `sensor`; `source`, the file a `runtime: component` sensor is built from (Node cannot
 * run its .wasm); `bundle: true` to bundle a .js file (npm imports) instead of running it as
 * plain source; `config`, merged over the manifest's; and the fake host's `http`, `state`,
 * `clock`, `fs` and `instances` (see `FakeHost`; a pack sensor's instances default to the
 * enabled rules its pack ships for its triggers, and its fs to the manifest's granted paths).
 */
export async function loadSensor(target, options = {}) {
  const spec = resolve(filePath(target), { ...options, source: options.source && filePath(options.source) });
  const host = new FakeHost({
    ...options,
    fs: options.fs ?? new FakeFs({ dirs: spec.paths, base: spec.base }),
    instances: options.instances ?? spec.instances,
    base: spec.base,
  });
  if (spec.http) host.http.allow(spec.http);
  const sensor = new TestSensor(spec, host);
  await sensor.restart();
  return sensor;
}

/** A path given as a string or a `file:` URL (`new URL('..', import.meta.url)`). */
const filePath = (p) => (p instanceof URL ? fileURLToPath(p) : p);

/** What to run and how: the host's view of the sensor, from its manifest or its file alone. */
function resolve(target, options) {
  const config = (base) => ({ ...base, ...options.config });
  if (!/\.(js|mjs|ts|mts)$/.test(target)) {
    const s = loadPackSensor(target, options.sensor);
    const where = path.relative(process.cwd(), s.manifest);
    const component = s.runtime === 'component';
    if (component && options.source === undefined) {
      throw new Error(`${where} runs the built component ${path.relative(process.cwd(), s.entry)}, which Node cannot run; pass {source: 'sensors/<name>.ts'}, the file it is built from`);
    }
    if (!component && s.runtime !== 'javascript') throw new Error(`${where}: runtime ${s.runtime}: this kit runs JavaScript and TypeScript sensors`);
    const instances = s.pack.rules
      .filter((rule) => rule.enabled !== false && s.triggers.includes(rule.trigger))
      .map((rule) => ({ rule: rule.ref, trigger: rule.trigger, params: rule.trigger_params ?? {} }));
    const file = options.source ?? s.entry;
    return { ...s, file, bundle: component || options.bundle === true, config: config(s.config), base: s.pack.dir, instances };
  }
  const stem = path.basename(target).replace(/\.\w+$/, '');
  return {
    ref: `local.${stem}`,
    triggers: [],
    file: target,
    bundle: /\.m?ts$/.test(target) || options.bundle === true,
    config: config({}),
    http: null,
    paths: [],
    limits: DEFAULT_LIMITS,
    pack: null,
    base: process.cwd(),
    instances: [],
  };
}

/**
 * The sensor module of `spec` and the traceback for its errors, loaded as the host would, its
 * top-level code run with `host` installed. What the module throws while loading is a SensorError.
 */
async function loadModule(spec, host) {
  const name = path.basename(spec.file);
  const shown = path.relative(process.cwd(), path.resolve(spec.file));
  if (!spec.bundle) {
    // As the runtime component loads plain source; Node names the evaluated code's frames
    // `(eval at evaluateSource (..), <anonymous>:LINE:COLUMN)`.
    const traceback = (stack) => {
      const frames = stack
        .split('\n')
        .filter((frame) => frame.includes('(eval at evaluateSource ('))
        .map((frame) => frame.replace(/\(eval at evaluateSource \(.*\), <anonymous>:(\d+:\d+)\)$/, `(${shown}:$1)`));
      return frames.length ? frames.join('\n') : null;
    };
    try {
      const module = host.run(() => evaluateSource(readFileSync(spec.file, 'utf8'), name, sdk));
      return { module: checkSensor(module, name), traceback };
    } catch (err) {
      throw new SensorError(spec.ref, sensorError(err, traceback));
    }
  }
  const { bundleForNode, describeBuildError } = await import('../src/build.js');
  let bundled;
  try {
    bundled = await bundleForNode(spec.file);
  } catch (err) {
    throw new Error(`bundling ${shown} failed:\n${describeBuildError(err)}`);
  }
  // Imported from a file (not a data: URL) so that stack frames name a short path to map.
  const dir = mkdtempSync(path.join(tmpdir(), 'attune-sensor-test-'));
  const bundleFile = path.join(dir, `${name}.mjs`);
  writeFileSync(bundleFile, bundled.js);
  const url = pathToFileURL(bundleFile).href;
  const mapper = sourceMapper(bundled.map);
  const traceback = (stack) => mapStack(stack, url, mapper);
  try {
    return { module: checkSensor(await host.run(() => import(url)), name), traceback };
  } catch (err) {
    throw new SensorError(spec.ref, sensorError(err, traceback));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A loaded sensor: poll it, and set up or inspect its fake host between polls. */
export class TestSensor {
  #spec;
  #host;
  #guest = null;

  constructor(spec, host) {
    this.#spec = spec;
    this.#host = host;
  }

  /** The sensor's ref (`pack.name`, or `local.<file name>` for a bare file). */
  get ref() {
    return this.#spec.ref;
  }

  /** The config `init` and `poll` get. */
  get config() {
    return this.#spec.config;
  }

  get http() {
    return this.#host.http;
  }

  get state() {
    return this.#host.state;
  }

  get clock() {
    return this.#host.clock;
  }

  get fs() {
    return this.#host.fs;
  }

  /** Log lines `{level, message}`, `console.*` included. */
  get logs() {
    return this.#host.logs;
  }

  /** The trigger instances `{rule, trigger, params}`: push, change or remove them between polls. */
  get instances() {
    return this.#host.instances;
  }

  /** A fresh instance of the sensor, as after a host restart: module loaded anew, `init` called, state kept. */
  async restart() {
    const loaded = await loadModule(this.#spec, this.#host);
    const guest = makeGuest(() => loaded.module, loaded.traceback);
    this.#call(() => guest.init(JSON.stringify(this.#spec.config)));
    this.#guest = guest;
  }

  /** One poll: the payloads it produced, each as the host stores it (its JSON parsed). */
  poll() {
    return this.pollEvents().map((event) => event.payload);
  }

  /** One poll: `{trigger, rule, payload}` per payload, `trigger` resolved as the host does. */
  pollEvents() {
    const seen = this.#host.wit.instances.current();
    return this.#call(() => this.#check(this.#guest.poll(), seen));
  }

  /**
   * Runs `fn` (a guest call, then the host's checks of its result) with the fake host installed.
   * Its state changes are kept only if everything passes. Throws a SensorError for what the
   * sensor threw, a PayloadError for a payload the host would refuse, and an Error for a
   * request no HTTP fixture answers.
   */
  #call(fn) {
    this.#checkInstances();
    try {
      const result = this.#host.run(fn);
      const unmatched = this.#host.http.takeUnmatched();
      if (unmatched) throw unmatched;
      this.#host.state.commit();
      return result;
    } catch (err) {
      this.#host.state.discard();
      const unmatched = this.#host.http.takeUnmatched();
      if (unmatched) throw unmatched;
      throw err instanceof Error ? err : new SensorError(this.ref, err);
    }
  }

  /** A pack's instances must fit their trigger's `param_schema`, as the host checks a rule's `trigger_params`. */
  #checkInstances() {
    const triggers = this.#spec.pack?.triggers;
    if (!triggers) return;
    for (const { rule, trigger, params = {} } of this.#host.instances) {
      if (!triggers.has(trigger)) throw new Error(`instance ${rule}: unknown trigger \`${trigger}\``);
      const [problem] = schemaErrors(triggers.get(trigger).params, params, 'trigger_params');
      if (problem) throw new Error(`instance ${rule}: ${problem.field}: ${problem.message}`);
    }
  }

  /** The host's checks of one poll's WIT payloads (see host/src/sandbox/instance.rs). */
  #check(raw, seen) {
    const { ref, triggers, limits, pack } = this.#spec;
    if (raw.length > limits.max_events_per_poll) {
      throw new PayloadError(ref, null, `too many payloads: ${raw.length} in one poll (limit ${limits.max_events_per_poll})`);
    }
    const instances = [...seen, ...this.#host.wit.instances.current()];
    return raw.map(({ trigger: named, rule, json }, index) => {
      const size = Buffer.byteLength(json);
      if (size > limits.max_payload_bytes) throw new PayloadError(ref, index, `payload too large: ${size} bytes (limit ${limits.max_payload_bytes})`);
      const payload = JSON.parse(json);
      if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
        throw new PayloadError(ref, index, 'a payload must be a JSON object');
      }
      let trigger = named;
      if (rule !== null) {
        const instance = instances.find((i) => i.rule === rule);
        if (!instance) {
          const known = this.#host.wit.instances.current().map((i) => i.rule);
          throw new PayloadError(ref, index, `rule \`${rule}\` is not an instance of this sensor (instances: [${known.join(', ')}])`);
        }
        if (named !== null && named !== instance.trigger) throw new PayloadError(ref, index, `rule \`${rule}\` is on trigger \`${instance.trigger}\`, not \`${named}\``);
        trigger = instance.trigger;
      }
      if (trigger === null) trigger = triggers.length === 1 ? triggers[0] : triggers.length === 0 ? '' : null;
      else if (triggers.length && !triggers.includes(trigger)) trigger = null;
      if (trigger === null) throw new PayloadError(ref, index, `undeclared trigger: payload is for \`${named ?? ''}\`, sensor declares [${triggers.join(', ')}]`);
      const errors = pack ? schemaErrors(pack.triggers.get(trigger)?.payload, payload, 'payload') : [];
      if (errors.length) {
        const list = errors.map((e) => `${e.field}: ${e.message}`).join('; ');
        throw new PayloadError(ref, index, `does not match the payload_schema of \`${trigger}\`: ${list}`, errors);
      }
      return { trigger, rule, payload };
    });
  }
}
