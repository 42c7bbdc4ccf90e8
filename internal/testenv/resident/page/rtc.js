// MatrixRTC mode of the resident: what Element Call (and Element X, which
// embeds it) does when the intercom rings through MatrixRTC
// (../../shared/matrix-voip.md §4.2, §4.7, §5):
//
//   - it watches every joined room for org.matrix.msc4075.rtc.notification
//     (event rtcRing), org.matrix.msc4310.rtc.decline (rtcDeclined) and
//     org.matrix.msc3401.call.member state (rtcMembership, the raw event;
//     rtcSession, the memberships matrix-js-sdk's MatrixRTCSession accepts);
//   - rtcJoin joins the room's session with a per-device call.member state
//     event (MatrixRTCSession.joinRoomSession with a LiveKit transport; no
//     delayed leave event when the homeserver lacks MSC4140), swaps an
//     OpenID token for a LiveKit token at <livekit_service_url>/sfu/get,
//     connects a livekit-client Room, publishes the fake microphone and
//     camera and plays everything it subscribes to;
//   - rtcDecline declines a ring (MSC4310), rtcLeave leaves.

import { ClientEvent } from "matrix-js-sdk";
import { onCleartextEvent } from "./e2ee.js";
import { watchGlass } from "../../nodeproc/page/glass.js";
import { watchBursts } from "../../nodeproc/page/bursts.js";
import { videoTimings } from "./timings.js";
import { MatrixRTCSessionEvent, parseCallNotificationContent } from "matrix-js-sdk/lib/matrixrtc/index.js";
import {
  BaseKeyProvider,
  Room as LiveKitRoom,
  RoomEvent,
  Track,
  createKeyMaterialFromBuffer,
  setLogLevel,
} from "livekit-client";

// SessionKeyProvider feeds livekit-client's frame encryption with the
// per-participant media keys matrix-js-sdk's MatrixRTCSession hands out
// (EncryptionKeyChanged: our own key and each member's, Olm-encrypted
// io.element.call.encryption_keys), keyed by LiveKit identity, with the
// key provider options Element Call's MatrixKeyProvider uses.
class SessionKeyProvider extends BaseKeyProvider {
  constructor() {
    super({ ratchetWindowSize: 10, keyringSize: 256 });
  }
  async setKey(key, index, identity) {
    const material = await createKeyMaterialFromBuffer(key);
    this.onSetEncryptionKey(material, identity, index);
  }
}

export const CALL_MEMBER = "org.matrix.msc3401.call.member";
export const RTC_NOTIFICATION = "org.matrix.msc4075.rtc.notification";
export const RTC_DECLINE = "org.matrix.msc4310.rtc.decline";

const STATS_INTERVAL_MS = 250;
const FIRST_FRAME_POLL_MS = 20;
// How long rtcJoin waits for its own membership to come back through sync.
const OWN_MEMBERSHIP_WAIT_MS = 10000;
const LEAVE_TIMEOUT_MS = 5000;
// How long rtcJoin without serviceUrl waits for a membership naming one.
const SERVICE_URL_WAIT_MS = 5000;

setLogLevel("warn");

// isLivekitService tells a LiveKit transport ({type: "livekit",
// livekit_service_url}) from a focus selection ({type: "livekit",
// focus_selection}), which share the type.
function isLivekitService(t) {
  return !!t && t.type === "livekit" && typeof t.livekit_service_url === "string" && t.livekit_service_url !== "";
}

// installRTC wires the watchers into a client that has not started yet and
// returns the commands. emit(name, fields) reports an event; joined(roomId)
// waits until the room is joined. With bursts, the door's tone bursts are
// detected in every remote audio track ("burst", bursts.js).
export function installRTC({ client, emit, joined, bursts = false }) {
  let prepared = false; // the first sync is done
  const watched = new WeakSet(); // MatrixRTCSessions with our listener
  const calls = new Map(); // roomId -> the live join (see rtcJoin)

  const me = () => client.getUserId();

  // --------------------------------------------------------- watching

  // Rings and declines are encrypted in an encrypted room: watch them in
  // cleartext, after decryption.
  onCleartextEvent(client, (ev) => {
    const type = ev.getType();
    if (type === CALL_MEMBER && ev.isState()) {
      emit("rtcMembership", {
        roomId: ev.getRoomId(),
        eventId: ev.getId(),
        stateKey: ev.getStateKey(),
        sender: ev.getSender(),
        self: ev.getSender() === me(),
        content: ev.getContent(),
        serverTs: ev.getTs(),
        live: prepared,
      });
      const room = client.getRoom(ev.getRoomId());
      if (room) watchSession(room);
    } else if (type === RTC_NOTIFICATION && ev.getSender() !== me()) {
      onNotification(ev).catch((err) => emit("error", { roomId: ev.getRoomId(), message: `rtcRing: ${err.message}` }));
    } else if (type === RTC_DECLINE && ev.getSender() !== me()) {
      const c = ev.getContent();
      emit("rtcDeclined", {
        roomId: ev.getRoomId(),
        eventId: ev.getId(),
        sender: ev.getSender(),
        relatesTo: c["m.relates_to"] || null,
        serverTs: ev.getTs(),
        live: prepared,
      });
    }
  });
  client.on(ClientEvent.Room, (room) => watchSession(room));
  client.on(ClientEvent.Sync, (state) => {
    if (state !== "PREPARED" || prepared) return;
    prepared = true;
    for (const room of client.getRooms()) watchSession(room);
  });

  async function onNotification(ev) {
    const c = ev.getContent();
    const m = c["m.mentions"] || {};
    const room = client.getRoom(ev.getRoomId());
    // What matrix-js-sdk itself would make of it (Element Web's ringing):
    // since 43.x it also wants an open org.matrix.msc4143.rtc.slot state.
    let sdkValid = false;
    let sdkReason = "";
    if (room) {
      try {
        await parseCallNotificationContent(ev, { room, userId: me() });
        sdkValid = true;
      } catch (err) {
        sdkReason = String(err.message || err);
      }
    } else {
      sdkReason = "room not known yet";
    }
    emit("rtcRing", {
      roomId: ev.getRoomId(),
      eventId: ev.getId(),
      sender: ev.getSender(),
      notificationType: c.notification_type || "",
      lifetime: typeof c.lifetime === "number" ? c.lifetime : 0,
      senderTs: typeof c.sender_ts === "number" ? c.sender_ts : 0,
      serverTs: ev.getTs(),
      mentionsMe: m.room === true || (Array.isArray(m.user_ids) && m.user_ids.includes(me())),
      mentions: { room: m.room === true, userIds: Array.isArray(m.user_ids) ? m.user_ids : [] },
      relatesTo: c["m.relates_to"] || null,
      callIntent: c["m.call.intent"] || "",
      slotId: c.slot_id || "",
      sdkValid,
      sdkReason,
      live: prepared,
    });
  }

  // watchSession reports the memberships js-sdk's MatrixRTCSession accepts
  // in a room (valid content, sender joined, not expired), every time they
  // change.
  function watchSession(room) {
    const session = client.matrixRTC.getRoomSession(room);
    if (watched.has(session)) return session;
    watched.add(session);
    session.on(MatrixRTCSessionEvent.MembershipsChanged, (_old, memberships) => {
      emit("rtcSession", { roomId: room.roomId, memberships: memberships.map(describeMembership) });
    });
    if (session.memberships.length > 0) {
      emit("rtcSession", { roomId: room.roomId, memberships: session.memberships.map(describeMembership) });
    }
    return session;
  }

  function describeMembership(m) {
    const t = m.transports.find(isLivekitService);
    return {
      sender: m.sender,
      deviceId: m.deviceId,
      memberId: m.memberId,
      eventId: m.eventId,
      callIntent: m.callIntent || "",
      serviceUrl: (t && t.livekit_service_url) || "",
      expiresInMs: m.getMsUntilExpiry() ?? 0,
    };
  }

  // serviceUrlOf returns the LiveKit service of the oldest other member, as
  // a client in "oldest_membership" mode would pick it.
  function serviceUrlOf(session) {
    for (const m of session.memberships) {
      if (m.sender === me() && m.deviceId === client.getDeviceId()) continue;
      const t = m.transports.find(isLivekitService);
      if (t) return t.livekit_service_url;
    }
    return "";
  }

  function ownMembership(session) {
    return session.memberships.find((m) => m.sender === me() && m.deviceId === client.getDeviceId());
  }

  // waitMemberships resolves with find(session) once it returns something,
  // checking again whenever the session's memberships change; it fails
  // after ms, or at once when the session's MembershipManager gives up
  // (e.g. the homeserver refused our state event: M_FORBIDDEN where
  // call.member needs power).
  function waitMemberships(session, find, ms, what) {
    return new Promise((resolve, reject) => {
      const found = find(session);
      if (found) return resolve(found);
      const done = () => {
        clearTimeout(timer);
        session.off(MatrixRTCSessionEvent.MembershipsChanged, check);
        session.off(MatrixRTCSessionEvent.MembershipManagerError, failed);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${what}: not seen within ${ms} ms`));
      }, ms);
      const check = () => {
        const v = find(session);
        if (!v) return;
        done();
        resolve(v);
      };
      const failed = (err) => {
        done();
        reject(new Error(`${what}: membership manager failed: ${err && err.message ? err.message : err}`));
      };
      session.on(MatrixRTCSessionEvent.MembershipsChanged, check);
      session.on(MatrixRTCSessionEvent.MembershipManagerError, failed);
    });
  }

  // --------------------------------------------------------- media

  function container() {
    let el = document.getElementById("rtc");
    if (!el) {
      el = document.createElement("div");
      el.id = "rtc";
      document.body.append(el);
    }
    return el;
  }

  function onTrack(call, track, participant) {
    const fields = {
      roomId: call.roomId,
      kind: track.kind,
      source: track.source,
      participant: participant.identity,
      trackSid: track.sid,
      ms: Math.round(performance.now() - call.t0),
    };
    emit("rtcTrack", fields);
    if (track.kind === Track.Kind.Video) {
      const v = document.createElement("video");
      v.autoplay = true;
      v.playsInline = true;
      v.muted = true;
      v.dataset.participant = participant.identity;
      container().append(v);
      track.attach(v);
      call.elements.push(v);
      const onFrame = (_now, meta) => {
        if (call.closed) return;
        if (meta && meta.width > 0) firstFrame(call, participant.identity, meta.width, meta.height, "requestVideoFrameCallback");
        else v.requestVideoFrameCallback(onFrame);
      };
      if (typeof v.requestVideoFrameCallback === "function") v.requestVideoFrameCallback(onFrame);
      // Glass-to-glass per presented frame (glass.js), as in classic calls.
      watchGlass(
        v,
        (g) => emit("glass", { roomId: call.roomId, participant: participant.identity, ...g }),
        () => call.closed,
      );
    } else if (track.kind === Track.Kind.Audio) {
      // Chromium decodes remote audio (and totalAudioEnergy grows) only
      // while it plays in a media element.
      const a = track.attach();
      a.dataset.participant = participant.identity;
      container().append(a);
      call.elements.push(a);
      a.play().catch((err) => {
        if (err.name !== "AbortError") emit("error", { roomId: call.roomId, message: `play remote audio: ${err.message}` });
      });
      if (bursts) {
        watchBursts(track.mediaStreamTrack, (o) => {
          if (!call.closed) emit("burst", { roomId: call.roomId, participant: participant.identity, ...o });
        }).catch((err) => emit("error", { roomId: call.roomId, message: `bursts: ${err.message}` }));
      }
    }
  }

  function firstFrame(call, participant, width, height, via) {
    if (call.firstFrame) return;
    call.firstFrame = true;
    emit("rtcFirstFrame", {
      roomId: call.roomId,
      participant,
      width,
      height,
      via,
      ms: Math.round(performance.now() - call.t0),
    });
  }

  // statsLoop reports rtcStats every 250 ms (more often before the first
  // frame, which it also detects where requestVideoFrameCallback does not
  // fire) until the call ends.
  function statsLoop(call) {
    let last = 0;
    const tick = async () => {
      if (call.closed) return;
      try {
        const s = await collectStats(call);
        if (!call.firstFrame && s.framesDecoded > 0 && s.frameWidth > 0) {
          firstFrame(call, s.videoParticipant, s.frameWidth, s.frameHeight, "getStats");
        }
        const now = Date.now();
        if (now - last >= STATS_INTERVAL_MS && !call.closed) {
          last = now;
          emit("rtcStats", s);
        }
      } catch (err) {
        console.warn("rtc stats failed", err);
      }
      if (!call.closed) setTimeout(tick, call.firstFrame ? STATS_INTERVAL_MS : FIRST_FRAME_POLL_MS);
    };
    tick();
  }

  async function collectStats(call) {
    const lk = call.lk;
    const s = {
      roomId: call.roomId,
      connectionState: lk.state,
      participants: lk.remoteParticipants.size,
      framesDecoded: 0,
      frameWidth: 0,
      frameHeight: 0,
      framesPerSecond: 0,
      videoCodec: "",
      videoPacketsReceived: 0,
      videoParticipant: "",
      ...videoTimings(null),
      audioCodec: "",
      totalAudioEnergy: 0,
      audioPacketsReceived: 0,
      audioJitterBufferDelay: 0,
      audioJitterBufferEmittedCount: 0,
      audioBytesSent: 0,
      audioPacketsSent: 0,
      videoBytesSent: 0,
      videoFramesSent: 0,
      localAddress: "",
      remoteAddress: "",
      remote: [],
    };
    for (const p of lk.remoteParticipants.values()) {
      const r = { identity: p.identity, framesDecoded: 0, frameWidth: 0, frameHeight: 0, totalAudioEnergy: 0, audioPacketsReceived: 0 };
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        if (!track) continue;
        const report = await track.getRTCStatsReport();
        if (!report) continue;
        report.forEach((x) => {
          if (x.type === "inbound-rtp" && x.kind === "video") {
            r.framesDecoded += x.framesDecoded || 0;
            r.frameWidth = x.frameWidth || r.frameWidth;
            r.frameHeight = x.frameHeight || r.frameHeight;
            // The busiest remote video is the one reported at the top.
            if ((x.framesDecoded || 0) >= s.framesDecoded) {
              s.framesDecoded = x.framesDecoded || 0;
              s.frameWidth = x.frameWidth || 0;
              s.frameHeight = x.frameHeight || 0;
              s.framesPerSecond = x.framesPerSecond || 0;
              s.videoPacketsReceived = x.packetsReceived || 0;
              s.videoParticipant = p.identity;
              Object.assign(s, videoTimings(x));
              const c = x.codecId && report.get(x.codecId);
              if (c) s.videoCodec = c.mimeType + (c.sdpFmtpLine ? ";" + c.sdpFmtpLine : "");
            }
          } else if (x.type === "inbound-rtp" && x.kind === "audio") {
            r.totalAudioEnergy += x.totalAudioEnergy || 0;
            r.audioPacketsReceived += x.packetsReceived || 0;
            s.totalAudioEnergy += x.totalAudioEnergy || 0;
            s.audioPacketsReceived += x.packetsReceived || 0;
            // NetEq's delay over the samples it emitted, summed over the
            // remote audio tracks.
            s.audioJitterBufferDelay += x.jitterBufferDelay || 0;
            s.audioJitterBufferEmittedCount += x.jitterBufferEmittedCount || 0;
            const c = x.codecId && report.get(x.codecId);
            if (c) s.audioCodec = c.mimeType;
          } else if (x.type === "transport" && x.selectedCandidatePairId && !s.localAddress) {
            const pair = report.get(x.selectedCandidatePairId);
            const l = pair && report.get(pair.localCandidateId);
            const rc = pair && report.get(pair.remoteCandidateId);
            if (l) s.localAddress = `${l.address}:${l.port}/${l.protocol}/${l.candidateType}`;
            if (rc) s.remoteAddress = `${rc.address}:${rc.port}/${rc.protocol}/${rc.candidateType}`;
          }
        });
      }
      s.remote.push(r);
    }
    for (const pub of lk.localParticipant.trackPublications.values()) {
      const track = pub.track;
      if (!track) continue;
      const report = await track.getRTCStatsReport();
      if (!report) continue;
      report.forEach((x) => {
        if (x.type !== "outbound-rtp") return;
        if (x.kind === "audio") {
          s.audioBytesSent += x.bytesSent || 0;
          s.audioPacketsSent += x.packetsSent || 0;
        } else if (x.kind === "video") {
          s.videoBytesSent += x.bytesSent || 0;
          s.videoFramesSent += x.framesSent || 0;
        }
      });
    }
    return s;
  }

  // --------------------------------------------------------- commands

  // rtcJoin joins roomId's MatrixRTC session and its LiveKit room. Options:
  // serviceUrl (default: the oldest other member's livekit_service_url),
  // notify ("ring" or "notification": send an rtc.notification after our
  // membership, as the first joiner does), video (default true: publish
  // the fake camera too), getToken (ask the service's /get_token instead
  // of /sfu/get: the LiveKit identity is then the hash of user, device and
  // the membershipID js-sdk writes in our membership, "<user>:<device>").
  // Resolves, once published and our membership is back from sync, with
  // what rtcJoined reports.
  async function rtcJoin({ roomId, serviceUrl, notify, video = true, getToken = false }) {
    const t0 = performance.now();
    if (calls.has(roomId)) throw new Error(`already in the call of ${roomId}`);
    await joined(roomId);
    const room = client.getRoom(roomId);
    const session = watchSession(room);
    // Memberships already in the room's state may not be computed yet.
    await session.initialMembershipCalculated;
    // The caller's membership may still be on its way (a ring comes right
    // after it): wait a little for one that names a LiveKit service.
    serviceUrl =
      serviceUrl ||
      (await waitMemberships(session, serviceUrlOf, SERVICE_URL_WAIT_MS, `a livekit_service_url in the call of ${roomId}`));
    serviceUrl = serviceUrl.replace(/\/+$/, "");

    // In an encrypted room, as Element Call: per-participant media keys
    // over Olm to-device messages and LiveKit frame encryption.
    const crypto = client.getCrypto();
    const encrypted = !!crypto && (await crypto.isEncryptionEnabledInRoom(roomId));
    const call = { roomId, t0, session, lk: null, elements: [], firstFrame: false, closed: false, timings: {}, encrypted };
    calls.set(roomId, call);
    const mark = (name) => (call.timings[name] = Math.round(performance.now() - t0));
    let keyProvider = null;
    if (encrypted) {
      keyProvider = new SessionKeyProvider();
      call.onKey = (key, index, membership, identity) => {
        emit("rtcMediaKey", { roomId, identity, index, sender: membership.userId ?? membership.sender ?? "" });
        keyProvider.setKey(key, index, identity).catch((err) => emit("error", { message: `media key: ${err}` }));
      };
      session.on(MatrixRTCSessionEvent.EncryptionKeyChanged, call.onKey);
    }
    try {
      // Element Call's compatibility mode: our own SFU first in
      // foci_preferred (livekit_alias = the room ID, for older clients) and
      // multi-SFU focus selection. No media keys: the room is not encrypted.
      // joinRoomSession's second argument is the transport we use
      // ourselves; given one, js-sdk writes focus_active {type: "livekit",
      // focus_selection: "multi_sfu"} and puts it first in foci_preferred.
      session.joinRoomSession(
        [],
        { type: "livekit", livekit_service_url: serviceUrl, livekit_alias: roomId },
        {
          manageMediaKeys: encrypted,
          callIntent: video ? "video" : "audio",
          notificationType: notify || undefined,
        },
      );
      const own = waitMemberships(session, ownMembership, OWN_MEMBERSHIP_WAIT_MS, "our own membership").then((m) => {
        mark("membership");
        return m;
      });
      own.catch(() => {}); // awaited below

      const openid = await client.getOpenIdToken();
      const device = client.getDeviceId();
      const endpoint = getToken ? "/get_token" : "/sfu/get";
      const request = getToken
        ? {
            room_id: roomId,
            slot_id: "m.call#ROOM",
            openid_token: openid,
            member: { id: `${me()}:${device}`, claimed_user_id: me(), claimed_device_id: device },
          }
        : { room: roomId, openid_token: openid, device_id: device };
      const res = await fetch(`${serviceUrl}${endpoint}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(request),
      });
      const body = await res.text();
      if (!res.ok) throw new Error(`POST ${serviceUrl}${endpoint}: HTTP ${res.status}: ${body}`);
      const { url, jwt } = JSON.parse(body);
      mark("token");

      const lk = new LiveKitRoom({
        adaptiveStream: false,
        dynacast: false,
        publishDefaults: { simulcast: false },
        e2ee: encrypted
          ? { keyProvider, worker: new Worker(new URL("./lk-e2ee-worker.mjs", import.meta.url), { type: "module" }) }
          : undefined,
      });
      call.lk = lk;
      if (encrypted) {
        lk.on(RoomEvent.EncryptionError, (err, participant) =>
          emit("rtcEncryptionError", { roomId, identity: participant?.identity ?? "", message: String(err) }),
        );
        await lk.setE2EEEnabled(true);
        // Keys that arrived before the LiveKit room existed.
        session.reemitEncryptionKeys();
      }
      lk.on(RoomEvent.TrackSubscribed, (track, _pub, participant) => onTrack(call, track, participant));
      lk.on(RoomEvent.ParticipantConnected, (p) => emit("rtcParticipant", { roomId, identity: p.identity, joined: true }));
      lk.on(RoomEvent.ParticipantDisconnected, (p) => emit("rtcParticipant", { roomId, identity: p.identity, joined: false }));
      lk.on(RoomEvent.Disconnected, (reason) => {
        if (!call.closed) emit("rtcDisconnected", { roomId, reason: reason ?? "" });
      });
      await lk.connect(url, jwt, { autoSubscribe: true });
      mark("connected");
      await lk.localParticipant.setMicrophoneEnabled(true);
      if (video) await lk.localParticipant.setCameraEnabled(true);
      mark("published");
      statsLoop(call);
      const membership = await own;
      const fields = {
        roomId,
        identity: lk.localParticipant.identity,
        livekitRoom: lk.name,
        livekitUrl: url,
        serviceUrl,
        membershipEventId: membership.eventId,
        stateKey: `_${me()}_${client.getDeviceId()}_m.call`,
        participants: [...lk.remoteParticipants.keys()],
        timings: call.timings,
        encrypted,
      };
      emit("rtcJoined", fields);
      return fields;
    } catch (err) {
      await closeCall(call).catch(() => {});
      throw err;
    }
  }

  async function closeCall(call) {
    call.closed = true;
    calls.delete(call.roomId);
    if (call.onKey) call.session.off(MatrixRTCSessionEvent.EncryptionKeyChanged, call.onKey);
    if (call.lk) await call.lk.disconnect();
    for (const el of call.elements) {
      el.srcObject = null;
      el.remove();
    }
    if (call.session.isJoined()) await call.session.leaveRoomSession(LEAVE_TIMEOUT_MS);
  }

  // rtcLeave disconnects from LiveKit and leaves the session (our
  // call.member state becomes {}).
  async function rtcLeave({ roomId }) {
    const call = calls.get(roomId);
    if (!call) throw new Error(`not in the call of ${roomId}`);
    await closeCall(call);
    emit("rtcLeft", { roomId });
  }

  // rtcDecline declines a ring (MSC4310) and resolves with the event ID.
  async function rtcDecline({ roomId, notificationEventId }) {
    await joined(roomId);
    const res = await client.sendEvent(roomId, RTC_DECLINE, {
      "m.relates_to": { rel_type: "m.reference", event_id: notificationEventId },
    });
    return res.event_id;
  }

  return { rtcJoin, rtcLeave, rtcDecline };
}
