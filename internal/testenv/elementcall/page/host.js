// The Element Call host: a small Matrix client that plays Element X's (or
// Element Web's) part around the real Element Call web app. It logs in with
// matrix-js-sdk, watches its rooms for MatrixRTC rings
// (org.matrix.msc4075.rtc.notification) and call memberships, and on command
// opens Element Call as a widget in an iframe: matrix-widget-api's
// ClientWidgetApi on this side, a WidgetDriver over the js-sdk client
// (driver.js) that does what the widget asks, and the room's live events,
// state and to-device messages fed in as Element Web's WidgetMessaging does.
// The driver (driver.mjs) calls window.host and receives events through
// window.ecEmit.
//
// Parameters come from the fragment (never a server log):
//   hs          homeserver base URL
//   user        user ID or localpart, for a password login
//   password    its password (each start is a new device)
//   ec          Element Call's base URL (its index.html is there)
//   autojoin    1: join every room this user is invited to
//   encryption  1: matrix-js-sdk's rust crypto (Olm/Megolm), so that the host
//               reads encrypted rooms, hands Element Call decrypted to-device
//               messages and Olm-encrypts what Element Call sends encrypted

import { ClientEvent, createClient, MatrixEventEvent, RoomMemberEvent, RoomStateEvent } from "matrix-js-sdk";
import { ClientWidgetApi, Widget, WidgetApiFromWidgetAction } from "matrix-widget-api";
import { HostDriver } from "./driver.js";
import { autoJoin } from "../../nodeproc/page/autojoin.js";

const RING_TYPES = new Set(["org.matrix.msc4075.rtc.notification", "m.rtc.notification"]);
const MEMBER_TYPE = "org.matrix.msc3401.call.member";
// How long "ready" waits for the homeserver to list this device's keys.
const KEYS_UPLOAD_WAIT_MS = 15000;

// The Element Call actions a host answers (Element Call's src/widget.ts
// ElementWidgetActions, Element Web's ElementWidgetActions).
const EC = {
  join: "io.element.join",
  hangup: "im.vector.hangup",
  close: "io.element.close",
  deviceMute: "io.element.device_mute",
};

const params = new URLSearchParams(location.hash.replace(/^#/, ""));
const flag = (name) => params.get(name) === "1";
const $ = (id) => document.getElementById(id);

function emit(name, fields = {}) {
  const ev = { event: name, ts: Date.now(), ...fields };
  if (typeof window.ecEmit === "function") window.ecEmit(JSON.stringify(ev)).catch(() => {});
  else console.debug("host event", JSON.stringify(ev));
  return ev;
}

let client = null;
let prepared = false;
let widget = null; // the open Element Call: {roomId, api, iframe, stop}

async function login() {
  const baseUrl = params.get("hs").replace(/\/+$/, "");
  const anon = createClient({ baseUrl });
  const res = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: params.get("user") },
    password: params.get("password"),
    initial_device_display_name: "Element Call host",
  });
  return { baseUrl, accessToken: res.access_token, userId: res.user_id, deviceId: res.device_id };
}

// onEvent sees every event once in cleartext: at once when it came in the
// clear, after decryption otherwise.
function onCleartext(ev) {
  if (ev.isBeingDecrypted() || ev.isDecryptionFailure()) return;
  const roomId = ev.getRoomId();
  if (!roomId) return;
  const type = ev.getType();
  if (RING_TYPES.has(type) && ev.getSender() !== client.getUserId()) {
    const c = ev.getContent();
    const rel = c["m.relates_to"] || {};
    const mentions = c["m.mentions"] || {};
    emit("ring", {
      roomId,
      eventId: ev.getId(),
      sender: ev.getSender(),
      type,
      notificationType: c.notification_type || "",
      senderTs: c.sender_ts || 0,
      lifetime: c.lifetime || 0,
      serverTs: ev.getTs(),
      relatesTo: rel.event_id || "",
      mentionsMe: mentions.room === true || (mentions.user_ids || []).includes(client.getUserId()),
      encrypted: ev.isEncrypted(),
      live: prepared,
    });
  } else if (type === MEMBER_TYPE && ev.getStateKey() !== undefined) {
    emit("membership", {
      roomId,
      eventId: ev.getId(),
      stateKey: ev.getStateKey(),
      sender: ev.getSender(),
      self: ev.getSender() === client.getUserId(),
      deviceId: ev.getContent().device_id || "",
      content: ev.getContent(),
      serverTs: ev.getTs(),
      live: prepared,
    });
  }
}

async function start() {
  $("status").textContent = "logging in…";
  const creds = await login();
  // No classic 1:1 calls here: Element X takes none (it shows the
  // intercom's m.call.invite as "Unsupported call"), so the host neither
  // handles them nor makes peer connections of its own.
  client = createClient({ ...creds, fallbackICEServerAllowed: false, disableVoip: true });
  let cryptoMs = 0;
  if (flag("encryption")) {
    const t0 = performance.now();
    await client.initRustCrypto({ useIndexedDB: false });
    cryptoMs = Math.round(performance.now() - t0);
  }
  client.on(ClientEvent.Event, onCleartext);
  client.on(MatrixEventEvent.Decrypted, onCleartext);
  client.on(RoomMemberEvent.Membership, (_ev, member) => {
    emit("roomMember", { roomId: member.roomId, userId: member.userId, membership: member.membership });
  });
  if (flag("autojoin")) autoJoin(client, RoomMemberEvent.Membership, emit);
  client.on(ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED" && !prepared) {
      prepared = true;
      announceReady(cryptoMs).catch((err) => emit("error", { message: `ready: ${err.message}` }));
    } else if (state === "ERROR") {
      emit("error", { message: `sync: ${data && data.error ? data.error.message : "failed"}` });
    }
  });
  await client.startClient({ initialSyncLimit: 20 });
}

async function announceReady(cryptoMs) {
  if (client.getCrypto()) {
    // Others can encrypt to this device (Element Call's media keys travel
    // Olm-encrypted) only once the homeserver lists its keys.
    const me = client.getUserId();
    const deadline = Date.now() + KEYS_UPLOAD_WAIT_MS;
    for (;;) {
      const res = await client.downloadKeysForUsers([me]);
      if (res.device_keys && res.device_keys[me] && res.device_keys[me][client.getDeviceId()]) break;
      if (Date.now() > deadline) throw new Error("the homeserver does not list this device's keys");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  $("status").textContent = `ready as ${client.getUserId()}`;
  emit("ready", { userId: client.getUserId(), deviceId: client.getDeviceId(), encryption: !!client.getCrypto(), cryptoMs });
}

// widgetUrl builds Element Call's URL as Element Web's
// ElementCall.generateWidgetUrl does for a room that is not a video room:
// widgetId and parentUrl in the query (WidgetMessaging adds them), the rest
// in a "#?" fragment, which Element Call reads before the query.
function widgetUrl(widgetId, roomId, intent) {
  const room = client.getRoom(roomId);
  const encrypted = !!room && room.hasEncryptionStateEvent();
  const url = new URL("index.html", params.get("ec"));
  url.searchParams.set("widgetId", widgetId);
  url.searchParams.set("parentUrl", location.href.split("#", 2)[0]);
  const frag = new URLSearchParams({
    confineToRoom: "true",
    skipLobby: "true",
    returnToLobby: "false",
    intent,
    perParticipantE2EE: String(encrypted),
    header: "none",
    userId: client.getUserId(),
    deviceId: client.getDeviceId(),
    roomId,
    baseUrl: client.baseUrl,
    lang: "en",
    fontScale: "1",
    theme: "dark",
    sendNotificationType: intent.includes("dm") ? "ring" : "notification",
    preload: "false",
  });
  url.hash = `#?${frag.toString()}`;
  return { url: url.toString(), encrypted };
}

// open starts Element Call in roomId: the iframe, the widget API and the
// feeds of live events, state and to-device messages.
function open(roomId, intent) {
  const widgetId = `ec-${Math.random().toString(36).slice(2, 12)}`;
  const { url, encrypted } = widgetUrl(widgetId, roomId, intent);
  const iframe = document.createElement("iframe");
  // What Element Web's AppTile allows a call widget.
  iframe.allow = "microphone; camera; encrypted-media; autoplay; display-capture; clipboard-write";
  iframe.src = url;
  $("widget").replaceChildren(iframe);
  const w = new Widget({
    id: widgetId,
    creatorUserId: client.getUserId(),
    type: "m.call",
    name: "Element Call",
    url,
    waitForIframeLoad: false,
    data: {},
  });
  const api = new ClientWidgetApi(w, iframe, new HostDriver(client, roomId, emit));
  api.setViewedRoomId(roomId);

  // Events the widget has been given, so that one decrypted later is not
  // given twice.
  const fed = new WeakSet();
  const feed = (ev) => {
    if (fed.has(ev) || ev.isBeingDecrypted() || ev.isDecryptionFailure()) return;
    fed.add(ev);
    api.feedEvent(ev.getEffectiveEvent()).catch((err) => console.warn("feed event:", err.message));
  };
  const onEvent = (ev) => {
    client.decryptEventIfNeeded(ev);
    feed(ev);
  };
  const onState = (ev) => {
    api.feedStateUpdate(ev.getEffectiveEvent()).catch((err) => console.warn("feed state:", err.message));
  };
  // To-device messages go to the widget decrypted; the flag tells it whether
  // they came Olm-encrypted, which Element Call requires of media keys in an
  // encrypted room.
  const onToDevice = ({ message, encryptionInfo }) => {
    api.feedToDevice(message, encryptionInfo != null).catch((err) => console.warn("feed to-device:", err.message));
  };
  client.on(ClientEvent.Event, onEvent);
  client.on(MatrixEventEvent.Decrypted, feed);
  client.on(RoomStateEvent.Events, onState);
  client.on(ClientEvent.ReceivedToDeviceMessage, onToDevice);

  const ack = (name, after) => (ev) => {
    ev.preventDefault();
    api.transport.reply(ev.detail, {});
    emit(name, { roomId, data: ev.detail.data || {} });
    if (after) after();
  };
  api.on("ready", () => emit("widgetReady", { roomId }));
  api.on(`action:${EC.join}`, ack("ecJoin"));
  api.on(`action:${EC.hangup}`, ack("ecHangup"));
  api.on(`action:${EC.deviceMute}`, ack("ecDeviceMute"));
  api.on(`action:${WidgetApiFromWidgetAction.UpdateAlwaysOnScreen}`, ack("ecAlwaysOnScreen"));
  api.on(`action:${EC.close}`, ack("ecClose", () => stop("closed by Element Call")));

  let stopped = false;
  function stop(reason) {
    if (stopped) return;
    stopped = true;
    client.off(ClientEvent.Event, onEvent);
    client.off(MatrixEventEvent.Decrypted, feed);
    client.off(RoomStateEvent.Events, onState);
    client.off(ClientEvent.ReceivedToDeviceMessage, onToDevice);
    api.stop();
    api.removeAllListeners();
    iframe.remove();
    if (widget && widget.api === api) widget = null;
    emit("widgetClosed", { roomId, widgetId, reason });
  }
  widget = { roomId, widgetId, api, iframe, stop };
  return { widgetId, url, encrypted };
}

window.host = {
  // join opens Element Call in roomId with intent (Element Call's
  // UserIntent; Element Web passes join_existing_dm for a DM whose call
  // someone else started). It returns once the iframe is on its way.
  async join(args) {
    if (!client || !prepared) throw new Error("not ready");
    if (widget) throw new Error(`Element Call is already open in ${widget.roomId}`);
    const { roomId, intent = "join_existing_dm" } = args || {};
    if (!client.getRoom(roomId)) throw new Error(`unknown room ${roomId}`);
    const res = open(roomId, intent);
    emit("widgetOpened", { roomId, intent, encrypted: res.encrypted, widgetId: res.widgetId });
    return res;
  },
  // hangup asks Element Call to leave (im.vector.hangup to the widget), as
  // Element Web's hang-up button does; Element Call answers, leaves the
  // call and then asks to be closed (io.element.close).
  async hangup() {
    if (!widget) throw new Error("Element Call is not open");
    const { widgetId } = widget;
    await widget.api.transport.send(EC.hangup, {});
    return { widgetId };
  },
  // close removes the widget at once, as closing the call view does.
  async close() {
    if (widget) widget.stop("closed by the host");
    return null;
  },
  // createRoom creates a private room (a DM with invite[0] when direct),
  // encrypted with m.megolm.v1.aes-sha2 when asked; it returns once this
  // client's sync has it.
  async createRoom(args) {
    const { invite = [], encrypted = false, direct = false, name } = args || {};
    const initialState = [];
    if (encrypted) initialState.push({ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } });
    // Element Call's members may write their own call.member state (Element
    // Web creates call rooms with this power level too).
    const powerOverride = { events: { [MEMBER_TYPE]: 0 } };
    const { room_id: roomId } = await client.createRoom({
      preset: "private_chat",
      invite,
      is_direct: direct,
      name,
      initial_state: initialState,
      power_level_content_override: powerOverride,
    });
    for (let i = 0; i < 200 && !client.getRoom(roomId); i++) await new Promise((r) => setTimeout(r, 25));
    return roomId;
  },
};

start().catch((err) => {
  $("status").textContent = `error: ${err.message}`;
  emit("error", { message: err.message });
});
