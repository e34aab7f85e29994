import { describe } from './describe.js';

/** A `console` whose methods write one line each through `log` (the SDK's `log` object). */
export function consoleFor(log) {
  return Object.fromEntries(
    [['log', 'info'], ['info', 'info'], ['debug', 'debug'], ['warn', 'warn'], ['error', 'error']].map(([method, level]) => [
      method,
      (...args) => log[level](args.map(describe).join(' ')),
    ]),
  );
}
