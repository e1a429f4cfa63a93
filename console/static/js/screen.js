// Screen-update decoding shared by the live viewer and the recording player.
// Binary updates: 21-byte big-endian header (protocol/stream.py) + JPEG/PNG/zlib(BGR24)/raw(BGRA)/fill(BGR) payload.
// The payload is device data: it only ever reaches createImageBitmap/ImageData, never the DOM.

export const HEADER = 21;
export const MAGIC = 0xa1;
export const KIND_CURSOR_SHAPE = 3;
export const FLAG_END_OF_FRAME = 1;
export const ENC = { RAW: 0, JPEG: 1, PNG: 2, ZLIB: 3, RGBA: 4, FILL: 5 };
export const MAX_CURSOR_SIDE = 128;

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
  if (enc === ENC.FILL) {  // one BGR colour for the whole rectangle
    if (payload.length !== 3) return;
    g.fillStyle = `rgb(${payload[2]}, ${payload[1]}, ${payload[0]})`;
    g.fillRect(x, y, w, h);
    return;
  }
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
