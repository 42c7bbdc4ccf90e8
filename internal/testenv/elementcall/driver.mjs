#!/usr/bin/env node
// driver.mjs runs the Element Call host page (page/host.js, bundled into
// dist/) in headless Chromium and turns it into a line-oriented process, as
// the resident's driver does:
//
//   stdout: one JSON object per line for every event of the host page and of
//           every frame's framestats.js (Element Call's iframe among them),
//           e.g. {"event":"ring","ts":1724312345678,"roomId":"!r:hs",…}, and
//           {"event":"reply","id":N,"result":…} or {"event":"reply","id":N,
//           "error":"…"} for each command that carried an "id".
//   stdin:  one JSON command per line: {"cmd":"join","args":{"roomId":"!r:hs",
//           "intent":"join_existing_dm"}}, {"cmd":"hangup"}, {"cmd":"close"},
//           {"cmd":"createRoom","args":{"invite":["@b:hs"],"encrypted":true,
//           "direct":true}}; optional "id".
//   stderr: the driver's diagnostics, the console of every frame, page errors.
//
// It serves two origins on loopback: the host page, and Element Call's
// files from node_modules/@element-hq/element-call-embedded/dist with a
// config.json of its own (the LiveKit service URL), so that the widget API
// runs across origins through postMessage as it does in Element Web.
//
// Credentials come from the environment: ELEMENTCALL_HOMESERVER,
// ELEMENTCALL_USER, ELEMENTCALL_PASSWORD; ELEMENTCALL_SERVICE_URL is the
// livekit_service_url of Element Call's config.json. Flags:
//   --autojoin        join every room the user is invited to
//   --encryption      matrix-js-sdk's rust crypto in the host
//   --chromium PATH   browser binary (default: $CHROMIUM or /usr/bin/chromium)
//
// The driver exits, closing Chromium, on stdin EOF, SIGTERM or SIGINT. What
// both harnesses' drivers share is in ../nodeproc/driverlib.mjs.

import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { Driver, callPage } from "../nodeproc/driverlib.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const ecDist = join(here, "node_modules", "@element-hq", "element-call-embedded", "dist");

const { values: flags } = parseArgs({
  options: {
    autojoin: { type: "boolean", default: false },
    encryption: { type: "boolean", default: false },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});

const driver = new Driver("elementcall");

async function main() {
  const serviceUrl = process.env.ELEMENTCALL_SERVICE_URL || "";
  // Element Call's config.json: the LiveKit service it publishes on when
  // the homeserver advertises no transport (Dendrite advertises none).
  const config = JSON.stringify({
    ...JSON.parse(await readFile(join(ecDist, "config.json"), "utf8")),
    ...(serviceUrl ? { livekit: { livekit_service_url: serviceUrl } } : {}),
  });
  const hostUrl = await driver.serve(join(here, "dist"));
  // Element Call's content-hashed assets may be cached, as an app that
  // ships Element Call inside it (Element X) has them on disk.
  const ecUrl = await driver.serve(ecDist, { overrides: { "/config.json": config }, cachePrefix: "/assets/" });
  const ecPort = new URL(ecUrl).port;

  const hash = new URLSearchParams();
  const env = {
    hs: process.env.ELEMENTCALL_HOMESERVER,
    user: process.env.ELEMENTCALL_USER,
    password: process.env.ELEMENTCALL_PASSWORD,
  };
  for (const [k, v] of Object.entries(env)) if (v) hash.set(k, v);
  hash.set("ec", ecUrl);
  if (flags.autojoin) hash.set("autojoin", "1");
  if (flags.encryption) hash.set("encryption", "1");

  const page = await driver.launch(chromium, { executablePath: flags.chromium, viewport: { width: 1280, height: 720 } });
  // Every frame, Element Call's iframe included, reports its peer
  // connections' stats before its own scripts run.
  await driver.context.addInitScript({ path: join(here, "dist", "framestats.js") });
  page.on("console", (msg) => {
    if (msg.type() === "verbose" || msg.type() === "debug") return;
    const frame = msg.location() && msg.location().url ? new URL(msg.location().url).port : "";
    const who = frame === ecPort ? "ec" : "host";
    // The page's clock, to line the console up with the events.
    driver.log(`${Date.now()} ${who} console.${msg.type()}:`, msg.text());
    // Element Call logs each remote track it subscribes to and whether the
    // track is end-to-end encrypted (LiveKit frame encryption); nothing
    // else outside the iframe shows it. Its wording is pinned with the
    // package version.
    const sub = who === "ec" && /\[RemoteTracks\] Subscribed: (\w+) (\w+) (\S+) of (\S+) encrypted=(true|false)/.exec(msg.text());
    if (sub) {
      driver.out({ event: "ecSubscribed", ts: Date.now(), kind: sub[1], source: sub[2], trackSid: sub[3], participant: sub[4], encrypted: sub[5] === "true" });
    }
  });
  driver.watch(page);
  // Installed in every frame of the page: the host's events and every
  // frame's framestats.js go through it.
  await page.exposeFunction("ecEmit", (line) => {
    process.stdout.write(line + "\n");
  });
  driver.readCommands(COMMANDS, (msg) => callPage(page, "host", msg.cmd, msg.args));

  driver.out({ event: "serving", ts: Date.now(), host: hostUrl, elementCall: ecUrl });
  await page.goto(hostUrl + "#" + hash.toString());
}

const COMMANDS = new Set(["join", "hangup", "close", "createRoom"]);

driver.run(main);
