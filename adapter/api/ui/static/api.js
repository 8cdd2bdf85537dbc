// The admin API as the dashboard calls it: same origin, the bearer token from session storage.

const TOKEN_KEY = 'kafka-ingress.admin-token';
// The page lives at <base>/ui/; the API routes sit beside it (also behind a version prefix).
const BASE = new URL('../', document.baseURI);

export class AuthRequired extends Error {
  constructor() {
    super('the admin API wants a bearer token');
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function hasToken() {
  return sessionStorage.getItem(TOKEN_KEY) !== null;
}

async function call(method, path, { body, accept = 'application/json' } = {}) {
  const headers = { accept };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(new URL(path, BASE), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (response.status === 401) throw new AuthRequired();
  return response;
}

// JSON in, JSON out; a 4xx/5xx becomes an ApiError with the API's own message.
export async function api(method, path, body) {
  const response = await call(method, path, { body });
  const text = await response.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!response.ok) {
    const message = doc && typeof doc.message === 'string' ? doc.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return { status: response.status, body: doc };
}

export const get = (path) => api('GET', path).then((r) => r.body);

// Prometheus text: the rates, lag and errors the JSON routes do not carry.
export async function metrics() {
  const response = await call('GET', 'metrics', { accept: 'text/plain' });
  if (!response.ok) throw new ApiError(response.status, `GET /metrics: HTTP ${response.status}`);
  return summarise(parseMetrics(await response.text()));
}

const LABEL = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;
const SAMPLE = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;

export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[2] || '').matchAll(LABEL)) {
      labels[name] = value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

// Per subscription: state here, consumed, errors, lag (records, seconds) and per partition.
export function summarise(samples) {
  const subs = new Map();
  const of = (id) => {
    if (!subs.has(id)) {
      subs.set(id, { state: null, consumed: 0, errors: 0, lag: null, lagSeconds: null, partitions: new Map() });
    }
    return subs.get(id);
  };
  const part = (entry, labels) => {
    const key = `${labels.topic}/${labels.partition}`;
    if (!entry.partitions.has(key)) {
      entry.partitions.set(key, { topic: labels.topic, partition: Number(labels.partition), lag: null, seconds: null, pending: null });
    }
    return entry.partitions.get(key);
  };
  for (const { name, labels, value } of samples) {
    if (!labels.subscription) continue;
    const entry = of(labels.subscription);
    switch (name) {
      case 'kafka_ingress_subscription_up':
        entry.state = labels.state;
        break;
      case 'kafka_ingress_records_consumed_total':
        entry.consumed = value;
        break;
      case 'kafka_ingress_retries_total':
        entry.errors += value;
        break;
      case 'kafka_ingress_invocations_total':
        if (labels.outcome === 'failed' || labels.outcome === 'dead_lettered') entry.errors += value;
        break;
      case 'kafka_ingress_consumer_lag_records':
        entry.lag = (entry.lag || 0) + value;
        part(entry, labels).lag = value;
        break;
      case 'kafka_ingress_consumer_lag_seconds':
        entry.lagSeconds = Math.max(entry.lagSeconds || 0, value);
        part(entry, labels).seconds = value;
        break;
      case 'kafka_ingress_unfinished_records':
        part(entry, labels).pending = value;
        break;
      default:
    }
  }
  return subs;
}
