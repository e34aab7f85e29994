// Runs the SDK's component JavaScript in Node: the same esbuild bundles the components embed,
// with `attune:sensor/*` imports served by an in-memory fake host instead of the real one.

/** esbuild plugin: `attune:sensor/<iface>@0.2.0` reads `globalThis.attuneHost[<iface>]` per call. */
export const fakeHostPlugin = {
  name: 'fake-attune-host',
  setup(build) {
    build.onResolve({ filter: /^attune:sensor\// }, (args) => ({ path: args.path, namespace: 'fake-host' }));
    build.onLoad({ filter: /.*/, namespace: 'fake-host' }, (args) => {
      const iface = /^attune:sensor\/([\w-]+)@/.exec(args.path)[1];
      return { contents: `export default new Proxy({}, { get: (_, name) => globalThis.attuneHost.${iface}[name] });` };
    });
  },
};

/** Evaluates a bundle as an ES module. */
export const importBundle = (js) => import(`data:text/javascript;base64,${Buffer.from(js).toString('base64')}`);

/** What componentize-qjs throws in the guest when a host import returns `err(payload)`. */
function hostError(payload) {
  return Object.assign(new Error(typeof payload === 'string' ? payload : `${payload} (see error.payload)`), { payload });
}

/**
 * A fresh fake host, installed as `globalThis.attuneHost`: `files` maps paths to contents (a
 * string, or an object for a directory), `respond(request)` answers HTTP (a thrown `{tag, val}`
 * is an `http-error`), `rules` are the trigger instances `{rule, trigger, params}` (params an
 * object, or a string passed as is; change `host.rules` between polls), and `logs` / `requests`
 * record what the sensor did.
 */
export function installHost({ files = {}, rules = [], respond = () => ({ status: 200, headers: [], body: new Uint8Array() }) } = {}) {
  const store = new Map();
  const host = {
    logs: [],
    requests: [],
    rules,
    store,
    log: { log: (level, message) => host.logs.push([level, message]) },
    state: {
      get: (key) => store.get(key) ?? null,
      set: (key, value) => {
        if (value.length > 1000) throw hostError('state quota exceeded');
        store.set(key, value);
      },
      delete: (key) => store.delete(key),
      keys: () => [...store.keys()].sort(),
    },
    instances: {
      current: () =>
        host.rules.map(({ rule, trigger, params }) => ({ rule, trigger, params: typeof params === 'string' ? params : JSON.stringify(params) })),
    },
    clock: { nowMs: () => 1700000000000 },
    http: {
      send(request) {
        host.requests.push(request);
        try {
          return respond(request);
        } catch (err) {
          throw hostError(err);
        }
      },
    },
    fs: {
      listDir(path) {
        const dir = files[path];
        if (typeof dir !== 'object') throw hostError(`${path}: not a granted directory`);
        return Object.keys(dir)
          .sort()
          .map((name) => {
            const isDir = typeof dir[name] === 'object';
            return { name, isDir, size: isDir ? 0 : Buffer.byteLength(dir[name]), modifiedMs: 1000 };
          });
      },
      readFile(path) {
        if (typeof files[path] !== 'string') throw hostError(`${path}: not a granted file`);
        return new Uint8Array(Buffer.from(files[path]));
      },
    },
  };
  globalThis.attuneHost = host;
  return host;
}
