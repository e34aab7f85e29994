// Entry of the shared JavaScript runtime component (WIT world `source-runtime`): the host hands
// it a plain-source sensor through `sourceLoader.load`, then drives it through `guest`.
import * as sdk from '../index.js';
import { checkSensor, makeGuest, sensorError } from './glue.js';
import { evaluateSource, sourceTraceback } from './source.js';

let sensor = null;
let filename = '<sensor>';
const traceback = (stack) => sourceTraceback(stack, filename);

export const sourceLoader = {
  /**
   * Evaluates the sensor source (running its top-level code); called before `guest.init`.
   * QuickJS offers no compiled form for the host to cache, so the result is empty and the host
   * never passes `compiled`.
   */
  load(name, source, _compiled) {
    filename = name;
    try {
      sensor = checkSensor(evaluateSource(source, name, sdk), name);
    } catch (err) {
      throw sensorError(err, traceback);
    }
    return new Uint8Array(0);
  },
};

export const guest = makeGuest(() => {
  if (!sensor) throw new Error('no sensor source loaded: the host calls source-loader.load before init');
  return sensor;
}, traceback);
