/**
 * The cost of one admission tick as the line grows: fills a room with N
 * waiting fans, then times ticks that each admit the same number of fans.
 * When the tick's cost follows the fans it moves and not the line's length,
 * the time per tick stays flat from 1,000 to 1,000,000 waiting.
 */
import { randomUUID } from "node:crypto";
import { MemoryQueueStore } from "../../services/queue/memory-store.js";
import { RedisQueueStore } from "../../services/queue/redis-store.js";
import type { Policy, QueueStore } from "../../services/queue/store.js";
import { dropKeys } from "../redis-keys.js";

export interface TickCost {
  store: string;
  waiting: number;
  admittedPerTick: number;
  msPerTick: number;
}

const perTick = 100;
const rounds = 20;

async function fill(store: QueueStore, concertId: string, fans: number) {
  const now = Date.now();
  for (let start = 0; start < fans; start += 2_000) {
    const batch = Math.min(2_000, fans - start);
    await Promise.all(Array.from({ length: batch }, () => store.enter(concertId, randomUUID(), now)));
  }
}

async function timeTicks(store: QueueStore, concertId: string): Promise<number> {
  let policy: Policy = { maxActive: 0, ratePerMinute: 0, sessionTtlMs: 3_600_000, abandonAfterMs: 3_600_000, random: false };
  let total = 0;
  for (let round = 0; round < rounds; round++) {
    policy = { ...policy, maxActive: policy.maxActive + perTick };
    const started = performance.now();
    const result = await store.tick(concertId, policy, { now: Date.now(), supplyOpen: true, batch: 1_000, settings: { paused: false, soldOut: false, closed: false, overrides: {}, version: 1 }, stalledAfterMs: 60_000 });
    total += performance.now() - started;
    if (result.admitted !== perTick) throw new Error(`a tick admitted ${result.admitted}, expected ${perTick}`);
  }
  return total / rounds;
}

export async function measureAdmissionTicks(redisUrl: string, sizes: number[]): Promise<TickCost[]> {
  const prefix = `bench:${randomUUID()}:`;
  const stores: [string, () => QueueStore][] = [
    ["redis", () => new RedisQueueStore({ url: redisUrl }, prefix)],
    ["memory", () => new MemoryQueueStore()],
  ];
  const costs: TickCost[] = [];
  for (const [name, open] of stores) {
    for (const waiting of sizes) {
      const store = open();
      const concertId = randomUUID();
      try {
        await fill(store, concertId, waiting + perTick * rounds);
        costs.push({ store: name, waiting, admittedPerTick: perTick, msPerTick: await timeTicks(store, concertId) });
      } finally {
        await store.close();
      }
    }
  }
  await dropKeys(redisUrl, prefix);
  return costs;
}
