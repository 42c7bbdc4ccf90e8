// bursts.js: the timestamped tone bursts of mouth-to-ear measurements
// (media/burst.go) for a page: the signal itself, to send as the page's
// microphone, and the detector that finds the intercom's bursts in what
// the page plays. Burst k starts at Unix time k·1000 ms + phase (0 for the
// door's, 500 for a resident's) and is a 60 ms tone whose frequency
// (BURST_FREQS[k mod 4]) tells k modulo 4. It imports nothing; both
// harnesses can bundle it.
//
// The constants and the rules repeat media/burst.go's; a change there must
// be made here too (TestBurstDetectorJS in internal/testenv/nodeproc runs
// this detector over PCM the Go side made and compares).

export const SAMPLE_RATE = 48000;
export const BURST_PERIOD_MS = 1000;
export const BURST_PHASE_RESIDENT_MS = 500;
export const BURST_FREQS = [500, 800, 1100, 1400];
const BURST_MAX_LATENCY_MS = 2000;
const AMPLITUDE = 0.25;
const PER = 48000; // samples per period
const LEN = 2880; // 60 ms
const RISE = 48;
const FALL = 240;

const ON_AMP = 0.05 * 32768;
const QUIET_RMS = 0.01 * 32768;
const QUIET_BLOCKS = 150;
const RISE_BLOCKS = 10;
const LOOK_BACK = 144;
const BLOCK = 48;
const SKIP = 96;
const WINDOW = 960;
const TONE_SHARE = 0.5;
const TONE_RATIO = 8;
const GAP_MS = 5;

function mod(a, b) {
  return ((a % b) + b) % b;
}

// burstSample is the signal at absolute sample n (48 kHz samples of the
// Unix clock) for bursts of the given phase, full scale 1.
export function burstSample(n, phaseMs) {
  const rel = n - phaseMs * 48;
  const k = Math.floor(rel / PER);
  const m = rel - k * PER;
  if (m >= LEN) return 0;
  let env = 1;
  if (m < RISE) env = 0.5 * (1 - Math.cos((Math.PI * m) / RISE));
  else if (LEN - m < FALL) env = 0.5 * (1 - Math.cos((Math.PI * (LEN - m)) / FALL));
  const f = BURST_FREQS[mod(k, 4)];
  return AMPLITUDE * env * Math.sin((2 * Math.PI * f * m) / SAMPLE_RATE);
}

function goertzel(w, f) {
  const c = 2 * Math.cos((2 * Math.PI * f) / SAMPLE_RATE);
  let s1 = 0;
  let s2 = 0;
  for (const x of w) {
    const s0 = x + c * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return s1 * s1 + s2 * s2 - c * s1 * s2;
}

function toneCode(w) {
  let total = 0;
  for (const x of w) total += x * x;
  if (total === 0) return { ok: false, freq: 0 };
  const pow = BURST_FREQS.map((f) => goertzel(w, f));
  let best = 0;
  for (let c = 1; c < 4; c++) if (pow[c] > pow[best]) best = c;
  let second = -1;
  for (let c = 0; c < 4; c++) if (c !== best && (second < 0 || pow[c] > pow[second])) second = c;
  const share = (pow[best] * 2) / (w.length * total);
  const ok = share >= TONE_SHARE && pow[best] >= TONE_RATIO * pow[second];
  return { ok, code: best, freq: BURST_FREQS[best] };
}

// BurstDetector finds burst onsets in 48 kHz mono PCM (int16 values) and
// attributes each to its burst, as media.BurstDetector does. write(pcm,
// startMs) takes samples whose first was heard at startMs (Unix ms,
// fractional) and returns the onsets completed: {atMs, k, startMs,
// latencyMs, freq, refused} (refused: "" or "tone unclear", "too late",
// "cut off").
export class BurstDetector {
  constructor(phaseMs) {
    this.phaseMs = phaseMs;
    this.reset();
    this.endMs = null;
  }

  reset() {
    this.quiet = 0;
    this.lastRun = 0;
    this.loudRun = 0;
    this.blockSum = 0;
    this.blockN = 0;
    this.loud = false;
    this.pending = false;
    this.onsetMs = 0;
    this.window = [];
    this.skip = 0;
    this.histT = new Float64Array(LOOK_BACK);
    this.histV = new Float64Array(LOOK_BACK);
    this.histN = 0;
  }

  write(pcm, startMs) {
    const out = [];
    if (this.endMs !== null) {
      const gap = startMs - this.endMs;
      if (gap > GAP_MS || gap < -GAP_MS) {
        if (this.pending) out.push({ atMs: this.onsetMs, k: 0, startMs: 0, latencyMs: 0, freq: 0, refused: "cut off" });
        this.reset();
      }
    }
    for (let i = 0; i < pcm.length; i++) {
      const x = pcm[i];
      if (this.pending) {
        if (this.skip > 0) this.skip--;
        else {
          this.window.push(x);
          if (this.window.length === WINDOW) out.push(this.attribute());
        }
      }
      const at = startMs + (i * 1000) / SAMPLE_RATE;
      this.histT[this.histN % LOOK_BACK] = at;
      this.histV[this.histN % LOOK_BACK] = x;
      this.histN++;
      if (Math.abs(x) >= ON_AMP && !this.loud) {
        this.loud = true;
        const afterQuiet = this.quiet >= QUIET_BLOCKS || (this.lastRun >= QUIET_BLOCKS && this.loudRun <= RISE_BLOCKS);
        if (!this.pending && afterQuiet) {
          this.pending = true;
          this.onsetMs = this.firstRise(at);
          this.skip = SKIP;
          this.window = [];
        }
      }
      this.blockSum += x * x;
      this.blockN++;
      if (this.blockN === BLOCK) {
        if (!this.loud && Math.sqrt(this.blockSum / BLOCK) < QUIET_RMS) {
          this.quiet++;
          this.lastRun = 0;
          this.loudRun = 0;
        } else {
          if (this.quiet > 0) this.lastRun = this.quiet;
          this.quiet = 0;
          this.loudRun++;
        }
        this.blockSum = 0;
        this.blockN = 0;
        this.loud = false;
      }
    }
    this.endMs = startMs + (pcm.length * 1000) / SAMPLE_RATE;
    return out;
  }

  firstRise(at) {
    const n = Math.min(this.histN, LOOK_BACK);
    for (let j = n - 1; j >= 0; j--) {
      const k = (this.histN - 1 - j) % LOOK_BACK;
      if (Math.abs(this.histV[k]) >= ON_AMP / 4) return this.histT[k];
    }
    return at;
  }

  attribute() {
    this.pending = false;
    const o = { atMs: this.onsetMs, k: 0, startMs: 0, latencyMs: 0, freq: 0, refused: "" };
    const t = toneCode(this.window);
    o.freq = t.freq;
    if (!t.ok) {
      o.refused = "tone unclear";
      return o;
    }
    let k = Math.floor((o.atMs - this.phaseMs) / BURST_PERIOD_MS);
    while (mod(k, 4) !== t.code) k--;
    const start = k * BURST_PERIOD_MS + this.phaseMs;
    const lat = o.atMs - start;
    if (lat > BURST_MAX_LATENCY_MS) {
      o.refused = "too late";
      o.latencyMs = lat;
      return o;
    }
    o.k = k;
    o.startMs = start;
    o.latencyMs = lat;
    return o;
  }
}

// The render clock of an AudioWorklet: Date.now() read in process()
// jumps, because the audio thread renders several 128-frame quanta back
// to back for each device callback; the latest reading per frame
// (Date.now() − frame time; the first quantum of a callback's run), kept
// over the last ~1.3 s, puts every quantum where continuous rendering
// would have it, up to one callback (~10 ms) late for the others. It is code for the
// worklet's own scope, kept as a string (the worklet is loaded from a
// Blob URL).
const RENDER_CLOCK = `
class RenderClock {
  constructor() { this.obs = []; this.base = null; }
  // quantumMs is the wall-clock time of the quantum starting at frame.
  quantumMs(frame) {
    const o = Date.now() - (frame * 1000) / sampleRate;
    this.obs.push(o);
    if (this.obs.length > 500) this.obs.shift();
    if (this.base === null || this.obs.length % 50 === 0 || o > this.base) {
      this.base = Math.max(...this.obs);
    }
    return this.base + (frame * 1000) / sampleRate;
  }
}
`;

// The worklet: "burst-tap" posts what it hears, 8 quanta at a time, with
// the render-clock time of the first; "burst-gen" outputs the bursts of
// the given phase on the render clock.
const WORKLET = `
${RENDER_CLOCK}
${burstSample.toString().replace("function burstSample", "function burstSampleAt")}
const PER = ${PER}, LEN = ${LEN}, RISE = ${RISE}, FALL = ${FALL}, AMPLITUDE = ${AMPLITUDE}, SAMPLE_RATE = ${SAMPLE_RATE};
const BURST_FREQS = ${JSON.stringify(BURST_FREQS)};
${mod.toString()}
class BurstTap extends AudioWorkletProcessor {
  constructor() { super(); this.clock = new RenderClock(); this.buf = new Float32Array(1024); this.n = 0; this.t0 = 0; this.f0 = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    const t = this.clock.quantumMs(currentFrame);
    if (!ch) return true;
    if (this.n === 0) { this.t0 = t; this.f0 = currentFrame; }
    this.buf.set(ch, this.n);
    this.n += ch.length;
    if (this.n >= this.buf.length) {
      this.port.postMessage({ t0: this.t0, f0: this.f0, samples: this.buf.slice(0, this.n) });
      this.n = 0;
    }
    return true;
  }
}
class BurstGen extends AudioWorkletProcessor {
  constructor(opts) { super(); this.clock = new RenderClock(); this.phase = opts.processorOptions.phaseMs; }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    const t = this.clock.quantumMs(currentFrame);
    const n0 = Math.round(t * 48);
    for (let i = 0; i < out.length; i++) out[i] = burstSampleAt(n0 + i, this.phase);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}
registerProcessor("burst-tap", BurstTap);
registerProcessor("burst-gen", BurstGen);
`;

let shared = null;

// audioContext returns the page's one 48 kHz AudioContext with the
// worklet loaded.
async function audioContext() {
  if (!shared) {
    shared = (async () => {
      const ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
      await ctx.audioWorklet.addModule(url);
      if (ctx.state !== "running") await ctx.resume();
      return ctx;
    })();
  }
  return shared;
}

// burstTrack returns a MediaStreamTrack that carries the resident's
// bursts (phase 500 ms) as a microphone would.
export async function burstTrack() {
  const ctx = await audioContext();
  const gen = new AudioWorkletNode(ctx, "burst-gen", {
    numberOfInputs: 0,
    outputChannelCount: [1],
    processorOptions: { phaseMs: BURST_PHASE_RESIDENT_MS },
  });
  const dest = ctx.createMediaStreamDestination();
  dest.channelCount = 1;
  gen.connect(dest);
  return dest.stream.getAudioTracks()[0];
}

// installBurstMicrophone makes getUserMedia's audio the bursts: every
// client library (matrix-js-sdk, livekit-client) then publishes them as
// the microphone. Video stays the fake camera's.
export function installBurstMicrophone() {
  const md = navigator.mediaDevices;
  const orig = md.getUserMedia.bind(md);
  md.getUserMedia = async (constraints) => {
    const wantAudio = constraints && constraints.audio;
    const stream = await orig(wantAudio ? { ...constraints } : constraints);
    if (!wantAudio) return stream;
    for (const t of stream.getAudioTracks()) {
      stream.removeTrack(t);
      t.stop();
    }
    stream.addTrack(await burstTrack());
    return stream;
  };
}

// watchBursts detects the door's bursts (phase 0) in a remote audio
// track as the page's WebAudio renders it, and calls report per onset
// with the detector's fields plus outMs: the onset on the output
// device's clock as AudioContext.getOutputTimestamp() maps it (render
// time plus the output latency the browser estimates), outputLatency
// and baseLatency (s). The track must also play in a media element:
// Chromium only decodes remote audio that one plays. Returns a stop
// function.
export async function watchBursts(track, report) {
  const ctx = await audioContext();
  const src = ctx.createMediaStreamSource(new MediaStream([track]));
  const tap = new AudioWorkletNode(ctx, "burst-tap", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: "explicit" });
  // Connected (silently) to the destination so that the graph pulls it.
  const mute = ctx.createGain();
  mute.gain.value = 0;
  src.connect(tap);
  tap.connect(mute);
  mute.connect(ctx.destination);
  const det = new BurstDetector(0);
  tap.port.onmessage = ({ data }) => {
    const pcm = new Int16Array(data.samples.length);
    for (let i = 0; i < pcm.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(data.samples[i] * 32767)));
    const onsets = det.write(pcm, data.t0);
    if (onsets.length === 0) return;
    // The output clock: at performanceTime the device outputs the frame
    // at contextTime. An onset's context time follows from its render
    // time and the batch's first frame.
    const ts = ctx.getOutputTimestamp();
    const wallP = Date.now() + (ts.performanceTime - performance.now());
    for (const o of onsets) {
      const onsetCtxMs = o.atMs - data.t0 + (data.f0 * 1000) / SAMPLE_RATE;
      const outMs = wallP + (onsetCtxMs - ts.contextTime * 1000);
      report({ ...o, outMs, outputLatency: ctx.outputLatency || 0, baseLatency: ctx.baseLatency || 0 });
    }
  };
  return () => {
    src.disconnect();
    tap.disconnect();
    mute.disconnect();
    tap.port.onmessage = null;
  };
}
