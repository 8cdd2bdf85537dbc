// The dashboard's router: #/<page>/<id>?<query>; each page renders into <main> and may poll.

import { AuthRequired, hasToken, setToken } from './api.js';
import { h, notice, replace } from './dom.js';
import { deploymentsPage } from './deployments.js';
import { invocationPage, invocationsPage } from './invocations.js';
import { overviewPage } from './overview.js';
import { subscriptionPage } from './subscription.js';

export const POLL_MS = 2000;

const view = document.getElementById('view');
const live = document.getElementById('live');
let generation = 0;

function parseRoute() {
  const [path, search] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search || '') };
}

function pick(parts) {
  const [first, id] = parts;
  if (!first || first === 'subscriptions') {
    return id ? ['overview', subscriptionPage] : ['overview', overviewPage];
  }
  if (first === 'invocations') return ['invocations', id ? invocationPage : invocationsPage];
  if (first === 'deployments' || first === 'services') return ['deployments', deploymentsPage];
  return ['', null];
}

function tokenPrompt(again) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, 'aria-label': 'admin token' });
  const form = h('form', { class: 'card token', id: 'token-form' },
    h('h1', {}, 'Admin token'),
    h('p', {}, 'This admin API needs its bearer token. It is kept in this tab only (session storage) and sent with every request the dashboard makes.'),
    again ? notice('error', 'That token was refused.') : null,
    h('label', {}, 'Token ', input),
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    render();
  });
  replace(view, form);
  input.focus();
}

async function render() {
  const mine = ++generation;
  const { parts, query } = parseRoute();
  const [nav, page] = pick(parts);
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.toggleAttribute('aria-current', a.dataset.nav === nav);
  }
  if (!page) {
    replace(view, notice('error', 'No such page.'));
    return;
  }
  const ctx = {
    parts,
    query,
    alive: () => mine === generation,
    // Runs step now and every POLL_MS until the page changes; errors show, polling goes on.
    poll: async (step) => {
      while (ctx.alive()) {
        try {
          await step();
          live.textContent = `updated ${new Date().toLocaleTimeString()}`;
          live.classList.remove('stale');
        } catch (error) {
          if (error instanceof AuthRequired) return ctx.fail(error);
          live.textContent = `refresh failed: ${error.message}`;
          live.classList.add('stale');
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
      return undefined;
    },
    fail: (error) => {
      if (!ctx.alive()) return;
      if (error instanceof AuthRequired) {
        generation += 1;
        // A stored token that gets a 401 was refused (or the poller's token changed).
        tokenPrompt(hasToken());
        return;
      }
      replace(view, notice('error', error.message));
    },
  };
  try {
    await page(view, ctx);
  } catch (error) {
    ctx.fail(error);
  }
}

window.addEventListener('hashchange', render);
render();
