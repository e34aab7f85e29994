// What the kit throws, and what its fakes throw into the sensor as the host's errors.

/** What componentize-qjs throws in the guest when a host import returns `err(payload)`. */
export function hostError(payload) {
  return Object.assign(new Error(typeof payload === 'string' ? payload : `${payload.tag}: ${payload.val}`), { payload });
}

/**
 * The sensor's `init` or `poll` threw. `message` reads as `attune-host sensor run` reports it
 * (`pack.sensor: sensor error: Error: HTTP 503`, the traceback below); `sensorMessage` is the
 * WIT `sensor-error` message (`Error: HTTP 503`) and `traceback` its frames in the author's
 * files, or null.
 */
export class SensorError extends Error {
  constructor(sensorRef, { message, traceback }) {
    super(`${sensorRef}: sensor error: ${message}${traceback ? `\n${traceback}` : ''}`);
    this.name = 'SensorError';
    this.sensorMessage = message;
    this.traceback = traceback;
  }
}

/**
 * A poll produced a payload the host would refuse (the whole poll is then refused and its state
 * changes dropped, as the host does). `index` is the payload's place in the poll (null when the
 * poll made too many) and `errors` the schema problems, each `{field, message}` (`field` such as
 * `payload.items[0].id`).
 */
export class PayloadError extends Error {
  constructor(sensorRef, index, reason, errors = []) {
    super(`${sensorRef}: ${index === null ? '' : `payload ${index}: `}${reason}`);
    this.name = 'PayloadError';
    this.index = index;
    this.errors = errors;
  }
}
