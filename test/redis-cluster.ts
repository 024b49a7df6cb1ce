import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

/*
 * Redis servers of a test's own, from Debian's redis-server package: a 3-master
 * Redis Cluster, or a single server a test may kill and start again. The shared
 * Redis on 6379 is never touched. Nothing is kept on disk but the cluster's node
 * files, in a temporary folder removed at stop.
 */

const redisServer = "/usr/bin/redis-server";
const redisCli = "/usr/bin/redis-cli";
const run = promisify(execFile);

function requireRedisBinaries() {
  for (const binary of [redisServer, redisCli]) {
    if (!existsSync(binary)) {
      throw new Error(`${binary} is missing: these tests start Redis servers of their own; install Debian's redis-server package (apt-get install redis-server), as .ci/run does`);
    }
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A random port in 7100-7999 that is free, with its cluster bus port (+10000) free too. */
async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 7100 + Math.floor(Math.random() * 900);
    if ((await portIsFree(port)) && (await portIsFree(port + 10_000))) return port;
  }
  throw new Error("no free port pair in 7100-7999 / 17100-17999");
}

/** One redis-server process on 127.0.0.1; it can be killed and started again on the same port. */
export class RedisProcess {
  #child: ChildProcess | undefined;

  constructor(
    readonly port: number,
    private readonly extraArgs: string[] = [],
  ) {}

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  get url() {
    return `redis://${this.address}`;
  }

  /** Resolves once the server accepts connections; rejects if it exits first (the port taken meanwhile, say). */
  async start(): Promise<void> {
    requireRedisBinaries();
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", ...this.extraArgs];
    const child = spawn(redisServer, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    let log = "";
    await new Promise<void>((resolve, reject) => {
      // Read the log for as long as the server runs: a full pipe would stop it.
      child.stdout!.on("data", (chunk: Buffer) => {
        log = (log + chunk.toString()).slice(-4000);
        if (log.includes("Ready to accept connections")) resolve();
      });
      child.stderr!.on("data", (chunk: Buffer) => (log = (log + chunk.toString()).slice(-4000)));
      child.once("error", reject);
      child.once("exit", (code, signal) => reject(new Error(`redis-server on port ${this.port} exited (${code ?? signal}):\n${log}`)));
    });
  }

  /** Freezes the server (SIGSTOP): the connection stays open and nothing answers, like a hung host. */
  pause() {
    this.#child?.kill("SIGSTOP");
  }

  resume() {
    this.#child?.kill("SIGCONT");
  }

  /** Kills the server at once (SIGKILL: a crash, not a shutdown) and waits for the process to end. */
  async kill(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }
}

/** Starts a server on a free port of its own, trying other ports if one is taken between the check and the bind. */
async function startOnFreePort(argsFor: (port: number) => string[]): Promise<RedisProcess> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const server = new RedisProcess(port, argsFor(port));
    try {
      await server.start();
      return server;
    } catch (error) {
      lastError = error;
      await server.kill();
    }
  }
  throw lastError;
}

/** A single Redis server of the test's own, on a free port. */
export function startRedis(): Promise<RedisProcess> {
  return startOnFreePort(() => []);
}

export interface RedisCluster {
  /** The masters' addresses, host:port, as REDIS_CLUSTER_NODES takes them. */
  nodes: string[];
  /** The masters' processes, for a test that kills one and starts it again (its node file keeps its slots). */
  servers: RedisProcess[];
  stop(): Promise<void>;
}

async function clusterStateOk(address: string): Promise<boolean> {
  const [host, port] = address.split(":") as [string, string];
  try {
    const { stdout } = await run(redisCli, ["-h", host, "-p", port, "cluster", "info"], { timeout: 2000 });
    return stdout.includes("cluster_state:ok");
  } catch {
    return false;
  }
}

/** Resolves once every given node reports cluster_state:ok. */
export async function waitClusterOk(nodes: string[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await Promise.all(nodes.map(clusterStateOk))).every(Boolean)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Redis Cluster ${nodes.join(",")} did not reach cluster_state:ok in ${timeoutMs} ms`);
}

/** A real 3-master Redis Cluster (no replicas) on free ports, formed with redis-cli and ready on every node. */
export async function startRedisCluster(): Promise<RedisCluster> {
  requireRedisBinaries();
  const dir = mkdtempSync(join(tmpdir(), "boxoffice-redis-cluster-"));
  const servers: RedisProcess[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.kill()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const clusterArgs = (port: number) => ["--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--dir", dir];
    for (let i = 0; i < 3; i++) servers.push(await startOnFreePort(clusterArgs));
    const nodes = servers.map((server) => server.address);
    await run(redisCli, ["--cluster", "create", ...nodes, "--cluster-replicas", "0", "--cluster-yes"], { timeout: 30_000 });
    await waitClusterOk(nodes);
    return { nodes, servers, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
