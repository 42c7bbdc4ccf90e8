// A stand-in driver for nodeproc's tests: the line protocol of the
// harnesses' drivers without Chromium. NODEPROC_TEST_FAIL makes it fail its
// start with an "error" event.
import { createInterface } from "node:readline";

const out = (obj) => process.stdout.write(JSON.stringify({ ts: Date.now(), ...obj }) + "\n");

if (process.env.NODEPROC_TEST_FAIL) {
  out({ event: "error", message: process.env.NODEPROC_TEST_FAIL });
  process.exit(1);
}
process.stderr.write("test driver: up\n");
out({ event: "tick", n: 0 });
out({ event: "ready", userId: "@t:hs", args: process.argv.slice(2) });

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const msg = JSON.parse(line);
  switch (msg.cmd) {
    case "echo":
      out({ event: "reply", id: msg.id, result: msg.args ?? null });
      break;
    case "emit":
      for (const name of msg.names) out({ event: name });
      out({ event: "reply", id: msg.id, result: null });
      break;
    case "fail":
      out({ event: "reply", id: msg.id, error: "it failed" });
      break;
    case "garbage":
      process.stdout.write("not json\n");
      out({ event: "reply", id: msg.id, result: null });
      break;
    case "exit":
      process.exit(3);
  }
});
rl.on("close", () => process.exit(0));
