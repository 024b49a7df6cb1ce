import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { modules } from "../services/modules.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { startServerProcess } from "./server-process.js";

const root = join(import.meta.dirname, "..");
const name = `boxoffice_migrate_${process.pid}_${Date.now().toString(36)}`;
const dirs: string[] = [];
const tempDir = (label: string) => {
  const dir = mkdtempSync(join(tmpdir(), `boxoffice-migrate-${label}-`));
  dirs.push(dir);
  return dir;
};
afterAll(async () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  await dropDatabase(name);
});

/** Every committed migration, per service with a database. */
const expected = modules.filter((m) => m.database).map((m) => ({ name: m.name, migrations: m.database!.migrations.map((migration) => migration.name) }));
const total = expected.reduce((sum, service) => sum + service.migrations.length, 0);

function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env, SEED_DEMO: "false", HOST: "127.0.0.1", PORT: "0" };
  for (const setting of ["DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_NODES", "SERVICES", "MIGRATE_AT_START"]) delete base[setting];
  return { ...base, ...extra };
}

/** `npm run migrate -- <args>`, as an operator runs it (npm puts the `node` dev dependency first on PATH). */
function migrate(args: string[], extra: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn("npm", ["run", "--silent", "migrate", "--", ...args], { cwd: root, env: env(extra), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })));
}

/** The lines `status` prints for each service: "<service> (schema <schema>): <n> applied, <m> pending", then one per migration. */
function statusOf(stdout: string) {
  const services = new Map<string, { applied: string[]; pending: string[] }>();
  let current: { applied: string[]; pending: string[] } | undefined;
  for (const line of stdout.split("\n")) {
    const head = /^(\w+) \(schema \w+\): (\d+) applied, (\d+) pending$/.exec(line);
    if (head) services.set(head[1]!, (current = { applied: [], pending: [] }));
    const entry = /^ {2}(applied|pending) {2}(\w+)/.exec(line);
    if (entry) current![entry[1] as "applied" | "pending"].push(entry[2]!);
  }
  return services;
}

/** status shows every migration pending, up applies them all, status shows none pending, a second up applies nothing. */
async function statusUpStatusUp(settings: Record<string, string>) {
  const before = await migrate(["status"], settings);
  expect(before.code, before.stderr).toBe(0);
  const pending = statusOf(before.stdout);
  expect([...pending.keys()]).toEqual(expected.map((service) => service.name));
  for (const service of expected) expect(pending.get(service.name)).toEqual({ applied: [], pending: service.migrations });
  expect(before.stdout).toContain(`${total} pending; apply with \`npm run migrate -- up\``);

  const up = await migrate(["up"], settings);
  expect(up.code, up.stderr).toBe(0);
  for (const service of expected) expect(up.stdout).toContain(`${service.name}: applied ${service.migrations.join(", ")}\n`);
  expect(up.stdout).toContain(`applied ${total} migrations`);

  const after = await migrate(["status"], settings);
  expect(after.code, after.stderr).toBe(0);
  const applied = statusOf(after.stdout);
  for (const service of expected) expect(applied.get(service.name)).toEqual({ applied: service.migrations, pending: [] });
  expect(after.stdout).toContain("no migration pending");

  const again = await migrate(["up"], settings);
  expect(again.code, again.stderr).toBe(0);
  for (const service of expected) expect(again.stdout).toContain(`${service.name}: up to date\n`);
  expect(again.stdout).toContain("nothing to apply");
}

describe("npm run migrate", () => {
  it.concurrent("on a fresh PostgreSQL database: status, up, status, up; a start with MIGRATE_AT_START=false refuses before and serves after", { timeout: 120_000 }, async () => {
    const url = await createDatabase(name);
    const settings = { DATABASE_URL: url, DATA_DIR: tempDir("pg") };

    // Nothing applied yet: a start that may not migrate says what to run, and stops.
    const start = spawn(process.execPath, ["--import", "tsx", "services/main.ts"], { cwd: root, env: env({ ...settings, MIGRATE_AT_START: "false" }), stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    start.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise((resolve) => start.once("close", resolve));
    expect(code).toBe(1);
    expect(stderr.trim()).toMatch(
      /^configuration error: MIGRATE_AT_START=false, and the token schema has 1 pending migration \(Migration20261124000000_users\); apply them with `npm run migrate -- up` \(same DATABASE_URL or DATA_DIR\), or unset MIGRATE_AT_START$/,
    );

    await statusUpStatusUp(settings);

    // Migrated: the same start serves (and migrates nothing).
    const server = await startServerProcess(env({ ...settings, MIGRATE_AT_START: "false", SERVICES: "token,point" }));
    expect(await server.stop()).toBe(0);
  });

  it.concurrent("on the embedded PGlite of a fresh DATA_DIR, after a kill -9 left its lock file behind", { timeout: 120_000 }, async () => {
    const dataDir = tempDir("embedded");
    // A lock file naming a process that is gone is taken over (a crashed start's).
    const gone = spawn(process.execPath, ["-e", ""]);
    await new Promise((resolve) => gone.once("exit", resolve));
    writeFileSync(join(dataDir, "pglite.pid"), `${gone.pid}\n`);
    await statusUpStatusUp({ DATA_DIR: dataDir });
  });

  it("without a command prints its usage and exits 2", async () => {
    const result = await migrate(["sideways"], { DATA_DIR: tempDir("usage") });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^usage: npm run migrate -- <status\|up>/);
  });
});
