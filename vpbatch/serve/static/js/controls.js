// Toolbar (pause/resume, speed, seek, zoom), status bar and the hover tooltip.

import { etTime } from './heatmap.js';

export const SPEEDS = [0.5, 1, 2, 4, 10, 25, 100, 0];

export function bindControls(root, actions) {
  const $ = (id) => root.querySelector(`#${id}`);
  const pause = $('pause');
  pause.addEventListener('click', () => actions.togglePause());
  const speed = $('speed');
  for (const s of SPEEDS) {
    const opt = document.createElement('option');
    opt.value = String(s);
    opt.textContent = s === 0 ? 'firehose' : `${s}x`;
    speed.append(opt);
  }
  speed.addEventListener('change', () => actions.setSpeed(Number(speed.value)));
  $('seek-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('seek-time').value.trim();
    if (value) actions.seek(value);
  });
  $('zoom-in').addEventListener('click', () => actions.zoom(0.8));
  $('zoom-out').addEventListener('click', () => actions.zoom(1.25));
  return {
    setPaused(paused) {
      pause.textContent = paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', String(paused));
    },
    setSpeed(value) {
      if (![...speed.options].some((o) => Number(o.value) === value)) {
        const opt = document.createElement('option');
        opt.value = String(value);
        opt.textContent = `${value}x`;
        speed.append(opt);
      }
      speed.value = String(value);
    },
  };
}

export function renderStatus(el, s) {
  const parts = [
    ['time', s.ts ? `${etTime(s.ts, true)} ET` : '–'],
    ['spot', s.spot != null ? s.spot.toFixed(s.digits) : '–'],
    ['regime', s.regime || '–'],
    ...(s.model ? [['model', s.model]] : []),
    ['frames/s', s.fps.toFixed(1)],
    ['received/s', s.rps.toFixed(1)],
    ['dropped', String(s.dropped)],
    ['connection', s.connection],
  ];
  if (s.live) parts.splice(0, 0, ...liveParts(s.live));
  el.replaceChildren(...parts.map(([k, v]) => {
    const span = document.createElement('span');
    span.dataset.field = k;
    span.className = k === 'regime' ? `regime-${v}` : '';
    span.textContent = `${k}: ${v}`;
    return span;
  }));
}

/** Status-bar fields of a live session (from its live_status frames). */
export function liveParts(live) {
  const ms = (v) => (v == null ? '–' : v.toFixed(v < 10 ? 1 : 0));
  const lat = live.latency || {};
  return [
    ['session', live.state || '–'],
    ['latency', `p50 ${ms(lat.p50_ms)} / p99 ${ms(lat.p99_ms)} ms`],
    ['reconnects', String(live.reconnects ?? 0)],
    ['gaps', String((live.gaps || []).length)],
    ['late', String(live.late ?? 0)],
  ];
}

export function bindTooltip(canvas, tip, heatmap, digits) {
  canvas.addEventListener('mousemove', (ev) => {
    const rect = canvas.getBoundingClientRect();
    const cell = heatmap.cellAt(ev.clientX - rect.left, ev.clientY - rect.top);
    if (!cell) { tip.hidden = true; return; }
    const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4));
    tip.textContent = [
      `${etTime(cell.ts_ns, true)} ET`,
      `price ${cell.price.toFixed(digits())}  (k = ${cell.k})`,
      `pressure_now ${fmt(cell.pressure_now)}`,
      `vacuum_now ${fmt(cell.vacuum_now)}`,
      `net ${fmt(cell.net)}`,
      `rest_depth ${cell.rest_depth}`,
      `regime ${cell.regime}`,
      ...(cell.model_call != null ? [`model call ${cell.model_call}`] : []),
    ].join('\n');
    tip.style.left = `${ev.clientX + 14}px`;
    tip.style.top = `${ev.clientY + 14}px`;
    tip.hidden = false;
  });
  canvas.addEventListener('mouseleave', () => { tip.hidden = true; });
}
