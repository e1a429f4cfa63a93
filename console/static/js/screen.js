// Screen-update decoding shared by the live viewer and the recording player.
// Binary updates: 21-byte big-endian header (protocol/stream.py) + JPEG (whole or lean)/PNG/zlib(BGR24)/raw(BGRA)/
// fill(BGR) payload.
// The payload is device data: it only ever reaches createImageBitmap/ImageData, never the DOM.

export const HEADER = 21;
export const MAGIC = 0xa1;
export const KIND_CURSOR_SHAPE = 3;
export const FLAG_END_OF_FRAME = 1;
export const ENC = { RAW: 0, JPEG: 1, PNG: 2, ZLIB: 3, RGBA: 4, FILL: 5, JPEG_LEAN: 6 };
export const MAX_CURSOR_SIDE = 128;

/** Parse one binary message: one record, or a batch of one update's records back to back (protocol/stream.py,
 * "Batched updates"). Null when any record is malformed or the batch breaks its rules: records of one update
 * only, END_OF_FRAME on the last alone, a cursor shape always alone. */
export function parseRecords(buf) {
  if (!buf || buf.byteLength < HEADER) return null;
  const v = new DataView(buf);
  const records = [];
  let at = 0;
  while (at < buf.byteLength) {
    if (buf.byteLength - at < HEADER || v.getUint8(at) !== MAGIC) return null;
    const u = {
      kind: v.getUint8(at + 1), flags: v.getUint8(at + 2), monitor: v.getUint8(at + 3),
      x: v.getUint16(at + 4), y: v.getUint16(at + 6), w: v.getUint16(at + 8), h: v.getUint16(at + 10),
      enc: v.getUint8(at + 12), seq: v.getUint32(at + 13), len: v.getUint32(at + 17),
    };
    if (u.len > buf.byteLength - at - HEADER) return null;
    u.payload = new Uint8Array(buf, at + HEADER, u.len);
    at += HEADER + u.len;
    const last = records[records.length - 1];
    if (u.kind === KIND_CURSOR_SHAPE ? records.length > 0 || at !== buf.byteLength
      : last && (last.kind === KIND_CURSOR_SHAPE || u.seq !== last.seq || (last.flags & FLAG_END_OF_FRAME))) return null;
    records.push(u);
  }
  return records;
}

/** Does this binary message end an update (its last record flagged END_OF_FRAME)? */
export function endsUpdate(buf) {
  const records = parseRecords(buf);
  return records !== null && records[0].kind !== KIND_CURSOR_SHAPE
    && (records[records.length - 1].flags & FLAG_END_OF_FRAME) !== 0;
}

// JPEG_LEAN: a JPEG without the parts libjpeg writes the same way every time (protocol/jpeg_tables.py): its JFIF
// marker, its two quantisation tables (T.81 Annex K.1/K.2 scaled as the IJG library scales them for the quality
// in the payload's first byte) and its four Huffman tables (Annex K.3). They are rebuilt here byte for byte.
const SOI = Uint8Array.of(0xff, 0xd8);
const JFIF_APP0 = hexBytes("ffe000104a46494600010100000100010000");
const STANDARD_HUFFMAN_TABLES = hexBytes(
  "ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b510000201030302040305050404" +
  "0000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a2526" +
  "2728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a83848586878889" +
  "8a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4" +
  "e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405060708090a0bff" +
  "c400b51100020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c1092333" +
  "52f0156272d10a162434e125f11718191a262728292a35363738393a434445464748494a535455565758595a636465666768" +
  "696a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5" +
  "c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa");
const LUMINANCE_QUANTISATION = [
  16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22,
  29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103,
  121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99
];
const CHROMINANCE_QUANTISATION = [
  17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99,
  99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
  99, 99, 99, 99, 99, 99, 99, 99, 99, 99
];
// For each position of a DQT segment (zig-zag order), the natural-order index of the coefficient.
const ZIGZAG = [
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
  21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53,
  60, 61, 54, 47, 55, 62, 63
];

function hexBytes(hex) {
  return Uint8Array.from(hex.match(/../g), (pair) => parseInt(pair, 16));
}

const quantisationCache = new Map();  // quality -> its two DQT segments: built once, asked for every image

/** The two DQT segments libjpeg writes at ``quality`` (1..100). */
function quantisationTables(quality) {
  const cached = quantisationCache.get(quality);
  if (cached !== undefined) return cached;
  const scale = quality < 50 ? Math.floor(5000 / quality) : 200 - 2 * quality;
  const out = new Uint8Array(2 * 69);
  [LUMINANCE_QUANTISATION, CHROMINANCE_QUANTISATION].forEach((table, id) => {
    out.set([0xff, 0xdb, 0x00, 0x43, id], id * 69);
    ZIGZAG.forEach((n, i) => {
      out[id * 69 + 5 + i] = Math.min(255, Math.max(1, Math.floor((table[n] * scale + 50) / 100)));
    });
  });
  quantisationCache.set(quality, out);
  return out;
}

/** The JPEG a JPEG_LEAN payload came from, as a Blob; null when it is not one. */
export function leanJpeg(payload) {
  const quality = payload[0];
  if (payload.length < 5 || quality < 1 || quality > 100) return null;
  const body = payload.subarray(1);
  if (body[0] !== 0xff || body[1] !== 0xd8) return null;
  const end = Math.min(body.length, 65536);
  for (let pos = 2; pos + 4 <= end;) {
    if (body[pos] !== 0xff) return null;
    const marker = body[pos + 1];
    if (marker === 0xda) {
      return new Blob([SOI, JFIF_APP0, quantisationTables(quality), body.subarray(2, pos), STANDARD_HUFFMAN_TABLES,
        body.subarray(pos)], { type: "image/jpeg" });
    }
    if (marker === 0xe0 || marker === 0xdb || marker === 0xc4) return null;  // those are what was cut
    const length = (body[pos + 2] << 8) | body[pos + 3];
    if (length < 2) return null;
    pos += 2 + length;
  }
  return null;
}

/** Grow the canvas so the rectangle fits (a monitor list usually sets the size first). */
export function ensureSize(canvas, u) {
  if (canvas.width < u.x + u.w || canvas.height < u.y + u.h) {
    canvas.width = Math.max(canvas.width, u.x + u.w);
    canvas.height = Math.max(canvas.height, u.y + u.h);
  }
}

/** The image of a JPEG/PNG record being decoded (null for other encodings, or when it does not decode). */
function decodeImage(u) {
  if (u.enc !== ENC.JPEG && u.enc !== ENC.PNG && u.enc !== ENC.JPEG_LEAN) return null;
  const blob = u.enc === ENC.JPEG_LEAN ? leanJpeg(u.payload)
    : new Blob([u.payload], { type: u.enc === ENC.JPEG ? "image/jpeg" : "image/png" });
  return blob === null ? Promise.resolve(null) : createImageBitmap(blob).catch(() => null);
}

/** Draw an update's records in order; their images decode side by side (createImageBitmap works off the main
 * thread), so a batch of twenty JPEG bands costs about one decode's wait, not twenty. A record whose image does
 * not decode is skipped. */
export async function drawRecords(g, records) {
  const images = records.map(decodeImage);
  for (let i = 0; i < records.length; i++) await drawDecoded(g, records[i], images[i]);
}

/** Draw one rectangle onto a 2D context. */
export async function drawRect(g, u) {
  await drawDecoded(g, u, decodeImage(u));
}

/** Draw a rectangle whose image (JPEG/PNG) is ``image`` (being decoded), else from its pixels. */
async function drawDecoded(g, u, image) {
  const { enc, payload, x, y, w, h } = u;
  if (image !== null) {
    const bitmap = await image;
    if (bitmap === null) return;  // malformed: skip the rectangle
    g.drawImage(bitmap, x, y);
    bitmap.close();
    return;
  }
  if (enc === ENC.FILL) {  // one BGR colour for the whole rectangle
    if (payload.length !== 3) return;
    g.fillStyle = `rgb(${payload[2]}, ${payload[1]}, ${payload[0]})`;
    g.fillRect(x, y, w, h);
    return;
  }
  let src = payload, stride = 4;
  if (enc === ENC.ZLIB) {
    const stream = new Blob([payload]).stream().pipeThrough(new DecompressionStream("deflate"));
    src = new Uint8Array(await new Response(stream).arrayBuffer());
    stride = 3;
  } else if (enc !== ENC.RAW) {
    return;  // unknown encoding: skip the rectangle
  }
  if (w === 0 || h === 0 || src.length < w * h * stride) return;
  const img = new ImageData(w, h);
  for (let i = 0, j = 0; i < w * h; i++, j += stride) {  // BGR(A) → RGBA
    img.data[i * 4] = src[j + 2];
    img.data[i * 4 + 1] = src[j + 1];
    img.data[i * 4 + 2] = src[j];
    img.data[i * 4 + 3] = 255;
  }
  g.putImageData(img, x, y);
}

/** A CURSOR_SHAPE update as {w, h, hotX, hotY, image: ImageData}; null when malformed (header x/y = hotspot). */
export function cursorShape(u) {
  const { w, h, x, y, enc, payload } = u;
  if (enc !== ENC.RGBA || w < 1 || h < 1 || w > MAX_CURSOR_SIDE || h > MAX_CURSOR_SIDE || x >= w || y >= h) return null;
  if (payload.length !== w * h * 4) return null;
  return { w, h, hotX: x, hotY: y, image: new ImageData(new Uint8ClampedArray(payload), w, h) };
}

/** The arrow drawn until (or unless) the device sends its real cursor: 12x19, hotspot at the tip. */
export function defaultArrow() {
  const c = new OffscreenCanvas(12, 19);
  const g = c.getContext("2d");
  g.beginPath();
  g.moveTo(0.5, 0.5); g.lineTo(0.5, 16); g.lineTo(4.5, 12.5); g.lineTo(7.5, 18.5);
  g.lineTo(9.5, 17.5); g.lineTo(6.5, 11.5); g.lineTo(11.5, 11.5); g.closePath();
  g.fillStyle = "#fff"; g.fill();
  g.strokeStyle = "#000"; g.stroke();
  return { w: 12, h: 19, hotX: 0, hotY: 0, image: g.getImageData(0, 0, 12, 19) };
}
