import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");

/**
 * The Node flags `npm start` gives the server (package.json: `exec node <flags> --import tsx services/main.ts`),
 * so that a server started here runs as it does in production: the V8 heap settings that bound its memory
 * (BENCHMARKS.md, "Memory under load") are among them.
 */
export const startFlags: string[] = (() => {
  const start = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.start ?? "";
  const flags = /\bnode((?: --[^\s]+)*) --import tsx services\/main\.ts$/.exec(start)?.[1];
  if (flags === undefined) throw new Error(`package.json's start script is not "exec node [flags] --import tsx services/main.ts": ${start}`);
  return flags.split(" ").filter(Boolean);
})();

export interface ServerProcess {
  process: ChildProcess;
  url: string;
  /** Sends SIGTERM and resolves to the exit code. */
  stop(): Promise<number | null>;
}

/** Runs `npm start`'s entry point as its own process and resolves once it listens. */
export async function startServerProcess(env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<ServerProcess> {
  // node --import tsx, as `npm start` runs it: one process, so SIGTERM reaches the server itself
  // (the tsx wrapper SIGKILLs a child that has not acknowledged a forwarded signal within 30 ms).
  // Small pools unless the test says otherwise: test files share one PostgreSQL (see testConfig).
  const child = spawn(process.execPath, [...startFlags, ...nodeArgs, "--import", "tsx", "services/main.ts"], {
    cwd: root,
    env: { DATABASE_POOL_SIZE: "3", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /on (http:\/\/[\d.]+:\d+)/.exec(output);
      if (match) resolve(match[1]!);
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`exited with ${code} before listening:\n${output}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return {
    process: child,
    url,
    stop: () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

/** Ports free now on `host` (0.0.0.0: on every address), chosen up front so that processes can be told each other's URLs before any starts. */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, host, () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/**
 * Sends SIGTERM to the node process that runs the services, and resolves to the exit code.
 *
 * Not through ServerProcess.stop(): that signals the tsx wrapper, which relays the
 * signal to its child and SIGKILLs it (exit 143) when the child has not confirmed
 * within 30 ms, which a busy machine often misses. The wrapper exits with its
 * child's code, so signalling the child tests the service's own shutdown.
 */
export async function stopService(server: ServerProcess): Promise<number | string | null> {
  const wrapper = server.process;
  if (wrapper.exitCode !== null || wrapper.signalCode !== null) return wrapper.exitCode ?? wrapper.signalCode;
  const exited = new Promise<number | string | null>((resolve) => wrapper.once("exit", (code, signal) => resolve(code ?? signal)));
  let child: number | undefined;
  try {
    const pids = readFileSync(`/proc/${wrapper.pid}/task/${wrapper.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    if (pids.length === 1) child = Number(pids[0]);
  } catch {
    // No /proc: fall back to the wrapper.
  }
  if (child === undefined) return server.stop();
  process.kill(child, "SIGTERM");
  return exited;
}
