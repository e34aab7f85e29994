// @attune/sensor: what a JavaScript sensor sees of the host.
//
// Thin, idiomatic wrappers over the `attune:sensor/*@0.2.0` WIT imports (see wit/sensor.wit),
// reached through `#host` alone: the WIT imports in a component (src/host/component.js), and
// in plain Node whatever host was installed (src/host/node.js; @attune/sensor/testing installs
// fakes). When a host import returns `err`, componentize-qjs throws an Error whose message is
// the error string (state, fs) and whose `payload` holds the WIT value (the `http-error` variant).
import { host } from '#host';
import { consoleFor } from './src/console.js';
import { describe } from './src/describe.js';
import { decodeUtf8, encodeUtf8 } from './src/utf8.js';

/** Host log lines, tagged with the sensor's ref; the host bounds their rate and size. */
export const log = Object.fromEntries(
  ['trace', 'debug', 'info', 'warn', 'error'].map((level) => [level, (message) => host.log.log(level, describe(message))]),
);

// QuickJS has no console; sensors (and bundled npm code) that use it reach the host log.
globalThis.console ??= consoleFor(log);

/** The sensor's own key/value store, kept across instance (and host) restarts. */
export const state = {
  get: (key) => host.state.get(key),
  set(key, value) {
    if (typeof value !== 'string') {
      throw new TypeError(`state.set(${JSON.stringify(key)}) needs a string value; use state.setJson for other values`);
    }
    host.state.set(key, value);
  },
  delete: (key) => host.state.delete(key),
  keys: () => host.state.keys(),
  /** The JSON value stored under `key`, or `dflt` when there is none. */
  getJson(key, dflt = null) {
    const text = state.get(key);
    return text === null ? dflt : JSON.parse(text);
  },
  setJson: (key, value) => state.set(key, JSON.stringify(value)),
};

/** Host wall-clock time. */
export const clock = {
  nowMs: () => host.clock.nowMs(),
};

/** Thrown by `http.*` when no response came back; `kind` is the WIT `http-error` case. */
export class HttpError extends Error {
  constructor(kind, message, detail) {
    super(message);
    this.name = 'HttpError';
    this.kind = kind;
    this.detail = detail;
  }
}

function httpError(method, url, { tag, val }) {
  const why = {
    denied: `host not allowed by the sensor's capabilities.http (${val})`,
    'invalid-request': `invalid request: ${val}`,
    timeout: 'timed out',
    'too-large': `response body larger than the host's cap of ${val} bytes`,
    transport: val,
  }[tag];
  return new HttpError(tag, `${method} ${url}: ${why ?? tag}`, val);
}

/** The host's response, with headers as an object keyed by lower-case name. */
function response({ status, headers, body: bytes }) {
  const byName = {};
  for (const [name, value] of headers) {
    const key = name.toLowerCase();
    // Repeated headers are joined as HTTP allows (RFC 9110 section 5.3).
    byName[key] = key in byName ? `${byName[key]}, ${value}` : value;
  }
  return {
    status,
    headers: byName,
    body: bytes,
    text: () => decodeUtf8(bytes),
    json: () => JSON.parse(decodeUtf8(bytes)),
  };
}

/** Outgoing HTTP through the host: only hosts in the manifest's `capabilities.http` answer. */
export const http = {
  /**
   * Sends one request and returns the whole response; any status is a response, not an error.
   * `body` may be a string or Uint8Array; `json` is serialized and sets `content-type`.
   */
  request({ method = 'GET', url, headers = {}, body, json, timeoutMs } = {}) {
    const pairs = Array.isArray(headers) ? [...headers] : Object.entries(headers);
    if (json !== undefined) {
      body = JSON.stringify(json);
      if (!pairs.some(([name]) => name.toLowerCase() === 'content-type')) pairs.push(['content-type', 'application/json']);
    }
    const verb = method.toUpperCase();
    const request = {
      method: verb,
      url,
      headers: pairs.map(([name, value]) => [name, String(value)]),
      body: body === undefined || body === null ? null : typeof body === 'string' ? encodeUtf8(body) : body,
      timeoutMs: timeoutMs ?? null,
    };
    try {
      return response(host.http.send(request));
    } catch (err) {
      throw err.payload?.tag ? httpError(verb, url, err.payload) : err;
    }
  },
  get: (url, opts = {}) => http.request({ ...opts, method: 'GET', url }),
  post: (url, opts = {}) => http.request({ ...opts, method: 'POST', url }),
};

/** Read-only access to the directories in the manifest's `capabilities.paths`. */
export const fs = {
  /** Entries of a directory, sorted by name: `{name, isDir, size, modifiedMs}`. */
  listDir: (path) => host.fs.listDir(path),
  readFile: (path) => host.fs.readFile(path),
  readText: (path) => decodeUtf8(fs.readFile(path)),
};

/** A payload addressed to one trigger, and to one rule on it when `rule` is not null; see `emit`. */
export class Emission {
  constructor(trigger, payload, rule = null) {
    this.trigger = trigger;
    this.payload = payload;
    this.rule = rule;
  }
}

/**
 * Addresses `payload` to the trigger `triggerRef` (`pack.name`), and with `{rule}` to that one
 * rule on it: yield (or return in the list) what this returns. Needed only by sensors that
 * declare more than one trigger or address single rules (`instance.emit` does the latter).
 */
export function emit(triggerRef, payload, { rule = null } = {}) {
  if (typeof triggerRef !== 'string' || triggerRef === '') {
    throw new TypeError('emit(triggerRef, payload) needs a trigger ref such as "mypack.my_trigger"');
  }
  if (rule !== null && (typeof rule !== 'string' || rule === '')) {
    throw new TypeError('emit(triggerRef, payload, {rule}) needs rule to be a rule ref such as "mypack.my_rule", or null');
  }
  return new Emission(triggerRef, payload, rule);
}

/**
 * Trigger instances: the enabled rules on the sensor's triggers, each with its `trigger_params`.
 * Rules come and go while the sensor runs, so call `instances.list()` on every poll.
 */
export const instances = {
  /** Sorted by rule ref: `{rule, trigger, params, emit(payload)}`, `params` parsed. */
  list: () => host.instances.current().map(instance),
};

function instance({ rule, trigger, params: json }) {
  // The host checks trigger_params when a rule is saved; anything else is a host bug, named here.
  const params = JSON.parse(json);
  const kind = params === null ? 'null' : Array.isArray(params) ? 'array' : typeof params;
  if (kind !== 'object') throw new TypeError(`trigger_params of rule ${rule} must be a JSON object, not ${kind}`);
  return { rule, trigger, params, emit: (payload) => new Emission(trigger, payload, rule) };
}
