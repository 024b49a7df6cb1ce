import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** The services boxoffice is made of; each can run in this process or elsewhere. */
export const serviceNames = [
  "token",
  "queue",
  "concert",
  "point",
  "payment",
  "coordinator",
] as const;
export type ServiceName = (typeof serviceNames)[number];

export interface Secrets {
  /** HMAC key that signs user tokens; every instance of every service must share it. */
  tokenSecret: string;
  /** Credential that services present to each other's internal RPCs. */
  internalCredential: string;
  /** Credential operators present to admin RPCs. */
  operatorKey: string;
  /** Credential door scanners present to ScanTicket; never the operator's. */
  scannerKey: string;
}

export interface Config extends Secrets {
  host: string;
  port: number;
  /** PostgreSQL URL; unset means the embedded PGlite database under dataDir. */
  databaseUrl: string | undefined;
  /** Redis URL; unset means the in-process queue store. */
  redisUrl: string | undefined;
  /** Redis Cluster seed nodes (host:port), instead of redisUrl. */
  redisCluster: string[] | undefined;
  dataDir: string;
  seedDemo: boolean;
  userTokenTtlSeconds: number;
  /** Services served by this process. */
  services: ServiceName[];
  /** Where to reach services that this process does not serve. */
  serviceUrls: Partial<Record<ServiceName, string>>;
  /** Most connections each service's database pool opens. */
  databasePoolSize: number;
  /** Apply pending migrations at start (MIGRATE_AT_START); off, a start with any pending is refused (`npm run migrate -- up`). */
  migrateAtStart: boolean;
  /** How long shutdown waits for in-flight calls before closing connections. */
  shutdownGraceMs: number;
  /** How often health checks the stores each service needs. */
  healthProbeMs: number;
  /** Most connections one network address may hold open at once (0: no limit). */
  maxConnectionsPerAddress: number;
  /** Most unary calls in progress at once in this process; one beyond is answered busy at once (0: no limit). */
  maxCallsInFlight: number;
  /** GET /metrics without the operator credential. */
  metricsPublic: boolean;
  /** Worker processes serving the one port (PostgreSQL and Redis mode only). */
  workers: number;
  /** Least level logged (LOG_LEVEL). */
  logLevel: (typeof logLevels)[number];
  /** The share of calls the access log writes (0..1); server faults and operator actions always. */
  accessLogSample: number;
  queue: QueueConfig;
  /** How long a seat hold lasts. */
  holdMs: number;
  /** How often expired holds are tidied up and announced. */
  holdSweepMs: number;
  /** How often the concert service's refund run looks for cancelled bookings whose points are not back yet. */
  refundRunMs: number;
  /** Longest a payment stays PENDING after a crash or outage before recovery settles it. */
  paymentRecoveryMs: number;
  /** Abuse limits per client address and per user (rate-limit.ts). */
  limits: RateLimitConfig;
  /** User tokens from an external identity provider (tokens.ts). */
  accounts: AccountConfig;
}

/** The waiting room's defaults; operators change them per concert at run time. */
export interface QueueConfig {
  /** Admission policy for concerts without stored overrides. */
  maxActive: number;
  ratePerMinute: number;
  sessionTtlMs: number;
  abandonAfterMs: number;
  /** How often the admission worker runs. */
  tickMs: number;
  /** Prefix of every Redis key boxoffice writes. */
  redisKeyPrefix: string;
  /** How often the coordinator refreshes the statuses of open watch streams. */
  watchRefreshMs: number;
  /** Longest silence on a watch stream before a heartbeat. */
  watchHeartbeatMs: number;
}

export class ConfigError extends Error {}

/** The levels LOG_LEVEL takes (pino's). */
export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer in ${min}..${max}, got "${raw}"`);
  }
  return value;
}

function fraction(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!/^\d*\.?\d+$/.test(raw) || !(value >= 0 && value <= 1)) throw new ConfigError(`${name} must be a number in 0..1, got "${raw}"`);
  return value;
}

/**
 * WORKERS: processes of the whole suite on one port (the primary hands each
 * new connection to one). Every worker is an instance like any other, so it
 * needs the shared stores: PostgreSQL (the embedded database is one process's)
 * and Redis (the in-process waiting room would be one per worker).
 */
function workerCount(env: Env): number {
  const workers = integer(env, "WORKERS", 1, 1, 64);
  if (workers > 1 && !env.DATABASE_URL) throw new ConfigError("WORKERS above 1 needs DATABASE_URL: the embedded database belongs to one process");
  if (workers > 1 && !env.REDIS_URL && !env.REDIS_CLUSTER_NODES) {
    throw new ConfigError("WORKERS above 1 needs REDIS_URL (or REDIS_CLUSTER_NODES): the in-process waiting room would be one per worker");
  }
  return workers;
}

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!values.includes(raw as T)) throw new ConfigError(`${name} must be one of ${values.join(", ")}, got "${raw}"`);
  return raw as T;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.toLowerCase();
  if (raw === undefined || raw === "") return fallback;
  if (["1", "true", "yes"].includes(raw)) return true;
  if (["0", "false", "no"].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${env[name]}"`);
}

function serviceList(env: Env): ServiceName[] {
  const raw = env.SERVICES;
  if (raw === undefined || raw === "" || raw === "all") return [...serviceNames];
  const names = raw.split(",").map((name) => name.trim());
  for (const name of names) {
    if (name === "reservation") {
      throw new ConfigError(`SERVICES: reservations are served by the concert service (a hold lives beside the seats it holds); use "concert"`);
    }
    if (!serviceNames.includes(name as ServiceName)) {
      throw new ConfigError(`SERVICES names unknown service "${name}" (known: ${serviceNames.join(", ")})`);
    }
  }
  return names as ServiceName[];
}

function serviceUrls(env: Env): Partial<Record<ServiceName, string>> {
  const urls: Partial<Record<ServiceName, string>> = {};
  for (const name of serviceNames) {
    const url = env[`${name.toUpperCase()}_URL`];
    if (url) urls[name] = url;
  }
  if (env.RESERVATION_URL && !env.CONCERT_URL) {
    throw new ConfigError("RESERVATION_URL: reservations are served by the concert service now; set CONCERT_URL instead");
  }
  return urls;
}

function redisCluster(env: Env): string[] | undefined {
  const raw = env.REDIS_CLUSTER_NODES;
  if (raw === undefined || raw === "") return undefined;
  if (env.REDIS_URL) throw new ConfigError("REDIS_CLUSTER_NODES and REDIS_URL are both set; set one");
  const nodes = raw.split(",").map((node) => node.trim());
  for (const node of nodes) {
    const port = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(node)?.[1];
    if (port === undefined || Number(port) < 1 || Number(port) > 65535) {
      throw new ConfigError(`REDIS_CLUSTER_NODES must be comma-separated host:port seeds, got "${node}"`);
    }
  }
  return nodes;
}

/**
 * Secrets come from the environment. Where one is unset, a random value is kept in
 * dataDir/secrets.json, so that a restart (and other processes sharing the folder)
 * keep accepting the tokens already issued, and no well-known default can be forged.
 */
function loadSecrets(env: Env, dataDir: string): Secrets {
  const set = fromEnvironment(env);
  const file = fromFile(env, dataDir);
  // fromFile has every one that the environment does not set.
  const either = (key: keyof Secrets) => (set[key] ?? file[key])!;
  const tokenSecret = either("tokenSecret");
  const secrets: Secrets = {
    tokenSecret,
    internalCredential: either("internalCredential"),
    operatorKey: either("operatorKey"),
    // Set nowhere (a deployment configured before door scanners): the same on every instance, from the token secret.
    scannerKey: set.scannerKey ?? file.scannerKey ?? scannerKeyFrom(tokenSecret),
  };
  if (secrets.scannerKey === secrets.operatorKey) {
    throw new ConfigError("SCANNER_KEY must differ from OPERATOR_KEY: a scanner at a gate must not open the admin RPCs");
  }
  return secrets;
}

const secretNames = { tokenSecret: "TOKEN_SECRET", internalCredential: "INTERNAL_CREDENTIAL", operatorKey: "OPERATOR_KEY", scannerKey: "SCANNER_KEY" } as const;

function fromEnvironment(env: Env): Partial<Secrets> {
  const set: Partial<Secrets> = {};
  for (const [key, name] of Object.entries(secretNames) as [keyof Secrets, string][]) if (env[name]) set[key] = env[name];
  if (set.tokenSecret !== undefined && set.tokenSecret.length < 32) throw new ConfigError("TOKEN_SECRET must be at least 32 characters");
  return set;
}

/** The scanner key a deployment that never set one gets: every process sharing the token secret derives the same. */
function scannerKeyFrom(tokenSecret: string): string {
  return createHmac("sha256", tokenSecret).update("boxoffice scanner key").digest("base64url").slice(0, 32);
}

/**
 * The secrets of dataDir/secrets.json, made on first use; none when the
 * environment sets the token secret, the internal credential and the operator
 * key (the scanner key then comes from SCANNER_KEY, or is derived).
 */
function fromFile(env: Env, dataDir: string): Partial<Secrets> {
  if ([secretNames.tokenSecret, secretNames.internalCredential, secretNames.operatorKey].every((name) => env[name])) return {};
  const file = join(dataDir, "secrets.json");
  mkdirSync(dataDir, { recursive: true });
  const fresh: Secrets = {
    tokenSecret: randomBytes(32).toString("base64url"),
    internalCredential: randomBytes(24).toString("base64url"),
    operatorKey: randomBytes(24).toString("base64url"),
    scannerKey: randomBytes(24).toString("base64url"),
  };
  try {
    // Exclusive create: of processes starting together on one folder, one writes and all read the same.
    writeFileSync(file, JSON.stringify(fresh, null, 2), { mode: 0o600, flag: "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  let generated: Secrets;
  try {
    generated = JSON.parse(readFileSync(file, "utf8")) as Secrets;
  } catch {
    throw new ConfigError(`${file} is unreadable; fix or remove it (removing it invalidates every issued token)`);
  }
  if (generated.scannerKey === undefined && typeof generated.tokenSecret === "string") {
    // A file from before door scanners: its scanner key is derived from its own token secret, so that every
    // process sharing the folder adds the same one (each replacing the file whole, with the same content).
    generated = { ...generated, scannerKey: scannerKeyFrom(generated.tokenSecret) };
    const next = `${file}.${process.pid}.tmp`;
    writeFileSync(next, JSON.stringify(generated, null, 2), { mode: 0o600 });
    renameSync(next, file);
  }
  for (const key of Object.keys(secretNames) as (keyof Secrets)[]) {
    if (typeof generated[key] !== "string" || generated[key].length < 16) throw new ConfigError(`${file} has no usable ${key}`);
  }
  return generated;
}

// ---- Abuse limits and accounts ----

/** The groups of RPCs that share one budget (services/platform/rate-limit.ts lists their RPCs). */
export const rateLimitRules = ["account", "queue", "charge", "hold"] as const;
export type RateLimitRule = (typeof rateLimitRules)[number];

/** Calls a minute, with a burst of as many; 0 = no limit. */
const rateLimitDefaults: Record<RateLimitRule, { perAddress: number; perUser: number }> = {
  account: { perAddress: 600, perUser: 10 },
  queue: { perAddress: 600, perUser: 30 },
  charge: { perAddress: 600, perUser: 30 },
  hold: { perAddress: 1200, perUser: 60 },
};

export interface RateLimitConfig {
  /** Off: nothing is counted (RATE_LIMITS=false). */
  enabled: boolean;
  /** Per rule, calls a minute from one client address (IPv6: one /64), and for one user; 0 = no limit. */
  perAddress: Record<RateLimitRule, number>;
  perUser: Record<RateLimitRule, number>;
  /** The header a trusted proxy names the client in (e.g. x-forwarded-for), lowercase; unset = the connection's address. */
  trustProxyHeader: string | undefined;
  /** How many trusted proxies append to that header: the client is this many entries from its right end. */
  trustProxyHops: number;
}

export interface AccountConfig {
  /** Where the identity provider publishes its signing keys; unset = only our own tokens. */
  jwksUrl: string | undefined;
  /** The `iss` and an `aud` the provider's tokens must carry (both required with jwksUrl). */
  issuer: string | undefined;
  audience: string | undefined;
  /** IssueUserToken mints no anonymous users, and only account tokens are accepted. */
  requireAccounts: boolean;
}

function rateLimits(env: Env): RateLimitConfig {
  const perAddress = {} as Record<RateLimitRule, number>;
  const perUser = {} as Record<RateLimitRule, number>;
  for (const rule of rateLimitRules) {
    const name = `RATE_LIMIT_${rule.toUpperCase()}`;
    perAddress[rule] = integer(env, `${name}_PER_ADDRESS`, rateLimitDefaults[rule].perAddress, 0, 1_000_000);
    perUser[rule] = integer(env, `${name}_PER_USER`, rateLimitDefaults[rule].perUser, 0, 1_000_000);
  }
  const header = env.TRUST_PROXY_HEADER?.trim().toLowerCase() || undefined;
  if (header !== undefined && !/^[a-z0-9-]{1,64}$/.test(header)) {
    throw new ConfigError(`TRUST_PROXY_HEADER must be a header name (e.g. x-forwarded-for), got "${env.TRUST_PROXY_HEADER}"`);
  }
  return {
    enabled: boolean(env, "RATE_LIMITS", true),
    perAddress,
    perUser,
    trustProxyHeader: header,
    trustProxyHops: integer(env, "TRUST_PROXY_HOPS", 1, 1, 16),
  };
}

function accounts(env: Env): AccountConfig {
  const jwksUrl = env.USER_TOKEN_JWKS_URL || undefined;
  const issuer = env.USER_TOKEN_ISSUER || undefined;
  const audience = env.USER_TOKEN_AUDIENCE || undefined;
  const requireAccounts = boolean(env, "REQUIRE_ACCOUNTS", false);
  if (jwksUrl !== undefined) {
    let url: URL;
    try {
      url = new URL(jwksUrl);
    } catch {
      throw new ConfigError(`USER_TOKEN_JWKS_URL must be a URL, got "${jwksUrl}"`);
    }
    const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
    if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
      throw new ConfigError("USER_TOKEN_JWKS_URL must be https (http only on localhost): the keys decide who is a user");
    }
    if (!issuer || !audience) {
      throw new ConfigError("USER_TOKEN_JWKS_URL needs USER_TOKEN_ISSUER and USER_TOKEN_AUDIENCE: without them any token the provider signs, for any application, would pass");
    }
  } else if (issuer || audience) {
    throw new ConfigError("USER_TOKEN_ISSUER and USER_TOKEN_AUDIENCE are for the identity provider's tokens: set USER_TOKEN_JWKS_URL too");
  }
  if (requireAccounts && jwksUrl === undefined) {
    throw new ConfigError("REQUIRE_ACCOUNTS=true needs USER_TOKEN_JWKS_URL: accounts come from the identity provider");
  }
  return { jwksUrl, issuer, audience, requireAccounts };
}

/** Reads the whole configuration once, from the environment, with defaults. */
export function loadConfig(env: Env = process.env): Config {
  const dataDir = resolve(env.DATA_DIR || ".data");
  return {
    host: env.HOST || "0.0.0.0",
    port: integer(env, "PORT", 8080, 0, 65535),
    databaseUrl: env.DATABASE_URL || undefined,
    redisUrl: env.REDIS_URL || undefined,
    redisCluster: redisCluster(env),
    dataDir,
    seedDemo: boolean(env, "SEED_DEMO", true),
    userTokenTtlSeconds: integer(env, "USER_TOKEN_TTL_SECONDS", 24 * 3600, 60, 30 * 24 * 3600),
    services: serviceList(env),
    serviceUrls: serviceUrls(env),
    databasePoolSize: integer(env, "DATABASE_POOL_SIZE", 10, 1, 200),
    migrateAtStart: boolean(env, "MIGRATE_AT_START", true),
    shutdownGraceMs: integer(env, "SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    healthProbeMs: integer(env, "HEALTH_PROBE_MS", 1000, 50, 60_000),
    maxConnectionsPerAddress: integer(env, "MAX_CONNECTIONS_PER_ADDRESS", 1024, 0, 1_000_000),
    maxCallsInFlight: integer(env, "MAX_CALLS_IN_FLIGHT", 1000, 0, 1_000_000),
    metricsPublic: boolean(env, "METRICS_PUBLIC", false),
    logLevel: oneOf(env, "LOG_LEVEL", logLevels, "info"),
    workers: workerCount(env),
    accessLogSample: fraction(env, "ACCESS_LOG_SAMPLE", 0.01),
    holdMs: 1000 * integer(env, "HOLD_SECONDS", 300, 1, 3600),
    holdSweepMs: integer(env, "HOLD_SWEEP_MS", 1000, 10, 60_000),
    paymentRecoveryMs: integer(env, "PAYMENT_RECOVERY_MS", 30_000, 100, 3_600_000),
    refundRunMs: integer(env, "REFUND_RUN_MS", 5_000, 10, 3_600_000),
    limits: rateLimits(env),
    accounts: accounts(env),
    queue: {
      maxActive: integer(env, "QUEUE_MAX_ACTIVE", 200, 1, 1_000_000),
      ratePerMinute: integer(env, "QUEUE_RATE_PER_MINUTE", 0, 0, 1_000_000),
      sessionTtlMs: 1000 * integer(env, "QUEUE_SESSION_TTL_SECONDS", 600, 1, 86_400),
      abandonAfterMs: 1000 * integer(env, "QUEUE_ABANDON_AFTER_SECONDS", 120, 1, 86_400),
      tickMs: integer(env, "QUEUE_TICK_MS", 250, 10, 60_000),
      redisKeyPrefix: env.REDIS_KEY_PREFIX ?? "boxoffice:",
      watchRefreshMs: integer(env, "WATCH_REFRESH_MS", 1000, 50, 15_000),
      watchHeartbeatMs: integer(env, "WATCH_HEARTBEAT_MS", 15_000, 100, 15_000),
    },
    ...loadSecrets(env, dataDir),
  };
}
