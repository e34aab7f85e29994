// Types for @attune/sensor (index.js) and the records of wit/sensor.wit as JavaScript sees them.

/** A JSON value, as a payload, a config or a state value holds. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

// ---- What a sensor module exports ----------------------------------------------------------

/** Called once per fresh instance with the sensor's resolved config (optional). */
export type InitFunction<Config = any> = (config: Config) => void;

/**
 * Called on every poll with the same config: yield (or return in an array) one item per payload;
 * a plain value goes to the sensor's only trigger, an `emit(..)` to the trigger (and rule) it
 * names, an `instance.emit(..)` to that instance's rule.
 */
export type PollFunction<Config = any> = (config: Config) => Iterable<unknown> | void | null;

// ---- WIT records (attune:sensor@0.2.0) -----------------------------------------------------

/** `types.payload`: what `poll` hands the host per item. */
export interface Payload {
  trigger: string | null;
  /** The one rule this payload is for; null for every enabled rule on the trigger. */
  rule: string | null;
  json: string;
}

/** `types.sensor-error`: how a thrown error reaches the host, e.g. `TypeError: bad item`. */
export interface SensorError {
  message: string;
  traceback: string | null;
}

/** `instances.instance`, as the host hands it over (`params` still serialized). */
export interface InstanceRecord {
  rule: string;
  trigger: string;
  /** The rule's `trigger_params`: one JSON object, serialized. */
  params: string;
}

/** `log.level`. */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** `fs.dir-entry`. */
export interface DirEntry {
  name: string;
  isDir: boolean;
  /** Bytes. */
  size: number;
  /** Milliseconds since the Unix epoch. */
  modifiedMs: number;
}

/** `http.outgoing-request`. */
export interface OutgoingRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array | null;
  timeoutMs: number | null;
}

/** `http.incoming-response`. */
export interface IncomingResponse {
  status: number;
  headers: [string, string][];
  body: Uint8Array;
}

/** The cases of `http.http-error`. */
export type HttpErrorKind = 'denied' | 'invalid-request' | 'timeout' | 'too-large' | 'transport';

// ---- The SDK -------------------------------------------------------------------------------

/** Lines in the host's log, tagged with the sensor's ref. `console.*` also lands here. */
export declare const log: Record<LogLevel, (message: unknown) => void>;

/** The sensor's own key/value store; values survive instance and host restarts. */
export declare const state: {
  get(key: string): string | null;
  /** Throws when the value is not a string or the sensor's state quota would be exceeded. */
  set(key: string, value: string): void;
  /** Removing a missing key is fine. */
  delete(key: string): void;
  /** Every key, sorted. */
  keys(): string[];
  /** The parsed JSON value under `key`, or `dflt` (default null) when there is none. */
  getJson<T = any>(key: string, dflt?: T): T;
  setJson(key: string, value: unknown): void;
};

export declare const clock: {
  /** Host wall-clock time, milliseconds since the Unix epoch. */
  nowMs(): number;
};

export interface RequestOptions {
  /** Default `GET`; upper-cased. */
  method?: string;
  /** Header names keep their case on the way out. */
  headers?: Record<string, string | number> | [string, string | number][];
  /** A string is sent as UTF-8. */
  body?: string | Uint8Array | null;
  /** Sent as the JSON body, with `content-type: application/json` unless a content-type is given. */
  json?: unknown;
  /** Capped by the host's maximum and the poll deadline. */
  timeoutMs?: number;
}

export interface Response {
  status: number;
  /** Lower-case names; repeated headers joined with `, `. */
  headers: Record<string, string>;
  body: Uint8Array;
  /** The body decoded as UTF-8. */
  text(): string;
  /** The body parsed as JSON. */
  json<T = any>(): T;
}

/** Thrown by `http.*` when there is no response (any HTTP status is a response). */
export declare class HttpError extends Error {
  name: 'HttpError';
  kind: HttpErrorKind;
  /** The host's detail: the denied host, the reason, or the size cap in bytes. */
  detail: string | number | undefined;
}

/** Outgoing HTTP through the host, to the hosts in the manifest's `capabilities.http` only. */
export declare const http: {
  request(options: RequestOptions & { url: string }): Response;
  get(url: string, options?: Omit<RequestOptions, 'method'>): Response;
  post(url: string, options?: Omit<RequestOptions, 'method'>): Response;
};

/** Read-only files under the manifest's `capabilities.paths`; errors throw Error with the host's message. */
export declare const fs: {
  /** Sorted by name. */
  listDir(path: string): DirEntry[];
  readFile(path: string): Uint8Array;
  /** The file decoded as UTF-8. */
  readText(path: string): string;
};

/** A payload addressed to one trigger, and to one rule on it unless `rule` is null: what `emit` returns. */
export declare class Emission<T = unknown> {
  readonly trigger: string;
  readonly payload: T;
  readonly rule: string | null;
}

export interface EmitOptions {
  /** A rule ref (`pack.name`): only that rule sees the payload. Null or absent: every enabled rule on the trigger. */
  rule?: string | null;
}

/** Addresses `payload` to the trigger `triggerRef` (`pack.name`), and optionally one rule on it; yield what it returns. */
export declare function emit<T>(triggerRef: string, payload: T, options?: EmitOptions): Emission<T>;

/** One enabled rule on one of the sensor's triggers, with its parsed `trigger_params`. */
export interface Instance<Params = Record<string, any>> {
  /** The rule's ref (`pack.name`). */
  readonly rule: string;
  /** The trigger ref the rule listens on (one of the sensor's triggers). */
  readonly trigger: string;
  /** Checked by the host against the trigger's `param_schema`; its defaults are not filled in. */
  readonly params: Params;
  /** `payload` addressed to this rule alone, on its trigger; yield what it returns. */
  emit<T>(payload: T): Emission<T>;
}

/** Trigger instances: the enabled rules on the sensor's triggers. Rules change while the sensor runs: list them on every poll. */
export declare const instances: {
  /** Sorted by rule ref. */
  list<Params = Record<string, any>>(): Instance<Params>[];
};
