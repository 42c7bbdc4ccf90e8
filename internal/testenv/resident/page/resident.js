// The resident: a Matrix user who answers the intercom's classic 1:1 VoIP
// calls (Matrix spec, VoIP module, version "1") with matrix-js-sdk, as Element
// Web would. A person uses it in the demo; the end-to-end tests drive it
// through window.resident and receive its events through window.residentEmit,
// which the driver (driver.mjs) exposes with Playwright's page.exposeFunction.
// It also takes part in MatrixRTC calls through a LiveKit SFU, as Element Call
// and Element X do (rtc.js).
//
// Parameters come from the query string or the fragment (the driver uses the
// fragment so that credentials never reach a server log):
//   hs          homeserver base URL, e.g. http://127.0.0.1:8008
//   user        user ID (@bob:localhost) or localpart, for a password login
//   password    password for that login
//   token       access token (instead of user and password)
//   autoanswer  1: answer every incoming call at once
//   autojoin    1: join every room this user is invited to
//   loopback    1: use only loopback ICE candidates (see loopback.js)
//   forceturn   1: relay candidates only (createClient's forceTURN, which gives
//               iceTransportPolicy "relay"); "ready" waits for the
//               homeserver's TURN servers
//   noicerestart 1: never restart ICE by itself (js-sdk does on "failed" and
//               after 2 s "disconnected"), so that only the far end restarts
//   encryption  1: end-to-end encryption with matrix-js-sdk's rust crypto
//               (e2ee.js); needs a device that has no keys on the server yet
//   crosssign   1: with encryption and a password login, create a new
//               cross-signing identity for the user and sign this device
//   bursts      1: mouth-to-ear measurement (../../nodeproc/page/bursts.js):
//               the microphone sends timestamped tone bursts, and the door's
//               bursts are detected in every remote audio track ("burst")

import { ClientEvent, createClient, createNewMatrixCall, CallEvent, RoomMemberEvent } from "matrix-js-sdk";
import { CallErrorCode, CallState } from "matrix-js-sdk/lib/webrtc/call.js";
import { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler.js";
import { installLoopbackOnly } from "./loopback.js";
import { installRTC } from "./rtc.js";
import { autoJoin } from "../../nodeproc/page/autojoin.js";
import { watchGlass } from "../../nodeproc/page/glass.js";
import { installBurstMicrophone, watchBursts } from "../../nodeproc/page/bursts.js";
import { videoTimings } from "./timings.js";
import { crossSign, identity, initCrypto, MEGOLM, onCleartextEvent, sendEncrypted, shield, waitCrossSigned, waitKeysUploaded } from "./e2ee.js";
import { downloadImage, sendImage } from "./media.js";

const STATS_INTERVAL_MS = 250;
// How long "ready" waits for TURN servers with forceturn=1.
const TURN_WAIT_MS = 15000;
// Before the first remote frame the page samples getStats more often, so that
// first_frame is timed closely even where requestVideoFrameCallback does not fire.
const FIRST_FRAME_POLL_MS = 20;

const params = readParams();
const $ = (id) => document.getElementById(id);

// emit sends one structured event to the driver (if any) and to the console.
function emit(name, fields = {}) {
  const ev = { event: name, ts: Date.now(), ...fields };
  if (typeof window.residentEmit === "function") {
    window.residentEmit(JSON.stringify(ev)).catch(() => {});
  } else if (name !== "stats" && name !== "glass" && name !== "burst") {
    console.debug("resident event", JSON.stringify(ev));
  }
  return ev;
}

function readParams() {
  const p = new URLSearchParams(location.search);
  const h = new URLSearchParams(location.hash.replace(/^#/, ""));
  for (const [k, v] of h) p.set(k, v);
  return p;
}

function flag(name) {
  const v = params.get(name);
  return v === "1" || v === "true";
}

// ---------------------------------------------------------------- UI

function setStatus(text) {
  $("status").textContent = text;
}

function showCallControls(state) {
  const ringing = state === CallState.Ringing;
  const live = current && state !== CallState.Ended;
  $("answer").hidden = !ringing;
  $("reject").hidden = !ringing;
  $("hangup").hidden = !live || ringing;
}

// ---------------------------------------------------------------- calls

let client = null;
let rtc = null; // the MatrixRTC commands (rtc.js), once the client exists
// callId -> {serverTs, syncedTs} of each m.call.invite seen in sync, to time ringing.
const invites = new Map();
let current = null; // the MatrixCall shown and driven by answer/reject/hangup
const calls = new Map(); // callId -> MatrixCall, every call seen

function describe(call) {
  return {
    callId: call.callId,
    roomId: call.roomId,
  };
}

function watchCall(call) {
  calls.set(call.callId, call);
  current = call;
  let connectedSent = false;

  call.on(CallEvent.State, (state, oldState) => {
    emit("state", { ...describe(call), state, oldState });
    if (call === current) {
      setStatus(state === CallState.Ringing ? `${opponent(call)} is calling…` : `call ${state}`);
      showCallControls(state);
    }
    if (state === CallState.Connected && !connectedSent) {
      connectedSent = true;
      emit("connected", describe(call));
    }
  });
  let localMediaSent = false;
  call.on(CallEvent.FeedsChanged, () => {
    attachFeeds(call);
    const local = call.localUsermediaStream;
    if (local && !localMediaSent) {
      localMediaSent = true;
      const v = local.getVideoTracks()[0];
      const set = v ? v.getSettings() : {};
      emit("local_media", {
        ...describe(call),
        audio: local.getAudioTracks().length > 0,
        video: !!v,
        width: set.width || 0,
        height: set.height || 0,
      });
    }
  });
  call.on(CallEvent.Error, (err) => {
    emit("error", { ...describe(call), message: String(err && err.message ? err.message : err), code: err && err.code });
  });
  call.on(CallEvent.Hangup, () => {
    emit("hangup", {
      ...describe(call),
      reason: call.hangupReason || "",
      party: call.hangupParty || "",
    });
    if (call === current) {
      setStatus(`call ended (${call.hangupReason || "hangup"}, by ${call.hangupParty || "?"})`);
      showCallControls(CallState.Ended);
      $("remote").srcObject = null;
      $("local").srcObject = null;
    }
  });
  call.on(CallEvent.LocalHoldUnhold, (onHold) => emit("hold", { ...describe(call), side: "local", onHold }));
  call.on(CallEvent.RemoteHoldUnhold, (onHold) => emit("hold", { ...describe(call), side: "remote", onHold }));
  call.on(CallEvent.PeerConnectionCreated, (pc) => watchMedia(call, pc));
  if (call.peerConn) watchMedia(call, call.peerConn);
  attachFeeds(call);
  // An incoming call is already ringing when js-sdk announces it, so no
  // state change will show the Answer button: show it now.
  if (call === current) {
    showCallControls(call.state);
    if (call.state === CallState.Ringing) setStatus(`${opponent(call)} is calling…`);
  }
}

function opponent(call) {
  const m = call.getOpponentMember();
  return m ? m.name || m.userId : "someone";
}

// attachFeeds puts the remote user-media stream into the <video> element and
// plays it: Chromium only decodes remote audio (and only then does
// totalAudioEnergy grow) when the stream plays in a media element.
function attachFeeds(call) {
  if (call !== current) return;
  const remote = call.remoteUsermediaStream;
  const v = $("remote");
  if (remote && v.srcObject !== remote) {
    v.srcObject = remote;
    v.play().catch((err) => {
      // An AbortError only means the element got a new source (the call
      // ended, or another call took over) before playback started.
      if (err.name !== "AbortError") emit("error", { ...describe(call), message: `play remote: ${err.message}` });
    });
  }
  if (remote && flag("bursts") && !call._residentBursts) {
    const track = remote.getAudioTracks()[0];
    if (track) {
      call._residentBursts = true;
      // The door's bursts as this page's WebAudio renders the call's
      // audio (the <video> element above plays it, so Chromium decodes it).
      watchBursts(track, (o) => {
        if (call.state !== CallState.Ended) emit("burst", { ...describe(call), ...o });
      }).catch((err) => emit("error", { ...describe(call), message: `bursts: ${err.message}` }));
    }
  }
  const local = call.localUsermediaStream;
  const l = $("local");
  if (local && l.srcObject !== local) {
    l.srcObject = local;
    l.play().catch(() => {});
  }
}

// watchMedia reports first_frame (once per call) and stats (every 250 ms)
// for a call's peer connection until the call ends.
function watchMedia(call, pc) {
  if (call._residentWatched) return;
  call._residentWatched = true;
  let firstFrame = false;
  let lastStats = 0;

  const sendFirstFrame = (width, height, via, receiveTs = 0) => {
    if (firstFrame) return;
    firstFrame = true;
    emit("first_frame", { ...describe(call), width, height, via, receiveTs });
  };

  const v = $("remote");
  const onFrame = (_now, meta) => {
    if (call.state === CallState.Ended || call !== current) return;
    if (meta && meta.width > 0) {
      // When the frame's last packet arrived (Chromium's receiveTime for
      // WebRTC video), on the wall clock the intercom's logs use: it splits
      // the network and jitter buffer from decoding and display.
      const receiveTs = meta.receiveTime > 0 ? Date.now() - (performance.now() - meta.receiveTime) : 0;
      sendFirstFrame(meta.width, meta.height, "requestVideoFrameCallback", receiveTs);
    } else v.requestVideoFrameCallback(onFrame);
  };
  if (typeof v.requestVideoFrameCallback === "function") v.requestVideoFrameCallback(onFrame);
  // Glass-to-glass: the intercom's test pattern carries its capture time
  // in every frame (glass.js); one "glass" event per presented frame.
  watchGlass(
    v,
    (g) => emit("glass", { ...describe(call), ...g }),
    () => call.state === CallState.Ended || call !== current,
  );

  // Every ICE connection state change, with the ICE username fragments in
  // use, so that tests see an ICE restart (RFC 8445 section 9) happen.
  pc.addEventListener("iceconnectionstatechange", () => {
    emit("ice", { ...describe(call), state: pc.iceConnectionState, ...ufrags(pc) });
  });
  // The connection state follows DTLS as well as ICE: "connected" once
  // both are up, when media can flow.
  pc.addEventListener("connectionstatechange", () => {
    emit("pc_state", { ...describe(call), state: pc.connectionState });
  });
  if (flag("noicerestart")) {
    // js-sdk restarts ICE on "failed" and after 2 s "disconnected" through
    // pc.restartIce(); a test that wants the far end to drive the restart
    // turns that off. restartIce() from the API still works.
    pc.restartIce = () => console.info("resident: own ICE restart suppressed (noicerestart)");
  }

  const tick = async () => {
    if (call.state === CallState.Ended) {
      return;
    }
    // Nothing flows before the answer: sample slowly and report nothing.
    const live = call.state === CallState.Connecting || call.state === CallState.Connected;
    if (!live) {
      setTimeout(tick, STATS_INTERVAL_MS);
      return;
    }
    try {
      const s = await collectStats(pc);
      // frameWidth can lag framesDecoded by one stats sample; the <video>
      // element may already know the size.
      if (!firstFrame && s.framesDecoded > 0) {
        if (s.frameWidth > 0) sendFirstFrame(s.frameWidth, s.frameHeight, "getStats");
        else if (v.videoWidth > 0 && call === current) sendFirstFrame(v.videoWidth, v.videoHeight, "getStats+video");
      }
      const now = Date.now();
      if (now - lastStats >= STATS_INTERVAL_MS) {
        lastStats = now;
        emit("stats", { ...describe(call), ...s });
      }
    } catch (err) {
      console.warn("getStats failed", err);
    }
    setTimeout(tick, firstFrame ? STATS_INTERVAL_MS : FIRST_FRAME_POLL_MS);
  };
  tick();
}

// collectStats summarises what this side receives (W3C webrtc-stats:
// RTCInboundRtpStreamStats, RTCCodecStats, the selected candidate pair).
async function collectStats(pc) {
  const report = await pc.getStats();
  const s = {
    framesDecoded: 0,
    frameWidth: 0,
    frameHeight: 0,
    framesPerSecond: 0,
    videoCodec: "",
    videoPacketsReceived: 0,
    ...videoTimings(null),
    audioCodec: "",
    totalAudioEnergy: 0,
    audioPacketsReceived: 0,
    audioJitterBufferDelay: 0,
    audioJitterBufferEmittedCount: 0,
    ...lossStats(null, null),
    localAddress: "",
    remoteAddress: "",
    localUfrag: "",
    remoteUfrag: "",
    connectionState: pc.connectionState,
    iceConnectionState: pc.iceConnectionState,
  };
  let pairId = "";
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      s.framesDecoded = r.framesDecoded || 0;
      s.frameWidth = r.frameWidth || 0;
      s.frameHeight = r.frameHeight || 0;
      s.framesPerSecond = r.framesPerSecond || 0;
      s.videoPacketsReceived = r.packetsReceived || 0;
      Object.assign(s, videoTimings(r), lossStats(r, undefined));
      const c = r.codecId && report.get(r.codecId);
      if (c) s.videoCodec = c.mimeType + (c.sdpFmtpLine ? ";" + c.sdpFmtpLine : "");
    } else if (r.type === "inbound-rtp" && r.kind === "audio") {
      s.totalAudioEnergy = r.totalAudioEnergy || 0;
      s.audioPacketsReceived = r.packetsReceived || 0;
      // NetEq's delay over the samples it emitted: the video waits for
      // the audio it is synchronised with (one MediaStream).
      s.audioJitterBufferDelay = r.jitterBufferDelay || 0;
      s.audioJitterBufferEmittedCount = r.jitterBufferEmittedCount || 0;
      Object.assign(s, lossStats(undefined, r));
      const c = r.codecId && report.get(r.codecId);
      if (c) s.audioCodec = c.mimeType;
    } else if (r.type === "transport" && r.selectedCandidatePairId) {
      pairId = r.selectedCandidatePairId;
    }
  });
  const pair = pairId && report.get(pairId);
  if (pair) {
    const l = report.get(pair.localCandidateId);
    const r = report.get(pair.remoteCandidateId);
    if (l) s.localAddress = `${l.address}:${l.port}/${l.protocol}/${l.candidateType}`;
    if (r) s.remoteAddress = `${r.address}:${r.port}/${r.protocol}/${r.candidateType}`;
    // The ICE generation of the pair in use: it changes with an ICE restart.
    if (l) s.localUfrag = l.usernameFragment || "";
    if (r) s.remoteUfrag = r.usernameFragment || "";
  }
  return s;
}

// lossStats picks what a bad network costs the receiver (W3C
// webrtc-stats inbound-rtp, cumulative): from the video, Chromium's
// freezes (a frame later than max(3 × the mean frame interval, that +
// 150 ms)), the NACKs and PLIs this side sent, packets lost; from the
// audio, samples NetEq concealed out of all it played, and packets lost.
// A null report gives that kind's fields as zero, an undefined one leaves
// them out.
function lossStats(video, audio) {
  const s = {};
  if (video !== undefined) {
    s.freezeCount = (video && video.freezeCount) || 0;
    s.totalFreezesDuration = (video && video.totalFreezesDuration) || 0;
    s.nackCount = (video && video.nackCount) || 0;
    s.pliCount = (video && video.pliCount) || 0;
    s.firCount = (video && video.firCount) || 0;
    s.videoPacketsLost = (video && video.packetsLost) || 0;
    s.videoBytesReceived = (video && video.bytesReceived) || 0;
    s.keyFramesDecoded = (video && video.keyFramesDecoded) || 0;
    s.framesDropped = (video && video.framesDropped) || 0;
  }
  if (audio !== undefined) {
    s.concealedSamples = (audio && audio.concealedSamples) || 0;
    s.totalSamplesReceived = (audio && audio.totalSamplesReceived) || 0;
    s.audioPacketsLost = (audio && audio.packetsLost) || 0;
  }
  return s;
}

function callFor(callId) {
  const call = callId ? calls.get(callId) : current;
  if (!call) throw new Error(callId ? `no call ${callId}` : "no call");
  return call;
}

// ---------------------------------------------------------------- API

const api = {
  async answer(callId) {
    const call = callFor(callId);
    if (call.state !== CallState.Ringing) throw new Error(`call ${call.callId} is ${call.state}, not ringing`);
    emit("answered", describe(call));
    await call.answer();
  },
  async reject(callId) {
    const call = callFor(callId);
    if (call.state !== CallState.Ringing) throw new Error(`call ${call.callId} is ${call.state}, not ringing`);
    call.reject();
  },
  async hangup(callId) {
    const call = callFor(callId);
    if (call.state === CallState.Ended) throw new Error(`call ${call.callId} has already ended`);
    call.hangup(CallErrorCode.UserHangup, false);
  },
  // The room must be joined; the page waits up to 10 s for it to appear in sync.
  // placeCall starts a video call into roomId. With delayMs the call (and
  // its call ID) exists at once but its invite waits, so a test can make
  // glare happen deterministically.
  async placeCall(roomId, delayMs = 0) {
    const deadline = Date.now() + 10000;
    while (!client.getRoom(roomId) || client.getRoom(roomId).getMyMembership() !== "join") {
      if (Date.now() > deadline) throw new Error(`room ${roomId} is not joined`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const call = createNewMatrixCall(client, roomId);
    if (!call) throw new Error("this browser cannot make Matrix calls");
    watchCall(call);
    emit("placing", describe(call));
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    await call.placeVideoCall();
    return call.callId;
  },
  // videoCapabilities lists the video codecs this browser can receive over WebRTC.
  videoCapabilities() {
    const caps = RTCRtpReceiver.getCapabilities("video");
    return caps ? caps.codecs.map((c) => c.mimeType + (c.sdpFmtpLine ? ";" + c.sdpFmtpLine : "")) : [];
  },
  // sendText posts an m.text message into a joined room and resolves with
  // its event ID (the door commands of the intercom's rooms).
  async sendText({ roomId, body }) {
    await joined(roomId);
    const res = await client.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body });
    return res.event_id;
  },
  // react annotates eventId with key (an m.reaction, as Element's reaction
  // picker sends it) and resolves with the reaction's event ID. Like Element
  // Web, js-sdk sends reactions in the clear even in an encrypted room;
  // encrypt: true encrypts it there, as other clients do.
  async react({ roomId, eventId, key, encrypt = false }) {
    await joined(roomId);
    const content = { "m.relates_to": { rel_type: "m.annotation", event_id: eventId, key } };
    if (encrypt) return sendEncrypted(client, roomId, "m.reaction", content);
    const res = await client.sendEvent(roomId, "m.reaction", content);
    return res.event_id;
  },
  // hold puts the far end on hold or takes it off (js-sdk setRemoteOnHold:
  // every transceiver sendonly, or sendrecv again), which js-sdk signals with
  // an m.call.negotiate offer. Resolves with the ICE ufrags in use.
  async hold({ callId, onHold }) {
    const call = callFor(callId);
    if (call.state !== CallState.Connected) throw new Error(`call ${call.callId} is ${call.state}, not connected`);
    call.setRemoteOnHold(!!onHold);
    return ufrags(call.peerConn);
  },
  // mute mutes or unmutes the microphone as Element's button does (js-sdk
  // setMicrophoneMuted: the track is disabled, so Chromium sends silence,
  // and an SDPStreamMetadataChanged tells the far end). Resolves with the
  // muted state.
  async mute({ callId, muted }) {
    const call = callFor(callId);
    await call.setMicrophoneMuted(!!muted);
    return call.isMicrophoneMuted();
  },
  // restartIce asks the browser for an ICE restart (RTCPeerConnection
  // restartIce, through the native method even with noicerestart): the
  // negotiationneeded event that follows makes js-sdk send an
  // m.call.negotiate offer with new ICE credentials. Resolves with the
  // ufrags in use before the restart.
  async restartIce(callId) {
    const call = callFor(callId);
    if (!call.peerConn) throw new Error(`call ${call.callId} has no peer connection`);
    const before = ufrags(call.peerConn);
    Object.getPrototypeOf(call.peerConn).restartIce.call(call.peerConn);
    return before;
  },
  // createRoom creates a private room, as Element's "New room" or "Start
  // chat" does, inviting invite (user IDs); encrypted adds m.room.encryption
  // (Megolm) to its initial state; direct marks it a DM (is_direct, and the
  // m.direct account data Element keeps). Resolves with the room ID once
  // this client's sync has the room joined, so that it can be used at once.
  async createRoom({ invite = [], encrypted = false, direct = false, name = "" }) {
    const opts = { preset: "private_chat", invite, is_direct: !!direct };
    if (name) opts.name = name;
    if (encrypted) opts.initial_state = [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }];
    const { room_id: roomId } = await client.createRoom(opts);
    if (direct && invite.length > 0) {
      const prev = client.getAccountData("m.direct");
      const dm = { ...(prev ? prev.getContent() : {}) };
      dm[invite[0]] = [...(dm[invite[0]] || []), roomId];
      await client.setAccountData("m.direct", dm);
    }
    await joined(roomId);
    return roomId;
  },
  // sendImage posts a generated picture as an m.image (media.js): encrypted
  // when the room is. Resolves with {eventId, encrypted, mxc, bytes, sha256,
  // width, height, mimetype}.
  async sendImage(args) {
    await joined(args.roomId);
    return sendImage(client, args);
  },
  // downloadImage fetches, decrypts (for a `file`) and decodes the
  // attachment of a "message" event's fields {url, file, mimetype}.
  async downloadImage(args) {
    return downloadImage(client, args);
  },
  ringDoorbell,
  // MatrixRTC (rtc.js): rtcJoin({roomId, serviceUrl?, notify?, video?, getToken?}),
  // rtcDecline({roomId, notificationEventId}), rtcLeave({roomId}).
  async rtcJoin(args) {
    return rtcReady().rtcJoin(args);
  },
  async rtcDecline(args) {
    return rtcReady().rtcDecline(args);
  },
  async rtcLeave(args) {
    return rtcReady().rtcLeave(args);
  },
};
window.resident = api;

function rtcReady() {
  if (!rtc) throw new Error("not logged in");
  return rtc;
}

// ufrag returns the first a=ice-ufrag of an SDP (one BUNDLE transport).
function ufrag(sdp) {
  const m = /^a=ice-ufrag:(\S+)/m.exec(sdp || "");
  return m ? m[1] : "";
}

function ufrags(pc) {
  return {
    localUfrag: ufrag(pc && pc.localDescription && pc.localDescription.sdp),
    remoteUfrag: ufrag(pc && pc.remoteDescription && pc.remoteDescription.sdp),
  };
}

// directions lists the a=sendrecv/sendonly/recvonly/inactive of each m= section.
function directions(sdp) {
  const out = [];
  for (const section of (sdp || "").split(/\r?\nm=/).slice(1)) {
    const m = /^a=(sendrecv|sendonly|recvonly|inactive)$/m.exec(section);
    out.push(`${section.split(" ")[0]}:${m ? m[1] : "sendrecv"}`);
  }
  return out;
}

// joined waits up to 10 s for roomId to be joined in this client's sync.
async function joined(roomId) {
  const deadline = Date.now() + 10000;
  while (!client.getRoom(roomId) || client.getRoom(roomId).getMyMembership() !== "join") {
    if (Date.now() > deadline) throw new Error(`room ${roomId} is not joined`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // The rust crypto learns a room is encrypted from its state, after the
  // sync that brought it, and js-sdk sends in the clear until it has: a
  // message sent at once into a room just created encrypted went out
  // unencrypted (seen once in TestEncryptedRoom).
  const crypto = client.getCrypto();
  if (!crypto || !client.getRoom(roomId).currentState.getStateEvents("m.room.encryption", "")) return;
  while (!(await crypto.isEncryptionEnabledInRoom(roomId))) {
    if (Date.now() > deadline) throw new Error(`room ${roomId}: encryption not yet known to the crypto`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function ringDoorbell() {
  // The demo serves this page under /resident/ next to the intercom's API.
  const res = await fetch("/api/ring", { method: "POST" });
  if (!res.ok) throw new Error(`ring: HTTP ${res.status}`);
}

// ---------------------------------------------------------------- room events

// onMessage reports an m.room.message from someone else (the intercom's
// notices and snapshots) as a "message" event, once per event ID, with the
// attachment's `file` (EncryptedFile) when it is encrypted and the shield
// Element would show beside it.
async function onMessage(ev, seen) {
  if (ev.getSender() === client.getUserId() || seen.has(ev.getId())) return;
  seen.add(ev.getId());
  const c = ev.getContent();
  emit("message", {
    roomId: ev.getRoomId(),
    eventId: ev.getId(),
    sender: ev.getSender(),
    serverTs: ev.getTs(),
    msgtype: c.msgtype || "",
    body: c.body || "",
    url: c.url || "",
    file: c.file || null,
    mimetype: (c.info && c.info.mimetype) || (c.file && c.file.mimetype) || "",
    size: (c.info && c.info.size) || 0,
    width: (c.info && c.info.w) || 0,
    height: (c.info && c.info.h) || 0,
    encrypted: ev.isEncrypted(),
    ...(await shield(client, ev)),
  });
}

// onReaction reports an m.reaction (m.annotation) from someone else.
function onReaction(ev) {
  if (ev.getSender() === client.getUserId()) return;
  const rel = ev.getContent()["m.relates_to"] || ev.getWireContent()["m.relates_to"] || {};
  emit("reaction", {
    roomId: ev.getRoomId(),
    eventId: ev.getId(),
    sender: ev.getSender(),
    serverTs: ev.getTs(),
    relatesTo: rel.event_id || "",
    key: rel.key || "",
    encrypted: ev.isEncrypted(),
  });
}

// onNegotiate reports the far end's m.call.negotiate (Matrix spec, VoIP:
// renegotiation): its answers to our hold and ICE restart offers, and its
// own offers.
function onNegotiate(ev) {
  if (ev.getSender() === client.getUserId()) return;
  const c = ev.getContent();
  const d = c.description || {};
  emit("negotiate", {
    callId: c.call_id || "",
    roomId: ev.getRoomId(),
    sender: ev.getSender(),
    partyId: c.party_id || "",
    type: d.type || "",
    ufrag: ufrag(d.sdp),
    directions: directions(d.sdp),
    serverTs: ev.getTs(),
  });
}

// ---------------------------------------------------------------- start

// How long the encryption steps before "ready" took, in ms.
const cryptoTimings = { initMs: 0, crossSignMs: 0, keysUploadedMs: 0 };

// timedFetch is the client's fetch. It emits "answer_sent" the moment an
// m.call.answer PUT leaves the page: the answer → first frame figure that
// is the intercom's to shorten starts there, after js-sdk's own work on the
// answer (camera start, its description, candidate wait). Encrypted rooms
// send m.room.encrypted instead and are not timed.
function timedFetch(input, init) {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (init && init.method === "PUT" && url.includes("/send/m.call.answer/")) {
    let callId = "";
    try {
      callId = JSON.parse(init.body).call_id || "";
    } catch {
      // not JSON: timed without a call ID
    }
    emit("answer_sent", { callId });
  }
  return window.fetch(input, init);
}

async function login() {
  const baseUrl = params.get("hs").replace(/\/+$/, "");
  const token = params.get("token");
  if (token) {
    const probe = createClient({ baseUrl, accessToken: token });
    const me = await probe.whoami();
    return { baseUrl, accessToken: token, userId: me.user_id, deviceId: me.device_id };
  }
  const user = params.get("user");
  const anon = createClient({ baseUrl });
  const res = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password: params.get("password"),
    initial_device_display_name: "intercom resident",
  });
  return { baseUrl, accessToken: res.access_token, userId: res.user_id, deviceId: res.device_id };
}

async function start() {
  if (flag("loopback")) installLoopbackOnly(window);
  if (flag("bursts")) installBurstMicrophone();
  setStatus("logging in…");
  const creds = await login();
  client = createClient({
    ...creds,
    fetchFn: timedFetch,
    // Never reach for turn.matrix.org: tests and the demo stay local.
    fallbackICEServerAllowed: false,
    forceTURN: flag("forceturn"),
  });
  if (flag("crosssign") && (!flag("encryption") || !params.get("password"))) {
    throw new Error("crosssign needs encryption and a password login");
  }
  if (flag("encryption")) {
    setStatus("starting encryption…");
    cryptoTimings.initMs = await initCrypto(client);
  }
  if (flag("crosssign")) {
    // Before the first sync: a /keys/query answered while the new keys are
    // on their way up would bring back the user's previous identity, and
    // the rust crypto would drop the new private keys (seen when a user
    // already had cross-signing keys from an earlier device).
    setStatus("cross-signing…");
    cryptoTimings.crossSignMs = await crossSign(client, { user: params.get("user"), password: params.get("password") });
  }

  // MatrixRTC rings and memberships, watched from the first sync on.
  rtc = installRTC({ client, emit, joined, bursts: flag("bursts") });

  // The call event handler starts after the first sync and ignores invites
  // that were already in it (client.ts startCallEventHandler), so this
  // listener is in place before anything can ring.
  client.on(CallEventHandlerEvent.Incoming, (call) => {
    watchCall(call);
    const caller = call.getOpponentMember();
    const seen = invites.get(call.callId) || {};
    emit("incoming", {
      ...describe(call),
      sender: caller ? caller.userId : "",
      video: call.type === "video",
      // origin_server_ts of the m.call.invite (the homeserver's clock) and
      // when this page's sync delivered it (the page's clock).
      inviteTs: seen.serverTs || 0,
      syncedTs: seen.syncedTs || 0,
    });
    $("caller").textContent = opponent(call);
    if (flag("autoanswer")) {
      api.answer(call.callId).catch((err) => emit("error", { ...describe(call), message: err.message }));
    }
  });

  // Room events in cleartext: as they come for rooms without encryption,
  // after decryption for encrypted ones (e2ee.js).
  const messagesSeen = new Set();
  onCleartextEvent(
    client,
    (ev) => {
      switch (ev.getType()) {
        case "m.room.message":
          onMessage(ev, messagesSeen).catch((err) => emit("error", { roomId: ev.getRoomId(), message: `message: ${err.message}` }));
          break;
        case "m.reaction":
          onReaction(ev);
          break;
        case "m.call.negotiate":
          onNegotiate(ev);
          break;
        case "m.call.invite": {
          const callId = ev.getContent().call_id;
          if (callId && !invites.has(callId)) invites.set(callId, { serverTs: ev.getTs(), syncedTs: Date.now() });
          break;
        }
      }
    },
    (ev, reason, message) => {
      if (!ev.getRoomId()) return;
      emit("undecryptable", {
        roomId: ev.getRoomId(),
        eventId: ev.getId(),
        sender: ev.getSender(),
        serverTs: ev.getTs(),
        reason,
        message,
      });
    },
  );

  if (flag("autojoin")) autoJoin(client, RoomMemberEvent.Membership, emit);

  client.on(ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED") {
      setStatus(`ready as ${client.getUserId()}`);
      announceReady().catch((err) => emit("error", { message: `ready: ${err.message}` }));
    } else if (state === "ERROR") {
      emit("error", { message: `sync: ${data && data.error ? data.error.message : "failed"}` });
    }
  });
  await client.startClient({ initialSyncLimit: 1 });
}

// announceReady emits "ready"; with forceturn it first waits for the
// homeserver's TURN servers (js-sdk fetches them at start without waiting),
// since a relay-only call without them gathers no candidate at all.
async function announceReady() {
  let turn = client.getTurnServers().length;
  if (flag("forceturn")) {
    const deadline = Date.now() + TURN_WAIT_MS;
    while (turn === 0) {
      if (Date.now() > deadline) throw new Error("forceturn: the homeserver handed out no TURN server");
      await new Promise((r) => setTimeout(r, 50));
      turn = client.getTurnServers().length;
    }
  }
  let e2ee = { encryption: false, crossSigned: false };
  if (client.getCrypto()) {
    // Others can encrypt to this device only once the homeserver lists its
    // keys (cross-signing uploaded them already).
    cryptoTimings.keysUploadedMs = await waitKeysUploaded(client, { signed: flag("crosssign") });
    const id = flag("crosssign") ? await waitCrossSigned(client) : await identity(client);
    e2ee = { encryption: true, ...id, cryptoTimings };
    setStatus(`ready as ${client.getUserId()}${e2ee.crossSigned ? " (cross-signed)" : ""}`);
  }
  emit("ready", { userId: client.getUserId(), deviceId: client.getDeviceId(), turnServers: turn, ...e2ee });
}

function wireUI() {
  $("answer").onclick = () => api.answer().catch((e) => setStatus(e.message));
  $("reject").onclick = () => api.reject().catch((e) => setStatus(e.message));
  $("hangup").onclick = () => api.hangup().catch((e) => setStatus(e.message));
  $("ring").onclick = () =>
    ringDoorbell()
      .then(() => setStatus("ding dong…"))
      .catch((e) => setStatus(e.message));
  $("login").onsubmit = (e) => {
    e.preventDefault();
    const f = new FormData($("login"));
    const p = new URLSearchParams();
    for (const [k, v] of f) if (v) p.set(k, v);
    location.hash = p.toString();
    location.reload();
  };
  showCallControls(null);
}

window.addEventListener("error", (e) => emit("error", { message: `page: ${e.message}` }));
window.addEventListener("unhandledrejection", (e) =>
  emit("error", { message: `page: ${e.reason && e.reason.message ? e.reason.message : e.reason}` }),
);

wireUI();
if (params.get("hs") && (params.get("token") || (params.get("user") && params.get("password")))) {
  $("login").hidden = true;
  start().catch((err) => {
    setStatus(`failed: ${err.message}`);
    emit("error", { message: `start: ${err.message}` });
  });
} else {
  $("login").hidden = false;
  $("login").elements.hs.value = params.get("hs") || "";
  setStatus("log in to answer the door");
}
