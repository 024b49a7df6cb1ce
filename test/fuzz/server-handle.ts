// Starts the fuzz test's server (test/fuzz/server.ts) as a child process and
// watches it: its port, its output, whether it is still up, and its memory.
// A server that dies is started again on the next request (same database,
// Redis prefix and secrets, so the fixtures stay valid) and the death is kept
// for the test to report.
import { fork, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import type { MemorySample, ProbeMessage, ProbeRequest } from "./server.js";

export interface Death {
  code: number | null;
  signal: string | null;
  /** The end of what the process wrote before it died. */
  output: string;
}

export class FuzzServer {
  #child: ChildProcess | undefined;
  #port = 0;
  #starting: Promise<void> | undefined;
  #output = "";
  #nextProbe = 0;
  readonly deaths: Death[] = [];
  /** Every line the server wrote to stderr (errors it logged, warnings), with how often. */
  readonly stderrLines = new Map<string, number>();
  /** Starts so far; more than one means the server died. */
  starts = 0;
  /** TimeoutOverflowWarnings the server printed: a timer asked for longer than setTimeout can wait, which fires at once. */
  timerOverflows = 0;

  constructor(private readonly env: NodeJS.ProcessEnv) {}

  get port(): number {
    return this.#port;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get alive(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Starts the server if it is not running; resolves once it listens. */
  ensure(): Promise<void> {
    if (this.alive && !this.#starting) return Promise.resolve();
    return (this.#starting ??= this.#start().finally(() => (this.#starting = undefined)));
  }

  async #start(): Promise<void> {
    this.starts++;
    this.#output = "";
    const child = fork(join(import.meta.dirname, "server.ts"), [], {
      execArgv: ["--expose-gc", "--import", "tsx"],
      env: this.env,
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    this.#child = child;
    child.setMaxListeners(0); // exitsWithin and memory() listen for the exit of many calls at once
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString()).slice(-20_000);
    };
    child.stdout!.on("data", keep);
    let partial = "";
    child.stderr!.on("data", (chunk: Buffer) => {
      keep(chunk);
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        // Stack frames say where, the first line says what.
        if (/^\s+at /.test(line) || line.trim() === "") continue;
        if (line.includes("TimeoutOverflowWarning")) this.timerOverflows++;
        const key = line.slice(0, 300);
        this.stderrLines.set(key, (this.stderrLines.get(key) ?? 0) + 1);
      }
    });
    child.once("exit", (code, signal) => {
      if (!this.#stopping) this.deaths.push({ code, signal, output: this.#output.slice(-4000) });
    });
    child.on("error", () => {});
    await new Promise<void>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`the fuzz server exited with ${code} before listening:\n${this.#output}`));
      child.once("exit", onExit);
      child.on("message", (message: ProbeMessage) => {
        if (message.type !== "listening") return;
        this.#port = message.port;
        child.off("exit", onExit);
        resolve();
      });
    });
  }

  /** Resolves true if the process exits within `ms` (a connection that broke may be a crash under way). */
  async exitsWithin(ms: number): Promise<boolean> {
    const child = this.#child;
    if (!child || !this.alive) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        child.off("exit", onExit);
        resolve(false);
      }, ms);
      const onExit = () => {
        clearTimeout(timer);
        resolve(true);
      };
      child.once("exit", onExit);
    });
  }

  /** The server's heap after full collections, and its active resources. */
  memory(): Promise<MemorySample> {
    const child = this.#child;
    if (!child || !this.alive) return Promise.reject(new Error("the fuzz server is not running"));
    const id = ++this.#nextProbe;
    return new Promise<MemorySample>((resolve, reject) => {
      const onMessage = (message: ProbeMessage) => {
        if (message.type === "memory" && message.id === id) {
          child.off("message", onMessage);
          child.off("exit", onExit);
          resolve(message.sample);
        }
      };
      const onExit = () => reject(new Error("the fuzz server exited while measuring its memory"));
      child.on("message", onMessage);
      child.once("exit", onExit);
      child.send({ type: "memory", id } satisfies ProbeRequest);
    });
  }

  #stopping = false;

  async stop(): Promise<void> {
    const child = this.#child;
    this.#stopping = true;
    if (!child || !this.alive) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.send({ type: "stop" } satisfies ProbeRequest);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}
