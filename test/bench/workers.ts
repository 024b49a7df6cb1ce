/**
 * npm run bench -- --workers [--workers-seconds=8]
 *
 * WORKERS=1 against WORKERS=2 on PostgreSQL and Redis, back to back in one
 * run: the same server (as `npm start` runs it) and the same load, ListSeats
 * of a date (a gated read: token check, admission check in Redis, the seat map)
 * and ChargePoints (a write), 32 calls in flight over 8 h2c connections, which
 * the primary hands to the workers round robin. Reported as calls a second and
 * the ratio N=2 : N=1. On a 2-core machine the load driver, PostgreSQL and Redis
 * share the cores with the workers, so the gain is bounded well below 2.
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConcertAdminService, ConcertService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { QueueAdminService, QueueService, QueueState } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import { createDatabase, dropDatabase } from "../databases.js";
import { startServerProcess } from "../server-process.js";
import { measure, spread, type Result } from "./measure.js";

export async function runWorkers(args: string[]): Promise<void> {
  const seconds = Number(args.find((a) => a.startsWith("--workers-seconds="))?.split("=")[1] ?? 8);
  const results: Record<string, Result[]> = {};
  for (const workers of [1, 2]) {
    const databaseUrl = await createDatabase(`boxoffice_bench_workers_${workers}`);
    const operatorKey = randomUUID();
    const server = await startServerProcess({
      ...process.env,
      DATABASE_URL: databaseUrl,
      REDIS_URL: process.env.REDIS_URL || "redis://127.0.0.1:6379",
      REDIS_KEY_PREFIX: `bench:${randomUUID()}:`,
      TOKEN_SECRET: randomUUID() + randomUUID(),
      OPERATOR_KEY: operatorKey,
      PORT: "0",
      HOST: "127.0.0.1",
      SEED_DEMO: "false",
      WORKERS: String(workers),
      RATE_LIMITS: "false",
      DATABASE_POOL_SIZE: "10",
      DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-bench-workers-")),
    });
    try {
      // Every worker has started (each migrated, or waited on the lock) before the load.
      await new Promise((resolve) => setTimeout(resolve, workers * 3_000));
      const transport: Transport = spread(Array.from({ length: 8 }, () => createGrpcTransport({ baseUrl: server.url })));
      const operator = { headers: { authorization: `Bearer ${operatorKey}` } };
      const { concert, schedules } = await createClient(ConcertAdminService, transport).createConcert(
        { title: "Workers", venue: "Bench", schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 86_400_000)), seatCount: 50, price: 10n }] },
        operator,
      );
      await createClient(QueueAdminService, transport).setAdmissionPolicy({ concertId: concert!.id, policy: { maxActive: 1_000 } }, operator);
      const user = await createClient(TokenService, transport).issueUserToken({});
      const { queueToken } = await createClient(QueueService, transport).enterQueue({ concertId: concert!.id }, { headers: { authorization: `Bearer ${user.token}` } });
      for (;;) {
        const { status } = await createClient(QueueService, transport).getQueueStatus({}, { headers: { "x-queue-token": queueToken } });
        if (status!.state === QueueState.ADMITTED) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const gated = { headers: { authorization: `Bearer ${user.token}`, "x-queue-token": queueToken } };
      const concerts = createClient(ConcertService, transport);
      const points = createClient(PointService, transport);
      const options = { seconds, warmSeconds: 1, concurrency: 32 };
      results[`WORKERS=${workers}`] = [
        await measure("ListSeats", () => concerts.listSeats({ scheduleId: schedules[0]!.id }, gated), options),
        await measure("ChargePoints", () => points.chargePoints({ amount: 1n, idempotencyKey: randomUUID() }, { headers: { authorization: `Bearer ${user.token}` } }), options),
      ];
    } finally {
      await server.stop();
      await dropDatabase(`boxoffice_bench_workers_${workers}`);
    }
  }
  console.log("\ncase          WORKERS=1 /s   WORKERS=2 /s   ratio");
  for (const [i, one] of results["WORKERS=1"]!.entries()) {
    const two = results["WORKERS=2"]![i]!;
    console.log(`${one.name.padEnd(14)}${one.perSecond.toFixed(0).padStart(12)}${two.perSecond.toFixed(0).padStart(15)}${(two.perSecond / one.perSecond).toFixed(2).padStart(8)}`);
  }
}
