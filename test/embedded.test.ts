import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { bearer } from "./support.js";

const root = join(import.meta.dirname, "..");
const dataDir = mkdtempSync(join(tmpdir(), "boxoffice-embedded-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

interface Started {
  process: ChildProcess;
  url: string;
}

/** Starts `npm start`'s entry point with nothing configured but a data folder and a free port. */
async function start(): Promise<Started> {
  const env: Record<string, string> = { ...(process.env as Record<string, string>), DATA_DIR: dataDir, PORT: "0", HOST: "127.0.0.1" };
  for (const name of ["DATABASE_URL", "REDIS_URL", "SERVICES", "TOKEN_SECRET", "INTERNAL_CREDENTIAL", "OPERATOR_KEY", "SEED_DEMO"]) delete env[name];
  const child = spawn(join(root, "node_modules/.bin/tsx"), ["services/main.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
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
  return { process: child, url };
}

async function stop(started: Started): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => started.process.once("exit", resolve));
  started.process.kill("SIGTERM");
  return exited;
}

describe("npm start with nothing else running (embedded PGlite)", () => {
  it("serves gRPC and HTTP/1.1, loads demo data, stops on SIGTERM, and keeps its data across a restart", async () => {
    const first = await start();
    let before;
    let user;
    try {
      const tokens = createClient(TokenService, createGrpcTransport({ baseUrl: first.url }));
      user = await tokens.issueUserToken({});
      const concerts = createClient(ConcertService, createConnectTransport({ baseUrl: first.url, httpVersion: "1.1" }));
      before = (await concerts.listConcerts({})).concerts;
      expect(before.length).toBeGreaterThanOrEqual(3);
      const { schedules } = await concerts.listSchedules({ concertId: before[0]!.id });
      expect(schedules.length).toBeGreaterThan(0);
      expect(schedules.every((s) => s.totalSeats === 50 && s.availableSeats === 50)).toBe(true);
      const seats = await concerts.listSeats({ scheduleId: schedules[0]!.id }, bearer(user.token));
      expect(seats.seats).toHaveLength(50);
    } finally {
      expect(await stop(first)).toBe(0);
    }

    const second = await start();
    try {
      const again = createClient(ConcertService, createGrpcTransport({ baseUrl: second.url }));
      expect((await again.listConcerts({})).concerts).toEqual(before);
      const refreshed = await createClient(TokenService, createGrpcTransport({ baseUrl: second.url })).issueUserToken({}, bearer(user.token));
      expect(refreshed.userId).toBe(user.userId);
    } finally {
      expect(await stop(second)).toBe(0);
    }
  }, 120_000);
});
