// crypt.mjs runs livekit-client's own frame encryption in node, for the
// byte-compatibility tests of media/framecrypt (driven by lkcrypt.go).
//
// Usage: node crypt.mjs <livekit-client.e2ee.worker.mjs> <nalu bundle>
// stdin: a JSON array of operations; stdout: a JSON array of results, one
// per operation, in order. Byte fields are base64.
//
// "encrypt" and "decrypt" go through the shipped E2EE worker of the
// installed livekit-client (dist/livekit-client.e2ee.worker.mjs, the file
// Element Call runs as its E2EE worker), spoken to with the worker's own
// messages as livekit-client's E2EEManager does: init with Element Call's
// key provider options (MatrixKeyProvider: ratchetWindowSize 10,
// keyringSize 256, the rest livekit-client's defaults), enable, setKey with
// key material imported as Element Call imports it (raw → HKDF
// CryptoKey), setSifTrailer, then an encode or decode transform fed one
// frame through web streams. Every operation gets its own participant and
// track, so operations do not share state.
//
// "nalu", "normalize", "writeRbsp", "parseRbsp" and "needsRbspUnescaping"
// call the same functions from livekit-client's src/ (bundled by esbuild),
// for differential tests of the H.264 parsing on arbitrary bytes.

const [workerPath, naluPath] = process.argv.slice(2);

// The worker is written for a DedicatedWorkerGlobalScope.
const posted = [];
globalThis.self = globalThis;
globalThis.onmessage = null;
globalThis.postMessage = (msg) => posted.push(msg);
// Only named in decryptFrame's ratchet log line; absent outside browsers.
globalThis.RTCEncodedAudioFrame ??= class {};
globalThis.RTCEncodedVideoFrame ??= class {};

await import(workerPath);
const nalu = await import(naluPath);

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const unb64 = (s) => new Uint8Array(Buffer.from(s ?? '', 'base64'));

// send queues a message for the worker; its handlers run one at a time.
const send = (kind, data) => globalThis.onmessage({ data: { kind, data } });

// barrier resolves once every message sent before it has been handled: the
// worker echoes "enable" after its queue reaches it.
let barrierCount = 0;
async function barrier() {
  const id = `barrier-${barrierCount++}`;
  send('enable', { enabled: false, participantIdentity: id });
  for (;;) {
    if (posted.some((m) => m.kind === 'enable' && m.data.participantIdentity === id)) return;
    await new Promise((r) => setTimeout(r, 0));
  }
}

send('init', {
  keyProviderOptions: {
    sharedKey: false,
    ratchetSalt: 'LKFrameEncryptionKey',
    ratchetWindowSize: 10,
    failureTolerance: 10,
    keyringSize: 256,
    keySize: 128,
  },
  loglevel: 'error',
});
await barrier();

const mimeTypes = { opus: 'audio/opus', vp8: 'video/VP8', h264: 'video/H264' };

function fakeFrame(op) {
  const data = unb64(op.frame);
  const metadata = {
    synchronizationSource: op.ssrc ?? 1234,
    payloadType: op.codec === 'opus' ? 111 : 96,
    mimeType: mimeTypes[op.codec],
  };
  // RTCEncodedAudioFrame has no "type": that is how the worker tells audio
  // from video (utils.ts isVideoFrame).
  const frame = {
    data: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
    timestamp: op.timestamp ?? 90000,
    getMetadata: () => metadata,
  };
  if (op.codec !== 'opus') frame.type = op.type;
  return frame;
}

let seq = 0;
async function crypt(op) {
  const participantIdentity = `p${seq}`;
  const trackId = `t${seq}`;
  seq++;
  send('setSifTrailer', { trailer: unb64(op.sif) });
  send('enable', { enabled: true, participantIdentity });
  for (const k of op.keys) {
    // Element Call's MatrixKeyProvider.onEncryptionKeyChanged.
    const material = await crypto.subtle.importKey('raw', unb64(k.raw), 'HKDF', false, [
      'deriveBits',
      'deriveKey',
    ]);
    send('setKey', {
      participantIdentity,
      key: material,
      keyIndex: k.index,
      updateCurrentKeyIndex: true, // the last key listed is the sending key
    });
  }
  let input;
  const readableStream = new ReadableStream({ start: (c) => (input = c) });
  const out = [];
  let closed;
  const done = new Promise((r) => (closed = r));
  const writableStream = new WritableStream({
    write: (f) => void out.push(new Uint8Array(f.data)),
    close: () => closed(),
  });
  const from = posted.length;
  send(op.op === 'encrypt' ? 'encode' : 'decode', {
    participantIdentity,
    trackId,
    readableStream,
    writableStream,
    codec: op.codec === 'opus' ? undefined : op.codec,
    hasPacketTrailer: false,
  });
  await barrier();
  input.enqueue(fakeFrame(op));
  input.close();
  await done;
  const errors = posted
    .slice(from)
    .filter((m) => m.kind === 'error' || (m.kind === 'log' && ['warn', 'error'].includes(m.data.level)))
    .map((m) => (m.kind === 'error' ? String(m.data.error?.message ?? m.data.error) : String(m.data.msg)));
  return out.length ? { frame: b64(out[0]), errors } : { dropped: true, errors };
}

function run(op) {
  const data = unb64(op.frame);
  switch (op.op) {
    case 'encrypt':
    case 'decrypt':
      return crypt(op);
    case 'nalu':
      try {
        const r = nalu.processNALUsForEncryption(data, 'h264');
        return { clear: r.unencryptedBytes, nalu: r.requiresNALUProcessing };
      } catch (e) {
        return { threw: String(e) };
      }
    case 'normalize':
      return { frame: b64(nalu.normalizeAnnexBStartCodes(data)) };
    case 'writeRbsp':
      return { frame: b64(nalu.writeRbsp(data)) };
    case 'parseRbsp':
      return { frame: b64(nalu.parseRbsp(data)) };
    case 'needsRbspUnescaping':
      return { bool: nalu.needsRbspUnescaping(data) };
  }
  throw new Error(`unknown op ${op.op}`);
}

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const ops = JSON.parse(Buffer.concat(chunks).toString());
const results = [];
for (const op of ops) results.push(await run(op));
process.stdout.write(JSON.stringify(results));
