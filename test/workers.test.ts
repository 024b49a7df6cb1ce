import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { startServerProcess } from "./server-process.js";
import { testSecrets } from "./support.js";

/** WORKERS=2 on PostgreSQL and Redis: one port, connections spread over two processes, one SIGTERM stops both. */
describe("WORKERS", () => {
  it("serves one port from two worker processes and stops them all on SIGTERM", async () => {
    const server = await startServerProcess({
      ...process.env,
      DATABASE_URL: inject("databaseUrl"),
      REDIS_URL: "redis://127.0.0.1:6379",
      REDIS_KEY_PREFIX: `test:${randomUUID()}:`,
      DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-workers-")),
      HOST: "127.0.0.1",
      PORT: "0",
      SEED_DEMO: "false",
      WORKERS: "2",
      ACCESS_LOG_SAMPLE: "1",
      ...testSecrets,
    });
    let output = "";
    server.process.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    try {
      // Both workers listen (each says so), then calls on fresh connections reach both.
      await expect.poll(() => output.split("\n").filter((line) => line.includes("boxoffice serving")).length + 1, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
      for (let i = 0; i < 20; i++) await createClient(ConcertService, createGrpcTransport({ baseUrl: server.url })).listConcerts({});
      const pids = () =>
        new Set(
          output
            .split("\n")
            .filter((line) => line.includes('"rpc":"ListConcerts"'))
            .map((line) => (JSON.parse(line) as { pid: number }).pid),
        );
      await expect.poll(() => pids().size).toBe(2);
      expect(pids().has(server.process.pid!)).toBe(false);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  }, 90_000);
});
