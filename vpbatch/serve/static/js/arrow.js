// Decoder for the Arrow IPC stream of one grid frame (docs/stream.md).
//
// A frame is a complete Arrow IPC *stream*: a Schema message, one RecordBatch message and the
// end-of-stream marker. Every message is: 0xFFFFFFFF, int32 metadata length, a FlatBuffers
// `Message` table (Arrow's Message.fbs / Schema.fbs), then the body. We read the few tables we
// need with a small FlatBuffers reader and support the fixed-width column types vp_grid uses
// (signed/unsigned ints of 8-64 bits, float16/32/64, timestamps, booleans) with validity
// bitmaps. Anything else is a clear error, never a silent misread.

const CONTINUATION = 0xffffffff;
const HEADER_SCHEMA = 1;
const HEADER_RECORD_BATCH = 3;
const TYPE_INT = 2;
const TYPE_FLOAT = 3;
const TYPE_BOOL = 6;
const TYPE_TIMESTAMP = 10;
const UTF8 = new TextDecoder();

class Table {
  constructor(view, pos) {
    this.v = view;
    this.pos = pos;
    this.vt = pos - view.getInt32(pos, true);
    this.vtSize = view.getUint16(this.vt, true);
  }
  offset(id) {
    const at = 4 + 2 * id;
    return at < this.vtSize ? this.v.getUint16(this.vt + at, true) : 0;
  }
  u8(id, dflt = 0) { const o = this.offset(id); return o ? this.v.getUint8(this.pos + o) : dflt; }
  i16(id, dflt = 0) { const o = this.offset(id); return o ? this.v.getInt16(this.pos + o, true) : dflt; }
  i32(id, dflt = 0) { const o = this.offset(id); return o ? this.v.getInt32(this.pos + o, true) : dflt; }
  i64(id, dflt = 0) {
    const o = this.offset(id);
    return o ? Number(this.v.getBigInt64(this.pos + o, true)) : dflt;
  }
  bool(id) { return this.u8(id) !== 0; }
  ref(id) {
    const o = this.offset(id);
    if (!o) return 0;
    const at = this.pos + o;
    return at + this.v.getUint32(at, true);
  }
  table(id) { const at = this.ref(id); return at ? new Table(this.v, at) : null; }
  string(id) {
    const at = this.ref(id);
    if (!at) return null;
    const len = this.v.getUint32(at, true);
    return UTF8.decode(new Uint8Array(this.v.buffer, this.v.byteOffset + at + 4, len));
  }
  vector(id) {
    const at = this.ref(id);
    return at ? { start: at + 4, length: this.v.getUint32(at, true) } : { start: 0, length: 0 };
  }
  tables(id) {
    const vec = this.vector(id);
    const out = [];
    for (let i = 0; i < vec.length; i++) {
      const at = vec.start + 4 * i;
      out.push(new Table(this.v, at + this.v.getUint32(at, true)));
    }
    return out;
  }
}

function readType(field) {
  const kind = field.u8(2);
  const t = field.table(3);
  if (kind === TYPE_INT) {
    return { kind: 'int', bitWidth: t.i32(0), signed: t.bool(1) };
  }
  if (kind === TYPE_FLOAT) {
    const bits = [16, 32, 64][t.i16(0)];
    return { kind: 'float', bitWidth: bits };
  }
  if (kind === TYPE_TIMESTAMP) {
    return { kind: 'timestamp', bitWidth: 64, signed: true, unit: ['s', 'ms', 'us', 'ns'][t.i16(0)],
             timezone: t.string(1) };
  }
  if (kind === TYPE_BOOL) return { kind: 'bool', bitWidth: 1 };
  throw new Error(`arrow: column type ${kind} is not supported by this decoder`);
}

function readSchema(header) {
  return header.tables(1).map((f) => {
    if (f.ref(4)) throw new Error(`arrow: dictionary column ${f.string(0)} is not supported`);
    return { name: f.string(0), nullable: f.bool(1), type: readType(f) };
  });
}

function intArray(type, buffer, offset, length) {
  const signed = type.signed;
  switch (type.bitWidth) {
    case 8: return signed ? new Int8Array(buffer, offset, length) : new Uint8Array(buffer, offset, length);
    case 16: return signed ? new Int16Array(buffer, offset, length) : new Uint16Array(buffer, offset, length);
    case 32: return signed ? new Int32Array(buffer, offset, length) : new Uint32Array(buffer, offset, length);
    case 64: return signed ? new BigInt64Array(buffer, offset, length) : new BigUint64Array(buffer, offset, length);
    default: throw new Error(`arrow: ${type.bitWidth}-bit integers are not supported`);
  }
}

function halfToFloat(h) {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

function values(type, bytes, length) {
  // Typed arrays need aligned offsets; copy when the body is not aligned (it normally is).
  const width = type.bitWidth / 8;
  let { buffer, byteOffset } = bytes;
  if (type.kind !== 'bool' && byteOffset % Math.max(width, 1) !== 0) {
    const copy = bytes.slice();
    buffer = copy.buffer;
    byteOffset = 0;
  }
  if (type.kind === 'int' || type.kind === 'timestamp') return intArray(type, buffer, byteOffset, length);
  if (type.kind === 'float') {
    if (type.bitWidth === 64) return new Float64Array(buffer, byteOffset, length);
    if (type.bitWidth === 32) return new Float32Array(buffer, byteOffset, length);
    const half = new Uint16Array(buffer, byteOffset, length);
    return Float32Array.from(half, halfToFloat);
  }
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (bytes[i >> 3] >> (i & 7)) & 1;
  return out;
}

function* messages(view) {
  let pos = 0;
  while (pos + 8 <= view.byteLength) {
    let size = view.getInt32(pos, true);
    pos += 4;
    if (size === -1 || (size >>> 0) === CONTINUATION) {
      size = view.getInt32(pos, true);
      pos += 4;
    }
    if (size === 0) return; // end of stream
    const meta = new Table(view, pos + view.getUint32(pos, true));
    const bodyStart = pos + size;
    const bodyLength = meta.i64(3);
    yield { type: meta.u8(1), header: meta.table(2), body: bodyStart };
    pos = bodyStart + bodyLength;
  }
}

/**
 * Decode one Arrow IPC stream (ArrayBuffer or typed array) into
 * `{ schema: [{name, nullable, type}], length, columns: {name: TypedArray}, valid: {name: Uint8Array|null} }`.
 * 64-bit integer columns are BigInt64Array/BigUint64Array; `numbers(table, name)` gives Float64Array.
 */
export function decodeArrow(data) {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let schema = null;
  const out = { schema: null, length: 0, columns: {}, valid: {} };
  for (const msg of messages(view)) {
    if (msg.type === HEADER_SCHEMA) {
      schema = readSchema(msg.header);
      out.schema = schema;
    } else if (msg.type === HEADER_RECORD_BATCH) {
      if (!schema) throw new Error('arrow: record batch before schema');
      if (out.length) throw new Error('arrow: a grid frame holds one record batch');
      const rb = msg.header;
      if (rb.table(3)) throw new Error('arrow: compressed record batches are not supported');
      const length = rb.i64(0);
      const nodes = rb.vector(1);
      const buffers = rb.vector(2);
      let b = 0;
      schema.forEach((field, i) => {
        const nullCount = Number(view.getBigInt64(nodes.start + 16 * i + 8, true));
        const buf = (j) => {
          const at = buffers.start + 16 * j;
          const off = Number(view.getBigInt64(at, true));
          const len = Number(view.getBigInt64(at + 8, true));
          return bytes.subarray(msg.body + off, msg.body + off + len);
        };
        const validity = buf(b);
        const data = buf(b + 1);
        b += 2;
        out.columns[field.name] = values(field.type, data, length);
        out.valid[field.name] = nullCount > 0 ? values({ kind: 'bool', bitWidth: 1 }, validity, length) : null;
      });
      out.length = length;
    } else {
      throw new Error(`arrow: unexpected message type ${msg.type}`);
    }
  }
  if (!schema) throw new Error('arrow: no schema in frame');
  return out;
}

/** A column as Float64Array (BigInt columns converted; nulls become NaN). */
export function numbers(table, name) {
  const col = table.columns[name];
  if (!col) throw new Error(`arrow: frame has no column ${name}`);
  const out = new Float64Array(table.length);
  const valid = table.valid[name];
  for (let i = 0; i < table.length; i++) {
    out[i] = valid && !valid[i] ? NaN : Number(col[i]);
  }
  return out;
}
