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
//   --bursts          mouth-to-ear: the microphone sends timestamped tone
//                     bursts; the door's are reported as "burst" events
//   --chromium PATH   browser binary (default: $CHROMIUM or /usr/bin/chromium)
//
// The driver exits, closing Chromium, on stdin EOF, SIGTERM or SIGINT. What
// both harnesses' drivers share is in ../nodeproc/driverlib.mjs.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { Driver, callPage } from "../nodeproc/driverlib.mjs";

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
    bursts: { type: "boolean", default: false },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});

const driver = new Driver("resident");

async function main() {
  const base = flags.url || (await driver.serve(flags.dist));
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
  if (flags.bursts) hash.set("bursts", "1");

  const page = await driver.launch(chromium, { executablePath: flags.chromium });
  page.on("console", (msg) => {
    if (msg.type() !== "verbose") driver.log(`console.${msg.type()}:`, msg.text());
  });
  driver.watch(page);
  await page.exposeFunction("residentEmit", (line) => {
    process.stdout.write(line + "\n");
  });
  driver.readCommands(COMMANDS, (msg) => command(page, msg));

  await page.goto(base + "#" + hash.toString());
}

const COMMANDS = new Set(["answer", "reject", "hangup", "placeCall", "videoCapabilities", "click", "sendText", "react", "hold", "mute", "restartIce", "rtcJoin", "rtcDecline", "rtcLeave", "createRoom", "sendImage", "downloadImage"]);

async function command(page, msg) {
  if (msg.cmd === "click") {
    // A person's click: the element must be visible and enabled, so this
    // proves the page's own buttons work, not just window.resident.
    await page.click(msg.selector, { timeout: 5000 });
    return null;
  }
  // Commands with several arguments take them as one object, "args".
  if (msg.cmd === "placeCall") return callPage(page, "resident", msg.cmd, msg.roomId, msg.delayMs || 0);
  return callPage(page, "resident", msg.cmd, msg.args !== undefined ? msg.args : msg.callId);
}

driver.run(main);
