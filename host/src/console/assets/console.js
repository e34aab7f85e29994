// The operator console: a hash-routed page over the JSON API (/api/v1). No framework, no build:
// what the page shows comes from the API with the token signed in with, which lives in this
// tab's sessionStorage and is sent only in the Authorization header (never in a URL).
'use strict';

const TOKEN_KEY = 'attune.token';
// Rows a live table keeps; older ones leave as new ones come.
const TAIL_ROWS = 100;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes (`on*` functions become listeners) and children. */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    else element.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) element.append(child);
  }
  return element;
}

// ---- API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.field = body?.error?.field;
  }
}

const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  admin: false,
};

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && session.token) {
    signOut('The token was refused; sign in again.');
  }
  const type = response.headers.get('Content-Type') || '';
  const data = response.status === 204 ? null : type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const get = (path) => api('GET', path);

// ---- Formatting -------------------------------------------------------------------------------

/** A time in the browser's zone, with UTC in its title. */
function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: `${date.toISOString()} (UTC)` }, date.toLocaleString());
}

const json = (value) => h('pre', {}, JSON.stringify(value, null, 2));
const stateLabel = (state) => h('span', { class: `state state-${state}` }, state.replace('_', ' '));
const yesNo = (value, yes = 'yes', no = 'no') => h('span', { class: value ? 'yes' : 'no' }, value ? yes : no);

function table(columns, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class || false }, c.label)))),
    h('tbody', {}, rows));
}

// ---- Prometheus text, for rates and backlog ---------------------------------------------------

/** `{name: [{labels, value}]}` from the Prometheus text format. */
function parseMetrics(text) {
  const samples = {};
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    (samples[m[1]] ||= []).push({ labels, value: Number(m[3]) });
  }
  return samples;
}

const sum = (samples, name) => (samples[name] || []).reduce((total, s) => total + s.value, 0);

// ---- A small YAML subset: what rules are written in ------------------------------------------
// Block mappings and sequences, plain and quoted scalars, flow collections written as JSON
// (`[1, 2]`, `{a: 1}` with bare keys), comments. Each path's line is kept, so an API error
// naming a field (`conditions.all[0].operator`) points at its line.

class YamlError extends Error {
  constructor(line, message) { super(`line ${line}: ${message}`); this.line = line; }
}

function scalar(text, line) {
  const t = text.trim();
  if (t === '' || t === '~' || t === 'null') return null;
  if (t === 'true') return true;
  if (t === 'false') return false;
  if (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(t)) return Number(t);
  if (t.startsWith('"')) {
    try { return JSON.parse(t); } catch { throw new YamlError(line, `bad double-quoted string ${t}`); }
  }
  if (t.startsWith("'")) {
    if (!t.endsWith("'") || t.length < 2) throw new YamlError(line, `unclosed single-quoted string ${t}`);
    return t.slice(1, -1).replace(/''/g, "'");
  }
  if (t.startsWith('[') || t.startsWith('{')) {
    // Flow style: quote bare keys and words, then read it as JSON.
    const quoted = t.replace(/("(?:[^"\\]|\\.)*")|([A-Za-z_][\w.\-]*)/g, (all, str, word) => {
      if (str) return str;
      return ['true', 'false', 'null'].includes(word) ? word : JSON.stringify(word);
    });
    try { return JSON.parse(quoted); } catch { throw new YamlError(line, `cannot read the flow value ${t}`); }
  }
  return t;
}

/** Strips a comment: a `#` after a space, outside quotes. */
function stripComment(text) {
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) { if (c === quote) quote = null; continue; }
    if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]))) return text.slice(0, i);
  }
  return text;
}

/** Parses YAML text; returns `{value, lines}` (`lines[path]` = 1-based line of that key). */
function parseYaml(text) {
  const rows = [];
  text.split('\n').forEach((raw, i) => {
    if (/\t/.test(raw.match(/^\s*/)[0])) throw new YamlError(i + 1, 'indent with spaces, not tabs');
    const content = stripComment(raw).trimEnd();
    if (content.trim()) rows.push({ indent: content.search(/\S/), text: content.trim(), line: i + 1 });
  });
  const lines = {};
  let at = 0;
  const keyOf = (path, key) => (path ? `${path}.${key}` : key);

  function block(indent, path) {
    if (rows[at].text.startsWith('- ') || rows[at].text === '-') return sequence(indent, path);
    return mapping(indent, path);
  }
  function mapping(indent, path) {
    const out = {};
    while (at < rows.length && rows[at].indent === indent && !rows[at].text.startsWith('-')) {
      entry(rows[at].text, indent, path, out);
    }
    if (at < rows.length && rows[at].indent > indent) throw new YamlError(rows[at].line, 'unexpected indentation');
    return out;
  }
  function entry(text, indent, path, out) {
    const row = rows[at];
    const m = /^("(?:[^"\\]|\\.)*"|'[^']*'|[^:]+?):(\s+(.*))?$/.exec(text);
    if (!m) throw new YamlError(row.line, `expected \`key: value\`, found \`${text}\``);
    const key = String(scalar(m[1], row.line));
    if (key in out) throw new YamlError(row.line, `\`${key}\` twice`);
    const keyPath = keyOf(path, key);
    lines[keyPath] = row.line;
    at++;
    if (m[3] !== undefined && m[3] !== '') {
      out[key] = scalar(m[3], row.line);
    } else if (at < rows.length && rows[at].indent > indent) {
      out[key] = block(rows[at].indent, keyPath);
    } else if (at < rows.length && rows[at].indent === indent && rows[at].text.startsWith('-')) {
      out[key] = sequence(indent, keyPath);
    } else {
      out[key] = null;
    }
  }
  function sequence(indent, path) {
    const out = [];
    while (at < rows.length && rows[at].indent === indent && (rows[at].text.startsWith('- ') || rows[at].text === '-')) {
      const row = rows[at];
      const itemPath = `${path}[${out.length}]`;
      lines[itemPath] = row.line;
      const rest = row.text.slice(1).trimStart();
      if (rest === '') {
        at++;
        out.push(at < rows.length && rows[at].indent > indent ? block(rows[at].indent, itemPath) : null);
      } else if (/^("(?:[^"\\]|\\.)*"|'[^']*'|[^:[{"']+?):(\s|$)/.test(rest)) {
        // `- key: value` opens a mapping whose keys line up with `key`.
        const inner = indent + (row.text.length - rest.length);
        rows[at] = { indent: inner, text: rest, line: row.line };
        out.push(mapping(inner, itemPath));
      } else {
        out.push(scalar(rest, row.line));
        at++;
      }
    }
    return out;
  }

  if (!rows.length) return { value: null, lines };
  const value = block(rows[0].indent, '');
  if (at < rows.length) throw new YamlError(rows[at].line, 'unexpected indentation');
  return { value, lines };
}

/** A scalar as YAML: plain when it reads back the same, else JSON-quoted. */
function yamlScalar(value) {
  if (value === null) return 'null';
  if (typeof value !== 'string') return String(value);
  const plain = /^[A-Za-z_/][\w ./@-]*$/.test(value) && !['true', 'false', 'null', '~'].includes(value);
  return plain && value.trim() === value ? value : JSON.stringify(value);
}

function toYaml(value, indent = '') {
  if (Array.isArray(value)) {
    if (!value.length) return ' []';
    return value.map((item) => {
      if (item && typeof item === 'object' && Object.keys(item).length) {
        const body = toYaml(item, `${indent}  `).replace(/^\n\s*/, '');
        return `\n${indent}- ${body}`;
      }
      return `\n${indent}- ${toYaml(item, `${indent}  `).trimStart()}`;
    }).join('');
  }
  if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (!keys.length) return ' {}';
    return keys.map((key) => `\n${indent}${yamlScalar(key)}:${toYaml(value[key], `${indent}  `)}`).join('');
  }
  return ` ${yamlScalar(value)}`;
}

const dumpYaml = (value) => `${toYaml(value).replace(/^\n/, '')}\n`;

// ---- The condition tree, as the API explains it ----------------------------------------------

function conditionTree(explanation) {
  if (!explanation.conditions) return h('p', {}, h('span', { class: 'mark yes' }, '✓'), 'No conditions: always matches.');
  const node = (n) => {
    const mark = h('span', { class: `mark ${n.held ? 'yes' : 'no'}`, 'aria-label': n.held ? 'held' : 'did not hold' },
      n.held ? '✓' : '✗');
    if (n.kind === 'leaf') {
      return h('li', { 'data-at': n.at }, mark, h('code', {}, `${n.field} ${n.operator}`),
        n.expected !== undefined ? h('code', {}, ` ${JSON.stringify(n.expected)}`) : '', ' — ',
        h('span', { class: 'reason' }, n.reason));
    }
    return h('li', { 'data-at': n.at }, mark, h('b', {}, n.kind), h('span', { class: 'muted' }, ` (${n.at})`),
      h('ul', { class: 'tree' }, n.children.map(node)));
  };
  return h('ul', { class: 'tree root' }, node(explanation.conditions));
}

// ---- The live stream --------------------------------------------------------------------------

/** Reads `GET /api/v1/stream` with fetch (so the token stays in a header) until aborted;
 *  `onItem(kind, data)` for each server-sent event. Reconnects after a pause if cut. */
function follow(onItem, onStatus) {
  const controller = new AbortController();
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const response = await fetch('/api/v1/stream', {
          headers: { Authorization: `Bearer ${session.token}`, Accept: 'text/event-stream' },
          signal: controller.signal,
        });
        if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
        onStatus('live');
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let kind = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) kind = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (data.length) onItem(kind, JSON.parse(data.join('\n')));
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        onStatus(`disconnected (${e.message}); retrying`);
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  })();
  return () => controller.abort();
}

// ---- Pages ------------------------------------------------------------------------------------

// What the current page started (timers, the stream); stopped when the page changes.
let cleanups = [];
const onLeave = (fn) => cleanups.push(fn);

function every(ms, fn) {
  const id = setInterval(fn, ms);
  onLeave(() => clearInterval(id));
}

const adminOnly = (element) => {
  if (!session.admin) {
    element.disabled = true;
    element.title = 'Needs an admin token';
  }
  return element;
};

function showError(container, e) {
  container.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
}

async function overview(page) {
  const hosts = h('div', { class: 'card scroll' }, h('h2', {}, 'Hosts'), h('p', { class: 'muted' }, 'Loading…'));
  const states = h('div', { class: 'card', id: 'sensor-states' }, h('h2', {}, 'Sensors by state'));
  const rates = h('div', { class: 'card', id: 'rates' }, h('h2', {}, 'Throughput'));
  const quarantined = h('div', { class: 'card', id: 'quarantined' }, h('h2', {}, 'Quarantined sensors'));
  const chart = h('div', { class: 'card', id: 'chart' }, h('h2', {}, 'Last hour'));
  page.replaceChildren(h('h2', {}, 'Overview'), hosts, h('div', { class: 'grid' }, states, rates, quarantined), chart);

  const [hostList, sensorList] = await Promise.all([get('/api/v1/hosts'), get('/api/v1/sensors').catch(() => null)]);
  hosts.replaceChildren(h('h2', {}, 'Hosts'), table(
    [{ label: 'Host' }, { label: 'Address', class: 'hide-narrow' }, { label: 'Started', class: 'hide-narrow' },
      { label: 'Last seen' }, { label: 'Sensors', class: 'num' }, { label: 'Timers', class: 'num' }],
    hostList.hosts.map((host) => h('tr', {},
      h('td', {}, h('code', {}, host.id)), h('td', { class: 'hide-narrow' }, h('code', {}, host.listen)),
      h('td', { class: 'hide-narrow' }, time(host.started_at)), h('td', {}, time(host.last_seen)),
      h('td', { class: 'num' }, String(host.sensors)), h('td', { class: 'num' }, String(host.timers)))),
    { class: 'fixed' }));
  const sensors = sensorList ? sensorList.sensors : [];
  const counts = {};
  for (const s of sensors) counts[s.state] = (counts[s.state] || 0) + 1;
  states.append(h('div', { class: 'stats' }, ['running', 'backing_off', 'quarantined', 'idle'].map((state) =>
    h('div', { class: 'stat' }, h('b', { 'data-state': state }, String(counts[state] || 0)), stateLabel(state)))));
  const bad = sensors.filter((s) => s.state === 'quarantined');
  quarantined.append(bad.length
    ? h('ul', {}, bad.map((s) => h('li', {}, h('a', { href: `#/sensors/${encodeURIComponent(s.ref)}` }, s.ref),
      h('div', { class: 'muted' }, s.last_error || ''))))
    : h('p', { class: 'muted' }, 'None.'));

  // Rates: counters of /metrics sampled every 5 s, while this page is open.
  const rateStats = h('div', { class: 'stats' });
  rates.append(rateStats);
  let previous = null;
  const sample = async () => {
    const samples = parseMetrics(await get('/metrics'));
    const now = { at: performance.now(), events: sum(samples, 'attune_events_total'),
      enforcements: sum(samples, 'attune_enforcements_total'), backlog: sum(samples, 'attune_outbox_backlog') };
    const rate = (key) => (previous ? ((now[key] - previous[key]) * 1000) / (now.at - previous.at) : null);
    const show = (value) => (value === null ? '…' : value.toFixed(2));
    rateStats.replaceChildren(
      h('div', { class: 'stat' }, h('b', { id: 'events-rate' }, show(rate('events'))), 'events/s'),
      h('div', { class: 'stat' }, h('b', { id: 'enforcements-rate' }, show(rate('enforcements'))), 'enforcements/s'),
      h('div', { class: 'stat' }, h('b', { id: 'outbox-backlog' }, String(now.backlog)), 'outbox backlog'));
    previous = now;
  };
  await sample();
  every(5000, () => sample().catch(() => {}));
  await lastHour(chart);
  every(10_000, () => lastHour(chart).catch(() => {}));
}

/** Events and enforcements per minute over the last hour, as SVG bars (at most 1000 of each). */
async function lastHour(card) {
  const since = new Date(Date.now() - 3600_000).toISOString();
  const [events, enforcements] = await Promise.all([
    get(`/api/v1/events?since=${encodeURIComponent(since)}&limit=1000`),
    get(`/api/v1/enforcements?since=${encodeURIComponent(since)}&limit=1000`),
  ]);
  const start = Date.parse(since);
  const buckets = (items) => {
    const counts = new Array(60).fill(0);
    for (const item of items) counts[Math.min(59, Math.floor((Date.parse(item.created_at) - start) / 60_000))]++;
    return counts;
  };
  const series = [['events', buckets(events.events)], ['enforcements', buckets(enforcements.enforcements)]];
  const max = Math.max(1, ...series.flatMap(([, counts]) => counts));
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 600 125');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  const total = (counts) => counts.reduce((a, b) => a + b, 0);
  svg.setAttribute('aria-label', `Last hour: ${total(series[0][1])} events, ${total(series[1][1])} enforcements`);
  series.forEach(([name, counts], s) => counts.forEach((count, minute) => {
    if (!count) return;
    const rect = document.createElementNS(SVG_NS, 'rect');
    const height = (count / max) * 120;
    rect.setAttribute('x', String(minute * 10 + s * 5));
    rect.setAttribute('y', String(125 - height));
    rect.setAttribute('width', '4.5');
    rect.setAttribute('height', String(height));
    rect.setAttribute('class', name);
    const title = document.createElementNS(SVG_NS, 'title');
    title.textContent = `${count} ${name}, ${60 - minute} min ago`;
    rect.append(title);
    svg.append(rect);
  }));
  card.replaceChildren(h('h2', {}, 'Last hour'), svg,
    h('p', { class: 'axis muted' }, h('span', {}, '−60 min'), h('span', {}, 'now')),
    h('p', { class: 'legend muted' },
      h('span', {}, h('i', { class: 'swatch events' }), `events (max ${max}/min)`),
      h('span', {}, h('i', { class: 'swatch enforcements' }), 'enforcements')));
}

async function sensorsPage(page, selected) {
  const list = h('div', { class: 'card scroll' }, h('p', { class: 'muted' }, 'Loading…'));
  const detail = h('div', { id: 'sensor-detail' });
  const status = h('p', { class: 'muted', role: 'status' });
  page.replaceChildren(h('h2', {}, 'Sensors'), status, list, detail);
  const render = async () => {
    const [{ sensors }, metrics] = await Promise.all([get('/api/v1/sensors'), get('/metrics').then(parseMetrics)]);
    const latency = (ref) => {
      const of = (name) => (metrics[name] || []).filter((s) => s.labels.sensor === ref).reduce((t, s) => t + s.value, 0);
      const count = of('attune_sensor_poll_duration_seconds_count');
      return count ? `${((of('attune_sensor_poll_duration_seconds_sum') / count) * 1000).toFixed(1)} ms` : '—';
    };
    list.replaceChildren(table(
      [{ label: 'Sensor' }, { label: 'State' }, { label: 'Owner', class: 'hide-narrow' }, { label: 'Polls', class: 'num' },
        { label: 'Failures', class: 'num' }, { label: 'Fuel', class: 'num hide-narrow' },
        { label: 'Poll latency', class: 'num hide-narrow' }, { label: 'Last error' }, { label: '' }],
      sensors.map((s) => h('tr', { 'data-sensor': s.ref },
        h('td', {}, h('a', { href: `#/sensors/${encodeURIComponent(s.ref)}` }, s.ref)),
        h('td', { class: 'sensor-state' }, stateLabel(s.state)),
        h('td', { class: 'hide-narrow' }, s.owner ? h('code', {}, s.owner) : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'num polls' }, String(s.polls)), h('td', { class: 'num' }, String(s.failures)),
        h('td', { class: 'num hide-narrow' }, s.fuel_used.toLocaleString()),
        h('td', { class: 'num hide-narrow' }, latency(s.ref)),
        h('td', {}, s.last_error ? h('code', {}, s.last_error) : ''),
        h('td', {}, s.state === 'quarantined' && session.admin
          ? h('button', { type: 'button', class: 'primary', 'aria-label': `Restart ${s.ref}`, onclick: () => restart(s.ref) },
            'Restart')
          : '')))));
  };
  const restart = async (ref) => {
    try {
      await api('POST', `/api/v1/sensors/${encodeURIComponent(ref)}/restart`);
      status.textContent = `Restarting ${ref}.`;
      await render();
    } catch (e) { status.textContent = `Cannot restart ${ref}: ${e.message}`; }
  };
  await render();
  every(2000, () => render().catch(() => {}));
  if (selected) await sensorDetail(detail, selected);
}

async function sensorDetail(card, ref) {
  const { sensors } = await get('/api/v1/sensors');
  const sensor = sensors.find((s) => s.ref === ref);
  if (!sensor) { card.replaceChildren(h('p', { class: 'error' }, `No sensor ${ref}.`)); return; }
  const events = [];
  for (const trigger of sensor.triggers) {
    const page = await get(`/api/v1/events?trigger=${encodeURIComponent(trigger)}&limit=200`);
    events.push(...page.events.filter((e) => e.source === `sensor:${ref}`));
  }
  events.sort((a, b) => b.created_at.localeCompare(a.created_at));
  const state = h('div', {}, h('p', { class: 'muted' }, 'Its state store needs an admin token.'));
  if (session.admin) {
    get(`/api/v1/sensors/${encodeURIComponent(ref)}/state`)
      .then((s) => state.replaceChildren(stateTable(s.state)))
      .catch((e) => showError(state, e));
  }
  card.replaceChildren(h('div', { class: 'card' }, h('h3', {}, `Sensor ${ref}`),
    h('p', {}, 'Triggers: ', sensor.triggers.map((t) => h('code', {}, `${t} `))),
    h('h3', {}, 'Recent events'),
    events.length ? eventTable(events.slice(0, 20)) : h('p', { class: 'muted' }, 'None stored.'),
    h('h3', {}, 'State store'), state));
}

/** A state store's keys and values; values written as JSON (`state.set_json`) shown parsed. */
function stateTable(state) {
  const keys = Object.keys(state);
  if (!keys.length) return h('p', { class: 'muted' }, 'Empty.');
  const value = (text) => {
    try { return json(JSON.parse(text)); } catch { return h('pre', {}, text); }
  };
  return table([{ label: 'Key' }, { label: 'Value' }],
    keys.map((key) => h('tr', {}, h('td', {}, h('code', {}, key)), h('td', {}, value(state[key])))), { class: 'fixed' });
}

function eventRow(e) {
  return h('tr', { 'data-event': e.id, 'data-trigger': e.trigger },
    h('td', {}, time(e.created_at)), h('td', {}, h('code', {}, e.trigger)),
    h('td', { class: 'hide-narrow' }, e.source),
    h('td', {}, h('a', { href: `#/events/${e.id}`, 'aria-label': `Event ${e.id} on ${e.trigger}` }, e.id.slice(-8))));
}

function eventTable(events) {
  return table([{ label: 'Time' }, { label: 'Trigger' }, { label: 'Source', class: 'hide-narrow' }, { label: 'Event' }],
    events.map(eventRow), { class: 'fixed' });
}

function enforcementRow(e) {
  return h('tr', { 'data-enforcement': e.id, 'data-rule': e.rule },
    h('td', {}, time(e.created_at)), h('td', {}, h('code', {}, e.rule)),
    h('td', { class: 'hide-narrow' }, h('code', {}, e.action)), h('td', {}, e.status),
    h('td', {}, h('a', { href: `#/events/${e.event_id}`, 'aria-label': `Event ${e.event_id}` }, e.event_id.slice(-8))));
}

async function eventsPage(page) {
  const filters = h('form', { class: 'card row', id: 'filters', 'aria-label': 'Filters' },
    h('div', {}, h('label', { for: 'f-trigger' }, 'Trigger'), h('input', { id: 'f-trigger', placeholder: 'pack.trigger' })),
    h('div', {}, h('label', { for: 'f-rule' }, 'Rule'), h('input', { id: 'f-rule', placeholder: 'pack.rule' })),
    h('div', {}, h('label', { for: 'f-since' }, 'Since'), h('input', { id: 'f-since', type: 'datetime-local' })),
    h('div', {}, h('label', { for: 'f-until' }, 'Until'), h('input', { id: 'f-until', type: 'datetime-local' })),
    h('label', { class: 'check' }, h('input', { id: 'f-live', type: 'checkbox', checked: true }), 'Live'),
    h('button', { type: 'submit', class: 'primary' }, 'Apply'));
  const live = h('p', { class: 'muted', role: 'status', id: 'live-status' }, 'Connecting…');
  const eventsBody = h('tbody', { id: 'events-body' });
  const enforcementsBody = h('tbody', { id: 'enforcements-body' });
  const head = (cols) => h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { scope: 'col', class: cls || false }, label))));
  page.replaceChildren(h('h2', {}, 'Events and enforcements'), filters, live,
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'events-title' }, h('h3', { id: 'events-title' }, 'Events'),
        h('div', { class: 'tail' }, h('table', { class: 'fixed' },
          head([['Time'], ['Trigger'], ['Source', 'hide-narrow'], ['Event']]), eventsBody))),
      h('section', { class: 'card', 'aria-labelledby': 'enforcements-title' },
        h('h3', { id: 'enforcements-title' }, 'Enforcements'),
        h('div', { class: 'tail' }, h('table', { class: 'fixed' },
          head([['Time'], ['Rule'], ['Action', 'hide-narrow'], ['Status'], ['Event']]), enforcementsBody)))));

  const value = (id) => $(`#${id}`, filters).value.trim();
  const when = (id) => (value(id) ? new Date(value(id)).toISOString() : null);
  const query = (params) => {
    const q = new URLSearchParams({ limit: String(TAIL_ROWS) });
    for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
    return q.toString();
  };
  let stop = null;
  const load = async () => {
    const f = { trigger: value('f-trigger'), rule: value('f-rule'), since: when('f-since'), until: when('f-until') };
    const [events, enforcements] = await Promise.all([
      get(`/api/v1/events?${query({ trigger: f.trigger, since: f.since, until: f.until })}`),
      get(`/api/v1/enforcements?${query(f)}`),
    ]);
    // An event filter by rule: the events its enforcements name are the ones to show.
    const ruleEvents = f.rule ? new Set(enforcements.enforcements.map((e) => e.event_id)) : null;
    eventsBody.replaceChildren(...events.events.filter((e) => !ruleEvents || ruleEvents.has(e.id)).map(eventRow));
    enforcementsBody.replaceChildren(...enforcements.enforcements.map(enforcementRow));
    if (stop) stop();
    stop = null;
    if (!$('#f-live', filters).checked || f.until) { live.textContent = 'Not live.'; return; }
    const since = f.since ? Date.parse(f.since) : 0;
    const keep = (body, row) => {
      body.prepend(row);
      while (body.children.length > TAIL_ROWS) body.lastElementChild.remove();
    };
    stop = follow((kind, data) => {
      if (Date.parse(data.created_at) < since) return;
      if (kind === 'event' && (!f.trigger || data.trigger === f.trigger) && !f.rule) keep(eventsBody, eventRow(data));
      if (kind === 'enforcement' && (!f.trigger || data.trigger === f.trigger) && (!f.rule || data.rule === f.rule)) {
        keep(enforcementsBody, enforcementRow(data));
        if (f.rule && !$(`[data-event="${data.event_id}"]`, eventsBody)) {
          get(`/api/v1/events/${data.event_id}`).then((e) => keep(eventsBody, eventRow(e))).catch(() => {});
        }
      }
      if (kind === 'dropped') live.textContent = `Live; ${data.dropped} messages dropped (this page fell behind).`;
      if (kind === 'resync') load().catch(() => {});
    }, (text) => { live.textContent = text === 'live' ? 'Live.' : text; });
  };
  onLeave(() => stop && stop());
  filters.addEventListener('submit', (e) => { e.preventDefault(); load().catch((err) => { live.textContent = err.message; }); });
  await load();
}

async function eventPage(page, id) {
  page.replaceChildren(h('h2', {}, 'Event'), h('p', { class: 'muted' }, 'Loading…'));
  const { event, rules } = await get(`/api/v1/events/${encodeURIComponent(id)}/explain`);
  page.replaceChildren(
    h('h2', {}, 'Event ', h('code', {}, event.id)),
    h('div', { class: 'card' },
      h('p', {}, 'Trigger ', h('code', {}, event.trigger), ' from ', h('code', {}, event.source), ' at ', time(event.created_at),
        event.rule ? [' for rule ', h('code', {}, event.rule)] : ''),
      json(event.payload)),
    h('div', { class: 'card', id: 'verdicts' }, h('h3', {}, `Rules on ${event.trigger}`),
      rules.length ? rules.map(verdict) : h('p', { class: 'muted' }, 'No rule listens on this trigger.')));
}

function verdict(v) {
  const why = !v.offered ? 'not offered: the event is for another rule'
    : !v.enabled ? (v.result.matched ? 'matches, but the rule is disabled' : 'does not match (and the rule is disabled)')
      : v.result.matched ? 'matches: enforced' : 'does not match';
  return h('section', { class: `verdict ${v.would_enforce ? 'matched' : 'unmatched'}`, 'data-rule': v.rule,
    'aria-label': `Rule ${v.rule}` },
  h('h4', {}, h('a', { href: `#/rules/${encodeURIComponent(v.rule)}` }, v.rule), ' — ',
    h('span', { class: `why ${v.would_enforce ? 'yes' : 'no'}` }, why)),
  conditionTree(v.result.explanation),
  v.result.action_error ? h('p', { class: 'error' }, `Action: ${v.result.action_error.message}`) : '');
}

const NEW_RULE = `ref: user.my_rule
trigger: core.intervaltimer
trigger_params: {interval: 1, unit: minutes}
enabled: true
conditions:
  all:
    - {field: payload.execution_count, operator: greater_than, value: 0}
action:
  ref: core.echo
  parameters:
    message: "fired {{ event.payload.execution_count }}"
`;

async function rulesPage(page, selected) {
  const list = h('div', { class: 'card scroll', id: 'rule-list' });
  const editor = h('div', { id: 'rule-editor' });
  const status = h('p', { class: 'muted', role: 'status', id: 'rules-status' });
  page.replaceChildren(h('h2', {}, 'Rules'), status,
    h('p', {}, adminOnly(h('button', { type: 'button', class: 'primary', onclick: () => edit(null) }, 'New rule'))),
    list, editor);

  const render = async () => {
    const rules = [];
    let after = '';
    do {
      const p = await get(`/api/v1/rules?limit=1000${after ? `&after=${encodeURIComponent(after)}` : ''}`);
      rules.push(...p.rules);
      after = p.next;
    } while (after);
    list.replaceChildren(table([{ label: 'Rule' }, { label: 'Trigger' }, { label: 'Action', class: 'hide-narrow' },
      { label: 'Enabled' }, { label: 'Actions' }],
    rules.map((r) => h('tr', { 'data-rule': r.ref },
      h('td', {}, h('a', { href: `#/rules/${encodeURIComponent(r.ref)}` }, r.ref)),
      h('td', {}, h('code', {}, r.trigger)), h('td', { class: 'hide-narrow' }, h('code', {}, r.action.ref)),
      h('td', { class: 'enabled' }, yesNo(r.enabled !== false)),
      h('td', { class: 'row' },
        adminOnly(h('button', { type: 'button', 'aria-label': `${r.enabled !== false ? 'Disable' : 'Enable'} ${r.ref}`,
          onclick: () => toggle(r) }, r.enabled !== false ? 'Disable' : 'Enable')),
        adminOnly(h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${r.ref}`, onclick: () => remove(r.ref) },
          'Delete')))))));
  };
  const toggle = async (rule) => {
    try {
      await api('POST', `/api/v1/rules/${encodeURIComponent(rule.ref)}/${rule.enabled !== false ? 'disable' : 'enable'}`);
      status.textContent = `${rule.ref} ${rule.enabled !== false ? 'disabled' : 'enabled'}.`;
      await render();
    } catch (e) { status.textContent = e.message; }
  };
  const remove = async (ref) => {
    if (!window.confirm(`Delete rule ${ref}? It stops applying at once.`)) return;
    try {
      await api('DELETE', `/api/v1/rules/${encodeURIComponent(ref)}`);
      status.textContent = `${ref} deleted.`;
      editor.replaceChildren();
      await render();
    } catch (e) { status.textContent = e.message; }
  };
  const edit = (rule) => ruleEditor(editor, rule, async (saved) => {
    status.textContent = `${saved.ref} saved.`;
    await render();
  });
  await render();
  if (selected) {
    try { edit(await get(`/api/v1/rules/${encodeURIComponent(selected)}`)); } catch (e) { showError(editor, e); }
  }
}

/** A rule's keys in the order its files are written in (the API sorts them). */
function ruleYaml(rule) {
  const order = ['ref', 'description', 'trigger', 'trigger_params', 'enabled', 'conditions', 'action'];
  const rank = (key) => (order.includes(key) ? order.indexOf(key) : order.length);
  return dumpYaml(Object.fromEntries(Object.entries(rule).sort(([a], [b]) => rank(a) - rank(b))));
}

function ruleEditor(container, rule, onSaved) {
  const text = h('textarea', { id: 'rule-yaml', spellcheck: 'false', 'aria-describedby': 'rule-error' });
  text.value = rule ? ruleYaml(rule) : NEW_RULE;
  const error = h('p', { class: 'error', id: 'rule-error', role: 'alert' });
  const payload = h('textarea', { id: 'dry-payload', spellcheck: 'false', rows: '6', 'aria-describedby': 'dry-error' });
  payload.value = '{}';
  const eventId = h('input', { id: 'dry-event', placeholder: 'an event id (instead of the payload)' });
  const dryError = h('p', { class: 'error', id: 'dry-error', role: 'alert' });
  const result = h('div', { id: 'dry-result', 'aria-live': 'polite' });

  const clear = () => { error.textContent = ''; text.removeAttribute('aria-invalid'); };
  /** Shows an error at its line of the YAML, and selects that line. */
  const fail = (message, line, field) => {
    const where = [line ? `Line ${line}` : null, field ? h('code', { class: 'field' }, field) : null].filter(Boolean);
    error.replaceChildren(...where.flatMap((part, i) => (i ? [', ', part] : [part])), where.length ? ': ' : '', message);
    error.dataset.field = field || '';
    error.dataset.line = line ? String(line) : '';
    text.setAttribute('aria-invalid', 'true');
    if (line) {
      const lines = text.value.split('\n');
      const start = lines.slice(0, line - 1).join('\n').length + (line > 1 ? 1 : 0);
      text.focus();
      text.setSelectionRange(start, start + lines[line - 1].length);
    }
  };
  /** The API's field path (`conditions.all[0].operator`): its line, or its nearest parent's. */
  const lineOf = (lines, field) => {
    for (let path = field; path; path = path.replace(/(\.[^.[\]]+|\[\d+\])$/, '')) {
      if (lines[path]) return lines[path];
      if (!/(\.[^.[\]]+|\[\d+\])$/.test(path)) break;
    }
    return null;
  };
  const read = () => {
    try {
      const { value, lines } = parseYaml(text.value);
      if (!value || typeof value !== 'object' || Array.isArray(value)) throw new YamlError(1, 'a rule is a mapping');
      return { value, lines };
    } catch (e) {
      fail(e.message.replace(/^line \d+: /, ''), e.line, null);
      return null;
    }
  };
  const save = async () => {
    clear();
    const parsed = read();
    if (!parsed) return;
    try {
      const saved = rule
        ? await api('PUT', `/api/v1/rules/${encodeURIComponent(rule.ref)}`, parsed.value)
        : await api('POST', '/api/v1/rules', parsed.value);
      rule = saved;
      text.value = ruleYaml(saved);
      await onSaved(saved);
    } catch (e) {
      fail(e.message, e.field ? lineOf(parsed.lines, e.field) : null, e.field);
    }
  };
  const dryRun = async () => {
    clear();
    dryError.textContent = '';
    result.replaceChildren();
    const parsed = read();
    if (!parsed) return;
    const body = { rule: parsed.value };
    if (eventId.value.trim()) body.event_id = eventId.value.trim();
    else {
      try { body.payload = JSON.parse(payload.value); } catch (e) { dryError.textContent = `Payload: ${e.message}`; return; }
    }
    try {
      const out = await api('POST', '/api/v1/rules/test', body);
      result.replaceChildren(h('div', {}, h('p', {}, yesNo(out.matched, 'MATCHED', 'NOT MATCHED')),
        conditionTree(out.explanation),
        out.parameters ? [h('p', {}, 'Action parameters:'), json(out.parameters)] : '',
        out.action_error ? h('p', { class: 'error' }, out.action_error.message) : ''));
    } catch (e) {
      if (e.field && e.field.startsWith('rule.')) {
        const field = e.field.slice(5);
        fail(e.message, lineOf(parsed.lines, field), field);
      } else dryError.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
    }
  };
  container.replaceChildren(h('div', { class: 'grid' },
    h('section', { class: 'card', 'aria-labelledby': 'editor-title' },
      h('h3', { id: 'editor-title' }, rule ? `Edit ${rule.ref}` : 'New rule'),
      h('label', { for: 'rule-yaml' }, 'Rule (YAML)'), text, error,
      h('div', { class: 'row' }, adminOnly(h('button', { type: 'button', class: 'primary', onclick: save }, 'Save')),
        h('button', { type: 'button', onclick: () => { container.replaceChildren(); location.hash = '#/rules'; } }, 'Close'))),
    h('section', { class: 'card', 'aria-labelledby': 'dry-title' },
      h('h3', { id: 'dry-title' }, 'Dry run'),
      h('label', { for: 'dry-payload' }, 'Payload (JSON)'), payload,
      h('label', { for: 'dry-event' }, 'Or a stored event'), eventId, dryError,
      adminOnly(h('button', { type: 'button', onclick: dryRun }, 'Run')), result)));
}

// ---- Routing and sign-in ----------------------------------------------------------------------

const routes = [
  [/^#\/overview$/, (page) => overview(page), 'overview'],
  [/^#\/sensors(?:\/(.+))?$/, (page, ref) => sensorsPage(page, ref && decodeURIComponent(ref)), 'sensors'],
  [/^#\/rules(?:\/(.+))?$/, (page, ref) => rulesPage(page, ref && decodeURIComponent(ref)), 'rules'],
  [/^#\/events\/(.+)$/, (page, id) => eventPage(page, decodeURIComponent(id)), 'events'],
  [/^#\/events$/, (page) => eventsPage(page), 'events'],
];

async function route() {
  for (const stop of cleanups.splice(0)) stop();
  if (!session.token) return;
  const page = $('#page');
  const hash = location.hash || '#/overview';
  const match = routes.find(([pattern]) => pattern.test(hash)) || routes[0];
  const [pattern, render, name] = match;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  page.setAttribute('data-page', name);
  try {
    await render(page, ...(pattern.exec(hash) || []).slice(1));
  } catch (e) {
    showError(page, e);
  }
}

function showSignedIn(signedIn) {
  $('#sign-in').hidden = signedIn;
  $('#nav').hidden = !signedIn;
  $('#who').hidden = !signedIn;
  if (!signedIn) $('#page').replaceChildren();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const stop of cleanups.splice(0)) stop();
  showSignedIn(false);
  $('#sign-in-error').textContent = message || '';
  $('#token').focus();
}

/** Whether the token is an admin one: a dry run of nothing is refused for its scope (403)
 *  before its body is looked at (422), and changes nothing either way. */
async function probeAdmin() {
  try {
    await api('POST', '/api/v1/rules/test', {});
    return true;
  } catch (e) {
    return e.status !== 403;
  }
}

async function start() {
  if (!session.token) { showSignedIn(false); return; }
  try {
    await get('/api/v1/hosts');
  } catch (e) {
    signOut(e.status === 401 || e.status === 403 ? 'That token was refused.' : e.message);
    return;
  }
  session.admin = await probeAdmin();
  document.body.dataset.role = session.admin ? 'admin' : 'readonly';
  $('#role').textContent = session.admin ? 'admin' : 'readonly (changes disabled)';
  showSignedIn(true);
  await route();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#sign-in').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token').value.trim();
    $('#token').value = '';
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $('#sign-out').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', () => { route(); $('#main').focus({ preventScroll: true }); });
  start();
});
