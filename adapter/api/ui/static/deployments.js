// Deployments and the services they serve, with register and remove.

import { api, get } from './api.js';
import { fmtTime, h, notice, replace, table } from './dom.js';

function registerForm(done) {
  const address = h('input', { name: 'address', id: 'register-address', required: true, placeholder: 'http://host:port/ or arn:aws:lambda:…', 'aria-label': 'deployment address' });
  const force = h('input', { type: 'checkbox', name: 'force' });
  const message = h('div');
  const form = h('form', { class: 'row', id: 'register-form' }, address, h('label', {}, force, ' overwrite (force)'), h('button', { type: 'submit' }, 'Register'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = address.value.trim();
    const body = value.startsWith('arn:') ? { arn: value } : { uri: value };
    if (force.checked) body.force = true;
    replace(message, notice('info', 'Discovering…'));
    try {
      const { status, body: doc } = await api('POST', 'deployments', body);
      replace(message, notice('ok', `${status === 201 ? 'Registered' : 'Unchanged or updated'}: ${doc.id} (${doc.services.map((s) => s.name).join(', ')}).`));
      await done();
    } catch (error) {
      replace(message, notice('error', `Registration failed: ${error.message}`));
    }
  });
  return h('section', {}, h('h2', {}, 'Register a deployment'), form, message);
}

export async function deploymentsPage(view, ctx) {
  const list = h('div');
  const message = h('div');
  const load = async () => {
    const [{ deployments }, { services }] = await Promise.all([get('deployments'), get('services')]);
    if (!ctx.alive()) return;
    const byDeployment = new Map();
    for (const svc of services) {
      if (!byDeployment.has(svc.deployment_id)) byDeployment.set(svc.deployment_id, []);
      byDeployment.get(svc.deployment_id).push(svc);
    }
    replace(list, deployments.length === 0
      ? h('p', { class: 'muted' }, 'No deployments registered.')
      : deployments.map((dep) => {
        const remove = h('button', { type: 'button', class: 'danger', 'data-remove': dep.id }, 'Remove');
        remove.addEventListener('click', async () => {
          const sure = window.confirm(`Remove ${dep.id}? The API refuses (409) while subscriptions use it.`);
          if (!sure) return;
          try {
            await api('DELETE', `deployments/${encodeURIComponent(dep.id)}`);
            replace(message, notice('ok', `${dep.id} removed.`));
            await load();
          } catch (error) {
            replace(message, notice('error', `Remove refused: ${error.message}`));
          }
        });
        const svcs = byDeployment.get(dep.id) || [];
        return h('article', { class: 'card', 'data-deployment': dep.id },
          h('div', { class: 'title' }, h('h2', {}, h('code', {}, dep.id)), remove),
          h('dl', { class: 'facts' },
            h('dt', {}, dep.arn ? 'Lambda' : 'URI'), h('dd', {}, dep.arn || dep.uri),
            h('dt', {}, 'Created'), h('dd', {}, fmtTime(dep.created_at)),
            Object.keys(dep.additional_headers || {}).length
              ? [h('dt', {}, 'Headers'), h('dd', {}, Object.entries(dep.additional_headers).map(([k, v]) => `${k}: ${v}`).join(', '))]
              : null),
          table(['Service', 'Type', 'Revision', 'Handlers'], svcs.map((svc) => h('tr', { 'data-service': svc.name },
            h('td', {}, svc.name),
            h('td', {}, svc.ty),
            h('td', { class: 'num' }, String(svc.revision)),
            h('td', {}, h('ul', { class: 'plain' }, svc.handlers.map((hd) => h('li', {}, h('code', {}, hd.name), ` ${hd.ty}, input ${hd.input}`)))))), { class: 'cards' }));
      }));
  };
  replace(view, h('div', { class: 'title' }, h('h1', {}, 'Deployments and services')), message, list, registerForm(load));
  await load();
}
