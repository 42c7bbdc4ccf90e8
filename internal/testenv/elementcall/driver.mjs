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
const ecDist = join(here, "node_modules", "@element-hq", "element-call-embedded", "dist");

const { values: flags } = parseArgs({
  options: {
    autojoin: { type: "boolean", default: false },
    encryption: { type: "boolean", default: false },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});

// The resident's flags (../shared/TESTING.md): headless Chromium on a CI
// machine, the fake camera and microphone granted without a prompt, loopback
// ICE candidates, autoplay with sound so that remote audio is decoded.
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
const log = (...a) => process.stderr.write(`elementcall: ${a.join(" ")}\n`);

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".woff": "font/woff",
  ".ttf": "font/ttf",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".tflite": "application/octet-stream",
};

// serve serves dir on an ephemeral loopback port; overrides maps a path to
// a body served instead of the file. http://127.0.0.1 is a secure context,
// so getUserMedia works in both origins. Paths under cachePrefix (Element
// Call's content-hashed assets) may be cached, as an app that ships Element
// Call inside it (Element X) has them on disk; everything else is fetched
// afresh.
function serve(dir, overrides = {}, cachePrefix = null) {
  const server = createServer(async (req, res) => {
    let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (path.endsWith("/")) path += "index.html";
    if (path.includes("..")) {
      res.writeHead(400).end();
      return;
    }
    const cache = cachePrefix && path.startsWith(cachePrefix) ? "max-age=3600, immutable" : "no-store";
    const headers = (p) => ({ "content-type": MIME[extname(p)] || "application/octet-stream", "cache-control": cache });
    if (overrides[path] !== undefined) {
      res.writeHead(200, headers(path)).end(overrides[path]);
      return;
    }
    try {
      const body = await readFile(join(dir, path));
      res.writeHead(200, headers(path)).end(body);
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
const servers = [];
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
      for (const s of servers) s.close();
      if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
      process.exit(code);
    })();
  }
  return closing;
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));

async function main() {
  const serviceUrl = process.env.ELEMENTCALL_SERVICE_URL || "";
  // Element Call's config.json: the LiveKit service it publishes on when
  // the homeserver advertises no transport (Dendrite advertises none).
  const config = JSON.stringify({
    ...JSON.parse(await readFile(join(ecDist, "config.json"), "utf8")),
    ...(serviceUrl ? { livekit: { livekit_service_url: serviceUrl } } : {}),
  });
  const hostServer = await serve(join(here, "dist"));
  const ecServer = await serve(ecDist, { "/config.json": config }, "/assets/");
  servers.push(hostServer, ecServer);
  const hostUrl = `http://127.0.0.1:${hostServer.address().port}/`;
  const ecUrl = `http://127.0.0.1:${ecServer.address().port}/`;

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

  profile = await mkdtemp(join(tmpdir(), "elementcall-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: flags.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 720 },
  });
  context.on("close", () => {
    if (!closing) {
      log("chromium went away");
      shutdown(1);
    }
  });
  // Every frame, Element Call's iframe included, reports its peer
  // connections' stats before its own scripts run.
  await context.addInitScript({ path: join(here, "dist", "framestats.js") });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "verbose" || msg.type() === "debug") return;
    const frame = msg.location() && msg.location().url ? new URL(msg.location().url).port : "";
    const who = frame === String(ecServer.address().port) ? "ec" : "host";
    // The page's clock, to line the console up with the events.
    log(`${Date.now()} ${who} console.${msg.type()}:`, msg.text());
    // Element Call logs each remote track it subscribes to and whether the
    // track is end-to-end encrypted (LiveKit frame encryption); nothing
    // else outside the iframe shows it. Its wording is pinned with the
    // package version.
    const sub = who === "ec" && /\[RemoteTracks\] Subscribed: (\w+) (\w+) (\S+) of (\S+) encrypted=(true|false)/.exec(msg.text());
    if (sub) {
      out({ event: "ecSubscribed", ts: Date.now(), kind: sub[1], source: sub[2], trackSid: sub[3], participant: sub[4], encrypted: sub[5] === "true" });
    }
  });
  page.on("pageerror", (err) => log("page error:", err.stack || err.message));
  page.on("crash", () => {
    out({ event: "error", ts: Date.now(), message: "page crashed" });
    shutdown(1);
  });
  // Installed in every frame of the page: the host's events and every
  // frame's framestats.js go through it.
  await page.exposeFunction("ecEmit", (line) => {
    process.stdout.write(line + "\n");
  });

  let queue = Promise.resolve();
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    queue = queue.then(() => command(page, line));
  });
  rl.on("close", () => queue.then(() => shutdown(0)));

  out({ event: "serving", ts: Date.now(), host: hostUrl, elementCall: ecUrl });
  await page.goto(hostUrl + "#" + hash.toString());
}

const COMMANDS = new Set(["join", "hangup", "close", "createRoom"]);

async function command(page, line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    log("bad command:", line);
    return;
  }
  const reply = (fields) => msg.id !== undefined && out({ event: "reply", ts: Date.now(), id: msg.id, cmd: msg.cmd, ...fields });
  if (!COMMANDS.has(msg.cmd)) {
    reply({ error: `unknown command ${JSON.stringify(msg.cmd)}` });
    return;
  }
  try {
    const result = await page.evaluate(
      async ([cmd, a]) => {
        if (!window.host) throw new Error("page not loaded");
        return await window.host[cmd](a);
      },
      [msg.cmd, msg.args],
    );
    reply({ result: result === undefined ? null : result });
  } catch (err) {
    reply({ error: String(err.message || err).replace(/^page\.evaluate: (Error: )?/, "") });
  }
}

main().catch((err) => {
  log("fatal:", err.stack || err.message);
  out({ event: "error", ts: Date.now(), message: `driver: ${err.message}` });
  shutdown(1);
});
