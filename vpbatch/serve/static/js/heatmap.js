// The live heatmap: one column per received state (newest on the right), one row per price
// bucket at its absolute price (the window follows spot), colour/brightness from colors.js,
// best bid/ask/mid lines, trade dots and the regime band, as `vpbatch plot` draws them.

import { numbers } from './arrow.js';
import { hexToRgb } from './colors.js';

/** Columns of history kept and drawn. */
export const HISTORY = 1600;
const AXIS_RIGHT = 74;
const AXIS_BOTTOM = 22;
const BAND = 12;
const GAP = 3;
const REFIT_MS = 1000;

function cssColor(hex, alpha = 1) {
  const [r, g, b] = hexToRgb(hex).map((c) => Math.round(c * 255));
  return `rgba(${r},${g},${b},${alpha})`;
}

export function etTime(ns, millis = false) {
  const ms = Number(BigInt(ns) / 1000000n);
  const text = new Date(ms).toLocaleTimeString('en-GB', { timeZone: 'America/New_York', hour12: false });
  return millis ? `${text}.${String(ms % 1000).padStart(3, '0')}` : text;
}

export class Heatmap {
  constructor(canvas, scale) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.scale = scale;
    this.rows = 0;
    this.dirty = true;
    this.zoomRows = null;
    this.centre = null;
    this.lastRefit = 0;
    this.drawn = 0; // states drawn so far (frames/s in the status bar)
    this.gaps = []; // live session gaps [fromMs, toMs]: marked on the time axis
    this.gapMarks = []; // columns marked in the last draw (tests read it)
  }

  /** Gaps of a live session, [[from_ns, to_ns], ...] as strings: a marker where data resumed. */
  setGaps(gaps) {
    const ms = (ns) => Number(BigInt(ns) / 1000000n);
    const next = [];
    for (const gap of gaps) {
      try {
        if (Array.isArray(gap) && gap.length >= 2) next.push([ms(gap[0]), ms(gap[1])]);
      } catch (err) { // not a pair of epoch-ns values: nothing to mark
      }
    }
    if (JSON.stringify(next) !== JSON.stringify(this.gaps)) {
      this.gaps = next;
      this.dirty = true;
    }
  }

  /** Geometry from runtime_config; keeps the history when it is unchanged (reconnect). */
  configure(cfg) {
    const rows = cfg.grid_rows;
    const bucket = cfg.bucket_size_dollars;
    if (rows === this.rows && bucket === this.bucket) return;
    this.rows = rows;
    this.K = cfg.grid_max_ticks;
    this.bucket = bucket;
    this.digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(bucket)) + 1));
    this.net = new Float32Array(HISTORY * rows);
    this.depth = new Float32Array(HISTORY * rows);
    this.pnow = new Float32Array(HISTORY * rows);
    this.vnow = new Float32Array(HISTORY * rows);
    this.color = new Uint32Array(HISTORY * rows);
    this.base = new Float64Array(HISTORY); // absolute bucket of k = -K
    this.ts = new Array(HISTORY).fill(null);
    this.tsMs = new Float64Array(HISTORY);
    this.bid = new Float64Array(HISTORY);
    this.ask = new Float64Array(HISTORY);
    this.mid = new Float64Array(HISTORY);
    this.buy = new Float64Array(HISTORY);
    this.sell = new Float64Array(HISTORY);
    this.regime = new Array(HISTORY).fill(null);
    this.model = new Array(HISTORY).fill(null); // a fitted model's call (+1/-1/0), if any
    this.hasModel = false;
    this.clear();
  }

  clear() {
    this.count = 0; // columns filled
    this.head = 0; // next slot
    this.centre = null;
    this.dirty = true;
  }

  /** Add one state: its grid_update frame and its decoded Arrow grid. */
  push(update, grid) {
    if (grid.length !== this.rows) throw new Error(`grid frame has ${grid.length} rows, expected ${this.rows}`);
    const slot = this.head;
    const at = slot * this.rows;
    const price = numbers(grid, 'price');
    const depth = numbers(grid, 'rest_depth');
    const pnow = numbers(grid, 'pressure_now');
    const vnow = numbers(grid, 'vacuum_now');
    for (let i = 0; i < this.rows; i++) {
      this.net[at + i] = pnow[i] - vnow[i];
      this.depth[at + i] = depth[i];
      this.pnow[at + i] = pnow[i];
      this.vnow[at + i] = vnow[i];
      this.color[at + i] = this.scale.rgba(pnow[i] - vnow[i], depth[i]);
    }
    this.base[slot] = Math.round(price[0] / this.bucket);
    this.ts[slot] = update.ts_ns;
    this.tsMs[slot] = Number(BigInt(update.ts_ns) / 1000000n);
    this.bid[slot] = update.best_bid_price ?? NaN;
    this.ask[slot] = update.best_ask_price ?? NaN;
    this.mid[slot] = update.mid_price ?? NaN;
    this.buy[slot] = update.buy_volume;
    this.sell[slot] = update.sell_volume;
    this.regime[slot] = update.regime;
    this.model[slot] = update.model_call ?? null;
    if (update.model_call !== undefined) this.hasModel = true;
    this.head = (slot + 1) % HISTORY;
    this.count = Math.min(this.count + 1, HISTORY);
    this.spotBucket = Math.round(update.spot_price / this.bucket);
    this.dirty = true;
    this.pendingDrawn = (this.pendingDrawn || 0) + 1;
  }

  slotOf(column) {
    // column 0 = oldest kept, count-1 = newest
    return (this.head - this.count + column + HISTORY) % HISTORY;
  }

  zoom(factor) {
    const rows = Math.round((this.zoomRows || this.defaultRows()) * factor);
    this.zoomRows = Math.max(11, Math.min(4 * this.rows + 1, rows));
    this.dirty = true;
  }

  defaultRows() { return this.rows + 20; }

  refit(now) {
    if (now - this.lastRefit < REFIT_MS || !this.count) return;
    this.lastRefit = now;
    const n = this.count * this.rows;
    const nets = new Float32Array(n);
    const depths = new Float32Array(n);
    for (let c = 0; c < this.count; c++) {
      const at = this.slotOf(c) * this.rows;
      nets.set(this.net.subarray(at, at + this.rows), c * this.rows);
      depths.set(this.depth.subarray(at, at + this.rows), c * this.rows);
    }
    if (this.scale.fit(nets, depths)) {
      for (let i = 0; i < this.color.length; i++) this.color[i] = this.scale.rgba(this.net[i], this.depth[i]);
      this.dirty = true;
    }
  }

  layout() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
      this.dirty = true;
    }
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const bands = this.hasModel ? 2 : 1;
    return { w, h, plotW: w - AXIS_RIGHT, plotH: h - AXIS_BOTTOM - bands * (BAND + GAP) };
  }

  /** Visible buckets: centred on spot, re-centred when spot nears an edge. */
  window(visible) {
    if (!Number.isFinite(this.centre) || Math.abs(this.spotBucket - this.centre) > visible / 4) {
      this.centre = this.spotBucket;
    }
    const top = this.centre + Math.floor(visible / 2);
    return { top, bottom: top - visible + 1 };
  }

  /** Redraw when something changed; returns true when it drew. */
  draw(now) {
    if (!this.rows) return false;
    this.refit(now);
    const box = this.layout();
    if (!this.dirty) return false;
    this.dirty = false;
    const { ctx } = this;
    const visible = this.zoomRows || this.defaultRows();
    ctx.fillStyle = cssColor(this.scale.spec.background);
    ctx.fillRect(0, 0, box.w, box.h);
    if (!this.count) return true;
    const { top, bottom } = this.window(visible);
    this.view = { top, bottom, visible, ...box };
    // 1. the cells, one image pixel per (column, bucket), scaled to the plot
    if (!this.image || this.image.height !== visible) {
      this.image = new ImageData(HISTORY, visible);
      this.pixels = new Uint32Array(this.image.data.buffer);
      this.offscreen = new OffscreenCanvas(HISTORY, visible);
    }
    const px = this.pixels;
    px.fill(0); // transparent outside the grid: the background shows
    const first = HISTORY - this.count;
    for (let c = 0; c < this.count; c++) {
      const slot = this.slotOf(c);
      const base = this.base[slot];
      const at = slot * this.rows;
      const x = first + c;
      // rows r with bucket = top - r; k index = bucket - base
      const rFrom = Math.max(0, top - (base + this.rows - 1));
      const rTo = Math.min(visible - 1, top - base);
      for (let r = rFrom; r <= rTo; r++) px[r * HISTORY + x] = this.color[at + (top - r - base)];
    }
    this.offscreen.getContext('2d').putImageData(this.image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.offscreen, 0, 0, HISTORY, visible, 0, 0, box.plotW, box.plotH);
    const colW = box.plotW / HISTORY;
    const rowH = box.plotH / visible;
    const xOf = (c) => (first + c + 0.5) * colW;
    const yOf = (price) => (top - price / this.bucket + 0.5) * rowH;
    // 2. best bid / ask / mid lines
    const line = (series, color, dash) => {
      ctx.beginPath();
      ctx.setLineDash(dash);
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.2;
      let pen = false;
      for (let c = 0; c < this.count; c++) {
        const v = series[this.slotOf(c)];
        if (!Number.isFinite(v)) { pen = false; continue; }
        const y = yOf(v);
        if (pen) ctx.lineTo(xOf(c), y); else ctx.moveTo(xOf(c), y);
        pen = true;
      }
      ctx.stroke();
      ctx.setLineDash([]);
    };
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, box.plotW, box.plotH);
    ctx.clip();
    const spec = this.scale.spec;
    line(this.bid, cssColor(spec.bid_color), []);
    line(this.ask, cssColor(spec.ask_color), []);
    line(this.mid, cssColor(spec.mid_color, 0.8), [4, 3]);
    // 3. trades: aggressor volume at the mid (area ~ volume)
    let ref = 1;
    for (let c = 0; c < this.count; c++) ref = Math.max(ref, this.buy[this.slotOf(c)], this.sell[this.slotOf(c)]);
    for (const [series, color] of [[this.buy, spec.buy_color], [this.sell, spec.sell_color]]) {
      ctx.fillStyle = cssColor(color, 0.85);
      for (let c = 0; c < this.count; c++) {
        const slot = this.slotOf(c);
        const v = series[slot];
        if (v > 0 && Number.isFinite(this.mid[slot])) {
          ctx.beginPath();
          ctx.arc(xOf(c), yOf(this.mid[slot]), 1.5 + 4 * Math.sqrt(v / ref), 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    }
    ctx.restore();
    // 4. the regime band under the heatmap
    const bandY = box.plotH + GAP;
    for (let c = 0; c < this.count; c++) {
      const name = this.regime[this.slotOf(c)] || 'CHOP';
      ctx.fillStyle = cssColor(spec.regime_colors[name] || spec.regime_colors.CHOP);
      ctx.fillRect((first + c) * colW, bandY, Math.max(colW, 1), BAND);
    }
    // 4b. the fitted model's calls (build --model, SPEC §15) in a second band under it
    if (this.hasModel) {
      for (let c = 0; c < this.count; c++) {
        const call = this.model[this.slotOf(c)];
        const name = call > 0 ? 'UP' : call < 0 ? 'DOWN' : 'CHOP';
        ctx.fillStyle = cssColor(spec.regime_colors[name] || spec.regime_colors.CHOP);
        ctx.fillRect((first + c) * colW, bandY + BAND + GAP, Math.max(colW, 1), BAND);
      }
    }
    const axisY = bandY + (this.hasModel ? 2 * BAND + GAP : BAND);
    // 5. axes: price on the right, ET time at the bottom
    ctx.fillStyle = '#c8c8c8';
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    const step = Math.max(1, Math.ceil(visible / (box.plotH / 28)));
    for (let b = top - (top % step); b >= bottom; b -= step) {
      ctx.fillText((b * this.bucket).toFixed(this.digits), box.plotW + 6, yOf(b * this.bucket));
    }
    ctx.textBaseline = 'top';
    const every = Math.max(1, Math.round(140 / Math.max(colW, 1e-6)));
    for (let c = this.count - 1; c >= 0; c -= every) {
      const ts = this.ts[this.slotOf(c)];
      const x = xOf(c);
      if (x < 30) break;
      ctx.fillText(etTime(ts), x - 26, axisY + 5);
    }
    this.drawGaps(first, colW, axisY);
    this.drawn += this.pendingDrawn || 0;
    this.pendingDrawn = 0;
    return true;
  }

  /** A dashed amber line where each gap ends (data resumed), labelled on the time axis. */
  drawGaps(first, colW, axisY) {
    this.gapMarks = [];
    if (!this.gaps.length || this.count < 2) return;
    const { ctx } = this;
    ctx.save();
    ctx.strokeStyle = '#f5a623';
    ctx.fillStyle = '#f5a623';
    ctx.setLineDash([3, 3]);
    ctx.lineWidth = 1.5;
    for (const [, toMs] of this.gaps) {
      for (let c = 1; c < this.count; c++) {
        if (this.tsMs[this.slotOf(c - 1)] < toMs && toMs <= this.tsMs[this.slotOf(c)]) {
          const x = (first + c) * colW;
          ctx.beginPath();
          ctx.moveTo(x, 0);
          ctx.lineTo(x, axisY);
          ctx.stroke();
          ctx.fillText('gap', x + 2, 2);
          this.gapMarks.push(c);
          break;
        }
      }
    }
    ctx.restore();
  }

  /** The cell under a canvas point (CSS pixels), or null. */
  cellAt(x, y) {
    const v = this.view;
    if (!v || !this.count || x < 0 || y < 0 || x >= v.plotW || y >= v.plotH) return null;
    const column = Math.floor((x / v.plotW) * HISTORY) - (HISTORY - this.count);
    if (column < 0 || column >= this.count) return null;
    const bucket = v.top - Math.floor((y / v.plotH) * v.visible);
    const slot = this.slotOf(column);
    const i = bucket - this.base[slot];
    if (i < 0 || i >= this.rows) return null;
    const at = slot * this.rows + i;
    return {
      ts_ns: this.ts[slot], k: i - this.K, price: bucket * this.bucket,
      pressure_now: this.pnow[at], vacuum_now: this.vnow[at], net: this.net[at],
      rest_depth: this.depth[at], regime: this.regime[slot], model_call: this.model[slot],
    };
  }
}
