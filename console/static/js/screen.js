// Screen-update decoding shared by the live viewer and the recording player.
// Binary updates: 21-byte big-endian header (protocol/stream.py) + JPEG/PNG/zlib(BGR24)/raw(BGRA) payload.
// The payload is device data: it only ever reaches createImageBitmap/ImageData, never the DOM.

export const HEADER = 21;
export const MAGIC = 0xa1;
export const KIND_CURSOR_SHAPE = 3;
export const FLAG_END_OF_FRAME = 1;
export const ENC = { RAW: 0, JPEG: 1, PNG: 2, ZLIB: 3 };

/** Parse one binary update; null when it is not a well-formed Helpline stream message. */
export function parseUpdate(buf) {
  if (!buf || buf.byteLength < HEADER) return null;
  const v = new DataView(buf);
  if (v.getUint8(0) !== MAGIC) return null;
  const u = {
    kind: v.getUint8(1), flags: v.getUint8(2), monitor: v.getUint8(3),
    x: v.getUint16(4), y: v.getUint16(6), w: v.getUint16(8), h: v.getUint16(10),
    enc: v.getUint8(12), seq: v.getUint32(13), len: v.getUint32(17),
  };
  if (u.len !== buf.byteLength - HEADER) return null;
  u.payload = new Uint8Array(buf, HEADER, u.len);
  return u;
}

/** Grow the canvas so the rectangle fits (a monitor list usually sets the size first). */
export function ensureSize(canvas, u) {
  if (canvas.width < u.x + u.w || canvas.height < u.y + u.h) {
    canvas.width = Math.max(canvas.width, u.x + u.w);
    canvas.height = Math.max(canvas.height, u.y + u.h);
  }
}

/** Draw one decoded rectangle onto a 2D context. */
export async function drawRect(g, u) {
  const { enc, payload, x, y, w, h } = u;
  if (enc === ENC.JPEG || enc === ENC.PNG) {
    const bitmap = await createImageBitmap(new Blob([payload], { type: enc === ENC.JPEG ? "image/jpeg" : "image/png" }));
    g.drawImage(bitmap, x, y);
    bitmap.close();
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
