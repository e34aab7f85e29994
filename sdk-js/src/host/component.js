// The host as a sensor component sees it: the `attune:sensor/*@0.2.0` WIT imports, which
// componentize-qjs binds when the component is built. `attune-sensor build` picks this file for
// `#host` (package.json `imports`, condition `attune-component`); plain Node gets ./node.js.
import clock from 'attune:sensor/clock@0.2.0';
import fs from 'attune:sensor/fs@0.2.0';
import http from 'attune:sensor/http@0.2.0';
import instances from 'attune:sensor/instances@0.2.0';
import log from 'attune:sensor/log@0.2.0';
import state from 'attune:sensor/state@0.2.0';

export const host = { clock, fs, http, instances, log, state };
