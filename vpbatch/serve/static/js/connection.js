// The websocket side of the page: connect with the page's query parameters, pair each
// grid_update text frame with the binary grid frame that follows it, send controls, and
// reconnect where the view was after an unexpected close (never after `end` or `error`).

import { decodeArrow } from './arrow.js';

export const STREAM_PATH = '/v1/vacuum-pressure/stream';
const PARAMS = ['product_type', 'symbol', 'dt', 'speed', 'start_time', 'end_time', 'throttle_ms', 'source', 'token'];
const RETRY_MS = [500, 1000, 2000, 4000, 8000];

/** ET wall time with microseconds of an epoch-ns string (for resuming after a reconnect). */
export function etClock(ns) {
  const big = BigInt(ns);
  const ms = Number(big / 1000000n);
  const hms = new Date(ms).toLocaleTimeString('en-GB', { timeZone: 'America/New_York', hour12: false });
  const micros = String(Number((big % 1000000000n) / 1000n)).padStart(6, '0');
  return `${hms}.${micros}`;
}

export class Connection {
  /**
   * handlers: onConfig(cfg), onState(update, grid), onStatus(msg), onSeeked(), onEnd(msg),
   * onError(message), onConnection(state) with state in connecting|open|reconnecting|ended|error,
   * onLiveStatus(msg) (source=live), onWarning(message) (a refused control; the stream goes on).
   */
  constructor(query, handlers) {
    this.params = {};
    for (const name of PARAMS) {
      const v = query.get(name);
      if (v !== null && v !== '') this.params[name] = v;
    }
    this.h = handlers;
    this.lastTs = null;
    this.pending = null;
    this.finished = false;
    this.retries = 0;
    this.speed = Number(this.params.speed ?? 1);
    // A live stream has no pace or position to resume: it always sends the newest states.
    this.live = this.params.source === 'live';
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const params = { ...this.params };
    if (!this.live) {
      params.speed = String(this.speed);
      if (this.lastTs !== null) params.start_time = etClock(BigInt(this.lastTs) + 1000n);
    }
    return `${proto}//${location.host}${STREAM_PATH}?${new URLSearchParams(params)}`;
  }

  open() {
    this.h.onConnection(this.retries ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => this.h.onConnection('open');
    ws.onmessage = (ev) => this.message(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      if (this.finished) return;
      const wait = RETRY_MS[Math.min(this.retries, RETRY_MS.length - 1)];
      this.retries += 1;
      this.h.onConnection('reconnecting');
      this.timer = setTimeout(() => this.open(), wait);
    };
  }

  message(data) {
    if (typeof data !== 'string') {
      if (!this.pending) throw new Error('grid frame without a grid_update before it');
      const update = this.pending;
      this.pending = null;
      if (update.skip) return; // sent before our seek reached the server
      this.lastTs = update.ts_ns;
      this.h.onState(update, decodeArrow(data));
      return;
    }
    const msg = JSON.parse(data);
    switch (msg.type) {
      case 'runtime_config':
        this.retries = 0;
        this.h.onConfig(msg);
        break;
      case 'grid_update':
        if (this.seeking) msg.skip = true;
        this.pending = msg;
        break;
      case 'status':
        if (typeof msg.speed === 'number') this.speed = msg.speed;
        if (this.seeking) {
          this.seeking = false;
          this.h.onSeeked();
        }
        this.h.onStatus(msg);
        break;
      case 'live_status':
        if (this.h.onLiveStatus) this.h.onLiveStatus(msg);
        break;
      case 'end':
        this.finished = true;
        this.h.onConnection('ended');
        this.h.onEnd(msg);
        break;
      case 'error':
        if (msg.control !== undefined) { // a control the stream refused: it goes on
          if (this.h.onWarning) this.h.onWarning(msg.message);
          break;
        }
        this.finished = true;
        this.h.onConnection('error');
        this.h.onError(msg.message);
        break;
      default:
        break;
    }
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  seek(time) {
    if (this.live) return;
    this.lastTs = null;
    this.params.start_time = time;
    this.seeking = true; // frames already in flight are dropped until the server answers
    this.send({ type: 'seek', time });
  }

  setSpeed(value) {
    if (this.live) return;
    this.speed = value;
    this.send({ type: 'speed', value });
  }

  close() {
    this.finished = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}
