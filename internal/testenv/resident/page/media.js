// Images in rooms, as Element sends and shows them (Matrix spec, Client-Server
// API: m.image, Content repository, and "Sending encrypted attachments"):
// in an encrypted room the file is encrypted (AES-CTR, keys in the event's
// `file` object) before it is uploaded; in a plain room it is uploaded as is
// and named by `url`. The attachment cryptography is matrix-encrypt-attachment's.

import { decryptAttachment, encryptAttachment } from "matrix-encrypt-attachment";

// sha256 is the lowercase hex SHA-256 of a buffer, so that a test can compare
// what was sent with what was received.
async function sha256(buf) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

// drawImage paints a small test picture (a gradient with a bar) and encodes it
// as mimetype (image/png or image/jpeg).
async function drawImage(width, height, mimetype) {
  const canvas = new OffscreenCanvas(width, height);
  const g = canvas.getContext("2d");
  const grad = g.createLinearGradient(0, 0, width, height);
  grad.addColorStop(0, "#1565c0");
  grad.addColorStop(1, "#ef6c00");
  g.fillStyle = grad;
  g.fillRect(0, 0, width, height);
  g.fillStyle = "#fff";
  g.fillRect(Math.floor(width / 4), Math.floor(height / 3), Math.ceil(width / 2), Math.ceil(height / 3));
  const blob = await canvas.convertToBlob({ type: mimetype, quality: 0.9 });
  if (blob.type !== mimetype) throw new Error(`this browser cannot encode ${mimetype} (got ${blob.type})`);
  return new Uint8Array(await blob.arrayBuffer());
}

// sendImage draws a width×height picture, uploads it (encrypted when the room
// is) and posts it as an m.image. Resolves with the event ID and what a
// receiver should find: size, SHA-256 of the plain bytes, whether encrypted.
export async function sendImage(client, { roomId, width = 64, height = 48, mimetype = "image/png" }) {
  const plain = await drawImage(width, height, mimetype);
  const crypto = client.getCrypto();
  const encrypted = !!crypto && (await crypto.isEncryptionEnabledInRoom(roomId));
  const ext = mimetype === "image/jpeg" ? "jpg" : mimetype.replace(/^image\//, "");
  const body = `snapshot.${ext}`;
  const info = { mimetype, size: plain.byteLength, w: width, h: height };
  let content;
  if (encrypted) {
    const { data, info: file } = await encryptAttachment(plain.buffer);
    // The ciphertext says nothing about its type or name.
    const up = await client.uploadContent(new Blob([data]), { type: "application/octet-stream", includeFilename: false });
    content = { msgtype: "m.image", body, info, file: { ...file, url: up.content_uri, mimetype } };
  } else {
    const up = await client.uploadContent(new Blob([plain], { type: mimetype }), { name: body, type: mimetype });
    content = { msgtype: "m.image", body, info, url: up.content_uri };
  }
  const res = await client.sendEvent(roomId, "m.room.message", content);
  return {
    eventId: res.event_id,
    encrypted,
    mxc: encrypted ? content.file.url : content.url,
    bytes: plain.byteLength,
    sha256: await sha256(plain),
    width,
    height,
    mimetype,
  };
}

// download fetches an mxc:// URI: through authenticated media (MSC3916,
// GET /_matrix/client/v1/media/download) with the access token, or, where the
// homeserver does not know that endpoint, the older unauthenticated
// /_matrix/media/v3/download.
async function download(client, mxc) {
  for (const authenticated of [true, false]) {
    const url = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, authenticated);
    if (!url) throw new Error(`not a valid mxc URI: ${JSON.stringify(mxc)}`);
    const res = await fetch(url, authenticated ? { headers: { Authorization: `Bearer ${client.getAccessToken()}` } } : {});
    if (res.ok) {
      return { data: await res.arrayBuffer(), contentType: res.headers.get("content-type") || "", authenticated };
    }
    const body = await res.text();
    // A homeserver without MSC3916 answers 404 or 405 M_UNRECOGNIZED (or a
    // bare 404) for the v1 path; a 404 M_NOT_FOUND means the media is missing.
    let errcode = "";
    try {
      errcode = JSON.parse(body).errcode || "";
    } catch {}
    if (authenticated && (res.status === 404 || res.status === 405) && (errcode === "M_UNRECOGNIZED" || errcode === "")) continue;
    throw new Error(`download ${mxc}: HTTP ${res.status}: ${body}`);
  }
  throw new Error(`download ${mxc}: no endpoint served it`);
}

// downloadImage downloads the attachment of an m.image (or m.file) message:
// `file` (encrypted, decrypted here after its SHA-256 is checked) or `url`
// (plain); then decodes it as a browser would show it. Resolves with its
// size in pixels and bytes, its type, whether it was encrypted and came
// through authenticated media, and the SHA-256 of the plain bytes.
export async function downloadImage(client, { url, file, mimetype }) {
  const mxc = file ? file.url : url;
  if (!mxc) throw new Error("the message has neither url nor file");
  const got = await download(client, mxc);
  let plain = got.data;
  if (file) {
    try {
      plain = await decryptAttachment(got.data, file);
    } catch (err) {
      throw new Error(`decrypt ${mxc}: ${err.message || err}`);
    }
  }
  const type = mimetype || (file && file.mimetype) || got.contentType;
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([plain], { type }));
  } catch (err) {
    throw new Error(`decode ${mxc} (${type}, ${plain.byteLength} bytes): ${err.message || err}`);
  }
  const out = {
    width: bitmap.width,
    height: bitmap.height,
    bytes: plain.byteLength,
    mimetype: type,
    encrypted: !!file,
    authenticated: got.authenticated,
    sha256: await sha256(plain),
  };
  bitmap.close();
  return out;
}
