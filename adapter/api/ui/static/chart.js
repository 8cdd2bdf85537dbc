// A small lag chart: one inline SVG polyline per partition, the last few minutes of samples.

import { s } from './dom.js';

const WIDTH = 240;
const HEIGHT = 56;
export const SAMPLES = 90; // 3 minutes at one sample every 2 s

// history: [{at, value}] oldest first. The y axis runs from 0 to the largest value.
export function lagChart(history, label) {
  const values = history.map((p) => p.value ?? 0);
  const top = Math.max(1, ...values);
  // The samples present span the width (the page keeps up to SAMPLES of them).
  const step = WIDTH / Math.max(1, values.length - 1);
  const start = 0;
  const points = values
    .map((v, i) => `${(start + i * step).toFixed(1)},${(HEIGHT - 2 - (v / top) * (HEIGHT - 6)).toFixed(1)}`)
    .join(' ');
  return s('svg', { class: 'chart', viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, role: 'img', 'aria-label': label },
    s('title', {}, label),
    s('line', { x1: 0, x2: WIDTH, y1: HEIGHT - 2, y2: HEIGHT - 2, class: 'axis' }),
    s('text', { x: 2, y: 10, class: 'scale' }, String(top)),
    values.length > 1 ? s('polyline', { points, class: 'line' }) : null,
    values.length > 0 ? s('circle', { cx: WIDTH - 1, cy: points.split(' ').pop().split(',')[1], r: 2, class: 'dot' }) : null);
}

export function remember(histories, key, value, at) {
  if (!histories.has(key)) histories.set(key, []);
  const history = histories.get(key);
  history.push({ at, value });
  if (history.length > SAMPLES) history.splice(0, history.length - SAMPLES);
  return history;
}
