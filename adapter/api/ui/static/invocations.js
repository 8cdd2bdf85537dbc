// Invocations: the filtered listing, and one invocation with its history and actions.

import { api, get } from './api.js';
import { badge, fmtTime, h, link, notice, replace, table } from './dom.js';

const STATUSES = ['PENDING', 'RUNNING', 'BACKING_OFF', 'SUCCEEDED', 'FAILED', 'DEAD_LETTERED', 'DUPLICATE', 'CANCELLED', 'KILLED'];
const COMPLETED = new Set(['SUCCEEDED', 'FAILED', 'DEAD_LETTERED', 'DUPLICATE', 'CANCELLED', 'KILLED']);
const FILTERS = ['subscription', 'status', 'key', 'handler'];
const ERROR_PREVIEW = 160;
const PAGE = 50; // invocation rows a load (and each "More") adds
const READS = 10; // listing requests a load makes at most (each reads a bounded part of the ledger)

export const INVOCATION_HEADERS = ['Invocation', 'Status', 'Target', 'Key', 'Record', 'Attempts', 'Modified', 'Last error'];

function clip(text, size) {
  if (!text) return '';
  return text.length > size ? `${text.slice(0, size)}…` : text;
}

export function invocationRows(invocations) {
  return invocations.map((inv) => h('tr', { 'data-invocation': inv.id, 'data-status': inv.status },
    h('td', { 'data-label': 'Invocation' }, link(['invocations', inv.id], inv.id)),
    h('td', { 'data-label': 'Status' }, badge(inv.status, inv.status.toLowerCase())),
    h('td', { 'data-label': 'Target' }, inv.target),
    h('td', { 'data-label': 'Key' }, inv.key ?? '–'),
    h('td', { 'data-label': 'Record' }, `${inv.topic}/${inv.partition}@${inv.offset}`),
    h('td', { 'data-label': 'Attempts', class: 'num' }, String(inv.attempts)),
    h('td', { 'data-label': 'Modified' }, fmtTime(inv.modified_at || inv.created_at)),
    h('td', { 'data-label': 'Last error', class: 'error-text' }, clip(inv.last_error, ERROR_PREVIEW))));
}

export async function invocationsPage(view, ctx) {
  const { subscriptions } = await get('subscriptions');
  const q = ctx.query;
  const subscription = h('select', { name: 'subscription', 'aria-label': 'subscription' },
    h('option', { value: '' }, 'every subscription'),
    subscriptions.map((s) => h('option', { value: s.id, selected: s.id === q.get('subscription') }, `${s.id} (${s.sink})`)));
  const status = h('select', { name: 'status', 'aria-label': 'status' },
    h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === q.get('status') }, s)));
  const key = h('input', { name: 'key', placeholder: 'key', value: q.get('key') || '', 'aria-label': 'key' });
  const handler = h('input', { name: 'handler', placeholder: 'Service/handler', value: q.get('handler') || '', 'aria-label': 'handler' });
  const form = h('form', { class: 'row filters', id: 'invocation-filters' }, subscription, status, key, handler, h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, el] of [['subscription', subscription], ['status', status], ['key', key], ['handler', handler]]) {
      if (el.value.trim()) next.set(name, el.value.trim());
    }
    location.hash = `#/invocations?${next}`;
  });
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'More');
  const message = h('div');
  replace(view, h('div', { class: 'title' }, h('h1', {}, 'Invocations')), form, message,
    h('div', { class: 'scroll' }, h('table', { id: 'invocations', class: 'cards' },
      h('thead', {}, h('tr', {}, INVOCATION_HEADERS.map((t) => h('th', { scope: 'col' }, t)))), body)),
    more);
  const params = new URLSearchParams();
  for (const name of FILTERS) if (q.get(name)) params.set(name, q.get(name));
  let token = null;
  // Up to PAGE rows a load, following next_page_token: a filtered listing reads a bounded
  // part of the ledger per request, so a page may hold fewer rows than asked, even none,
  // while the token says more follow. At most READS requests a load, so a filter matching
  // little on a large ledger does not scan all of it unasked: "More" searches on.
  const load = async () => {
    let shown = 0;
    let reads = 0;
    more.disabled = true;
    do {
      params.set('limit', String(PAGE - shown));
      if (token) params.set('page_token', token);
      const page = await get(`invocations?${params}`);
      if (!ctx.alive()) return;
      body.append(...invocationRows(page.invocations));
      shown += page.invocations.length;
      token = page.next_page_token;
      reads += 1;
    } while (token && shown < PAGE && reads < READS);
    if (!body.children.length) {
      replace(message, notice('info', token ? 'No invocation matches so far: More searches further.' : 'No invocation matches.'));
    } else {
      replace(message);
    }
    more.hidden = !token;
    more.disabled = false;
  };
  more.addEventListener('click', () => load().catch(ctx.fail));
  await load();
}

// What the ledger knows of the invocation's life, oldest first.
function history(inv, command) {
  const events = [];
  if (inv.created_at) events.push([inv.created_at, 'admitted', 'the record was taken from Kafka']);
  if (command) {
    events.push([command.requested_at, `${command.action} requested`, `command ${command.state}`]);
    if (command.done_at) events.push([command.done_at, `${command.action} done`, `outcome ${command.outcome ?? '–'}`]);
  }
  const attempts = `${inv.attempts} attempt${inv.attempts === 1 ? '' : 's'}`;
  if (inv.completed_at) events.push([inv.completed_at, inv.status, `completed after ${attempts}`]);
  else events.push([inv.modified_at, inv.status, `${attempts} so far${inv.next_retry_at ? `; next attempt at ${fmtTime(inv.next_retry_at)}` : ''}`]);
  return events.filter((e) => e[0]).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
}

// Restate's rules: cancel and kill while not completed, purge once completed, retry while
// backing off. The API enforces them too (409 with the reason); the buttons only mirror them.
export function allowedActions(status) {
  const done = COMPLETED.has(status);
  return { retry: status === 'BACKING_OFF', cancel: !done, kill: !done, purge: done };
}

const CONFIRM = {
  cancel: 'Cancel this invocation? Its record is not delivered again; the next record of its key starts.',
  kill: 'Kill this invocation? Its record is not delivered again; the next record of its key starts.',
  purge: 'Purge this invocation? Its ledger row is deleted.',
};

function recordSection(record) {
  const size = `${record.value_bytes.toLocaleString('en')} bytes`;
  const note = record.preview === null ? 'null value (a tombstone)'
    : `${size}${record.truncated ? ', first 4,096 shown' : ''}${record.encoding === 'base64' ? ', binary: base64' : ''}; secrets masked`;
  return [
    h('dl', { class: 'facts' },
      h('dt', {}, 'Timestamp'), h('dd', {}, fmtTime(record.timestamp)),
      h('dt', {}, 'Key'), h('dd', {}, record.key ?? '–')),
    record.headers.length
      ? table(['Header', 'Value'], record.headers.map((hd) => h('tr', {}, h('td', {}, h('code', {}, hd.name)), h('td', {}, hd.value))), { id: 'record-headers' })
      : h('p', { class: 'muted' }, 'No headers.'),
    h('p', { class: 'muted small' }, `Value: ${note}`),
    record.preview === null ? null : h('pre', { class: 'payload', id: 'payload' }, record.preview),
  ];
}

export async function invocationPage(view, ctx) {
  const id = ctx.parts[1];
  const path = `invocations/${encodeURIComponent(id)}`;
  const result = h('div', { id: 'action-result' });
  // The record is read from Kafka once (it never changes); secrets come masked, size capped.
  const recordView = h('div', { id: 'record' }, h('p', { class: 'muted' }, 'Reading the record from Kafka…'));
  get(`${path}/record`).then(
    (record) => replace(recordView, recordSection(record)),
    (error) => replace(recordView, notice('info', `Record not shown: ${error.message}`)),
  );
  const show = async () => {
    const inv = await get(path);
    let command = null;
    try {
      command = await get(`${path}/command`);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    if (!ctx.alive()) return;
    const allowed = allowedActions(inv.status);
    const buttons = ['retry', 'cancel', 'kill', 'purge'].map((action) => {
      const button = h('button', { type: 'button', 'data-action': action, class: action === 'retry' ? '' : 'danger', disabled: !allowed[action] }, action === 'retry' ? 'Retry now' : action[0].toUpperCase() + action.slice(1));
      button.addEventListener('click', async () => {
        if (CONFIRM[action] && !window.confirm(CONFIRM[action])) return;
        try {
          const { status, body } = await api('PATCH', `${path}/${action}`);
          replace(result, notice('ok', status === 202
            ? `${action}: queued for the poller that holds it (command ${body.command?.state ?? 'pending'}).`
            : `${action}: done; status now ${body.status ?? 'purged'}.`));
          if (action === 'purge') {
            replace(view, notice('ok', `${inv.id} purged.`), link(['invocations'], 'Back to invocations'));
            return;
          }
          await show();
        } catch (error) {
          replace(result, notice('error', `${action} refused: ${error.message}`));
        }
      });
      return button;
    });
    replace(view,
      h('div', { class: 'title' }, h('h1', {}, 'Invocation ', h('code', {}, inv.id)), badge(inv.status, inv.status.toLowerCase())),
      h('div', { class: 'row', id: 'invocation-actions' }, buttons),
      result,
      inv.last_error ? h('section', {}, h('h2', {}, 'Last error'), h('pre', { class: 'error-text', id: 'last-error' }, inv.last_error)) : null,
      h('section', {}, h('h2', {}, 'Record'), h('dl', { class: 'facts' },
        h('dt', {}, 'Subscription'), h('dd', {}, link(['subscriptions', inv.subscription_id], inv.subscription_id)),
        h('dt', {}, 'Target'), h('dd', {}, inv.target),
        h('dt', {}, 'Topic'), h('dd', {}, inv.topic),
        h('dt', {}, 'Partition'), h('dd', {}, String(inv.partition)),
        h('dt', {}, 'Offset'), h('dd', {}, String(inv.offset)),
        h('dt', {}, 'Key'), h('dd', {}, inv.key ?? '–'),
        h('dt', {}, 'Attempts'), h('dd', { id: 'attempts' }, String(inv.attempts)),
        h('dt', {}, 'Dead-letter topic'), h('dd', {}, inv.dead_letter_topic ?? '–'))),
      h('section', {}, h('h2', {}, 'Headers and payload'), recordView),
      h('section', {}, h('h2', {}, 'Status history'),
        table(['When', 'Event', 'Detail'], history(inv, command).map(([at, what, detail]) => h('tr', {}, h('td', {}, fmtTime(at)), h('td', {}, what), h('td', {}, detail))), { id: 'history' })));
  };
  await show();
  ctx.poll(async () => {
    // Live while the invocation may still change; a completed one stays as it is.
    const badgeEl = view.querySelector('.title .badge');
    if (badgeEl && !COMPLETED.has(badgeEl.textContent)) await show();
  });
}
