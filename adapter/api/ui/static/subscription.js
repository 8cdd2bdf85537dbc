// One subscription: partitions with lag charts, pause/resume, offset reset, recent invocations.

import { api, get, metrics } from './api.js';
import { lagChart, remember } from './chart.js';
import { badge, fmtNumber, fmtSeconds, fmtTime, h, link, notice, replace, table } from './dom.js';
import { invocationRows, INVOCATION_HEADERS } from './invocations.js';
import { stateOf } from './overview.js';

// Lag samples per "subscription topic/partition", kept while the tab is open.
const histories = new Map();
const RECENT_EVERY = 3; // recent invocations: every third refresh (6 s)

// The topic of a subscription from its source (kafka:// cluster / topic).
export const topicOf = (sub) => sub.source.replace(/^kafka:\/\/[^/]*\//, '');

// Per partition: the group's committed offset, log start and end and lag as Kafka reports them
// (GET /subscriptions/{id}/lag, from any poller), with this poller's lag age and unfinished
// records where it runs the partition.
function partitionRows(sub, group, runtime, stats) {
  const topic = topicOf(sub);
  const parts = new Map();
  const at = (partition) => {
    if (!parts.has(partition)) {
      parts.set(partition, { topic, partition, committed: null, logStart: null, logEnd: null, lag: null, seconds: null, pending: null });
    }
    return parts.get(partition);
  };
  for (const p of group?.partitions || []) {
    Object.assign(at(p.partition), { committed: p.committed, logStart: p.log_start, logEnd: p.log_end, lag: p.lag });
  }
  for (const p of runtime?.partitions || []) at(p.partition).pending = p.pending;
  for (const [, p] of stats?.partitions || []) {
    const row = at(p.partition);
    row.seconds = p.seconds;
    if (row.pending == null) row.pending = p.pending;
    if (row.lag == null) row.lag = p.lag;
  }
  return [...parts.values()].sort((a, b) => a.partition - b.partition);
}

// What a reset to `to` does to each partition, from the group's committed offset and the log's
// start and end: what is delivered again, what is skipped. Exact for latest and earliest; for a
// timestamp the broker decides the first offset, so the counts are bounds.
export function resetImpact(to, partitions) {
  return partitions.map((p) => {
    const where = `${p.topic} partition ${p.partition}`;
    const end = p.logEnd;
    if (p.committed == null) {
      return to === 'latest'
        ? `${where}: nothing committed yet; skips every record not processed yet${end == null ? '' : ` (up to ${end - (p.logStart || 0)})`}; only new records are delivered.`
        : `${where}: nothing committed yet; delivers what is retained ${to === 'earliest' ? 'from the start' : `from ${to}`}.`;
    }
    if (to === 'latest') {
      return end == null
        ? `${where}: skips every record after offset ${p.committed - 1} not yet processed.`
        : `${where}: skips ${Math.max(0, end - p.committed)} record(s)${end > p.committed ? `, offsets ${p.committed}–${end - 1}` : ''}; only new records are delivered.`;
    }
    const start = p.logStart == null ? 0 : p.logStart;
    if (to === 'earliest') {
      return `${where}: re-delivers ${Math.max(0, p.committed - start)} already processed record(s), offsets ${start}–${p.committed - 1} (those still retained).`;
    }
    return `${where}: re-delivers the records from ${to} up to offset ${p.committed - 1} (already processed); skips those before ${to} not processed yet${end == null ? '' : ` (at most ${Math.max(0, end - p.committed)})`}.`;
  });
}

function resetForm(sub, current) {
  const choice = h('select', { name: 'to', id: 'reset-to', 'aria-label': 'reset to' },
    h('option', { value: 'earliest' }, 'earliest'),
    h('option', { value: 'latest' }, 'latest'),
    h('option', { value: 'timestamp' }, 'a timestamp…'));
  const when = h('input', { type: 'datetime-local', name: 'at', id: 'reset-at', step: 1, hidden: true, 'aria-label': 'timestamp' });
  choice.addEventListener('change', () => { when.hidden = choice.value !== 'timestamp'; });
  const confirm = h('div', { id: 'reset-confirm' });
  const review = h('button', { type: 'submit' }, 'Review reset…');
  const form = h('form', { class: 'row' }, h('label', {}, 'Reset offsets to ', choice), when, review);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    let to = choice.value;
    if (to === 'timestamp') {
      if (!when.value) return replace(confirm, notice('error', 'Pick a timestamp first.'));
      to = new Date(when.value).toISOString();
    }
    const lines = resetImpact(to, current());
    const go = h('button', { type: 'button', class: 'danger', id: 'reset-go' }, `Reset to ${to}`);
    const cancel = h('button', { type: 'button', onclick: () => replace(confirm) }, 'Cancel');
    go.addEventListener('click', async () => {
      go.disabled = true;
      replace(confirm, notice('info', 'Resetting: pausing, waiting for the consumer group to empty, committing…'));
      try {
        const { body } = await api('POST', `subscriptions/${encodeURIComponent(sub.id)}/reset`, { to: /^\d+$/.test(to) ? Number(to) : to });
        replace(confirm, notice('ok', `Reset done: ${body.offsets.map((o) => `${o.topic}/${o.partition} → ${o.offset}`).join(', ') || 'no partitions'}; ${body.ledger_rows_deleted} ledger row(s) deleted.`));
      } catch (error) {
        replace(confirm, notice('error', `Reset failed: ${error.message}`));
      }
    });
    replace(confirm, h('div', { class: 'card confirm' },
      h('p', {}, `Reset ${sub.id} to ${to}? The subscription is paused while the group's offsets move, then resumed.`),
      lines.length ? h('ul', {}, lines.map((l) => h('li', {}, l))) : h('p', { class: 'muted' }, 'Kafka reported no partition for its topic, so nothing moves.'),
      h('div', { class: 'row' }, go, cancel)));
    return undefined;
  });
  return h('section', {}, h('h2', {}, 'Offsets'), form, confirm);
}

export async function subscriptionPage(view, ctx) {
  const id = ctx.parts[1];
  const path = `subscriptions/${encodeURIComponent(id)}`;
  let sub = await get(path);
  let partitions = [];
  const state = h('span');
  const pause = h('button', { type: 'button', id: 'pause-button' });
  const actionNote = h('div');
  const lastError = h('div');
  const partsBody = h('div');
  const recentBody = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  pause.addEventListener('click', async () => {
    pause.disabled = true;
    try {
      sub = (await api('PATCH', path, { paused: !sub.paused })).body;
      replace(actionNote, notice('ok', sub.paused ? 'Paused on every poller.' : 'Resumed.'));
    } catch (error) {
      replace(actionNote, notice('error', error.message));
    } finally {
      pause.disabled = false;
    }
  });
  const options = Object.entries(sub.options || {}).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]);
  replace(view,
    h('div', { class: 'title' }, h('h1', {}, 'Subscription ', h('code', {}, sub.id)), state),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Source'), h('dd', {}, sub.source),
      h('dt', {}, 'Sink'), h('dd', {}, sub.sink),
      h('dt', {}, 'Revision'), h('dd', {}, String(sub.revision)),
      h('dt', {}, 'Created'), h('dd', {}, fmtTime(sub.created_at))),
    h('div', { class: 'row' }, pause, link(['invocations'], 'All its invocations', { subscription: sub.id })),
    actionNote,
    lastError,
    h('section', {}, h('h2', {}, 'Partitions'), partsBody),
    resetForm(sub, () => partitions),
    h('section', {}, h('h2', {}, 'Recent invocations'), recentBody),
    h('details', {}, h('summary', {}, 'Options'), h('dl', { class: 'facts' }, options)));

  let round = 0;
  ctx.poll(async () => {
    const [doc, stats, group] = await Promise.all([get(path), metrics(), get(`${path}/lag`).catch(() => null)]);
    if (!ctx.alive()) return;
    sub = doc;
    const mine = stats.get(sub.id);
    const runtimeState = doc.runtime ? { state: doc.runtime.state } : mine;
    replace(state, badge(stateOf(sub, runtimeState)));
    pause.textContent = sub.paused ? 'Resume' : 'Pause';
    replace(lastError, doc.runtime?.last_error ? notice('error', `Last error: ${doc.runtime.last_error}`) : null);
    partitions = partitionRows(sub, group, doc.runtime, mine);
    const now = Date.now();
    replace(partsBody, partitions.length === 0
      ? h('p', { class: 'muted' }, group && !group.topic_exists ? `The topic ${topicOf(sub)} does not exist (yet).` : 'No partition known yet.')
      : table(['Partition', 'Committed', 'Log end', 'Lag', 'Lag age', 'Unfinished', 'Lag, since the page opened (up to 3 min)'], partitions.map((p) => {
        const history = remember(histories, `${sub.id} ${p.topic}/${p.partition}`, p.lag, now);
        return h('tr', { 'data-partition': p.partition },
          h('td', {}, `${p.topic}/${p.partition}`),
          h('td', { class: 'num' }, fmtNumber(p.committed)),
          h('td', { class: 'num' }, fmtNumber(p.logEnd)),
          h('td', { class: 'num', 'data-field': 'lag' }, fmtNumber(p.lag)),
          h('td', { class: 'num' }, fmtSeconds(p.seconds)),
          h('td', { class: 'num' }, fmtNumber(p.pending)),
          h('td', {}, lagChart(history, `lag of partition ${p.partition}`)));
      }), { id: 'partitions' }));
    if (round++ % RECENT_EVERY === 0) {
      const list = await get('invocations?limit=200');
      if (!ctx.alive()) return;
      const recent = list.invocations.filter((i) => i.subscription_id === sub.id).slice(0, 20);
      replace(recentBody, recent.length === 0
        ? h('p', { class: 'muted' }, 'None among the latest 200 invocations.')
        : table(INVOCATION_HEADERS, invocationRows(recent), { class: 'cards' }));
    }
  });
}
