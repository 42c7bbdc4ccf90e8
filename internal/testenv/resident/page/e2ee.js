// End-to-end encryption for the resident, as Element Web has it: matrix-js-sdk's
// rust crypto (Olm/Megolm from matrix-sdk-crypto-wasm), optionally with
// cross-signing of the resident's own device (Matrix spec, Client-Server API:
// End-to-end encryption, Cross-signing).
//
// The crypto store lives in memory (useIndexedDB: false): every page start is
// a new Olm device, which is what a test wants, but it needs a device that has
// never uploaded keys before, i.e. a fresh password login. An access token of
// a device that already has keys on the server makes the key upload fail.

import { ClientEvent, MatrixEvent, MatrixEventEvent } from "matrix-js-sdk";
import { EventShieldColour, EventShieldReason } from "matrix-js-sdk/lib/crypto-api/index.js";

// How long "ready" waits for the homeserver to list this device's keys.
const KEYS_UPLOAD_WAIT_MS = 15000;

// MEGOLM is the room encryption algorithm Element uses (Matrix spec,
// m.megolm.v1.aes-sha2).
export const MEGOLM = "m.megolm.v1.aes-sha2";

// NO_CRYPTO is the "undecryptable" reason for an encrypted event that reached
// a page running without encryption. It is the resident's own code, not one
// of matrix-js-sdk's DecryptionFailureCode values.
export const NO_CRYPTO = "RESIDENT_ENCRYPTION_DISABLED";

// initCrypto initialises the rust crypto of a client that has not started
// syncing yet and returns how long it took. The wasm is fetched from
// ./pkg/matrix_sdk_crypto_wasm_bg.wasm relative to the bundle (setup.sh copies
// it there), which is where matrix-sdk-crypto-wasm's browser entry point
// looks for it.
export async function initCrypto(client) {
  const t0 = performance.now();
  try {
    await client.initRustCrypto({ useIndexedDB: false });
  } catch (err) {
    throw new Error(`initRustCrypto (is pkg/matrix_sdk_crypto_wasm_bg.wasm beside resident.js?): ${err.message}`);
  }
  return Math.round(performance.now() - t0);
}

// crossSign creates a new cross-signing identity for the logged-in user
// (master, self-signing and user-signing keys) and signs this device with the
// self-signing key. It always starts afresh (setupNewCrossSigning), as a
// reset in Element does: without private keys in this page or in secret
// storage, js-sdk would create new keys anyway. So another device of the same
// user that was cross-signed before is no longer signed by the user's current
// self-signing key afterwards, and a device that never calls this stays
// unsigned. Uploading the public keys may require user-interactive auth
// (Matrix spec: POST /keys/device_signing/upload); the password answers it.
export async function crossSign(client, { user, password }) {
  const t0 = performance.now();
  await client.getCrypto().bootstrapCrossSigning({
    setupNewCrossSigning: true,
    authUploadDeviceSigningKeys: async (makeRequest) => {
      try {
        // A homeserver may accept the first upload without auth.
        await makeRequest(null);
      } catch (err) {
        if (err.httpStatus !== 401 || !err.data || !err.data.flows) throw err;
        await makeRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: user || client.getUserId() },
          password,
          session: err.data.session,
        });
      }
    },
  });
  return Math.round(performance.now() - t0);
}

// waitKeysUploaded waits until the homeserver lists this device's identity
// keys (POST /keys/query), so that others can encrypt to it as soon as the
// page says it is ready; with signed, also until they carry a signature by
// the user's self-signing key, as others will check it.
export async function waitKeysUploaded(client, { signed = false } = {}) {
  const t0 = performance.now();
  const me = client.getUserId();
  const deadline = Date.now() + KEYS_UPLOAD_WAIT_MS;
  for (;;) {
    const res = await client.downloadKeysForUsers([me]);
    const device = res.device_keys && res.device_keys[me] && res.device_keys[me][client.getDeviceId()];
    if (device && (!signed || signedBySelfSigningKey(res, me, device))) return Math.round(performance.now() - t0);
    if (Date.now() > deadline) {
      throw new Error(`the homeserver does not list this device's keys${device ? " signed by the self-signing key" : ""}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function signedBySelfSigningKey(res, userId, device) {
  const ssk = res.self_signing_keys && res.self_signing_keys[userId];
  const sigs = (device.signatures && device.signatures[userId]) || {};
  return !!ssk && Object.keys(ssk.keys || {}).some((keyId) => keyId in sigs);
}

// waitCrossSigned waits until matrix-js-sdk counts this device as
// cross-signed. Right after the keys went up, a /keys/query answer that
// crossed them can leave the rust crypto with an older view for a moment.
export async function waitCrossSigned(client) {
  const deadline = Date.now() + KEYS_UPLOAD_WAIT_MS;
  for (;;) {
    const id = await identity(client);
    if (id.crossSigned) return id;
    if (Date.now() > deadline) throw new Error("cross-signing finished but matrix-js-sdk does not count this device as cross-signed");
    console.info("resident: waiting for matrix-js-sdk to see this device cross-signed");
    await new Promise((r) => setTimeout(r, 100));
  }
}

// identity describes this device for the "ready" event: its keys, whether
// its own user's self-signing key signs it, and the user's master key.
export async function identity(client) {
  const crypto = client.getCrypto();
  const keys = await crypto.getOwnDeviceKeys();
  const status = await crypto.getDeviceVerificationStatus(client.getUserId(), client.getDeviceId());
  return {
    ed25519: keys.ed25519,
    curve25519: keys.curve25519,
    crossSigned: !!(status && status.crossSigningVerified),
    masterKey: (await crypto.getCrossSigningKeyId()) || "",
  };
}

// onCleartextEvent calls handler(ev) for every event in cleartext: at once
// for one sent in the clear, and after decryption for an encrypted one
// (ClientEvent.Event fires before decryption, when getType() still says
// m.room.encrypted). onUndecryptable(ev, reason, message) hears of each
// failed decryption; js-sdk retries when the missing key arrives, so an event
// may be undecryptable first and handled later.
export function onCleartextEvent(client, handler, onUndecryptable) {
  client.on(ClientEvent.Event, (ev) => {
    if (!ev.isEncrypted()) {
      handler(ev);
    } else if (!client.getCrypto() && onUndecryptable) {
      onUndecryptable(ev, NO_CRYPTO, "this page runs without encryption");
    }
  });
  client.on(MatrixEventEvent.Decrypted, (ev, err) => {
    if (ev.isDecryptionFailure()) {
      if (onUndecryptable) onUndecryptable(ev, ev.decryptionFailureReason || "UNKNOWN_ERROR", err ? err.message : "");
      return;
    }
    handler(ev);
  });
}

// shield is how Element would mark an event: the colour and reason of its
// padlock (matrix-js-sdk EventEncryptionInfo), as names.
export async function shield(client, ev) {
  const crypto = client.getCrypto();
  if (!crypto || !ev.isEncrypted()) return { shieldColour: "", shieldReason: "" };
  try {
    const info = await crypto.getEncryptionInfoForEvent(ev);
    if (!info) return { shieldColour: "", shieldReason: "" };
    return {
      shieldColour: EventShieldColour[info.shieldColour] || String(info.shieldColour),
      shieldReason: info.shieldReason === null ? "" : EventShieldReason[info.shieldReason] || String(info.shieldReason),
    };
  } catch (err) {
    return { shieldColour: "", shieldReason: `error: ${err.message}` };
  }
}

// sendEncrypted sends an event into an encrypted room encrypted whatever its
// type. matrix-js-sdk (so Element Web) leaves m.reaction in the clear on
// purpose (client.ts shouldEncryptEventForRoom); other clients encrypt it, and
// this lets a test send one like theirs. It encrypts with the rust crypto's
// encryptEvent (js-sdk's CryptoBackend, the object getCrypto returns), which
// shares the room key as for any event and keeps m.relates_to in the clear,
// then sends the m.room.encrypted, which js-sdk does not encrypt again.
export async function sendEncrypted(client, roomId, type, content) {
  const crypto = client.getCrypto();
  if (!crypto || typeof crypto.encryptEvent !== "function") throw new Error("encryption is not enabled");
  if (!(await crypto.isEncryptionEnabledInRoom(roomId))) throw new Error(`room ${roomId} is not encrypted`);
  const ev = new MatrixEvent({ type, content, room_id: roomId, sender: client.getUserId() });
  await crypto.encryptEvent(ev, client.getRoom(roomId));
  const res = await client.sendEvent(roomId, ev.getWireType(), ev.getWireContent());
  return res.event_id;
}
