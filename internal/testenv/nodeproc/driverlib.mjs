// driverlib.mjs is the node half that the browser harnesses' drivers
// (../resident/driver.mjs, ../elementcall/driver.mjs) share: Chromium's
// flags and launch, a static file server for the built page, the stdin
// command loop with its replies, and shutdown. It speaks the line protocol
// nodeproc.go reads (see the package comment there). Each harness has its
// own node_modules, so this file imports node's built-ins only; the driver
// passes its own playwright-core's chromium in.

import { createServer } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { createInterface } from "node:readline";

// Flags from shared/TESTING.md: headless Chromium on a CI machine, fake
// camera and microphone granted without a prompt, loopback ICE candidates,
// and autoplay with sound so that remote audio is decoded.
export const CHROMIUM_ARGS = [
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

// Types of what the pages load: WebAssembly.instantiateStreaming insists on
// application/wasm, module workers (livekit-client's e2ee worker) on a
// JavaScript type; the rest is what Element Call's build ships.
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

// Driver is one driver process's plumbing. Its owner calls run(main) once.
export class Driver {
  constructor(name) {
    this.name = name;
    this.context = null;
    this.servers = [];
    this.profile = null;
    this.closing = null;
    process.on("SIGTERM", () => this.shutdown(0));
    process.on("SIGINT", () => this.shutdown(0));
  }

  // out writes one event (or reply) line on stdout.
  out(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
  }

  // log writes a diagnostic line on stderr.
  log(...a) {
    process.stderr.write(`${this.name}: ${a.join(" ")}\n`);
  }

  // serve serves dir on an ephemeral loopback port and resolves to its
  // base URL; overrides maps a path to a body served instead of the file.
  // http://127.0.0.1 counts as a secure context, so getUserMedia works.
  // Paths under cachePrefix (content-hashed assets) may be cached;
  // everything else is fetched afresh.
  async serve(dir, { overrides = {}, cachePrefix = null } = {}) {
    const server = createServer(async (req, res) => {
      let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
      if (path.endsWith("/")) path += "index.html";
      if (path.includes("..")) {
        res.writeHead(400).end();
        return;
      }
      const cache = cachePrefix && path.startsWith(cachePrefix) ? "max-age=3600, immutable" : "no-store";
      const headers = { "content-type": MIME[extname(path)] || "application/octet-stream", "cache-control": cache };
      if (overrides[path] !== undefined) {
        res.writeHead(200, headers).end(overrides[path]);
        return;
      }
      try {
        const body = await readFile(join(dir, path));
        res.writeHead(200, headers).end(body);
      } catch {
        res.writeHead(404).end("not found");
      }
    });
    await new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    this.servers.push(server);
    return `http://127.0.0.1:${server.address().port}/`;
  }

  // launch starts Chromium (playwright-core's chromium, from the driver's
  // own node_modules) with a fresh profile and returns its first page;
  // options go to launchPersistentContext. Chromium going away on its own
  // ends the driver.
  async launch(chromium, options) {
    this.profile = await mkdtemp(join(tmpdir(), `${this.name}-chromium-`));
    this.context = await chromium.launchPersistentContext(this.profile, {
      headless: true,
      args: CHROMIUM_ARGS,
      ...options,
    });
    this.context.on("close", () => {
      if (!this.closing) {
        this.log("chromium went away");
        this.shutdown(1);
      }
    });
    return this.context.pages()[0] || (await this.context.newPage());
  }

  // watch logs the page's errors and ends the driver if the page crashes.
  watch(page) {
    page.on("pageerror", (err) => this.log("page error:", err.stack || err.message));
    page.on("crash", () => {
      this.out({ event: "error", ts: Date.now(), message: "page crashed" });
      this.shutdown(1);
    });
  }

  // readCommands runs each stdin line through handle(msg), one at a time
  // and in order, and replies to those that carry an "id" with what handle
  // returns or the error it throws. Only names in commands are accepted.
  // Stdin's EOF shuts the driver down once the queue is done.
  readCommands(commands, handle) {
    let queue = Promise.resolve();
    const rl = createInterface({ input: process.stdin });
    rl.on("line", (line) => {
      if (!line.trim()) return;
      queue = queue.then(() => this.command(line, commands, handle));
    });
    rl.on("close", () => queue.then(() => this.shutdown(0)));
  }

  async command(line, commands, handle) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      this.log("bad command:", line);
      return;
    }
    const reply = (fields) => msg.id !== undefined && this.out({ event: "reply", ts: Date.now(), id: msg.id, cmd: msg.cmd, ...fields });
    if (!commands.has(msg.cmd)) {
      reply({ error: `unknown command ${JSON.stringify(msg.cmd)}` });
      return;
    }
    try {
      const result = await handle(msg);
      reply({ result: result === undefined ? null : result });
    } catch (err) {
      reply({ error: String(err.message || err).replace(/^page\.evaluate: (Error: )?/, "") });
    }
  }

  // shutdown closes Chromium and the servers, removes the profile and
  // exits with code; later calls wait for the first.
  shutdown(code) {
    if (!this.closing) {
      this.closing = (async () => {
        try {
          if (this.context) await this.context.close();
        } catch (err) {
          this.log("close chromium:", err.message);
        }
        for (const s of this.servers) s.close();
        if (this.profile) await rm(this.profile, { recursive: true, force: true }).catch(() => {});
        process.exit(code);
      })();
    }
    return this.closing;
  }

  // run runs main, turning its failure into an "error" event and an exit.
  run(main) {
    main().catch((err) => {
      this.log("fatal:", err.stack || err.message);
      this.out({ event: "error", ts: Date.now(), message: `driver: ${err.message}` });
      this.shutdown(1);
    });
  }
}

// callPage calls window[global][cmd](a, b) in the page and returns what it
// resolves to.
export function callPage(page, global, cmd, a, b) {
  return page.evaluate(
    async ([g, c, x, y]) => {
      if (!window[g]) throw new Error("page not loaded");
      return await window[g][c](x, y);
    },
    [global, cmd, a, b],
  );
}
