import type { MikroORM } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { openDatabase } from "../services/platform/database.js";
import { AdmissionWorker } from "../services/queue/admission.js";
import { queueModule } from "../services/queue/index.js";
import { MemoryQueueStore } from "../services/queue/memory-store.js";
import { RedisQueueStore } from "../services/queue/redis-store.js";
import { Rooms } from "../services/queue/rooms.js";
import type { Policy, QueueStore, Ticket, TickResult } from "../services/queue/store.js";
import type { Sale, Supply, SupplySource } from "../services/queue/supply.js";
import { startRedisCluster, type RedisCluster } from "./redis-cluster.js";
import { dropKeys } from "./redis-keys.js";

/**
 * Admission keeps up with the line: one tick of the admission worker admits
 * everyone the room may take (room in max_active, within rate_per_minute, the
 * backlog waiting), not one store step's batch, while each step stays one
 * bounded atomic call. On memory, Redis and a 3-master Redis Cluster this file
 * starts, with the rooms in PostgreSQL, the worker's defaults (batch 1,000).
 */

const redisUrl = "redis://127.0.0.1:6379";
const prefix = `test:admission-rate:${randomUUID()}:`;
/** Long enough that a tick's time bound on stepping (one tick's length) never cuts these ticks short on a busy machine. */
const tickMs = 2_000;
/** The worker's step size when none is given, which these ticks outgrow. */
const batch = 1_000;

const onSale: Sale = { published: true, cancelled: false, cancelReason: "", prequeueOpensAt: 0, saleOpensAt: 0, saleEndsAt: Number.MAX_SAFE_INTEGER };
const seats: Supply = { total: 1_000, available: 1_000, held: 0, sold: 0, sale: onSale };
/** Seats are always free here: the concert service is not what this test is about. */
const plenty: SupplySource = { of: async () => seats, exists: async () => {}, sale: async () => onSale, current: async () => seats, forget: () => {} };
const defaults: Policy = { maxActive: 200, ratePerMinute: 0, sessionTtlMs: 600_000, abandonAfterMs: 600_000, random: false };

interface Backend {
  name: string;
  open(): QueueStore;
  /** Another queue instance's store on the same state: a connection of its own for Redis, the same object for memory. */
  another(first: QueueStore): QueueStore;
}

let cluster: RedisCluster;
const backends: Backend[] = [
  { name: "memory", open: () => new MemoryQueueStore(), another: (first) => first },
  { name: "redis", open: () => new RedisQueueStore({ url: redisUrl }, prefix), another: () => new RedisQueueStore({ url: redisUrl }, prefix) },
  {
    name: "redis cluster",
    open: () => new RedisQueueStore({ clusterNodes: cluster.nodes }, prefix),
    another: () => new RedisQueueStore({ clusterNodes: cluster.nodes }, prefix),
  },
];

let orm: MikroORM;
beforeAll(async () => {
  [orm, cluster] = await Promise.all([openDatabase(queueModule.database!, { url: inject("databaseUrl"), poolSize: 2 }), startRedisCluster()]);
});
afterAll(async () => {
  await orm?.close();
  await cluster?.stop();
  await dropKeys(redisUrl, prefix);
});

/** The store with every tick step it is asked for recorded: what the step might move (its batch) and what it did. */
function recording(store: QueueStore) {
  const steps: { batch: number; moved: TickResult }[] = [];
  const recorded = new Proxy(store, {
    get(target, property) {
      if (property === "tick") {
        return async (...args: Parameters<QueueStore["tick"]>) => {
          const moved = await target.tick(...args);
          steps.push({ batch: args[2].batch, moved });
          return moved;
        };
      }
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store: recorded, steps };
}

describe.each(backends)("admission on the $name store", (backend) => {
  let store: QueueStore;
  const opened: QueueStore[] = [];
  // Each test's rooms apart from the others' (every worker ticks every room of its scope).
  let scope: string;
  let now: number;
  const clock = () => now;
  beforeAll(() => {
    store = backend.open();
  });
  afterAll(async () => {
    for (const other of opened) if (other !== store) await other.close();
    await store?.close();
  });

  /** A worker of one queue instance, on `on` (this store by default) and its own view of the rooms. */
  const worker = (on: QueueStore = store) => new AdmissionWorker(on, new Rooms(orm, scope), plenty, defaults, { tickMs, clock });

  /** A listed room with these overrides, its settings already in the store (as after a first tick); its id. */
  async function room(overrides: Partial<Policy>): Promise<string> {
    scope = `${prefix}${randomUUID()}:`;
    now = Date.now();
    const concertId = randomUUID();
    await store.apply(concertId, await new Rooms(orm, scope).change(concertId, { overrides }));
    return concertId;
  }

  /** `count` fans enter at once, 500 at a time; their tickets by seq. */
  async function enter(concertId: string, count: number, on: QueueStore = store): Promise<Ticket[]> {
    const tickets: Ticket[] = [];
    for (let start = 0; start < count; start += 500) {
      const users = Array.from({ length: Math.min(500, count - start) }, () => randomUUID());
      const entered = await Promise.all(users.map((userId) => on.enter(concertId, userId, now)));
      entered.forEach(({ seq }, i) => tickets.push({ userId: users[i]!, seq }));
    }
    return tickets.sort((a, b) => a.seq - b.seq);
  }

  const statesOf = async (concertId: string, tickets: Ticket[]) => (await store.views(concertId, tickets, now, false)).views.map((view) => view.state);

  it("with 5,000 waiting and room for 100,000, one tick admits all 5,000, in atomic steps of at most 1,000", async () => {
    const concertId = await room({ maxActive: 100_000 });
    const tickets = await enter(concertId, 5_000);
    const { store: recorded, steps } = recording(store);

    await worker(recorded).tick();
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 0, admitted: 5_000, admittedLastMinute: 5_000 });
    expect(new Set(await statesOf(concertId, tickets))).toEqual(new Set(["ADMITTED"]));
    // Five full steps, then one that found nobody left: no step moved more than its batch.
    expect(steps.map((step) => step.moved.admitted)).toEqual([1_000, 1_000, 1_000, 1_000, 1_000, 0]);
    expect(steps.every((step) => step.batch === batch)).toBe(true);
  });

  it("admits nobody in the tick that restores a room's settings into an empty store, then the whole backlog at the next", async () => {
    scope = `${prefix}${randomUUID()}:`;
    now = Date.now();
    const concertId = randomUUID();
    await new Rooms(orm, scope).change(concertId, { overrides: { maxActive: 100_000 } });
    const tickets = await enter(concertId, 3_000);
    const { store: recorded, steps } = recording(store);
    const instance = worker(recorded);

    await instance.tick();
    expect(steps.map((step) => [step.moved.admitted, step.moved.restored])).toEqual([[0, true]]);
    expect((await store.counts(concertId, now)).waiting).toBe(3_000);
    now += tickMs;
    await instance.tick();
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 0, admitted: 3_000 });
    expect(new Set(await statesOf(concertId, tickets))).toEqual(new Set(["ADMITTED"]));
  });

  it("stays within max_active: 5,000 waiting and room for 2,500 admits the first 2,500, then nobody until sessions end", async () => {
    const concertId = await room({ maxActive: 2_500 });
    const tickets = await enter(concertId, 5_000);
    const instance = worker();

    await instance.tick();
    now += tickMs;
    await instance.tick();
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 2_500, admitted: 2_500 });
    expect(await statesOf(concertId, tickets)).toEqual([...Array<string>(2_500).fill("ADMITTED"), ...Array<string>(2_500).fill("WAITING")]);
  });

  it("stays within rate_per_minute: 1,500 a minute admits 1,500 of 5,000 at once, the next 1,500 a minute later", async () => {
    const concertId = await room({ maxActive: 100_000, ratePerMinute: 1_500 });
    await enter(concertId, 5_000);
    const instance = worker();

    await instance.tick();
    now += 30_000;
    await instance.tick();
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 3_500, admitted: 1_500, admittedLastMinute: 1_500 });
    now += 30_001;
    await instance.tick();
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 2_000, admitted: 3_000, admittedLastMinute: 1_500 });
  });

  it("ends every run-out session in one tick and fills their places from the line", async () => {
    const concertId = await room({ maxActive: 2_500, sessionTtlMs: 60_000 });
    const tickets = await enter(concertId, 6_000);
    const instance = worker();

    await instance.tick();
    now += 60_000; // the first 2,500 sessions run out: the next 2,500 take their places
    await instance.tick();
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 1_000, admitted: 2_500 });
    const states = await statesOf(concertId, tickets);
    expect(states).toEqual([...Array<string>(2_500).fill("EXPIRED"), ...Array<string>(2_500).fill("ADMITTED"), ...Array<string>(1_000).fill("WAITING")]);
  });

  it("by lot (the random method), admits distinct fans up to max_active in one tick", async () => {
    const concertId = await room({ maxActive: 2_500, random: true });
    const tickets = await enter(concertId, 4_000);

    await worker().tick();
    const states = await statesOf(concertId, tickets);
    expect(states.filter((state) => state === "ADMITTED")).toHaveLength(2_500);
    expect(states.filter((state) => state === "WAITING")).toHaveLength(1_500);
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 1_500, admitted: 2_500 });
  });

  it("two queue instances ticking at once, while fans keep entering, admit exactly max_active, in line order", async () => {
    const concertId = await room({ maxActive: 3_500 });
    const other = backend.another(store);
    opened.push(other);
    const first = await enter(concertId, 5_000);
    const [a, b] = [worker(store), worker(other)];

    const [, , later] = await Promise.all([a.tick(), b.tick(), enter(concertId, 2_000, other)]);
    await Promise.all([a.tick(), b.tick()]);
    expect(await store.counts(concertId, now)).toMatchObject({ waiting: 3_500, admitted: 3_500 });
    // FIFO across both: whoever entered first was admitted, whichever instance's step it was.
    const states = await statesOf(concertId, [...first, ...later].sort((x, y) => x.seq - y.seq));
    expect(states).toEqual([...Array<string>(3_500).fill("ADMITTED"), ...Array<string>(3_500).fill("WAITING")]);
  });
});
