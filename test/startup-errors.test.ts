import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createDatabase, dropDatabase, serverUrl } from "./databases.js";

const root = join(import.meta.dirname, "..");
const dataDir = mkdtempSync(join(tmpdir(), "boxoffice-startup-errors-"));
const names = { fresh: `boxoffice_startup_${process.pid}_${Date.now().toString(36)}`, redis: `boxoffice_startup_redis_${process.pid}_${Date.now().toString(36)}` };
afterAll(async () => {
  rmSync(dataDir, { recursive: true, force: true });
  await Promise.all(Object.values(names).map((name) => dropDatabase(name)));
});

/** Nothing configured but a data folder, a free port on loopback, fixed secrets and no demo data; `env` on top. */
function envWith(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {
    ...process.env,
    DATA_DIR: dataDir,
    HOST: "127.0.0.1",
    PORT: "0",
    SEED_DEMO: "false",
    TOKEN_SECRET: "test-token-secret-that-is-long-enough",
    INTERNAL_CREDENTIAL: "test-internal-credential",
    OPERATOR_KEY: "test-operator-key",
    SCANNER_KEY: "test-scanner-key",
  };
  for (const name of ["DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_NODES", "SERVICES", "MIGRATE_AT_START"]) delete base[name];
  return { ...base, ...env };
}

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `npm start`'s entry point (as test/server-process.ts does) to its exit; killed after 30 s. */
function runToExit(env: Record<string, string>, node = process.execPath, entry = "services/main.ts"): Promise<Exit> {
  const started = performance.now();
  const child = spawn(node, ["--import", "tsx", entry], { cwd: root, env: envWith(env), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  return new Promise((resolve) =>
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    }),
  );
}

/** The start failed on exactly one line matching `message`, with no stack, and exit code 1. */
function expectOneLine(exit: Exit, message: RegExp) {
  const lines = exit.stderr.trim().split("\n");
  expect(lines, exit.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(message);
  expect(exit.stderr).not.toMatch(/^\s+at /m);
  expect(exit.stdout).not.toMatch(/serving/);
  expect(exit.code).toBe(1);
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const onServer = (change: (url: URL) => void) => {
  const url = serverUrl();
  change(url);
  return url.toString();
};

describe("a start with a setting that cannot work stops on one line naming it", () => {
  it.concurrent("DATABASE_URL that is no URL", async () => {
    expectOneLine(await runToExit({ DATABASE_URL: "not-a-url" }), /^configuration error: DATABASE_URL must be a PostgreSQL URL like postgresql:\/\/user:password@host:5432\/database, got "not-a-url"$/);
  });

  it.concurrent("DATABASE_URL with a password: the message hides it", async () => {
    const exit = await runToExit({ DATABASE_URL: "postgresql://app:s3cret@db.example:5432" });
    expectOneLine(exit, /^configuration error: DATABASE_URL must be a PostgreSQL URL .*got "postgresql:\/\/app:\*\*\*@db\.example:5432"$/);
    expect(exit.stderr).not.toContain("s3cret");
  });

  it.concurrent("DATABASE_URL on a port that refuses connections", async () => {
    const port = await closedPort();
    const exit = await runToExit({ DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/test` });
    expectOneLine(exit, new RegExp(`^configuration error: DATABASE_URL: cannot connect to 127\\.0\\.0\\.1:${port} \\(connection refused\\); is PostgreSQL running there\\?$`));
  });

  it.concurrent("DATABASE_URL naming a database that does not exist", async () => {
    const missing = `boxoffice_missing_${process.pid}`;
    const exit = await runToExit({ DATABASE_URL: onServer((url) => (url.pathname = `/${missing}`)) });
    expectOneLine(exit, new RegExp(`^configuration error: DATABASE_URL: database "${missing}" does not exist on [^ ]+:\\d+; create it \\(createdb ${missing}\\) or fix the database in the URL$`));
  });

  it.concurrent("DATABASE_URL naming a role that does not exist", async () => {
    const missing = `boxoffice_no_role_${process.pid}`;
    const exit = await runToExit({ DATABASE_URL: onServer((url) => (url.username = missing)) });
    expectOneLine(exit, new RegExp(`^configuration error: DATABASE_URL: role "${missing}" does not exist on [^ ]+:\\d+; create it \\(createuser ${missing}\\) or fix the user in the URL$`));
  });

  it.concurrent("PORT already in use: said before the migrations, which never start", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as net.AddressInfo;
    const url = await createDatabase(names.fresh);
    try {
      const exit = await runToExit({ DATABASE_URL: url, PORT: String(port) });
      expectOneLine(exit, new RegExp(`^configuration error: PORT ${port} is already in use on 127\\.0\\.0\\.1; stop the other process or set PORT to a free port$`));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
    // Nothing was migrated: the check came first.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query("select schema_name from information_schema.schemata where schema_name in ('token', 'concert', 'queue', 'point', 'payment')");
      expect(rows).toEqual([]);
    } finally {
      await client.end();
    }
  });

  it.concurrent("HOST that is no address of this machine", async () => {
    // 192.0.2.0/24 is TEST-NET-1, never assigned.
    expectOneLine(await runToExit({ HOST: "192.0.2.1", PORT: "18099" }), /^configuration error: HOST 192\.0\.2\.1 is no address of this machine; set HOST to one of its addresses, or 0\.0\.0\.0 for all$/);
  });

  it.concurrent("SCANNER_KEY the same as OPERATOR_KEY", async () => {
    expectOneLine(await runToExit({ SCANNER_KEY: "test-operator-key" }), /^configuration error: SCANNER_KEY must differ from OPERATOR_KEY: a scanner at a gate must not open the admin RPCs$/);
  });

  it.concurrent("REDIS_URL that is no Redis URL", async () => {
    expectOneLine(await runToExit({ REDIS_URL: "not-a-url" }), /^configuration error: REDIS_URL must be a Redis URL like redis:\/\/host:6379 \(rediss:\/\/ for TLS\), got "not-a-url"$/);
    // WORKERS above 1 on the embedded stores: each worker would have its own database and waiting room.
    expectOneLine(await runToExit({ WORKERS: "2" }), /^configuration error: WORKERS above 1 needs DATABASE_URL: the embedded database belongs to one process$/);
  });

  it.concurrent("DATA_DIR whose embedded database another live process has open", async () => {
    const dir = mkdtempSync(join(tmpdir(), "boxoffice-startup-locked-"));
    try {
      // This test's own process stands for the `npm start` holding the folder.
      writeFileSync(join(dir, "pglite.pid"), `${process.pid}\n`);
      const exit = await runToExit({ DATA_DIR: dir });
      expectOneLine(exit, new RegExp(`^configuration error: DATA_DIR: the embedded database in ${dir}/pglite is in use by process ${process.pid} \\(another npm start or npm run migrate on the same DATA_DIR\\); stop it first`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Debian's Node (20) stands for the `node` an `npm ci --omit=dev` install runs the scripts on.
  const systemNode = "/usr/bin/node";
  const systemVersion = (() => {
    try {
      return execFileSync(systemNode, ["--version"], { encoding: "utf8" }).trim().slice(1);
    } catch {
      return undefined;
    }
  })();
  const [major = 0, minor = 0] = (systemVersion ?? "").split(".").map(Number);
  const old = systemVersion !== undefined && (major < 22 || (major === 22 && minor < 17));
  it.skipIf(!old)(`a Node older than 22.17 (${systemNode}, ${systemVersion ?? "absent"}), for npm start and npm run migrate`, async () => {
    for (const entry of ["services/main.ts", "services/migrate.ts"]) {
      const exit = await runToExit({}, systemNode, entry);
      expectOneLine(
        exit,
        new RegExp(`^boxoffice needs Node 22\\.17 or newer \\(package\\.json engines: ">=22\\.17"\\), and this is Node ${systemVersion!.replaceAll(".", "\\.")} \\(${systemNode}\\)\\. Install dependencies with \`npm ci\``),
      );
    }
  });
});

describe("REDIS_URL unreachable at start", () => {
  it("starts anyway and says so on one line naming the setting; SIGTERM still stops it cleanly", async () => {
    const port = await closedPort();
    const url = await createDatabase(names.redis);
    const child = spawn(process.execPath, ["--import", "tsx", "services/main.ts"], {
      cwd: root,
      env: envWith({ DATABASE_URL: url, REDIS_URL: `redis://127.0.0.1:${port}`, SERVICES: "token,queue" }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (/ on http:\/\//.test(output) && /warning: REDIS_URL/.test(output)) resolve();
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      void exited.then((code) => reject(new Error(`exited with ${code}:\n${output}`)));
    });
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const warning = output.split("\n").filter((line) => line.startsWith("warning: REDIS_URL"));
    expect(warning).toEqual([
      `warning: REDIS_URL: Redis at 127.0.0.1:${port} does not answer (connect ECONNREFUSED 127.0.0.1:${port}); starting anyway, and until it answers the waiting room answers Unavailable, health reports Redis down and each instance keeps its own rate limits. Is Redis running there?`,
    ]);
    expect(output).not.toMatch(/^\s+at /m);
  });
});
