import pg from "pg";
import { ConfigError } from "./config.js";

// What DATABASE_URL points at, and why it cannot be reached. Apart from database.ts so that a start
// checks its database without loading MikroORM first (seconds, before a failure could be said).

/** Longest the first connection at start waits for the server (a filtered port never refuses, it just does not answer). */
const connectTimeoutMs = 10_000;

/** The URL with its password hidden, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, "$1:***@");
}

/** Where a PostgreSQL URL points, or a ConfigError naming `setting` when it is no such URL. */
export function databaseTarget(url: string, setting = "DATABASE_URL"): { host: string; port: number; database: string; user: string } {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || !["postgres:", "postgresql:"].includes(parsed.protocol) || parsed.pathname.length <= 1) {
    throw new ConfigError(`${setting} must be a PostgreSQL URL like postgresql://user:password@host:5432/database, got "${redactUrl(url)}"`);
  }
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost",
    port: Number(parsed.port || 5432),
    database: decodeURIComponent(parsed.pathname.slice(1)),
    user: decodeURIComponent(parsed.username) || process.env.PGUSER || process.env.USER || "postgres",
  };
}

/**
 * Connects once to the server at `url` and runs a trivial query, so that a start (or `npm run migrate`)
 * stops on one line naming the setting and what to do instead of a driver's stack: an unparsable URL,
 * a refused or silent port, an unknown host, a missing database or role, a refused login.
 */
export async function checkDatabase(url: string, setting = "DATABASE_URL"): Promise<void> {
  const target = databaseTarget(url, setting);
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs });
  client.on("error", () => {}); // an error after the check is the pools' business, not this client's
  try {
    await client.connect();
    await client.query("select 1");
  } catch (error) {
    throw new ConfigError(`${setting}: ${connectionProblem(error, target) ?? `cannot use ${target.host}:${target.port}: ${(error as Error).message}`}`);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Why a connection to `target` failed, in words an operator can act on; undefined for an error that is no connection failure. */
export function connectionProblem(error: unknown, target: ReturnType<typeof databaseTarget>): string | undefined {
  // Several addresses for one name (localhost: ::1 and 127.0.0.1) fail together as one AggregateError.
  const first = (error instanceof AggregateError ? error.errors[0] : error) as { code?: string; message?: string } | undefined;
  const where = `${target.host}:${target.port}`;
  switch (first?.code ?? (error as { code?: string } | undefined)?.code) {
    case "ECONNREFUSED":
      return `cannot connect to ${where} (connection refused); is PostgreSQL running there?`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `cannot resolve the host "${target.host}"; check the host in the URL`;
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `cannot reach ${where} (${first?.code}); check the host and port, and that no firewall is in the way`;
    case "ECONNRESET":
      return `${where} closed the connection at once; is it PostgreSQL (and does it want TLS: sslmode in the URL)?`;
    case "3D000": // invalid_catalog_name
      return `database "${target.database}" does not exist on ${where}; create it (createdb ${target.database}) or fix the database in the URL`;
    case "28000": // invalid_authorization_specification: an unknown role, or no pg_hba.conf entry
      return /role .* does not exist/.test(first?.message ?? "")
        ? `role "${target.user}" does not exist on ${where}; create it (createuser ${target.user}) or fix the user in the URL`
        : `${where} refused the login: ${first?.message}; allow it in pg_hba.conf or fix the URL`;
    case "28P01": // invalid_password
      return `password authentication failed for user "${target.user}" on ${where}; fix the password in the URL`;
    case "42501": // insufficient_privilege
      return `${first?.message} on ${where}; grant the role CONNECT on the database, or use another role`;
    case "57P03": // cannot_connect_now
      return `PostgreSQL at ${where} is starting up or shutting down; try again once it is up`;
    case "53300": // too_many_connections
      return `${where} has no connection slot left (${first?.message}); raise max_connections or lower DATABASE_POOL_SIZE`;
  }
  // pg's own connect timeout carries no code.
  if (/timeout/i.test(first?.message ?? "")) return `no answer from ${where} within ${connectTimeoutMs / 1000} s; is PostgreSQL running there, and is no firewall in the way?`;
  return undefined;
}
