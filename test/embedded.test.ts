import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import { startServerProcess, type ServerProcess } from "./server-process.js";
import { bearer, gated } from "./support.js";

const dataDir = mkdtempSync(join(tmpdir(), "boxoffice-embedded-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

/** Starts `npm start`'s entry point with nothing configured but a data folder and a free port. */
function start(): Promise<ServerProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: "0", HOST: "127.0.0.1" };
  for (const name of ["DATABASE_URL", "REDIS_URL", "SERVICES", "TOKEN_SECRET", "INTERNAL_CREDENTIAL", "OPERATOR_KEY", "SCANNER_KEY", "SEED_DEMO"]) delete env[name];
  return startServerProcess(env);
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
      // The seed flow on the in-process queue store: queue token, watch until admitted, then the gated seats.
      const { queueToken } = await tokens.issueQueueToken({ concertId: before[0]!.id }, bearer(user.token));
      const coordinator = createClient(CoordinatorService, createGrpcTransport({ baseUrl: first.url }));
      let last;
      for await (const update of coordinator.watchQueueStatus({}, { headers: { "x-queue-token": queueToken } })) last = update.status;
      expect(last?.state).toBe(QueueState.ADMITTED);
      const seats = await concerts.listSeats({ scheduleId: schedules[0]!.id }, gated(user.token, queueToken));
      expect(seats.seats).toHaveLength(50);
      // Health on the embedded database: every store answers (PGlite, its one connection shared with the calls).
      const health = createClient(Health, createGrpcTransport({ baseUrl: first.url }));
      for (const service of ["", "boxoffice.queue.v1.QueueService", "boxoffice.point.v1.PointService"]) {
        expect((await health.check({ service })).status, service).toBe(Serving.SERVING);
      }
      const ready = await fetch(`${first.url}/readyz`);
      expect([ready.status, await ready.json()]).toEqual([200, { status: "ready" }]);
      expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
    } finally {
      expect(await first.stop()).toBe(0);
    }

    const second = await start();
    try {
      const again = createClient(ConcertService, createGrpcTransport({ baseUrl: second.url }));
      expect((await again.listConcerts({})).concerts).toEqual(before);
      const refreshed = await createClient(TokenService, createGrpcTransport({ baseUrl: second.url })).issueUserToken({}, bearer(user.token));
      expect(refreshed.userId).toBe(user.userId);
    } finally {
      expect(await second.stop()).toBe(0);
    }
  }, 120_000);
});
