// Before anything else is loaded: on an older Node (`npm ci --omit=dev` leaves out the Node 24 the
// npm scripts bring) the start stops on one line instead of running, or failing, somewhere inside.
// Only modules that load nothing but Node's own are imported statically; the rest come in main().
import cluster from "node:cluster";
import net from "node:net";
import { ConfigError, loadConfig, type Config } from "./platform/config.js";
import { requireSupportedNode } from "./platform/node-version.js";
import type { RedisTarget } from "./platform/redis-connection.js";

requireSupportedNode();

/** The services the booking page calls; a process serves the page only when it serves all of them. */
const pageServices = ["token", "concert", "point", "payment", "coordinator"] as const;

/** The configuration, once read (for the messages of failures after that). */
let loaded: Config | undefined;

/**
 * Starts the services named by SERVICES (all by default) in this process.
 * With no DATABASE_URL the embedded PGlite database under DATA_DIR is used.
 *
 * What a start depends on outside config.ts is checked first, each failure one line naming the
 * setting: PORT (before the migrations, which take seconds), DATABASE_URL (the server answers and
 * lets this role into the database) and REDIS_URL (a warning only: see warnIfRedisAway).
 */
async function main(): Promise<void> {
  const config = (loaded = loadConfig());
  if (config.workers > 1 && cluster.isPrimary) return runWorkers(config);
  if (cluster.isPrimary) await checkPort(config);
  const { checkDatabase } = await import("./platform/database-connection.js");
  checkRedisUrl(config);
  if (config.databaseUrl) await checkDatabase(config.databaseUrl);
  // Beside the start, not before it: an absent Redis is said within 2 s, and delays nothing.
  void warnIfRedisAway(config).catch(() => {});

  const [{ startSuite }, { modules }, { webPage }, { logger }, { setupTracing, shutdownTracing }] = await Promise.all([
    import("./platform/suite.js"),
    import("./modules.js"),
    import("./web/index.js"),
    import("./platform/log.js"),
    import("./platform/tracing.js"),
  ]);
  const log = logger("main");
  // Once per process, before the suite: traceparent always, spans only with an OTLP endpoint (tracing.ts).
  if (setupTracing({ services: config.services })) log.info("tracing: spans exported over OTLP (OTEL_EXPORTER_OTLP_*)");
  const servesPage = pageServices.every((name) => config.services.includes(name));
  const suite = await startSuite(config, modules, { fallback: servesPage ? await webPage() : undefined });
  // Before the lines that say it listens: a caller that sends SIGTERM as soon as it reads them must find the handler.
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, `${signal}: shutting down`);
    await suite.close();
    await shutdownTracing();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));

  const served = modules.filter((m) => config.services.includes(m.name)).map((m) => m.name);
  log.info({ services: served, url: suite.host.url }, `boxoffice serving ${served.join(", ")} on ${suite.host.url} (gRPC h2c, gRPC-Web and Connect)`);
  if (servesPage) log.info(`booking page: ${suite.host.url}/`);
  log.info(`database: ${config.databaseUrl ? "PostgreSQL at DATABASE_URL" : `embedded PGlite in ${config.dataDir}`}`);
  if (!process.env.OPERATOR_KEY) log.info(`operator key: operatorKey in ${config.dataDir}/secrets.json`);
  if (!process.env.SCANNER_KEY) log.info(`door scanner key: scannerKey in ${config.dataDir}/secrets.json`);
}

/**
 * WORKERS=N: this process starts N workers, each the whole suite as one
 * instance, and hands each new connection on the port to one of them (Node's
 * cluster, round robin). A worker that dies is started again; SIGTERM goes to
 * every worker, each shutting down as a single process does, and this one exits
 * when they have. The port is checked here, once, before any migrates.
 */
async function runWorkers(config: Config): Promise<void> {
  await checkPort(config);
  cluster.setupPrimary({ execArgv: process.execArgv });
  let stopping = false;
  const served = new Set<number>();
  const start = () => cluster.fork();
  for (let i = 0; i < config.workers; i++) start();
  cluster.on("listening", (worker) => served.add(worker.id));
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    if (!served.has(worker.id)) {
      // It failed to start (it has said why): so would the next one.
      stopping = true;
      for (const other of Object.values(cluster.workers ?? {})) other?.process.kill("SIGTERM");
      process.exitCode = 1;
      return;
    }
    console.error(`worker ${worker.process.pid} exited (${signal ?? code}); starting another`);
    setTimeout(start, 1_000).unref();
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGTERM");
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

/** What a failed listen on HOST:PORT means, or undefined for an error that is not one. */
function listenProblem(error: unknown, config: Config): string | undefined {
  const { code, syscall } = error as NodeJS.ErrnoException;
  if (syscall !== "listen" && syscall !== "getaddrinfo" && syscall !== "bind") return undefined;
  switch (code) {
    case "EADDRINUSE":
      return `PORT ${config.port} is already in use on ${config.host}; stop the other process or set PORT to a free port`;
    case "EACCES":
      return `PORT ${config.port}: this user may not listen on it (ports below 1024 need privileges); set PORT to 1024 or above`;
    case "EADDRNOTAVAIL":
      return `HOST ${config.host} is no address of this machine; set HOST to one of its addresses, or 0.0.0.0 for all`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `HOST ${config.host} does not resolve; set HOST to an address of this machine, or 0.0.0.0 for all`;
  }
  return undefined;
}

/**
 * Binds HOST:PORT and lets it go again, so that a port in use stops the start at once and not after the
 * migrations. Another process may still take the port in between; the real listen says it the same way.
 */
async function checkPort(config: Config): Promise<void> {
  if (config.port === 0) return;
  const probe = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(config.port, config.host, () => resolve());
    });
  } catch (error) {
    const problem = listenProblem(error, config);
    throw problem ? new ConfigError(problem) : error;
  }
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

/** How long the start waits to see Redis answer before it says it does not. */
const redisCheckMs = 2_000;

/** REDIS_URL must be a Redis URL (REDIS_CLUSTER_NODES is checked in config.ts): ioredis takes anything else for a socket path. */
function checkRedisUrl(config: Config): void {
  if (config.redisUrl === undefined) return;
  let protocol: string | undefined;
  try {
    protocol = new URL(config.redisUrl).protocol;
  } catch {
    protocol = undefined;
  }
  if (protocol !== "redis:" && protocol !== "rediss:") {
    throw new ConfigError(`REDIS_URL must be a Redis URL like redis://host:6379 (rediss:// for TLS), got "${config.redisUrl.replace(/\/\/([^:/@]*):[^@/]*@/, "//$1:***@")}"`);
  }
}

/**
 * An unreachable Redis does not stop the start: the process starts and says so on one line naming the
 * setting. Its waiting room answers Unavailable at once, health reports Redis down (so /readyz keeps a
 * load balancer away) and rate limits are kept per instance, and all of it comes back by itself when
 * Redis answers. Refusing to start would turn a Redis restart during a deploy into every instance
 * crash-looping, the services that need no Redis too.
 */
async function warnIfRedisAway(config: Config): Promise<void> {
  const setting = config.redisCluster ? "REDIS_CLUSTER_NODES" : "REDIS_URL";
  const target: RedisTarget | undefined = config.redisCluster ? { clusterNodes: config.redisCluster } : config.redisUrl ? { url: config.redisUrl } : undefined;
  const usesRedis = config.services.includes("queue") || config.limits.enabled;
  if (!target || !usesRedis) return;
  const { connectRedis, waitReady } = await import("./platform/redis-connection.js");
  const client = connectRedis(target);
  let lastError: string | undefined;
  client.on("error", (error: Error) => (lastError = error.message));
  const ready = await waitReady(client, redisCheckMs);
  client.disconnect();
  if (ready) return;
  const where = "url" in target ? redisAddress(target.url) : target.clusterNodes.join(", ");
  const queue = config.services.includes("queue");
  const meanwhile = [
    queue ? "the waiting room answers Unavailable" : undefined,
    queue ? "health reports Redis down" : undefined,
    config.limits.enabled ? "each instance keeps its own rate limits" : undefined,
  ].filter((part) => part !== undefined);
  const listed = meanwhile.length > 1 ? `${meanwhile.slice(0, -1).join(", ")} and ${meanwhile.at(-1)}` : meanwhile[0];
  console.error(
    `warning: ${setting}: Redis at ${where} does not answer (${lastError ?? `nothing within ${redisCheckMs / 1000} s`}); ` +
      `starting anyway, and until it answers ${listed}. Is Redis running there?`,
  );
}

function redisAddress(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname || "127.0.0.1"}:${parsed.port || 6379}`;
}

/** One line for a start-up failure an operator can act on; undefined for anything else (a stack is more use then). */
async function startupProblem(error: unknown): Promise<string | undefined> {
  if (error instanceof ConfigError) return error.message;
  const config = loaded;
  if (!config) return undefined;
  // The real listen, if another process took the port after the check.
  const listen = listenProblem(error, config);
  if (listen) return listen;
  if (!config.databaseUrl) return undefined;
  const { connectionProblem, databaseTarget } = await import("./platform/database-connection.js");
  // The database went away during the migrations, or a role that may not create what they create.
  for (let cause: unknown = error; cause; cause = (cause as { cause?: unknown }).cause) {
    if ((cause as { code?: string }).code === "42501") {
      return `DATABASE_URL: ${(cause as Error).message} while migrating; give this role the privileges the migrations need, or migrate with a role that has them (npm run migrate -- up) and set MIGRATE_AT_START=false`;
    }
    const problem = connectionProblem(cause, databaseTarget(config.databaseUrl));
    if (problem) return `DATABASE_URL: ${problem}`;
  }
  return undefined;
}

main().catch(async (error: unknown) => {
  const problem = await startupProblem(error).catch(() => undefined);
  console.error(problem === undefined ? error : `configuration error: ${problem}`);
  process.exit(1);
});
