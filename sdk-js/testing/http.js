// The fake of the host's outgoing HTTP: canned responses by method and URL, and the host's
// checks (URL, scheme, method, `capabilities.http`) with its errors.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { hostError } from './errors.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'];

/** One `capabilities.http` entry (`api.example.com`, `*.example.com`, `127.0.0.1:8080`, `[::1]`), as the host parses it. */
function hostPattern(entry) {
  const text = String(entry).trim().toLowerCase();
  if (text === '' || text.includes('/')) throw new Error(`capabilities.http: \`${entry}\`: give a host name, not a URL`);
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const [host, port] = bracketed
    ? [bracketed[1], bracketed[2]]
    : text.split(':').length === 2
      ? text.split(':')
      : [text, undefined];
  if (port !== undefined && !/^\d+$/.test(port)) throw new Error(`capabilities.http: \`${entry}\`: bad port \`${port}\``);
  const wildcard = host.startsWith('*.');
  return { text, host: wildcard ? host.slice(2) : host, wildcard, port: port === undefined ? null : Number(port) };
}

function allows(pattern, host, port) {
  const hostOk = pattern.wildcard ? host.endsWith(`.${pattern.host}`) : host === pattern.host;
  return hostOk && (pattern.port === null || pattern.port === port);
}

/** `"GET https://api.example.com/items"`: how fixtures are keyed and named in messages. */
const requestKey = (method, url) => `${method.toUpperCase()} ${normalize(url)}`;

function normalize(url) {
  try {
    return new URL(url).href;
  } catch {
    return url;
  }
}

/**
 * Fake HTTP. Fixtures are `{method = 'GET', url, status = 200, headers = {}, json | body}`, or
 * `{method, url, error, detail}` for a request that gets no response (`error` an `HttpError`
 * kind: `timeout`, `transport`, `too-large`, `invalid-request`, `denied`). A request matching no
 * fixture fails the call it was made in, naming the request and the fixtures there are.
 */
export class FakeHttp {
  #fixtures = new Map();
  #allowed = null;
  #denied = new Set();
  #unmatched = [];
  /** Every request the sensor made: `{method, url, headers, body}`, headers keyed by lower-case name, body text or null. */
  requests = [];

  /** `fixtures`: an array of fixtures, or the path (or file: URL) of a JSON file holding one. */
  constructor(fixtures = []) {
    this.add(fixtures);
  }

  /** Adds fixtures (an array, or a JSON file of one); a later fixture for the same method and URL replaces the earlier. */
  add(fixtures) {
    const file = fixtures instanceof URL ? fileURLToPath(fixtures) : typeof fixtures === 'string' ? fixtures : null;
    let list = fixtures;
    if (file !== null) {
      try {
        list = JSON.parse(readFileSync(file, 'utf8'));
      } catch (err) {
        throw new Error(`HTTP fixtures ${file}: ${err.message}`);
      }
      if (!Array.isArray(list)) throw new Error(`HTTP fixtures ${file}: must be a JSON array of {method, url, status, headers, json | body}`);
    }
    list.forEach(({ method = 'GET', url, ...response }, i) => {
      if (typeof url !== 'string') throw new Error(`HTTP fixture ${i}${file ? ` in ${file}` : ''}: needs a url`);
      this.on(method, url, response);
    });
    return this;
  }

  /** Answers `method url` with `response` (`{status, headers, json | body}` or `{error, detail}`). */
  on(method, url, response = {}) {
    this.#fixtures.set(requestKey(method, url), response);
    return this;
  }

  /** Makes `host` (`api.example.com`, `*.example.com`, `host:port`) not granted: requests to it get the host's `denied` error. */
  deny(host) {
    this.#denied.add(hostPattern(host));
    return this;
  }

  /** Grants only these `capabilities.http` entries (the manifest's); without a call, every host is granted. */
  allow(entries) {
    this.#allowed = entries.map(hostPattern);
    return this;
  }

  /** The request that matched no fixture during the last call, as an Error, and forgets it; null when there was none. */
  takeUnmatched() {
    const [first] = this.#unmatched;
    this.#unmatched = [];
    if (!first) return null;
    const known = [...this.#fixtures.keys()];
    return new Error(`no HTTP fixture for ${first}; fixtures: ${known.length ? known.join(', ') : 'none'}`);
  }

  /** The WIT `http.send`. */
  send({ method, url, headers, body }) {
    const verb = method.toUpperCase();
    this.requests.push({
      method: verb,
      url,
      headers: Object.fromEntries(headers.map(([name, value]) => [name.toLowerCase(), value])),
      body: body === null ? null : Buffer.from(body).toString('utf8'),
    });
    let parsed;
    try {
      parsed = new URL(url);
    } catch (err) {
      throw hostError({ tag: 'invalid-request', val: `${url}: ${err.message}` });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw hostError({ tag: 'invalid-request', val: `${url}: only http and https are supported` });
    }
    if (!METHODS.includes(verb)) throw hostError({ tag: 'invalid-request', val: `unsupported method \`${verb}\`` });
    const host = parsed.hostname.replace(/^\[|\]$/g, '');
    const port = Number(parsed.port || (parsed.protocol === 'https:' ? 443 : 80));
    const granted = this.#allowed === null || this.#allowed.some((p) => allows(p, host, port));
    if (!granted || [...this.#denied].some((p) => allows(p, host, port))) {
      const allowed = this.#allowed === null ? 'any host' : this.#allowed.map((p) => p.text).join(', ') || 'none';
      const list = this.#denied.size ? `${allowed} but ${[...this.#denied].map((p) => p.text).join(', ')}` : allowed;
      const val = `${host}:${port} is not an allowed host (allowed: ${list}); grant it in the sensor manifest's capabilities.http`;
      throw hostError({ tag: 'denied', val });
    }
    const key = requestKey(verb, url);
    const response = this.#fixtures.get(key);
    if (!response) {
      this.#unmatched.push(key);
      throw new Error(`no HTTP fixture for ${key}`);
    }
    if (response.error !== undefined) throw hostError({ tag: response.error, val: response.detail });
    const pairs = Array.isArray(response.headers) ? response.headers : Object.entries(response.headers ?? {});
    let content = response.body ?? '';
    if (response.json !== undefined) {
      content = JSON.stringify(response.json);
      if (!pairs.some(([name]) => name.toLowerCase() === 'content-type')) pairs.push(['content-type', 'application/json']);
    }
    return {
      status: response.status ?? 200,
      headers: pairs.map(([name, value]) => [name, String(value)]),
      body: typeof content === 'string' ? new Uint8Array(Buffer.from(content)) : content,
    };
  }
}
