// What the test kit reads of a pack, as attune-host reads it: the sensor to run with its
// resolved config, grants and limits, and the pack's triggers with their JSON Schemas. Every
// error names the file (and the field). `attune-host pack validate` checks the rest.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import Ajv2019 from 'ajv/dist/2019.js';
import Ajv2020 from 'ajv/dist/2020.js';
import AjvDraft7 from 'ajv';
import { parse as parseYaml } from 'yaml';

/** A sensor's `limits` when its manifest leaves them out, or it has none (the host's defaults). */
export const DEFAULT_LIMITS = { max_payload_bytes: 262144, max_events_per_poll: 1000 };

function readYaml(file) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: ${err.message}`);
  }
  try {
    return parseYaml(text) ?? {};
  } catch (err) {
    throw new Error(`${file}: ${err.message}`);
  }
}

/** The `.yaml`/`.yml` files of `dir`, sorted, as the host lists them. */
function yamlFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => path.join(dir, name));
}

/** `name` or `pack.name` as `pack.name`. */
const qualify = (pack, ref) => (ref.includes('.') ? ref : `${pack}.${ref}`);

/**
 * The sensor to run from `target` (a pack directory or a sensor manifest) and its pack:
 * `{ref, triggers, runtime, entry, manifest, config, http, paths, limits, pack}`, `sensor`
 * picking one of several (a name or ref).
 */
export function loadPackSensor(target, sensor) {
  const isDir = statSync(target).isDirectory();
  const packDir = isDir ? target : path.dirname(path.dirname(target));
  if (!existsSync(path.join(packDir, 'pack.yaml'))) {
    throw new Error(`${target}: a sensor manifest must sit in <pack>/sensors/ next to <pack>/pack.yaml`);
  }
  const pack = loadPack(packDir);
  let chosen;
  if (!isDir) {
    chosen = pack.sensors.find((s) => path.resolve(s.manifest) === path.resolve(target));
    if (!chosen) throw new Error(`${target}: not found among the pack's sensors`);
  } else if (sensor !== undefined) {
    chosen = pack.sensors.find((s) => s.ref === sensor || s.ref === `${pack.ref}.${sensor}`);
    if (!chosen) throw new Error(`${packDir}: no sensor \`${sensor}\` (sensors: ${pack.sensors.map((s) => s.ref).join(', ')})`);
  } else if (pack.sensors.length === 1) {
    [chosen] = pack.sensors;
  } else {
    const which = pack.sensors.length ? `several sensors, pick one with {sensor} (${pack.sensors.map((s) => s.ref).join(', ')})` : 'the pack has no sensors';
    throw new Error(`${packDir}: ${which}`);
  }
  return { ...chosen, pack };
}

function loadPack(dir) {
  const file = path.join(dir, 'pack.yaml');
  const manifest = readYaml(file);
  if (typeof manifest.ref !== 'string') throw new Error(`${file}: ref: missing`);
  const ref = manifest.ref;
  const triggers = new Map();
  for (const triggerFile of yamlFiles(path.join(dir, 'triggers'))) {
    const trigger = readYaml(triggerFile);
    const triggerRef = qualify(ref, String(trigger.ref));
    triggers.set(triggerRef, {
      ref: triggerRef,
      payload: compileSchema(trigger.payload_schema, triggerFile, 'payload_schema'),
      params: compileSchema(trigger.param_schema, triggerFile, 'param_schema'),
    });
  }
  const context = { pack: { config: manifest.config ?? {} } };
  const sensors = yamlFiles(path.join(dir, 'sensors')).map((manifestFile) => {
    const s = readYaml(manifestFile);
    let config;
    try {
      config = render(s.config ?? {}, context, '');
    } catch (err) {
      throw new Error(`${manifestFile}: config: ${err.message}`);
    }
    return {
      ref: qualify(ref, String(s.ref)),
      manifest: manifestFile,
      triggers: s.triggers ?? [],
      runtime: s.runtime,
      entry: path.join(path.dirname(manifestFile), String(s.entry)),
      config,
      http: s.capabilities?.http ?? [],
      paths: (s.capabilities?.paths ?? []).map((p) => path.resolve(dir, p)),
      limits: { ...DEFAULT_LIMITS, ...s.limits },
    };
  });
  const rules = yamlFiles(path.join(dir, 'rules')).map(readYaml);
  return { dir, ref, triggers, sensors, rules };
}

// ---- JSON Schema ---------------------------------------------------------------------------

/**
 * The host's `jsonschema` crate picks the draft from `$schema` and takes 2020-12 without one;
 * so do these. `format` is an annotation only (as the crate has it for 2019-09 and 2020-12),
 * and unknown keywords are allowed, as there.
 */
const OPTIONS = { allErrors: true, strict: false, validateFormats: false };
const DRAFTS = {
  'json-schema.org/draft/2020-12/schema': Ajv2020,
  'json-schema.org/schema': Ajv2020,
  'json-schema.org/draft/2019-09/schema': Ajv2019,
  'json-schema.org/draft-07/schema': AjvDraft7,
};
const validators = new Map();

/** A check of values against `schema` (null for none: an absent, null or `{}` schema accepts anything). */
export function compileSchema(schema, file, field) {
  if (schema === undefined || schema === null || (typeof schema === 'object' && Object.keys(schema).length === 0)) return null;
  const uri = typeof schema.$schema === 'string' ? schema.$schema.replace(/^https?:\/\//, '').replace(/#$/, '') : 'json-schema.org/schema';
  const Ajv = DRAFTS[uri];
  if (!Ajv) throw new Error(`${file}: ${field}: $schema ${schema.$schema} is not supported by the test kit (use 2020-12, 2019-09 or draft-07)`);
  if (!validators.has(Ajv)) validators.set(Ajv, new Ajv(OPTIONS));
  const ajv = validators.get(Ajv);
  // Ajv keeps schemas by `$id`: the pack's file may have changed since it was last loaded.
  if (typeof schema.$id === 'string') ajv.removeSchema(schema.$id);
  try {
    return ajv.compile(schema);
  } catch (err) {
    throw new Error(`${file}: ${field}: ${err.message}`);
  }
}

/**
 * The problems `validate` (from `compileSchema`) finds in `value`, each `{field, message}` with
 * `field` the place under `root`: `payload.items[2].id`.
 */
export function schemaErrors(validate, value, root) {
  if (!validate || validate(value)) return [];
  return validate.errors.map((error) => {
    let field = root + error.instancePath.split('/').slice(1).map((key) => (/^\d+$/.test(key) ? `[${key}]` : `.${key.replace(/~1/g, '/').replace(/~0/g, '~')}`)).join('');
    const key = error.params.missingProperty ?? error.params.additionalProperty ?? error.params.unevaluatedProperty;
    if (key !== undefined) field += `.${key}`;
    const message = error.keyword === 'required' ? 'is required' : key !== undefined ? 'is not allowed by the schema' : error.message;
    return { field, message };
  });
}

// ---- Sensor config templates ---------------------------------------------------------------

/**
 * `value` with its `{{ path }}` templates filled from `context`, as the host renders sensor
 * config: a string that is one template takes the value's JSON type, templates inside longer
 * strings render as text (non-strings as JSON), and a path naming nothing is an error.
 */
export function render(value, context, at) {
  if (Array.isArray(value)) return value.map((v, i) => render(v, context, `${at}[${i}]`));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v, context, at ? `${at}.${k}` : k)]));
  }
  if (typeof value !== 'string' || !value.includes('{{')) return value;
  const whole = /^\s*\{\{\s*([^{}]*?)\s*\}\}\s*$/.exec(value);
  if (whole) return lookup(whole[1], context, at);
  return value.replace(/\{\{\s*([^{}]*?)\s*\}\}/g, (_, p) => {
    const found = lookup(p, context, at);
    return typeof found === 'string' ? found : JSON.stringify(found);
  });
}

function lookup(expression, context, at) {
  let current = context;
  for (const [, key, index] of expression.matchAll(/([^.[\]\s]+)|\[(\d+)\]/g)) {
    current = index !== undefined ? (Array.isArray(current) ? current[Number(index)] : undefined) : current !== null && typeof current === 'object' && !Array.isArray(current) ? current[key] : undefined;
  }
  if (current === undefined) throw new Error(`${at ? `${at}: ` : ''}template \`{{ ${expression} }}\` names a missing value`);
  return current;
}
