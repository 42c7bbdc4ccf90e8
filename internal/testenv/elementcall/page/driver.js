// HostDriver does what Element Call asks of its host through the widget API
// (matrix-widget-api's WidgetDriver), over a matrix-js-sdk client, the way
// Element Web's ElementWidgetDriver does for its trusted call widget:
// every requested capability is approved, OpenID tokens are handed out
// without asking, and requests go to the homeserver as the user's own.

import { Direction, MatrixError } from "matrix-js-sdk";
import { OpenIDRequestState, WidgetDriver } from "matrix-widget-api";

export class HostDriver extends WidgetDriver {
  constructor(client, roomId, emit) {
    super();
    this.client = client;
    this.roomId = roomId;
    this.emit = emit;
  }

  // Element Call is this host's own trusted widget: approve all it asks for
  // (about 54 capabilities in 0.26.1), as Element Web pre-approves its call
  // widget's.
  async validateCapabilities(requested) {
    this.emit("capabilities", { roomId: this.roomId, requested: [...requested].length });
    return new Set(requested);
  }

  async sendEvent(eventType, content, stateKey = null, roomId = null) {
    const room = roomId || this.roomId;
    let res;
    if (stateKey !== null && stateKey !== undefined) {
      res = await this.client.sendStateEvent(room, eventType, content, stateKey);
    } else if (eventType === "m.room.redaction") {
      res = await this.client.redactEvent(room, content.redacts);
    } else {
      // js-sdk encrypts for an encrypted room.
      res = await this.client.sendEvent(room, eventType, content);
    }
    return { roomId: room, eventId: res.event_id };
  }

  // Delayed events (MSC4140/MSC4157): js-sdk refuses them itself when the
  // homeserver does not advertise org.matrix.msc4140 (Dendrite does not), so
  // nothing is ever sent at once in their place; Element Call then joins
  // without a delayed leave.
  async sendDelayedEvent(delay, eventType, content, stateKey = null, roomId = null) {
    const room = roomId || this.roomId;
    const opts = { delay };
    const res =
      stateKey !== null && stateKey !== undefined
        ? await this.client._unstable_sendDelayedStateEvent(room, opts, eventType, content, stateKey)
        : await this.client._unstable_sendDelayedEvent(room, opts, null, eventType, content);
    return { roomId: room, delayId: res.delay_id };
  }

  async cancelScheduledDelayedEvent(delayId) {
    await this.client._unstable_cancelScheduledDelayedEvent(delayId);
  }

  async restartScheduledDelayedEvent(delayId) {
    await this.client._unstable_restartScheduledDelayedEvent(delayId);
  }

  async sendScheduledDelayedEvent(delayId) {
    await this.client._unstable_sendScheduledDelayedEvent(delayId);
  }

  // sendToDevice sends what the widget asks, Olm-encrypted per device when
  // it says encrypted (Element Call's io.element.call.encryption_keys in an
  // encrypted room): devices that get the same content are encrypted for in
  // one batch.
  async sendToDevice(eventType, encrypted, contentMap) {
    const recipients = [];
    for (const [userId, devices] of Object.entries(contentMap)) {
      for (const [deviceId, payload] of Object.entries(devices)) recipients.push({ userId, deviceId, payload });
    }
    this.emit("toDeviceSent", { type: eventType, encrypted, devices: recipients.length });
    if (!encrypted) {
      await this.client.queueToDevice({ eventType, batch: recipients });
      return;
    }
    const crypto = this.client.getCrypto();
    if (!crypto) throw new Error("encrypted to-device message asked for, but this host has no encryption");
    const byContent = new Map();
    for (const r of recipients) {
      const key = JSON.stringify(r.payload);
      if (!byContent.has(key)) byContent.set(key, []);
      byContent.get(key).push({ userId: r.userId, deviceId: r.deviceId });
    }
    await Promise.all(
      [...byContent].map(async ([key, devices]) => {
        const batch = await crypto.encryptToDeviceMessages(eventType, devices, JSON.parse(key));
        await this.client.queueToDevice(batch);
      }),
    );
  }

  // readRoomTimeline returns the newest matching events of the live
  // timeline first, stopping at since.
  async readRoomTimeline(roomId, eventType, msgtype, stateKey, limit, since) {
    const room = this.client.getRoom(roomId);
    if (!room) return [];
    const max = limit > 0 ? limit : Number.MAX_SAFE_INTEGER;
    const out = [];
    const events = room.getLiveTimeline().getEvents();
    for (let i = events.length - 1; i >= 0 && out.length < max; i--) {
      const ev = events[i];
      if (since !== undefined && ev.getId() === since) break;
      if (ev.getType() !== eventType) continue;
      if (msgtype && eventType === "m.room.message" && ev.getContent().msgtype !== msgtype) continue;
      if (stateKey !== undefined && ev.getStateKey() !== stateKey) continue;
      out.push(ev.getEffectiveEvent());
    }
    return out;
  }

  async readRoomState(roomId, eventType, stateKey) {
    const room = this.client.getRoom(roomId);
    const state = room && room.getLiveTimeline().getState(Direction.Forward);
    if (!state) return [];
    if (stateKey === undefined) return state.getStateEvents(eventType).map((e) => e.getEffectiveEvent());
    const ev = state.getStateEvents(eventType, stateKey);
    return ev ? [ev.getEffectiveEvent()] : [];
  }

  // No sticky events (MSC4354) on Dendrite: there are none to read, and
  // Element Call's default ("compatibility") mode writes state events.
  async readStickyEvents() {
    return [];
  }

  async readEventRelations(eventId, roomId, relationType, eventType, from, to, limit, direction) {
    const res = await this.client.relations(roomId || this.roomId, eventId, relationType ?? null, eventType ?? null, {
      from,
      to,
      limit,
      dir: direction,
    });
    return {
      chunk: res.events.map((e) => e.getEffectiveEvent()),
      nextBatch: res.nextBatch ?? undefined,
      prevBatch: res.prevBatch ?? undefined,
    };
  }

  // Element Call gets its LiveKit token with an OpenID token from the
  // homeserver (matrix-voip.md §5.2): granted without a prompt.
  async askOpenID(observer) {
    const asked = Date.now();
    const token = await this.client.getOpenIdToken();
    // ms: the homeserver's answer as this page saw it (issue 18's join →
    // first frame waits for it).
    this.emit("openid", { roomId: this.roomId, ms: Date.now() - asked });
    observer.update({ state: OpenIDRequestState.Allowed, token });
  }

  // MSC4515: the homeserver's transports, asked for by the widget first;
  // Dendrite answers 404 (passed on as a Matrix error), and Element Call
  // then uses its config.json.
  async getRtcTransports() {
    const asked = Date.now();
    try {
      const transports = await this.client._unstable_getRTCTransports();
      this.emit("rtcTransports", { count: transports.length, ms: Date.now() - asked });
      return { rtc_transports: transports };
    } catch (err) {
      this.emit("rtcTransports", { error: err.errcode || err.message, ms: Date.now() - asked });
      throw err;
    }
  }

  async *getTurnServers() {
    // Element Call asks for none (turnServers: false); LiveKit's own ICE
    // servers come with the SFU's join response.
  }

  async navigate() {}

  async searchUserDirectory(term, limit) {
    const { limited, results } = await this.client.searchUserDirectory({ term, limit });
    return {
      limited,
      results: results.map((r) => ({ userId: r.user_id, displayName: r.display_name, avatarUrl: r.avatar_url })),
    };
  }

  async getMediaConfig() {
    return await this.client.getMediaConfig();
  }

  getKnownRooms() {
    return this.client.getVisibleRooms().map((r) => r.roomId);
  }

  // processError passes a homeserver's answer on as the widget API's
  // matrix_api_error, so that the widget's js-sdk sees the real status (a
  // 404 for transports, say) rather than a generic failure it may retry.
  processError(error) {
    return error instanceof MatrixError ? { matrix_api_error: error.asWidgetApiErrorData() } : undefined;
  }
}
