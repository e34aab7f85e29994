// A fake host: the WIT interfaces `@attune/sensor` calls (see src/host/node.js), each backed
// by a fake a test can set up and inspect.
import { log } from '../index.js';
import { consoleFor } from '../src/console.js';
import { setHost } from '../src/host/node.js';
import { hostError } from './errors.js';
import { FakeFs } from './fs.js';
import { FakeHttp } from './http.js';

const MAX_KEY_BYTES = 256;
const MAX_VALUE_BYTES = 64 * 1024;
const MAX_KEYS = 1000;

/**
 * The sensor's state store, with the host's limits and messages. Writes made during a call are
 * kept apart until the call succeeds (`commit`), and dropped when it fails (`discard`), as the
 * host commits state only with the poll's payloads. Between calls, `get`/`getJson`/`toObject`
 * read what was committed and `set`/`setJson`/`delete` change it.
 */
export class FakeState {
  #committed = new Map();
  #pending = new Map(); // key -> value, or null for a deletion

  /** `initial`: `{key: value}`, strings as they are and other values as JSON. */
  constructor(initial = {}) {
    for (const [key, value] of Object.entries(initial)) this.#committed.set(key, typeof value === 'string' ? value : JSON.stringify(value));
  }

  get(key) {
    return this.#pending.has(key) ? this.#pending.get(key) : (this.#committed.get(key) ?? null);
  }

  getJson(key, dflt = null) {
    const text = this.get(key);
    return text === null ? dflt : JSON.parse(text);
  }

  set(key, value) {
    const size = Buffer.byteLength(key);
    if (size === 0 || size > MAX_KEY_BYTES) throw hostError(`state key must be 1 to ${MAX_KEY_BYTES} bytes`);
    if (Buffer.byteLength(value) > MAX_VALUE_BYTES) {
      throw hostError(`state value for \`${key}\` is ${Buffer.byteLength(value)} bytes (limit ${MAX_VALUE_BYTES})`);
    }
    if (this.get(key) === null && this.keys().length >= MAX_KEYS) throw hostError(`state is full (${MAX_KEYS} keys)`);
    this.#pending.set(key, value);
  }

  setJson(key, value) {
    this.set(key, JSON.stringify(value));
  }

  delete(key) {
    this.#pending.set(key, null);
  }

  keys() {
    const keys = new Set(this.#committed.keys());
    for (const [key, value] of this.#pending) (value === null ? keys.delete(key) : keys.add(key));
    return [...keys].sort();
  }

  /** Every key and its value (parsed as JSON with `{json: true}`). */
  toObject({ json = false } = {}) {
    return Object.fromEntries(this.keys().map((key) => [key, json ? this.getJson(key) : this.get(key)]));
  }

  commit() {
    for (const [key, value] of this.#pending) (value === null ? this.#committed.delete(key) : this.#committed.set(key, value));
    this.#pending.clear();
  }

  discard() {
    this.#pending.clear();
  }
}

/** The host clock: stands still unless set or advanced. */
export class FakeClock {
  #now;

  /** `start`: ms since the epoch, a Date or an ISO 8601 string (default: now). */
  constructor(start = Date.now()) {
    this.set(start);
  }

  nowMs() {
    return this.#now;
  }

  set(time) {
    const ms = time instanceof Date ? time.getTime() : typeof time === 'string' ? Date.parse(time) : time;
    if (!Number.isFinite(ms)) throw new TypeError(`FakeClock: ${JSON.stringify(time)} is not a time (ms since the epoch, a Date or an ISO 8601 string)`);
    this.#now = Math.floor(ms);
  }

  advance(ms) {
    this.#now += ms;
  }
}

/**
 * A fake host. Options: `http` (a FakeHttp, fixtures or a fixture file), `state` (a FakeState
 * or initial values), `clock` (a FakeClock or a start time), `fs` (a FakeFs, an in-memory tree,
 * or the path of a real directory to grant), `instances` (trigger instances
 * `{rule, trigger, params}`), `base` (what relative fs paths are relative to).
 */
export class FakeHost {
  /** Log lines, `{level, message}`, `console.*` included. */
  logs = [];

  constructor({ http = [], state = {}, clock = undefined, fs = {}, instances = [], base = process.cwd() } = {}) {
    this.http = http instanceof FakeHttp ? http : new FakeHttp(http);
    this.state = state instanceof FakeState ? state : new FakeState(state);
    this.clock = clock instanceof FakeClock ? clock : new FakeClock(clock);
    const now = () => this.clock.nowMs();
    this.fs = fs instanceof FakeFs ? fs : typeof fs === 'string' ? new FakeFs({ dirs: [fs], base, now }) : new FakeFs({ tree: fs, base, now });
    /** The trigger instances, changeable between polls: `{rule, trigger, params}`. */
    this.instances = instances;
    // The WIT interfaces, as src/host/node.js hands them to the SDK.
    this.wit = {
      clock: { nowMs: () => this.clock.nowMs() },
      fs: { listDir: (p) => this.fs.listDir(p), readFile: (p) => this.fs.readFile(p) },
      http: { send: (request) => this.http.send(request) },
      instances: {
        current: () =>
          [...this.instances]
            .sort((a, b) => (a.rule < b.rule ? -1 : a.rule > b.rule ? 1 : 0))
            .map(({ rule, trigger, params = {} }) => ({ rule, trigger, params: JSON.stringify(params) })),
      },
      log: { log: (level, message) => this.logs.push({ level, message }) },
      state: {
        get: (key) => this.state.get(key),
        set: (key, value) => this.state.set(key, value),
        delete: (key) => this.state.delete(key),
        keys: () => this.state.keys(),
      },
    };
  }

  /**
   * Runs `fn` with this host installed for `@attune/sensor`, and `console` writing to its log
   * as in a component; puts back what was there before when `fn` returns, or when the promise
   * it returns settles.
   */
  run(fn) {
    const previous = setHost(this.wit);
    const nodeConsole = globalThis.console;
    globalThis.console = consoleFor(log);
    const restore = () => {
      globalThis.console = nodeConsole;
      setHost(previous);
    };
    let result;
    try {
      result = fn();
    } catch (err) {
      restore();
      throw err;
    }
    if (typeof result?.then !== 'function') {
      restore();
      return result;
    }
    return result.finally(restore);
  }
}
