// glass.js reads the intercom test pattern's glass code (media/glasscode.go:
// the capture time as 48 black and white cells in the picture's top-right
// corner) from every frame a <video> element presents, so that a page can
// report glass-to-glass latency per frame: the wall-clock time the frame
// was to be displayed minus the wall-clock time the door captured it. The
// intercom and the browser run on the same machine in the tests, so both
// read the same clock. It imports nothing; both harnesses can bundle it.
//
// The layout and the checks repeat media/glasscode.go's; a change there
// must be made here too (TestGlassCodeReader in internal/testenv/nodeproc
// reads frames the Go side drew).

const COLS = 13;
const ROWS = 4;
const BITS = COLS * ROWS - 4;
// The least white-minus-black difference of the references, in the 0–255
// RGB the canvas gives (the Go side's 64 limited-range levels, scaled).
const MIN_CONTRAST = 74;

// layout returns the grid's corner and cell size for a w×h picture, or null
// when the picture is too small to carry a code.
export function layout(w, h) {
  const cell = Math.max(Math.floor(h / 30), 4) & ~1;
  const x0 = w - (COLS + 1) * cell;
  const y0 = cell;
  if (x0 < w / 2 || y0 + (ROWS + 1) * cell > h) return null;
  return { x0, y0, cell };
}

function isRef(col, row) {
  return (row === 0 || row === ROWS - 1) && (col === 0 || col === COLS - 1);
}

// crc16 is CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF).
export function crc16(bytes) {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

// readCode reads a code from RGBA pixels of the grid's region (rgba: the
// ImageData's data, stride: its width in pixels; the region starts at 0,0)
// with the given cell size. It returns {ok: true, ms}
// (the capture time modulo 2^32) or {ok: false, reason}.
export function readCode(rgba, stride, cell) {
  const q = cell >> 2;
  const n = cell - 2 * q;
  const mean = (col, row) => {
    let sum = 0;
    for (let y = row * cell + q; y < row * cell + q + n; y++) {
      for (let x = col * cell + q; x < col * cell + q + n; x++) {
        const i = (y * stride + x) * 4;
        // Luma from RGB (BT.601 weights, 8-bit fixed point).
        sum += (77 * rgba[i] + 150 * rgba[i + 1] + 29 * rgba[i + 2]) >> 8;
      }
    }
    return sum / (n * n);
  };
  const wa = mean(0, 0);
  const wb = mean(COLS - 1, ROWS - 1);
  const ba = mean(COLS - 1, 0);
  const bb = mean(0, ROWS - 1);
  if (Math.min(wa, wb) - Math.max(ba, bb) < MIN_CONTRAST) return { ok: false, reason: "contrast" };
  const thr = (wa + wb + ba + bb) / 4;
  const margin = (wa + wb - ba - bb) / 8;
  const bits = [];
  for (let row = 0; row < ROWS; row++) {
    for (let col = 0; col < COLS; col++) {
      if (isRef(col, row)) continue;
      const v = mean(col, row);
      if (Math.abs(v - thr) < margin) return { ok: false, reason: "ambiguous" };
      bits.push(v > thr ? 1 : 0);
    }
  }
  let ms = 0;
  for (let i = 0; i < 32; i++) ms = ms * 2 + bits[i];
  let crc = 0;
  for (let i = 32; i < BITS; i++) crc = crc * 2 + bits[i];
  const bytes = [(ms >>> 24) & 0xff, (ms >>> 16) & 0xff, (ms >>> 8) & 0xff, ms & 0xff];
  if (crc16(bytes) !== crc) return { ok: false, reason: "checksum" };
  return { ok: true, ms };
}

// latencyMs is wall-clock time t (ms, fractional) minus the capture time a
// code carries, taken modulo 2^32 and read as signed, as GlassLatency does.
export function latencyMs(code, t) {
  const whole = Math.floor(t);
  return ((((whole >>> 0) - code) | 0) + (t - whole));
}

// watchGlass reads the code of every frame video presents
// (requestVideoFrameCallback) until stopped() returns true, and calls
// report with {ok, reason, latencyMs, receiveMs, captureMs, displayMs,
// width, height, dropped, lateMs, rtpTimestamp} per frame: displayMs is
// the frame's expected display time on the wall clock, receiveMs when its
// last packet arrived (Chromium's receiveTime for WebRTC video, 0 when
// absent), captureMs the time the code carries (its full wall-clock
// value), dropped the frames presented since the previous callback that
// it never saw, lateMs how long after the expected display time the
// callback ran, rtpTimestamp the RTP timestamp of the frame the callback
// describes (-1 when absent).
export function watchGlass(video, report, stopped) {
  if (typeof video.requestVideoFrameCallback !== "function") return false;
  let canvas = null;
  let ctx = null;
  let lastPresented = 0;
  const onFrame = (_now, meta) => {
    if (stopped()) return;
    video.requestVideoFrameCallback(onFrame);
    const w = meta.width || video.videoWidth;
    const h = meta.height || video.videoHeight;
    // performance.now() to the wall clock through Date.now() read now:
    // timeOrigin + now drifts from the wall clock over a page's life (the
    // monotonic clock is not slewed as the system clock is).
    const perfNow = performance.now();
    const toWall = (t) => Date.now() + (t - perfNow);
    // A callback that runs late (the page's main thread was busy; the
    // compositor shows frames without it) still describes its frame, but
    // the element may have moved on to a newer one, which drawImage then
    // reads. rtpTimestamp names the frame described: the reader of these
    // reports checks that the code read matches it (the sender's RTP
    // clock follows the capture clock).
    const lateMs = Math.max(0, perfNow - meta.expectedDisplayTime);
    const displayMs = toWall(meta.expectedDisplayTime);
    const receiveMs = meta.receiveTime ? toWall(meta.receiveTime) : 0;
    const rtpTimestamp = typeof meta.rtpTimestamp === "number" ? meta.rtpTimestamp : -1;
    const dropped = lastPresented > 0 ? Math.max(0, meta.presentedFrames - lastPresented - 1) : 0;
    lastPresented = meta.presentedFrames;
    const at = layout(w, h);
    if (!at) {
      report({ ok: false, reason: "size", width: w, height: h, displayMs, receiveMs, dropped, lateMs, rtpTimestamp });
      return;
    }
    const gw = 13 * at.cell;
    const gh = 4 * at.cell;
    if (!canvas || canvas.width !== gw || canvas.height !== gh) {
      canvas = new OffscreenCanvas(gw, gh);
      ctx = canvas.getContext("2d", { willReadFrequently: true });
    }
    // In this callback the element shows the frame meta describes.
    ctx.drawImage(video, at.x0, at.y0, gw, gh, 0, 0, gw, gh);
    const img = ctx.getImageData(0, 0, gw, gh);
    const got = readCode(img.data, gw, at.cell);
    if (!got.ok) {
      report({ ok: false, reason: got.reason, width: w, height: h, displayMs, receiveMs, dropped, lateMs, rtpTimestamp });
      return;
    }
    const lat = latencyMs(got.ms, displayMs);
    report({
      ok: true,
      latencyMs: lat,
      captureMs: displayMs - lat,
      displayMs,
      receiveMs,
      width: w,
      height: h,
      dropped,
      lateMs,
      rtpTimestamp,
    });
  };
  video.requestVideoFrameCallback(onFrame);
  return true;
}
