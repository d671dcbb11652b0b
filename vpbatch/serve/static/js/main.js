// The viewer page: wires the connection, the heatmap, the controls and the status bar.
// `window.vp` exposes the live state for the browser tests and the benchmark.

import { decodeArrow } from './arrow.js';
import { ColorScale } from './colors.js';
import { Connection } from './connection.js';
import { bindControls, bindTooltip, renderStatus } from './controls.js';
import { Heatmap } from './heatmap.js';

const query = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const stats = {
  received: 0, drawn: 0, dropped: 0, fps: 0, rps: 0, connection: 'connecting',
  ts: null, spot: null, regime: null, paused: false, ended: null, error: null, digits: 2,
  live: null, // source=live: the latest live_status frame (session state, latency, gaps)
};

/** Show the live badge and hide the replay controls (a live stream has no pace to set). */
function showLive(cfg) {
  $('live-badge').hidden = false;
  for (const id of ['pause', 'speed-label', 'seek-form']) $(id).hidden = true;
  return `${cfg.symbol} · ${cfg.dt} · LIVE · K=${cfg.grid_max_ticks}, bucket ${cfg.bucket_size_dollars}`
    + (cfg.data_start_et ? ` · since ${cfg.data_start_et} ET` : '');
}

async function main() {
  const scaleResponse = await fetch('/v1/vacuum-pressure/scale.json');
  const scale = new ColorScale(await scaleResponse.json());
  const heatmap = new Heatmap($('heatmap'), scale);
  const banner = $('banner');
  const show = (text, kind) => {
    banner.textContent = text;
    banner.className = kind;
    banner.hidden = !text;
  };
  const conn = new Connection(query, {
    onConfig(cfg) {
      heatmap.configure(cfg);
      stats.digits = heatmap.digits;
      $('title').textContent = cfg.source === 'live' ? showLive(cfg)
        : `${cfg.symbol} · ${cfg.dt} · ${cfg.source} · K=${cfg.grid_max_ticks}, `
          + `bucket ${cfg.bucket_size_dollars} · ${cfg.data_start_et} – ${cfg.data_end_et} ET`;
      controls.setSpeed(conn.speed);
      show('', '');
    },
    onState(update, grid) {
      heatmap.push(update, grid);
      stats.received += 1;
      stats.dropped = update.dropped_total;
      stats.ts = update.ts_ns;
      stats.spot = update.spot_price;
      stats.regime = update.regime;
      if (update.model_call !== undefined) {
        $('legend-model').hidden = false;
        const p = update.model_probability;
        const call = update.model_call > 0 ? 'UP' : update.model_call < 0 ? 'DOWN' : 'no call';
        stats.model = p == null ? call : `${call} (p_up ${p.toFixed(2)})`;
      }
    },
    onStatus(msg) {
      stats.paused = msg.paused;
      controls.setPaused(msg.paused);
      controls.setSpeed(msg.speed);
      if (msg.message) show(msg.message, 'warning');
    },
    onSeeked() { heatmap.clear(); },
    onLiveStatus(msg) {
      stats.live = msg;
      heatmap.setGaps(msg.gaps || []);
    },
    onWarning(message) { show(message, 'warning'); },
    onEnd(msg) {
      stats.ended = msg;
      if (msg.reason === 'session_ended') {
        $('live-badge').classList.add('ended');
        show(`Live session ended: ${msg.message || ''} (${msg.states_sent} states shown, `
          + `${msg.dropped_total} dropped).`, 'info');
        return;
      }
      show(`End of data: ${msg.states_sent} states streamed (${msg.dropped_total} dropped).`, 'info');
    },
    onError(message) {
      stats.error = message;
      show(`Error: ${message}`, 'error');
    },
    onConnection(state) { stats.connection = state; },
  });
  const controls = bindControls(document, {
    togglePause() { conn.send({ type: stats.paused ? 'resume' : 'pause' }); },
    setSpeed(value) { conn.setSpeed(value); },
    seek(time) { conn.seek(time); },
    zoom(f) { heatmap.zoom(f); },
  });
  $('heatmap').addEventListener('wheel', (ev) => {
    ev.preventDefault();
    heatmap.zoom(ev.deltaY > 0 ? 1.1 : 0.9);
  }, { passive: false });
  bindTooltip($('heatmap'), $('tooltip'), heatmap, () => stats.digits);
  window.addEventListener('resize', () => { heatmap.dirty = true; });

  let last = performance.now();
  let drawnAt = 0;
  let receivedAt = 0;
  const frame = (now) => {
    heatmap.draw(now);
    stats.drawn = heatmap.drawn;
    if (now - last >= 1000) {
      stats.fps = ((stats.drawn - drawnAt) * 1000) / (now - last);
      stats.rps = ((stats.received - receivedAt) * 1000) / (now - last);
      drawnAt = stats.drawn;
      receivedAt = stats.received;
      last = now;
    }
    renderStatus($('status'), stats);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  conn.open();
  window.vp = { stats, heatmap, scale, conn, decodeArrow };
}

main().catch((err) => {
  const banner = $('banner');
  banner.textContent = `Error: ${err.message}`;
  banner.className = 'error';
  banner.hidden = false;
  throw err;
});
