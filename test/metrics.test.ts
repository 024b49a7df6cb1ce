import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import type { Suite } from "../services/platform/suite.js";
import { admittedFan, bearer, client, concertOnSale, newUser, startTestSuite, testSecrets } from "./support.js";

/**
 * GET /metrics scraped before and after real traffic on PostgreSQL and Redis:
 * the values an operator watches move with what fans do.
 */

let suite: Suite;
beforeAll(async () => {
  suite = await startTestSuite({ REDIS_URL: "redis://127.0.0.1:6379" });
});
afterAll(() => suite?.close());

async function scrape(authorization = `Bearer ${testSecrets.OPERATOR_KEY}`): Promise<{ status: number; text: string }> {
  const res = await fetch(`${suite.host.url}/metrics`, { headers: authorization ? { authorization } : {} });
  return { status: res.status, text: await res.text() };
}

/** The value of one sample (name and labels as they are printed), or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const body = /\{(.*)\}/.exec(line)?.[1] ?? "";
    const has = Object.entries(labels).every(([key, value]) => body.includes(`${key}="${value}"`));
    if (has) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

describe("GET /metrics", () => {
  it("asks for the operator credential", async () => {
    expect((await scrape("")).status).toBe(401);
    expect((await scrape("Bearer wrong")).status).toBe(401);
    expect((await scrape()).status).toBe(200);
  });

  it("moves with traffic: calls by method and code, calls between services, the line, seats, payments, store and pool times, event-loop lag", async () => {
    const before = (await scrape()).text;
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 1_000n }]);
    // One fan books and pays, one more enters the line.
    const fan = await admittedFan(suite, concertId);
    const coordinator = client(suite, CoordinatorService);
    const { reservation } = await coordinator.reserveSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [3, 4] }, fan.headers);
    await client(suite, PointService).chargePoints({ amount: 2_000n, idempotencyKey: randomUUID() }, bearer(fan.token));
    await coordinator.checkout({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, fan.headers);
    const refused = await client(suite, PointService)
      .chargePoints({ amount: 0n, idempotencyKey: randomUUID() }, bearer(fan.token))
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(Error);
    const waiting = await newUser(suite);
    await client(suite, QueueService).enterQueue({ concertId }, bearer(waiting.token));

    const after = (await scrape()).text;
    const calls = (text: string, labels: Record<string, string>) => sample(text, "boxoffice_rpc_server_calls_total", labels) ?? 0;
    const charge = { service: "boxoffice.point.v1.PointService", method: "ChargePoints" };
    expect(calls(after, { ...charge, code: "ok" }) - calls(before, { ...charge, code: "ok" })).toBe(1);
    expect(calls(after, { ...charge, code: "invalid_argument" }) - calls(before, { ...charge, code: "invalid_argument" })).toBe(1);
    expect(sample(after, "boxoffice_rpc_server_seconds_count", { ...charge, code: "ok" })).toBeGreaterThan(0);
    // The payment service called the point service to debit.
    expect(sample(after, "boxoffice_rpc_client_calls_total", { service: "boxoffice.point.v1.PointInternalService", method: "UsePoints", code: "ok" })).toBeGreaterThan(0);
    // Per concert (the second fan is admitted within a tick or still waiting: either way one more in the room).
    const room = (name: string) => sample(after, name, { concert_id: concertId }) ?? 0;
    expect(room("boxoffice_queue_waiting") + room("boxoffice_queue_admitted")).toBeGreaterThanOrEqual(1);
    expect(sample(after, "boxoffice_queue_sold_out", { concert_id: concertId })).toBe(0);
    expect(sample(after, "boxoffice_queue_admissions_last_minute", { concert_id: concertId })).toBeGreaterThanOrEqual(1);
    // Sales and payments, by state.
    expect((sample(after, "boxoffice_seats", { state: "SOLD" }) ?? 0) - (sample(before, "boxoffice_seats", { state: "SOLD" }) ?? 0)).toBe(2);
    expect((sample(after, "boxoffice_payments", { state: "SUCCEEDED" }) ?? 0) - (sample(before, "boxoffice_payments", { state: "SUCCEEDED" }) ?? 0)).toBe(1);
    expect(sample(after, "boxoffice_holds", { state: "CONFIRMED" })).toBeGreaterThanOrEqual(1);
    // Stores and pools.
    expect(sample(after, "boxoffice_store_seconds_count", { store: "redis" })).toBeGreaterThan(sample(before, "boxoffice_store_seconds_count", { store: "redis" }) ?? 0);
    expect(sample(after, "boxoffice_store_seconds_count", { store: "postgresql", operation: "select" })).toBeGreaterThan(0);
    expect(sample(after, "boxoffice_db_pool_connections", { service: "point", state: "open" })).toBeGreaterThan(0);
    expect(sample(after, "boxoffice_nodejs_eventloop_lag_seconds")).toBeGreaterThanOrEqual(0);
  });
});

describe("GET /metrics on the embedded default (PGlite, the in-process waiting room)", () => {
  it("answers with the pools, the rooms and the calls", async () => {
    const embedded = await startTestSuite({ DATABASE_URL: "" });
    try {
      const { concertId } = await concertOnSale(embedded, [{ seatCount: 5, price: 100n }]);
      await client(embedded, QueueService).enterQueue({ concertId }, bearer((await newUser(embedded)).token));
      const res = await fetch(`${embedded.host.url}/metrics`, { headers: { authorization: `Bearer ${testSecrets.OPERATOR_KEY}` } });
      const text = await res.text();
      expect(res.status).toBe(200);
      expect(sample(text, "boxoffice_db_pool_connections", { service: "concert", state: "open" })).toBeGreaterThan(0);
      const room = (name: string) => sample(text, name, { concert_id: concertId }) ?? 0;
      expect(room("boxoffice_queue_waiting") + room("boxoffice_queue_admitted")).toBe(1);
      expect(sample(text, "boxoffice_rpc_server_calls_total", { service: "boxoffice.queue.v1.QueueService", method: "EnterQueue", code: "ok" })).toBe(1);
    } finally {
      await embedded.close();
    }
  }, 60_000);
});
