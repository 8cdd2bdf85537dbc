// DOM helpers: every piece of data becomes a text node or an attribute value, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function replace(el, ...children) {
  el.replaceChildren();
  return fill(el, {}, children);
}

// A link inside the dashboard: the path is built from encoded parts, so it stays a #/ route.
export function link(parts, text, query) {
  const path = parts.map(encodeURIComponent).join('/');
  const search = query ? '?' + new URLSearchParams(query).toString() : '';
  return h('a', { href: `#/${path}${search}` }, text);
}

export function fmtNumber(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return Number(value).toLocaleString('en', { maximumFractionDigits: digits });
}

export function fmtSeconds(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1) return '0 s';
  if (value < 120) return `${Math.round(value)} s`;
  if (value < 7200) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function fmtTime(text) {
  if (!text) return '–';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

export function table(headers, rows, attrs = {}) {
  return h('div', { class: 'scroll' },
    h('table', attrs,
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
}

export function notice(kind, ...text) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...text);
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind || text.replaceAll(' ', '-')}` }, text);
}
