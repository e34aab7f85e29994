// The host in plain Node, where there is no component: whatever `setHost` installed, such as
// the fakes of `@attune/sensor/testing`. `host.<interface>` is looked up on every call, so the
// SDK's functions reach the host installed at the time they run.

let current = null;

/**
 * Installs `next` (an object with the WIT interfaces `clock`, `fs`, `http`, `instances`, `log`,
 * `state`, each shaped as componentize-qjs binds them) and returns the host it replaces.
 */
export function setHost(next) {
  const previous = current;
  current = next;
  return previous;
}

export const host = new Proxy(
  {},
  {
    get(_, iface) {
      if (current === null) {
        throw new Error(
          `@attune/sensor: no host to call (${String(iface)}); sensors run inside attune-host, and in Node under @attune/sensor/testing`,
        );
      }
      return current[iface];
    },
  },
);
