/**
 * The cost of a sale's draw as the pre-queue grows: fills a room's pre-queue
 * with N fans before the opening, freezes it with a tick at the opening, then
 * times the draw (read the frozen list, sort it by HMAC under the seed, place
 * it into the line in chunks). The record in PostgreSQL is left out: one insert.
 */
import { createHash, randomUUID } from "node:crypto";
import { commitmentOf } from "../../services/queue/draw.js";
import { SaleDraw } from "../../services/queue/draws.js";
import { MemoryQueueStore } from "../../services/queue/memory-store.js";
import { QueueTokens } from "../../services/queue/queue-tokens.js";
import { RedisQueueStore } from "../../services/queue/redis-store.js";
import type { Policy, QueueStore, RoomSettings } from "../../services/queue/store.js";
import { dropKeys } from "../redis-keys.js";

export interface DrawCost {
  store: string;
  prequeued: number;
  msToDraw: number;
  /** Microseconds per pre-queued fan. */
  usPerFan: number;
}

const policy: Policy = { maxActive: 0, ratePerMinute: 0, sessionTtlMs: 3_600_000, abandonAfterMs: 3_600_000, random: false };
const settings: RoomSettings = { paused: false, soldOut: false, closed: false, overrides: {}, version: 1 };

export async function measureDraws(redisUrl: string, sizes: number[]): Promise<DrawCost[]> {
  const prefix = `bench:${randomUUID()}:`;
  const stores: [string, () => QueueStore][] = [
    ["redis", () => new RedisQueueStore({ url: redisUrl }, prefix)],
    ["memory", () => new MemoryQueueStore()],
  ];
  const tokens = new QueueTokens("bench draw secret");
  const seed = createHash("sha256").update("bench draw seed").digest("hex");
  const costs: DrawCost[] = [];
  for (const [name, open] of stores) {
    for (const prequeued of sizes) {
      const store = open();
      const concertId = randomUUID();
      const opensAt = Date.now() + 3_600_000;
      try {
        await store.apply(concertId, settings);
        for (let start = 0; start < prequeued; start += 2_000) {
          const batch = Math.min(2_000, prequeued - start);
          await Promise.all(Array.from({ length: batch }, () => store.enter(concertId, randomUUID(), opensAt - 60_000, opensAt)));
        }
        const tick = await store.tick(concertId, policy, { now: opensAt, saleOpensAt: opensAt, supplyOpen: true, batch: 1_000, settings, stalledAfterMs: 60_000 });
        if (!tick.drawPending) throw new Error("the tick at the opening did not freeze the pre-queue");
        const draw = new SaleDraw(store, { record: async () => {} }, { sale: async () => ({ commitment: commitmentOf(seed), saleOpensAt: new Date(opensAt), seed }) }, tokens, () => opensAt);
        const started = performance.now();
        await draw.run(concertId);
        const ms = performance.now() - started;
        const counts = await store.counts(concertId, opensAt);
        if (counts.waiting !== prequeued) throw new Error(`the line holds ${counts.waiting} after the draw, expected ${prequeued}`);
        costs.push({ store: name, prequeued, msToDraw: ms, usPerFan: (1_000 * ms) / prequeued });
      } finally {
        await store.close();
      }
    }
  }
  await dropKeys(redisUrl, prefix);
  return costs;
}
