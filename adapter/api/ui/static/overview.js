// Overview: every subscription with its state, rate, lag and errors, refreshed every 2 s.

import { get, metrics } from './api.js';
import { badge, fmtNumber, fmtSeconds, h, link, replace } from './dom.js';

// The consumed counter of the previous refresh, per subscription: records/s between the two.
const previous = new Map();

const STATES = {
  running: 'running',
  'backing-off': 'backing off',
  'waiting-for-topic': 'waiting for topic',
  starting: 'starting',
  stopping: 'stopping',
  stopped: 'stopped',
};

export function stateOf(sub, stats) {
  if (sub.paused) return 'paused';
  if (!stats || !stats.state) return 'not running here';
  return STATES[stats.state] || stats.state;
}

export function rateOf(id, stats, now) {
  if (!stats) return null;
  const before = previous.get(id);
  previous.set(id, { consumed: stats.consumed, at: now });
  if (!before || now <= before.at) return null;
  // A restarted consumer starts its counter from zero again.
  return Math.max(0, stats.consumed - before.consumed) / ((now - before.at) / 1000);
}

// Lag of the subscriptions this poller does not run (pollers share them): Kafka's view of the
// group, from GET /subscriptions/{id}/lag; at most this many such look-ups per refresh.
const GROUP_LAG_LOOKUPS = 50;

async function groupLags(subs, stats) {
  const elsewhere = subs.filter((sub) => !stats.get(sub.id)?.state && !sub.paused).slice(0, GROUP_LAG_LOOKUPS);
  const found = await Promise.all(elsewhere.map((sub) => get(`subscriptions/${encodeURIComponent(sub.id)}/lag`).catch(() => null)));
  return new Map(elsewhere.map((sub, i) => [sub.id, found[i]]));
}

function row(sub, stats, group, now) {
  const state = stateOf(sub, stats);
  const rate = rateOf(sub.id, stats, now);
  const lag = stats?.lag ?? group?.lag ?? null;
  return h('tr', { 'data-subscription': sub.id, 'data-state': state },
    h('td', { 'data-label': 'Subscription' }, link(['subscriptions', sub.id], sub.id)),
    h('td', { 'data-label': 'Source' }, sub.source),
    h('td', { 'data-label': 'Sink' }, sub.sink),
    h('td', { 'data-label': 'State' }, badge(state)),
    h('td', { 'data-label': 'Records/s', class: 'num', 'data-field': 'rate' }, rate === null ? '–' : fmtNumber(rate, 1)),
    h('td', { 'data-label': 'Lag', class: 'num', 'data-field': 'lag' }, lag === null ? '–' : fmtNumber(lag)),
    h('td', { 'data-label': 'Lag age', class: 'num', 'data-field': 'lag-age' }, stats ? fmtSeconds(stats.lagSeconds) : '–'),
    h('td', { 'data-label': 'Errors', class: 'num', 'data-field': 'errors' }, stats ? fmtNumber(stats.errors) : '–'));
}

export async function overviewPage(view, ctx) {
  const body = h('tbody');
  const count = h('span', { class: 'muted' });
  replace(view,
    h('div', { class: 'title' }, h('h1', {}, 'Subscriptions'), count),
    h('div', { class: 'scroll' },
      h('table', { id: 'subscriptions', class: 'cards' },
        h('thead', {}, h('tr', {}, ['Subscription', 'Source', 'Sink', 'State', 'Records/s', 'Lag (records)', 'Lag age', 'Errors'].map((t) => h('th', { scope: 'col' }, t)))),
        body)),
    h('p', { class: 'muted small' }, 'State, rate, lag age and errors are this poller\'s view (its /metrics); lag is the log end offset minus the committed position (for a subscription this poller does not run, the consumer group\'s as Kafka reports it), its age that of the oldest record not committed yet. Errors: failed attempts plus invocations that ended failed or dead-lettered.'));
  ctx.poll(async () => {
    const [list, stats] = await Promise.all([get('subscriptions'), metrics()]);
    if (!ctx.alive()) return;
    const now = performance.now();
    const subs = list.subscriptions;
    count.textContent = `${subs.length} subscription${subs.length === 1 ? '' : 's'}`;
    if (subs.length === 0) {
      replace(body, h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No subscriptions yet: POST /subscriptions or kafka-ingress subscriptions create.')));
      return;
    }
    const groups = await groupLags(subs, stats);
    if (!ctx.alive()) return;
    replace(body, subs.map((sub) => row(sub, stats.get(sub.id), groups.get(sub.id), now)));
  });
}
