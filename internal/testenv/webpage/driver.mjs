#!/usr/bin/env node
// driver.mjs opens any page in headless Chromium and lets a Go test drive
// it like a person and read what it shows: the intercom's own web page, or
// a test page of a package's testdata. Unlike the resident's and Element
// Call's drivers it ships no page of its own.
//
//   stdout: {"event":"ready","ts":…} once the first page has loaded;
//           {"event":NAME,…} for every window.webpageEmit({event:NAME,…})
//           the page calls; replies to commands as the other drivers'.
//   stdin:  {"cmd":"goto","args":{"url":"…"}}, {"cmd":"eval","args":{"js":"…"}}
//           (the body of an async function; its return value is the
//           result), {"cmd":"click","args":{"selector":"…"}},
//           {"cmd":"fill","args":{"selector":"…","value":"…"}},
//           {"cmd":"text","args":{"selector":"…"}}; optional "id".
//   stderr: diagnostics, the page's console and errors.
//
// Flags:
//   --url URL          the first page
//   --resolve RULES    Chromium's --host-resolver-rules, e.g. to give the
//                      API a name it does not know ("MAP evil.test 127.0.0.1")
//   --chromium PATH    browser binary (default: $CHROMIUM or /usr/bin/chromium)
// The resident harness's node_modules provide playwright-core: its path
// comes in $WEBPAGE_PLAYWRIGHT (webpage.go sets it).

import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { CHROMIUM_ARGS, Driver } from "../nodeproc/driverlib.mjs";

const { values: flags } = parseArgs({
  options: {
    url: { type: "string" },
    resolve: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});

const driver = new Driver("webpage");

async function main() {
  const { chromium } = await import(pathToFileURL(process.env.WEBPAGE_PLAYWRIGHT).href);
  const args = [...CHROMIUM_ARGS];
  if (flags.resolve) args.push(`--host-resolver-rules=${flags.resolve}`);
  const page = await driver.launch(chromium, { executablePath: flags.chromium, args, viewport: { width: 390, height: 844 } });
  page.on("console", (msg) => {
    if (msg.type() !== "verbose") driver.log(`console.${msg.type()}:`, msg.text());
  });
  driver.watch(page);
  await page.exposeFunction("webpageEmit", (obj) => driver.out({ ts: Date.now(), ...obj }));
  driver.readCommands(COMMANDS, (msg) => command(page, msg.cmd, msg.args || {}));
  if (flags.url) await page.goto(flags.url);
  driver.out({ event: "ready", ts: Date.now() });
}

const COMMANDS = new Set(["goto", "eval", "click", "fill", "text"]);

async function command(page, cmd, a) {
  switch (cmd) {
    case "goto": {
      const resp = await page.goto(a.url);
      return { status: resp ? resp.status() : 0 };
    }
    case "eval":
      // The body of an async function, run in the page.
      return page.evaluate(async (js) => await new Function(`return (async () => { ${js} })()`)(), a.js);
    case "click":
      // A person's click: the element must be visible and enabled.
      await page.click(a.selector, { timeout: 5000 });
      return null;
    case "fill":
      await page.fill(a.selector, a.value, { timeout: 5000 });
      return null;
    case "text":
      return page.textContent(a.selector, { timeout: 5000 });
  }
}

driver.run(main);
