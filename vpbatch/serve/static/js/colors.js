// The colour scale of `vpbatch plot`, built from /v1/vacuum-pressure/scale.json (written once,
// in vpbatch/pictures/palette.py, and exported by vpbatch/serve/scale.py).
//
// colour = pressure_now - vacuum_now on a diverging palette (matplotlib's
// LinearSegmentedColormap.from_list(NET_COLORS, N=512)), symmetric limit = the
// NET_PERCENTILE-th percentile of the non-zero |value| in view; brightness =
// log1p(rest_depth) / log1p(DEPTH_PERCENTILE-th percentile of non-zero depth), from
// BRIGHTNESS_FLOOR to 1.

export function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255].map((c) => c / 255);
}

export class ColorScale {
  constructor(spec) {
    this.spec = spec;
    this.n = spec.lut_size;
    this.floor = spec.brightness_floor;
    this.netLimit = 1;
    this.depthLimit = 1;
    // LUT entry i is the palette at i/(n-1), linear between evenly spaced colours.
    const stops = spec.net_colors.map(hexToRgb);
    this.lut = new Float32Array(this.n * 3);
    for (let i = 0; i < this.n; i++) {
      const x = (i / (this.n - 1)) * (stops.length - 1);
      const j = Math.min(Math.floor(x), stops.length - 2);
      const f = x - j;
      for (let c = 0; c < 3; c++) this.lut[3 * i + c] = stops[j][c] * (1 - f) + stops[j + 1][c] * f;
    }
    this.background = hexToRgb(spec.background);
  }

  /** Palette entry of a value already scaled to [0, 1] (matplotlib's index rule). */
  index(unit) {
    if (!(unit === unit)) unit = 0.5; // NaN -> balanced
    let i = Math.floor(unit * this.n);
    if (i < 0) i = 0;
    if (i > this.n - 1) i = this.n - 1;
    return i;
  }

  brightness(depth) {
    const level = Math.min(1, Math.max(0, Math.log1p(Math.max(depth, 0)) / Math.log1p(this.depthLimit)));
    return this.floor + (1 - this.floor) * level;
  }

  /** RGB in [0, 1] of a cell: net force -> colour, depth -> brightness. */
  rgb(net, depth) {
    const unit = Math.min(1, Math.max(-1, net / this.netLimit)) * 0.5 + 0.5;
    const i = this.index(unit);
    const k = this.brightness(depth);
    return [this.lut[3 * i] * k, this.lut[3 * i + 1] * k, this.lut[3 * i + 2] * k];
  }

  /** Packed little-endian RGBA (for a Uint32Array view of ImageData). */
  rgba(net, depth) {
    // Same arithmetic as rgb(), without allocating (called for every cell of every state).
    const unit = Math.min(1, Math.max(-1, net / this.netLimit)) * 0.5 + 0.5;
    const i = 3 * this.index(unit);
    const k = this.brightness(depth) * 255;
    const lut = this.lut;
    return ((255 << 24) | (Math.round(lut[i + 2] * k) << 16) | (Math.round(lut[i + 1] * k) << 8)
      | Math.round(lut[i] * k)) >>> 0;
  }

  /**
   * Refit the limits to the values in view (the plot's rule). Returns true when they moved
   * by more than 5% (the caller then recolours its history).
   */
  fit(nets, depths) {
    const net = percentile(nets, this.spec.net_percentile, (v) => Math.abs(v));
    const depth = percentile(depths, this.spec.depth_percentile, (v) => v);
    const netLimit = net > 0 ? net : 1;
    const depthLimit = Math.max(depth, 1);
    const moved = Math.abs(netLimit - this.netLimit) > 0.05 * this.netLimit
      || Math.abs(depthLimit - this.depthLimit) > 0.05 * this.depthLimit;
    if (moved) {
      this.netLimit = netLimit;
      this.depthLimit = depthLimit;
    }
    return moved;
  }
}

/** numpy's default (linear) percentile of the non-zero, finite f(v) (0 when none). */
export function percentile(values, q, f) {
  const picked = [];
  for (let i = 0; i < values.length; i++) {
    const v = f(values[i]);
    if (v > 0 && Number.isFinite(v)) picked.push(v);
  }
  if (!picked.length) return 0;
  const sorted = Float64Array.from(picked).sort();
  const pos = (q / 100) * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
