// Types for @attune/sensor/testing (testing/index.js).

import type { DirEntry, HttpErrorKind, OutgoingRequest, IncomingResponse, LogLevel } from '../index.js';

/** A path as a string, or a `file:` URL such as `new URL('..', import.meta.url)`. */
export type PathLike = string | URL;

/** One canned HTTP answer. */
export interface HttpResponseFixture {
  /** Default 200. */
  status?: number;
  headers?: Record<string, string | number> | [string, string | number][];
  /** Sent as JSON, with `content-type: application/json` unless a content-type is given. */
  json?: unknown;
  body?: string | Uint8Array;
}

/** No response: the sensor's `http.*` throws `HttpError` with this `kind` and `detail`. */
export interface HttpErrorFixture {
  error: HttpErrorKind;
  detail?: string | number;
}

/** An answer for the request `method url` (exact URL, query included). */
export type HttpFixture = { method?: string; url: string } & (HttpResponseFixture | HttpErrorFixture);

/** A request the sensor made, as the fake saw it. */
export interface RecordedRequest {
  method: string;
  url: string;
  /** Keyed by lower-case name. */
  headers: Record<string, string>;
  /** The body as UTF-8 text, or null. */
  body: string | null;
}

export declare class FakeHttp {
  /** `fixtures`: an array, or the path of a JSON file holding one. */
  constructor(fixtures?: HttpFixture[] | PathLike);
  /** Every request the sensor made. */
  readonly requests: RecordedRequest[];
  /** Adds fixtures; a later one for the same method and URL replaces the earlier. */
  add(fixtures: HttpFixture[] | PathLike): this;
  on(method: string, url: string, response?: HttpResponseFixture | HttpErrorFixture): this;
  /** Makes a host (`api.example.com`, `*.example.com`, `host:port`) not granted: the sensor gets HttpError `denied`. */
  deny(host: string): this;
  /** Grants only these `capabilities.http` entries (a pack sensor gets its manifest's). */
  allow(entries: string[]): this;
  /** The WIT `http.send`. */
  send(request: OutgoingRequest): IncomingResponse;
}

/** The state store; writes of a call are kept only when the call succeeds. */
export declare class FakeState {
  /** Strings as they are, other values as JSON. */
  constructor(initial?: Record<string, unknown>);
  get(key: string): string | null;
  getJson<T = any>(key: string, dflt?: T): T;
  set(key: string, value: string): void;
  setJson(key: string, value: unknown): void;
  delete(key: string): void;
  keys(): string[];
  /** Every key and value; with `{json: true}` the values parsed. */
  toObject(options?: { json?: boolean }): Record<string, any>;
  commit(): void;
  discard(): void;
}

/** A time: ms since the epoch, a Date or an ISO 8601 string. */
export type TimeLike = number | Date | string;

/** The host clock; it stands still unless set or advanced. */
export declare class FakeClock {
  /** Default: now. */
  constructor(start?: TimeLike);
  nowMs(): number;
  set(time: TimeLike): void;
  advance(ms: number): void;
}

/** A directory's contents: file names to text or bytes, directory names to their contents. */
export interface FsTree {
  [name: string]: string | Uint8Array | FsTree;
}

export declare class FakeFs {
  /**
   * `tree`: granted directories (absolute, or relative to `base`) and what is in them; or
   * `dirs`: real directories to grant. `now` gives the modification time of what `write` writes.
   */
  constructor(options?: { tree?: FsTree | null; dirs?: string[]; base?: string; now?: () => number });
  /** In memory only: writes a file, making its directories. */
  write(path: string, content: string | Uint8Array): void;
  /** In memory only: removes a file or a directory. */
  remove(path: string): void;
  listDir(path: string): DirEntry[];
  readFile(path: string): Uint8Array;
}

/** A trigger instance: a rule on one of the sensor's triggers, with its `trigger_params`. */
export interface TestInstance {
  rule: string;
  trigger: string;
  params?: Record<string, unknown>;
}

export interface LogLine {
  level: LogLevel;
  message: string;
}

export interface FakeHostOptions {
  http?: FakeHttp | HttpFixture[] | PathLike;
  state?: FakeState | Record<string, unknown>;
  clock?: FakeClock | TimeLike;
  /** A tree in memory, or the path of a real directory to grant. */
  fs?: FakeFs | FsTree | string;
  instances?: TestInstance[];
  /** What relative fs paths are relative to (a pack's directory). */
  base?: string;
}

export declare class FakeHost {
  constructor(options?: FakeHostOptions);
  readonly http: FakeHttp;
  readonly state: FakeState;
  readonly clock: FakeClock;
  readonly fs: FakeFs;
  instances: TestInstance[];
  readonly logs: LogLine[];
  /** The WIT interfaces as `@attune/sensor` calls them. */
  readonly wit: Record<'clock' | 'fs' | 'http' | 'instances' | 'log' | 'state', any>;
  /** Runs `fn` with this host (and a `console` writing to its log) installed. */
  run<T>(fn: () => T): T;
}

export interface LoadOptions extends Omit<FakeHostOptions, 'base'> {
  /** Which sensor of a pack with several: its name or ref. */
  sensor?: string;
  /** The file a `runtime: component` sensor is built from (.ts or .js). */
  source?: PathLike;
  /** Bundle a .js file with its npm imports (as `attune-sensor build`) instead of running it as plain source. */
  bundle?: boolean;
  /** Merged over the manifest's config. */
  config?: Record<string, unknown>;
}

/** A payload as the host stores it: its trigger, the one rule it is for (or null), the JSON. */
export interface TestEvent<T = any> {
  trigger: string;
  rule: string | null;
  payload: T;
}

export declare class TestSensor {
  readonly ref: string;
  readonly config: Record<string, any>;
  readonly http: FakeHttp;
  readonly state: FakeState;
  readonly clock: FakeClock;
  readonly fs: FakeFs;
  readonly logs: LogLine[];
  /** Change between polls. */
  readonly instances: TestInstance[];
  /** One poll's payloads. Throws SensorError, PayloadError, or Error for a request without a fixture. */
  poll<T = any>(): T[];
  /** One poll's payloads with their trigger and rule. */
  pollEvents<T = any>(): TestEvent<T>[];
  /** A fresh instance (module loaded anew, `init` called), the state kept. */
  restart(): Promise<void>;
}

/**
 * Runs `attune-host sensor test RECORDING` (ATTUNE_HOST, else PATH) on a recording made with
 * `attune-host sensor run --record`; returns the host's report, throws naming the first difference.
 */
export declare function replay(recording: PathLike): string;

/** A pack directory, a sensor manifest, or a .js (plain source) or .ts file. */
export declare function loadSensor(target: PathLike, options?: LoadOptions): Promise<TestSensor>;

/** What the sensor threw; `message` reads as `attune-host sensor run` prints it. */
export declare class SensorError extends Error {
  name: 'SensorError';
  /** The WIT sensor-error message: `Error: HTTP 503`. */
  sensorMessage: string;
  /** The frames in the author's files, or null. */
  traceback: string | null;
}

/** A payload the host would refuse. */
export declare class PayloadError extends Error {
  name: 'PayloadError';
  /** The payload's place in the poll; null when the poll made too many. */
  index: number | null;
  /** Schema problems: `field` such as `payload.items[0].id`. */
  errors: { field: string; message: string }[];
}
