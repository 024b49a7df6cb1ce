// The server of the fuzz test (test/fuzz.test.ts), as its own process: the
// whole suite, as `npm start` runs it (services/main.ts, without the booking
// page), plus a probe on the IPC channel that the test reads the server's
// memory through. A crash of the server is then the test's to see (the
// process exits), not the end of the test run, and the memory measured is the
// server's alone.
//
// Run with `--expose-gc`; configured from the environment (loadConfig).
import { loadConfig } from "../../services/platform/config.js";
import { startSuite } from "../../services/platform/suite.js";
import { modules } from "../../services/modules.js";

/** What the probe answers: the heap after full collections, and the resources that keep the event loop busy. */
export interface MemorySample {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  rss: number;
  /** process.getActiveResourcesInfo(), counted by kind (Timeout, TCPSocketWrap, ...). */
  resources: Record<string, number>;
}

export type ProbeRequest = { type: "memory"; id: number } | { type: "stop" };
export type ProbeMessage = { type: "listening"; url: string; port: number } | { type: "memory"; id: number; sample: MemorySample };

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("test/fuzz/server.ts needs node --expose-gc");
const send = (message: ProbeMessage) => process.send?.(message);

async function sample(): Promise<MemorySample> {
  // Several rounds with turns of the event loop between them: what a finished call left to finalizers
  // and weak references goes in a later round.
  for (let i = 0; i < 6; i++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const usage = process.memoryUsage();
  const resources: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1;
  return { heapUsed: usage.heapUsed, external: usage.external, arrayBuffers: usage.arrayBuffers, rss: usage.rss, resources };
}

const suite = await startSuite(loadConfig(process.env), modules);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await suite.close();
  process.exit(0);
};
process.on("message", (message: ProbeRequest) => {
  if (message.type === "memory") void sample().then((s) => send({ type: "memory", id: message.id, sample: s }));
  if (message.type === "stop") void stop();
});
// The test went away without stopping this server: do not outlive it.
process.on("disconnect", () => void stop());
process.on("SIGTERM", () => void stop());
send({ type: "listening", url: suite.host.url, port: suite.host.port });
