import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");

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
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", "services/main.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
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
