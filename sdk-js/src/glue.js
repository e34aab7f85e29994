// The `guest` export (WIT interface `attune:sensor/guest`) around a sensor module, shared by
// `attune-sensor build` components and the plain-source runtime so both behave the same.
import { Emission } from '../index.js';
import { describe } from './describe.js';

/**
 * The WIT `sensor-error` record for anything a sensor threw: `{message: "Name: msg", traceback}`.
 * `traceback` maps the error's stack to what the sensor author should see (null for none).
 */
export function sensorError(err, traceback = (stack) => stack) {
  if (!(err instanceof Error)) return { message: `Uncaught ${describe(err)}`, traceback: null };
  return { message: `${err.name}: ${err.message}`, traceback: (err.stack && traceback(err.stack)) || null };
}

/** Checks that a sensor module has what the host will call, and names the file if not. */
export function checkSensor(module, filename) {
  if (typeof module.poll !== 'function') throw new Error(`${filename} defines no poll(config) function`);
  if (module.init !== undefined && typeof module.init !== 'function') throw new Error(`${filename}: init is not a function`);
  return module;
}

/** The WIT payload for the `index`th item a poll produced. */
function payload(item, index) {
  // No intermediate array to destructure: QuickJS destructures through the iterator protocol,
  // a cost every payload of every poll would pay.
  const emission = item instanceof Emission;
  const value = emission ? item.payload : item;
  let json;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new TypeError(`poll item ${index} cannot be serialized as JSON: ${err.message}`);
  }
  if (json === undefined) throw new TypeError(`poll item ${index} cannot be serialized as JSON: it is ${typeof value}`);
  return emission ? { trigger: item.trigger, rule: item.rule ?? null, json } : { trigger: null, rule: null, json };
}

/** Everything one `poll(config)` produced: a generator, an array (any iterable), or nothing. */
function payloads(result) {
  if (result === undefined || result === null) return [];
  if (typeof result.then === 'function') {
    throw new TypeError('poll(config) returned a Promise: sensors run synchronously (http.get returns the response), so drop `async`');
  }
  if (typeof result === 'string' || typeof result[Symbol.iterator] !== 'function') {
    throw new TypeError(`poll(config) returned ${typeof result}: yield each payload, or return an array of them`);
  }
  // A loop costs fewer instructions than Array.from(result, payload) in QuickJS.
  const out = [];
  for (const item of result) out.push(payload(item, out.length));
  return out;
}

/**
 * The `guest` export for the sensor module `getSensor()` returns (it throws if there is none);
 * `traceback` is as for `sensorError`. Whatever init or poll throws leaves as a `sensor-error`,
 * which the component returns as the `err` of the WIT result.
 */
export function makeGuest(getSensor, traceback) {
  let config;
  // Each method catches for itself, with no closures made per call: poll runs on every poll.
  return {
    init(configJson) {
      try {
        const sensor = getSensor();
        config = JSON.parse(configJson);
        sensor.init?.(config);
      } catch (err) {
        throw sensorError(err, traceback);
      }
    },
    poll() {
      try {
        return payloads(getSensor().poll(config));
      } catch (err) {
        throw sensorError(err, traceback);
      }
    },
  };
}
