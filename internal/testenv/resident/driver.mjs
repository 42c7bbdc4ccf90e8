#!/usr/bin/env node
// driver.mjs runs the resident page (page/resident.js, bundled into dist/) in
// headless Chromium and turns it into a line-oriented process:
//
//   stdout: one JSON object per line for every page event, e.g.
//           {"event":"incoming","ts":1724312345678,"callId":"…","roomId":"…","sender":"@door:hs"}
//           and {"event":"reply","id":N,"result":…} or {"event":"reply","id":N,"error":"…"}
//           for each command that carried an "id".
//   stdin:  one JSON command per line: {"cmd":"answer"}, {"cmd":"reject"},
//           {"cmd":"hangup"}, {"cmd":"placeCall","roomId":"!r:hs"},
//           {"cmd":"videoCapabilities"}, {"cmd":"click","selector":"#answer"},
//           {"cmd":"sendText","args":{"roomId":"!r:hs","body":"!open"}},
//           {"cmd":"react","args":{"roomId":"!r:hs","eventId":"$e","key":"🔑"}},
//           {"cmd":"hold","args":{"onHold":true}},
//           {"cmd":"mute","args":{"muted":true}}, {"cmd":"restartIce"},
//           {"cmd":"rtcJoin","args":{"roomId":"!r:hs","serviceUrl":"http://…","notify":"ring"}},
//           {"cmd":"rtcDecline","args":{"roomId":"!r:hs","notificationEventId":"$e"}},
//           {"cmd":"rtcLeave","args":{"roomId":"!r:hs"}},
//           {"cmd":"createRoom","args":{"invite":["@door:hs"],"encrypted":true,"direct":true}},
//           {"cmd":"sendImage","args":{"roomId":"!r:hs","width":64,"height":48,"mimetype":"image/png"}},
//           {"cmd":"downloadImage","args":{"url":"mxc://…"}} or {"args":{"file":{…},"mimetype":"image/jpeg"}};
//           optional "callId" and "id".
//   stderr: the driver's own diagnostics, the page's console and page errors.
//
// Credentials come from the environment so that they never show in a process
// list: RESIDENT_HOMESERVER, RESIDENT_USER, RESIDENT_PASSWORD,
// RESIDENT_ACCESS_TOKEN. Flags:
//   --dist DIR        built page to serve (default: ./dist beside this file)
//   --url URL         open this page instead of serving --dist
//   --autoanswer      answer every incoming call at once
//   --autojoin        join every room the user is invited to
//   --no-loopback     keep non-loopback ICE candidates (default: loopback only)
//   --force-turn      relay candidates only (js-sdk forceTURN); "ready" waits
//                     for the homeserver's TURN servers
//   --no-ice-restart  never restart ICE by itself, only when told to
//   --encryption      end-to-end encryption (matrix-js-sdk's rust crypto)
//   --cross-sign      with --encryption and a password: new cross-signing
//                     keys for the user, this device signed by them
//   --chromium PATH   browser binary (default: $CHROMIUM or /usr/bin/chromium)
//
// The driver exits, closing Chromium, on stdin EOF, SIGTERM or SIGINT.

import { createServer } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));

const { values: flags } = parseArgs({
  options: {
    dist: { type: "string", default: join(here, "dist") },
    url: { type: "string" },
    autoanswer: { type: "boolean", default: false },
    autojoin: { type: "boolean", default: false },
    "no-loopback": { type: "boolean", default: false },
    "force-turn": { type: "boolean", default: false },
    "no-ice-restart": { type: "boolean", default: false },
    encryption: { type: "boolean", default: false },
    "cross-sign": { type: "boolean", default: false },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});

// Flags from ../shared/TESTING.md: headless Chromium on a CI machine, fake
// camera and microphone granted without a prompt, loopback ICE candidates,
// and autoplay with sound so that remote audio is decoded.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
];

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (...a) => process.stderr.write(`resident: ${a.join(" ")}\n`);

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8", // livekit-client's e2ee worker
  ".map": "application/json",
  ".wasm": "application/wasm",
};

// serveDist serves the built page on an ephemeral loopback port. The origin
// http://127.0.0.1 counts as a secure context, so getUserMedia works.
function serveDist(dir) {
  const server = createServer(async (req, res) => {
    let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (path.endsWith("/")) path += "index.html";
    if (path.includes("..")) {
      res.writeHead(400).end();
      return;
    }
    try {
      const body = await readFile(join(dir, path));
      res.writeHead(200, { "content-type": MIME[extname(path)] || "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

let context = null;
let server = null;
let profile = null;
let closing = null;

function shutdown(code) {
  if (!closing) {
    closing = (async () => {
      try {
        if (context) await context.close();
      } catch (err) {
        log("close chromium:", err.message);
      }
      if (server) server.close();
      if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
      process.exit(code);
    })();
  }
  return closing;
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));

async function main() {
  let base = flags.url;
  if (!base) {
    server = await serveDist(flags.dist);
    base = `http://127.0.0.1:${server.address().port}/`;
  }
  const hash = new URLSearchParams();
  const env = {
    hs: process.env.RESIDENT_HOMESERVER,
    user: process.env.RESIDENT_USER,
    password: process.env.RESIDENT_PASSWORD,
    token: process.env.RESIDENT_ACCESS_TOKEN,
  };
  for (const [k, v] of Object.entries(env)) if (v) hash.set(k, v);
  if (flags.autoanswer) hash.set("autoanswer", "1");
  if (flags.autojoin) hash.set("autojoin", "1");
  if (!flags["no-loopback"]) hash.set("loopback", "1");
  if (flags["force-turn"]) hash.set("forceturn", "1");
  if (flags["no-ice-restart"]) hash.set("noicerestart", "1");
  if (flags.encryption) hash.set("encryption", "1");
  if (flags["cross-sign"]) hash.set("crosssign", "1");

  profile = await mkdtemp(join(tmpdir(), "resident-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: flags.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  context.on("close", () => {
    if (!closing) {
      log("chromium went away");
      shutdown(1);
    }
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() !== "verbose") log(`console.${msg.type()}:`, msg.text());
  });
  page.on("pageerror", (err) => log("page error:", err.stack || err.message));
  page.on("crash", () => {
    out({ event: "error", ts: Date.now(), message: "page crashed" });
    shutdown(1);
  });
  await page.exposeFunction("residentEmit", (line) => {
    process.stdout.write(line + "\n");
  });

  // Commands are handled one at a time, in order.
  let queue = Promise.resolve();
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    queue = queue.then(() => command(page, line));
  });
  rl.on("close", () => queue.then(() => shutdown(0)));

  await page.goto(base + "#" + hash.toString());
}

const COMMANDS = new Set(["answer", "reject", "hangup", "placeCall", "videoCapabilities", "click", "sendText", "react", "hold", "mute", "restartIce", "rtcJoin", "rtcDecline", "rtcLeave", "createRoom", "sendImage", "downloadImage"]);

async function command(page, line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    log("bad command:", line);
    return;
  }
  const reply = (fields) => msg.id !== undefined && out({ event: "reply", ts: Date.now(), id: msg.id, cmd: msg.cmd, ...fields });
  if (!COMMANDS.has(msg.cmd)) {
    reply({ error: `unknown command ${JSON.stringify(msg.cmd)}` });
    return;
  }
  if (msg.cmd === "click") {
    // A person's click: the element must be visible and enabled, so this
    // proves the page's own buttons work, not just window.resident.
    try {
      await page.click(msg.selector, { timeout: 5000 });
      reply({ result: null });
    } catch (err) {
      reply({ error: String(err.message || err) });
    }
    return;
  }
  // Commands with several arguments take them as one object, "args".
  const arg = msg.cmd === "placeCall" ? msg.roomId : msg.args !== undefined ? msg.args : msg.callId;
  const arg2 = msg.cmd === "placeCall" ? msg.delayMs || 0 : undefined;
  try {
    const result = await page.evaluate(
      async ([cmd, a, b]) => {
        if (!window.resident) throw new Error("page not loaded");
        return await window.resident[cmd](a, b);
      },
      [msg.cmd, arg, arg2],
    );
    reply({ result: result === undefined ? null : result });
  } catch (err) {
    const m = String(err.message || err).replace(/^page\.evaluate: (Error: )?/, "");
    reply({ error: m });
  }
}

main().catch((err) => {
  log("fatal:", err.stack || err.message);
  out({ event: "error", ts: Date.now(), message: `driver: ${err.message}` });
  shutdown(1);
});
