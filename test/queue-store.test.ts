import { randomUUID } from "node:crypto";
import { dropKeys } from "./redis-keys.js";
import { startRedisCluster, type RedisCluster } from "./redis-cluster.js";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { MemoryQueueStore } from "../services/queue/memory-store.js";
import { RedisQueueStore } from "../services/queue/redis-store.js";
import type { EntryView, Pace, Policy, QueueStore, RoomSettings, Ticket, TickInput } from "../services/queue/store.js";
import { watchLogs } from "../services/platform/log.js";

/**
 * The QueueStore contract (services/queue/store.ts), run against both
 * implementations: in-process memory and real Redis, one server and a 3-master
 * Redis Cluster this file starts. Times are explicit epoch milliseconds, so
 * nothing here sleeps.
 */

const redisUrl = "redis://127.0.0.1:6379";
const keyPrefix = `test:${randomUUID()}:`;

interface Backend {
  name: string;
  /** A store for the tests. */
  open(): QueueStore;
  /** A second caller of the same state: another connection (another service instance) for Redis, the same object for memory. */
  another(first: QueueStore): QueueStore;
}

const backends: Backend[] = [
  { name: "memory", open: () => new MemoryQueueStore(), another: (first) => first },
  { name: "redis", open: () => new RedisQueueStore({ url: redisUrl }, keyPrefix), another: () => new RedisQueueStore({ url: redisUrl }, keyPrefix) },
  {
    name: "redis cluster",
    open: () => new RedisQueueStore({ clusterNodes: cluster.nodes }, keyPrefix),
    another: () => new RedisQueueStore({ clusterNodes: cluster.nodes }, keyPrefix),
  },
];

let cluster: RedisCluster;
beforeAll(async () => {
  cluster = await startRedisCluster();
});
afterAll(async () => {
  await dropKeys(redisUrl, keyPrefix);
  await cluster?.stop(); // and its keys with it
});

const defaults: Policy = { maxActive: 3, ratePerMinute: 0, sessionTtlMs: 60_000, abandonAfterMs: 120_000, random: false };
/** The settings PostgreSQL gives a room nobody configured: the store's copy is made from them at the first tick. */
const plain: RoomSettings = { paused: false, soldOut: false, closed: false, overrides: {}, version: 1 };
/** Ticks here jump minutes at a time; only the test of an outage's grace uses a real stall bound. */
const neverStalled = 86_400_000;
const open = (now: number, settings = plain): TickInput => ({ now, supplyOpen: true, batch: 1000, settings, stalledAfterMs: neverStalled });
const closed = (now: number, settings = plain): TickInput => ({ now, supplyOpen: false, batch: 1000, settings, stalledAfterMs: neverStalled });

/** A view in a short readable form: "WAITING 2", "ADMITTED", "EXPIRED"… */
const brief = (view: EntryView) => (view.state === "WAITING" ? `WAITING ${view.position}` : view.state);

describe.each(backends)("QueueStore contract: $name", (backend) => {
  let store: QueueStore;
  const extraStores: QueueStore[] = [];
  /** The room's pace; of the session ends, only what every store gives: the first and the last. */
  const paceOf = async (concertId: string, now: number) => withEnds((await store.views(concertId, [], now, false)).pace);
  const withEnds = (pace: Pace) => ({ ...pace, sessionEndsSample: pace.sessionEndsSample.length > 1 ? [pace.sessionEndsSample[0], pace.sessionEndsSample.at(-1)] : pace.sessionEndsSample });
  beforeAll(() => {
    store = backend.open();
  });
  afterAll(async () => {
    for (const extra of extraStores) if (extra !== store) await extra.close();
    await store?.close();
  });

  /** Enters `count` new fans one after the other at `now`; their tickets in line order. */
  async function line(concertId: string, count: number, now: number): Promise<Ticket[]> {
    // The room's settings, as the first tick of a listed room gives them (a room admits from the tick after that).
    await store.apply(concertId, plain);
    const tickets: Ticket[] = [];
    for (let i = 0; i < count; i++) {
      const userId = randomUUID();
      const { seq } = await store.enter(concertId, userId, now);
      tickets.push({ userId, seq });
    }
    return tickets;
  }

  /** Where each ticket stands (view() without touching), briefly. */
  async function where(concertId: string, tickets: Ticket[], now: number): Promise<string[]> {
    const views = await Promise.all(tickets.map((ticket) => store.view(concertId, ticket, now, false)));
    return views.map(brief);
  }

  describe("enter", () => {
    it("gives the first fan seq 1 at position 1 and queues later fans behind with rising seqs", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const entered = [];
      for (let i = 0; i < 3; i++) entered.push(await store.enter(concertId, randomUUID(), t0 + i));
      expect(entered).toMatchObject([
        { seq: 1, view: { state: "WAITING", position: 1, admittedUntil: 0 } },
        { seq: 2, view: { state: "WAITING", position: 2, admittedUntil: 0 } },
        { seq: 3, view: { state: "WAITING", position: 3, admittedUntil: 0 } },
      ]);
    });

    it("returns the same waiting entry when a waiting fan enters again", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [a, b] = await line(concertId, 2, t0);
      expect(await store.enter(concertId, a!.userId, t0 + 1_000)).toMatchObject({
        seq: a!.seq,
        view: { state: "WAITING", position: 1, admittedUntil: 0 },
      });
      expect(await store.enter(concertId, b!.userId, t0 + 2_000)).toMatchObject({
        seq: b!.seq,
        view: { state: "WAITING", position: 2, admittedUntil: 0 },
      });
      const stats = await store.counts(concertId, t0 + 2_000);
      expect([stats.waiting, stats.admitted]).toEqual([2, 0]);
    });

    it("returns the same admitted session when an admitted fan enters again", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [a] = await line(concertId, 1, t0);
      await store.tick(concertId, defaults, open(t0));
      expect(await store.enter(concertId, a!.userId, t0 + 1_000)).toMatchObject({
        seq: a!.seq,
        view: { state: "ADMITTED", position: 0, admittedUntil: t0 + defaults.sessionTtlMs },
      });
      const stats = await store.counts(concertId, t0 + 1_000);
      expect([stats.waiting, stats.admitted]).toEqual([0, 1]);
    });

    it("puts nobody in line twice under 1,000 concurrent entries, and re-entering concurrently keeps every seq", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const users = Array.from({ length: 1_000 }, () => randomUUID());
      const first = await Promise.all(users.map((userId) => store.enter(concertId, userId, t0)));
      const sorted = (values: number[]) => [...values].sort((x, y) => x - y);
      const oneTo1000 = Array.from({ length: 1_000 }, (_, i) => i + 1);
      expect(sorted(first.map((e) => e.seq))).toEqual(oneTo1000);
      expect(sorted(first.map((e) => e.view.position))).toEqual(oneTo1000);
      expect(first.every((e) => e.view.state === "WAITING" && e.view.position === e.seq)).toBe(true);

      const again = await Promise.all(users.map((userId) => store.enter(concertId, userId, t0 + 1_000)));
      expect(again.map((e) => e.seq)).toEqual(first.map((e) => e.seq));
      expect(again.map((e) => e.view.position)).toEqual(first.map((e) => e.view.position));
      expect((await store.counts(concertId, t0 + 1_000)).waiting).toBe(1_000);
    });
  });

  describe("entering again after the entry ended", () => {
    const oneSlot: Policy = { ...defaults, maxActive: 1 };
    /** Ways the head fan's entry ends; each returns when (ms after t0) it is over. */
    const endings: { how: string; end(concertId: string, head: Ticket, t0: number): Promise<number> }[] = [
      {
        how: "left while waiting",
        end: async (concertId, head, t0) => {
          await store.leave(concertId, head, t0 + 1_000);
          return 1_000;
        },
      },
      {
        how: "left while admitted",
        end: async (concertId, head, t0) => {
          await store.tick(concertId, oneSlot, open(t0));
          await store.leave(concertId, head, t0 + 1_000);
          return 1_000;
        },
      },
      {
        how: "completed",
        end: async (concertId, head, t0) => {
          await store.tick(concertId, oneSlot, open(t0));
          expect(await store.complete(concertId, head.userId, t0 + 1_000)).toBe(true);
          return 1_000;
        },
      },
      {
        how: "session ran out",
        end: async (concertId, _head, t0) => {
          await store.tick(concertId, oneSlot, open(t0));
          return oneSlot.sessionTtlMs;
        },
      },
    ];

    it.each(endings)("gives a fan whose entry $how a new seq at the back; the old ticket reads EXPIRED", async ({ end }) => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [a, b, c] = await line(concertId, 3, t0);
      const after = t0 + (await end(concertId, a!, t0));

      const again = await store.enter(concertId, a!.userId, after);
      expect(again.seq).toBeGreaterThan(c!.seq);
      expect(again.view).toEqual({ state: "WAITING", position: 3, admittedUntil: 0 });
      expect(await store.view(concertId, a!, after, false)).toEqual({ state: "EXPIRED", position: 0, admittedUntil: 0 });
      expect(await where(concertId, [b!, c!, { userId: a!.userId, seq: again.seq }], after)).toEqual([
        "WAITING 1",
        "WAITING 2",
        "WAITING 3",
      ]);
    });
  });

  describe("view", () => {
    it("moves the fans behind up when someone ahead leaves", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 4, t0);
      expect(await where(concertId, tickets, t0)).toEqual(["WAITING 1", "WAITING 2", "WAITING 3", "WAITING 4"]);
      await store.leave(concertId, tickets[1]!, t0 + 1_000);
      expect(await where(concertId, tickets, t0 + 1_000)).toEqual(["WAITING 1", "LEFT", "WAITING 2", "WAITING 3"]);
    });

    it("moves the fans behind up when the head is admitted", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 3, t0);
      await store.tick(concertId, { ...defaults, maxActive: 1 }, open(t0 + 1_000));
      expect(await where(concertId, tickets, t0 + 1_000)).toEqual(["ADMITTED", "WAITING 1", "WAITING 2"]);
    });

    it("reads EXPIRED for a ticket whose seq is not the user's entry, and LOST for an unknown user or room", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [a, b] = await line(concertId, 2, t0);
      const expired: EntryView = { state: "EXPIRED", position: 0, admittedUntil: 0 };
      expect(await store.view(concertId, { userId: a!.userId, seq: b!.seq }, t0, false)).toEqual(expired);
      expect(await store.view(concertId, { userId: a!.userId, seq: 999 }, t0, false)).toEqual(expired);
      const lost: EntryView = { state: "LOST", position: 0, admittedUntil: 0 };
      expect(await store.view(concertId, { userId: randomUUID(), seq: a!.seq }, t0, false)).toEqual(lost);
      expect(await store.view(randomUUID(), a!, t0, false)).toEqual(lost);
      // The real ticket still reads as waiting.
      expect(await store.view(concertId, a!, t0, false)).toEqual({ state: "WAITING", position: 1, admittedUntil: 0 });
    });
  });

  describe("tick", () => {
    it("admits from the head in FIFO order, never more than maxActive at once", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 5, t0);
      expect(await store.tick(concertId, defaults, open(t0 + 1_000))).toMatchObject({ admitted: 3, expired: 0, abandoned: 0 });
      expect(await where(concertId, tickets, t0 + 1_000)).toEqual(["ADMITTED", "ADMITTED", "ADMITTED", "WAITING 1", "WAITING 2"]);
      expect(await store.view(concertId, tickets[0]!, t0 + 1_000, false)).toEqual({
        state: "ADMITTED",
        position: 0,
        admittedUntil: t0 + 1_000 + defaults.sessionTtlMs,
      });

      expect((await store.tick(concertId, defaults, open(t0 + 2_000))).admitted).toBe(0);
      const late = await store.enter(concertId, randomUUID(), t0 + 3_000);
      expect(late.view).toEqual({ state: "WAITING", position: 3, admittedUntil: 0 });
      const stats = await store.counts(concertId, t0 + 3_000);
      expect([stats.waiting, stats.admitted]).toEqual([3, 3]);
    });

    it("admits nobody while supply is closed", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 2, t0);
      expect((await store.tick(concertId, defaults, closed(t0 + 1_000))).admitted).toBe(0);
      expect(await where(concertId, tickets, t0 + 1_000)).toEqual(["WAITING 1", "WAITING 2"]);
      expect((await store.tick(concertId, defaults, open(t0 + 2_000))).admitted).toBe(2);
    });

    it("admits nobody while paused and admits again once resumed", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 2, t0);
      await store.apply(concertId, { ...plain, paused: true, version: 2 });
      expect((await store.tick(concertId, defaults, open(t0 + 1_000))).admitted).toBe(0);
      expect(await where(concertId, tickets, t0 + 1_000)).toEqual(["WAITING 1", "WAITING 2"]);
      expect((await paceOf(concertId, t0 + 1_000)).paused).toBe(true);

      expect((await store.tick(concertId, defaults, open(t0 + 2_000, { ...plain, paused: false, version: 3 }))).admitted).toBe(2);
      expect((await paceOf(concertId, t0 + 2_000)).paused).toBe(false);
    });

    it("admits no more than ratePerMinute in any 60 s window", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const rated: Policy = { ...defaults, maxActive: 100, ratePerMinute: 2, sessionTtlMs: 600_000, abandonAfterMs: 600_000, random: false };
      const tickets = await line(concertId, 10, t0);
      const admittedAt = async (at: number) => (await store.tick(concertId, rated, open(at))).admitted;

      expect(await admittedAt(t0)).toBe(2);
      expect(await admittedAt(t0 + 10_000)).toBe(0);
      expect(await admittedAt(t0 + 61_000)).toBe(2);
      // [t0+41 s, t0+101 s] already holds the two admissions of t0+61 s.
      expect(await admittedAt(t0 + 101_000)).toBe(0);
      expect(await admittedAt(t0 + 122_000)).toBe(2);
      expect(await where(concertId, tickets, t0 + 122_000)).toEqual([
        ...Array<string>(6).fill("ADMITTED"),
        "WAITING 1",
        "WAITING 2",
        "WAITING 3",
        "WAITING 4",
      ]);
    });

    it("moves at most `batch` entries per step in one tick", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const roomy: Policy = { ...defaults, maxActive: 10 };
      const tickets = await line(concertId, 7, t0);
      const step = (now: number, supplyOpen: boolean) => store.tick(concertId, roomy, { now, supplyOpen, batch: 2, settings: plain, stalledAfterMs: neverStalled });
      expect(await step(t0, true)).toEqual({ admitted: 2, expired: 0, abandoned: 0, restored: false, drawPending: false });
      expect(await step(t0 + 1, true)).toEqual({ admitted: 2, expired: 0, abandoned: 0, restored: false, drawPending: false });
      expect(await where(concertId, tickets, t0 + 1)).toEqual([
        ...Array<string>(4).fill("ADMITTED"),
        "WAITING 1",
        "WAITING 2",
        "WAITING 3",
      ]);
      // Later, four sessions have run out and three waiting fans are silent past abandonAfterMs.
      expect(await step(t0 + 130_000, false)).toEqual({ admitted: 0, expired: 2, abandoned: 2, restored: false, drawPending: false });
      expect(await step(t0 + 130_001, false)).toEqual({ admitted: 0, expired: 2, abandoned: 1, restored: false, drawPending: false });
      expect(await step(t0 + 130_002, false)).toEqual({ admitted: 0, expired: 0, abandoned: 0, restored: false, drawPending: false });
    });

    it("admits exactly the first maxActive by seq from a line of 5,000", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets: Ticket[] = [];
      await store.apply(concertId, plain);
      for (let chunk = 0; chunk < 10; chunk++) {
        const users = Array.from({ length: 500 }, () => randomUUID());
        const entered = await Promise.all(users.map((userId) => store.enter(concertId, userId, t0)));
        entered.forEach((e, i) => tickets.push({ userId: users[i]!, seq: e.seq }));
      }
      tickets.sort((x, y) => x.seq - y.seq);
      const policy: Policy = { ...defaults, maxActive: 10 };

      expect(await store.tick(concertId, policy, open(t0 + 1_000))).toMatchObject({ admitted: 10, expired: 0, abandoned: 0 });
      const { views } = await store.views(concertId, tickets, t0 + 1_000, false);
      expect(views.slice(0, 10).map(brief)).toEqual(Array(10).fill("ADMITTED"));
      expect(views.slice(10).map(brief)).toEqual(Array.from({ length: 4_990 }, (_, i) => `WAITING ${i + 1}`));
      expect(await store.view(concertId, tickets[10]!, t0 + 1_000, false)).toEqual({ state: "WAITING", position: 1, admittedUntil: 0 });
      const stats = await store.counts(concertId, t0 + 1_000);
      expect([stats.waiting, stats.admitted]).toEqual([4_990, 10]);
    });

    it("admits a step larger than one command's arguments whole (5,000 in one step of a batch of 5,000), with every session and pace", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      await store.apply(concertId, plain);
      const users = Array.from({ length: 5_000 }, () => randomUUID());
      const entered = await Promise.all(users.map((userId) => store.enter(concertId, userId, t0)));
      const tickets = entered.map((e, i) => ({ userId: users[i]!, seq: e.seq }));
      const policy: Policy = { ...defaults, maxActive: 100_000 };

      expect(await store.tick(concertId, policy, { ...open(t0 + 1_000), batch: 5_000 })).toMatchObject({ admitted: 5_000 });
      const { views, pace } = await store.views(concertId, tickets, t0 + 1_000, false);
      expect(views.every((view) => view.state === "ADMITTED" && view.admittedUntil === t0 + 1_000 + policy.sessionTtlMs)).toBe(true);
      expect(pace).toMatchObject({ admittedLastMinute: 5_000, admitted: 5_000, firstAdmissionAt: t0 + 1_000 });
      expect(await store.counts(concertId, t0 + 1_000)).toMatchObject({ waiting: 0, admitted: 5_000, admittedLastMinute: 5_000 });
    });

    it("keeps admissions FIFO and within maxActive when two callers tick concurrently", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const a = store;
      const b = backend.another(store);
      extraStores.push(b);
      const policy: Policy = { maxActive: 5, ratePerMinute: 0, sessionTtlMs: 3_600_000, abandonAfterMs: 3_600_000, random: false };
      let live = await line(concertId, 200, t0); // not left nor completed, in seq order
      const everAdmitted = new Set<string>();
      let admittedByTicks = 0;
      let admittedNow: Ticket[] = [];

      for (let round = 0; round < 50; round++) {
        const now = t0 + (round + 1) * 1_000;
        const ended: Ticket[] = [];
        const work: Promise<unknown>[] = [];
        // Some sessions end while both instances tick: a completion, every third round a leave of an admitted fan.
        if (admittedNow[0]) {
          const done = admittedNow[0];
          ended.push(done);
          work.push(a.complete(concertId, done.userId, now).then((ok) => expect(ok).toBe(true)));
        }
        if (round % 3 === 0 && admittedNow[1]) {
          ended.push(admittedNow[1]);
          work.push(b.leave(concertId, admittedNow[1], now));
        }
        // A waiting fan at the back gives up (too far back to be admitted this round).
        const last = live[live.length - 1]!;
        ended.push(last);
        work.push((round % 2 ? a : b).leave(concertId, last, now));

        const ticks = Promise.all([a.tick(concertId, policy, open(now)), b.tick(concertId, policy, open(now))]);
        const [[ra, rb]] = await Promise.all([ticks, Promise.all(work)]);
        admittedByTicks += ra.admitted + rb.admitted;
        live = live.filter((t) => !ended.includes(t));

        const shown = (await Promise.all(live.map((t) => a.view(concertId, t, now, false)))).map(brief);
        const admittedCount = shown.filter((s) => s === "ADMITTED").length;
        expect(admittedCount, `round ${round}`).toBeLessThanOrEqual(5);
        // The admitted are exactly the head of the line of those still in it; the rest wait in order behind.
        expect(shown, `round ${round}`).toEqual([
          ...Array<string>(admittedCount).fill("ADMITTED"),
          ...Array.from({ length: live.length - admittedCount }, (_, i) => `WAITING ${i + 1}`),
        ]);
        const stats = await b.counts(concertId, now);
        expect([stats.admitted, stats.waiting], `round ${round}`).toEqual([admittedCount, live.length - admittedCount]);

        admittedNow = live.slice(0, admittedCount);
        for (const t of admittedNow) everAdmitted.add(t.userId);
      }
      // No fan was admitted twice (by both instances), and slots were refilled.
      expect(admittedByTicks).toBe(everAdmitted.size);
      expect(everAdmitted.size).toBeGreaterThan(50);
    });
  });

  describe("session expiry", () => {
    it("reads an admitted session as EXPIRED once now reaches admittedUntil, without a tick", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [a] = await line(concertId, 1, t0);
      await store.tick(concertId, defaults, open(t0));
      const until = t0 + defaults.sessionTtlMs;
      expect(await store.view(concertId, a!, until - 1, false)).toEqual({ state: "ADMITTED", position: 0, admittedUntil: until });
      expect(await store.view(concertId, a!, until, false)).toEqual({ state: "EXPIRED", position: 0, admittedUntil: 0 });
    });

    it("frees a run-out session's slot on the next tick so the next fan is admitted", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const oneSlot: Policy = { ...defaults, maxActive: 1 };
      const [a, b] = await line(concertId, 2, t0);
      await store.tick(concertId, oneSlot, open(t0));
      const until = t0 + oneSlot.sessionTtlMs;

      expect(await store.tick(concertId, oneSlot, open(until - 1))).toMatchObject({ admitted: 0, expired: 0, abandoned: 0 });
      const first = await store.tick(concertId, oneSlot, open(until));
      expect(first.expired).toBe(1);
      const second = await store.tick(concertId, oneSlot, open(until + 1));
      expect(second.expired).toBe(0);
      expect(first.admitted + second.admitted).toBe(1);
      expect(await where(concertId, [a!, b!], until + 1)).toEqual(["EXPIRED", "ADMITTED"]);
      const stats = await store.counts(concertId, until + 1);
      expect([stats.waiting, stats.admitted]).toEqual([0, 1]);
    });
  });

  describe("leave", () => {
    it("gives a waiting fan's place up and the fans behind move up", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 3, t0);
      expect(await store.leave(concertId, tickets[0]!, t0 + 1_000)).toEqual({ state: "LEFT", position: 0, admittedUntil: 0 });
      expect(await where(concertId, tickets, t0 + 1_000)).toEqual(["LEFT", "WAITING 1", "WAITING 2"]);
      expect((await store.counts(concertId, t0 + 1_000)).waiting).toBe(2);
    });

    it("frees an admitted fan's slot at once", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const oneSlot: Policy = { ...defaults, maxActive: 1 };
      const [a, b] = await line(concertId, 2, t0);
      await store.tick(concertId, oneSlot, open(t0));
      expect(await store.leave(concertId, a!, t0 + 1_000)).toEqual({ state: "LEFT", position: 0, admittedUntil: 0 });
      expect((await store.counts(concertId, t0 + 1_000)).admitted).toBe(0);
      expect((await store.tick(concertId, oneSlot, open(t0 + 2_000))).admitted).toBe(1);
      expect(await where(concertId, [a!, b!], t0 + 2_000)).toEqual(["LEFT", "ADMITTED"]);
    });

    it("is harmless when repeated, and a stale ticket does not end the fan's new entry", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [a, b] = await line(concertId, 2, t0);
      await store.leave(concertId, a!, t0 + 1_000);
      expect((await store.leave(concertId, a!, t0 + 2_000)).state).toBe("LEFT");
      expect(await where(concertId, [a!, b!], t0 + 2_000)).toEqual(["LEFT", "WAITING 1"]);
      expect((await store.counts(concertId, t0 + 2_000)).waiting).toBe(1);

      const again = await store.enter(concertId, a!.userId, t0 + 3_000);
      await store.leave(concertId, a!, t0 + 4_000);
      expect(await where(concertId, [b!, { userId: a!.userId, seq: again.seq }], t0 + 4_000)).toEqual(["WAITING 1", "WAITING 2"]);
    });
  });

  describe("complete", () => {
    it("ends an admitted session as COMPLETED and frees the slot", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const oneSlot: Policy = { ...defaults, maxActive: 1 };
      const [a, b] = await line(concertId, 2, t0);
      await store.tick(concertId, oneSlot, open(t0));
      expect(await store.complete(concertId, a!.userId, t0 + 1_000)).toBe(true);
      expect(await store.view(concertId, a!, t0 + 1_000, false)).toEqual({ state: "COMPLETED", position: 0, admittedUntil: 0 });
      expect((await store.counts(concertId, t0 + 1_000)).admitted).toBe(0);
      expect((await store.tick(concertId, oneSlot, open(t0 + 2_000))).admitted).toBe(1);
      expect(await where(concertId, [b!], t0 + 2_000)).toEqual(["ADMITTED"]);
    });

    it("returns false when the user has no admitted session", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const oneSlot: Policy = { ...defaults, maxActive: 1 };
      const [a, b, c] = await line(concertId, 3, t0);
      await store.tick(concertId, oneSlot, open(t0));

      expect(await store.complete(concertId, b!.userId, t0 + 1_000)).toBe(false); // waiting
      expect(await store.complete(concertId, randomUUID(), t0 + 1_000)).toBe(false); // unknown
      expect(await store.complete(randomUUID(), a!.userId, t0 + 1_000)).toBe(false); // other room
      expect(await where(concertId, [a!, b!, c!], t0 + 1_000)).toEqual(["ADMITTED", "WAITING 1", "WAITING 2"]);

      expect(await store.complete(concertId, a!.userId, t0 + 2_000)).toBe(true);
      expect(await store.complete(concertId, a!.userId, t0 + 3_000)).toBe(false); // already completed

      await store.tick(concertId, oneSlot, open(t0 + 4_000)); // admits b until t0 + 64 s
      expect(await store.complete(concertId, b!.userId, t0 + 4_000 + oneSlot.sessionTtlMs)).toBe(false); // ran out
    });
  });

  describe("abandonment", () => {
    // One admitted fan holds the only slot for long, so the waiting stay waiting.
    const held: Policy = { maxActive: 1, ratePerMinute: 0, sessionTtlMs: 600_000, abandonAfterMs: 120_000, random: false };

    it("drops waiting fans silent past abandonAfterMs and the line closes up; touched fans stay", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [holder] = await line(concertId, 1, t0);
      await store.tick(concertId, held, open(t0));
      const [silent, viewed, peeked, batched, reentered] = await line(concertId, 5, t0);

      await store.view(concertId, viewed!, t0 + 100_000, true);
      await store.views(concertId, [batched!], t0 + 100_000, true);
      await store.enter(concertId, reentered!.userId, t0 + 100_000);
      await store.view(concertId, peeked!, t0 + 110_000, false); // not presence
      await store.views(concertId, [peeked!], t0 + 110_000, false); // not presence

      expect(await store.tick(concertId, held, open(t0 + 130_000))).toMatchObject({ admitted: 0, expired: 0, abandoned: 2 });
      expect(await where(concertId, [holder!, silent!, viewed!, peeked!, batched!, reentered!], t0 + 130_000)).toEqual([
        "ADMITTED",
        "EXPIRED",
        "WAITING 1",
        "EXPIRED",
        "WAITING 2",
        "WAITING 3",
      ]);
      const stats = await store.counts(concertId, t0 + 130_000);
      expect([stats.waiting, stats.admitted, stats.abandoned]).toEqual([3, 1, 2]);

      // The kept fans were present at t0 + 100 s: they go 120 s later.
      expect((await store.tick(concertId, held, open(t0 + 230_000))).abandoned).toBe(3);
      expect((await store.counts(concertId, t0 + 230_000)).abandoned).toBe(5);
    });

    it("lets an abandoned fan enter again with a new seq at the back", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [holder] = await line(concertId, 1, t0);
      await store.tick(concertId, held, open(t0));
      const [gone] = await line(concertId, 1, t0);
      const [stayer] = await line(concertId, 1, t0 + 100_000);
      await store.tick(concertId, held, open(t0 + 130_000));

      const again = await store.enter(concertId, gone!.userId, t0 + 131_000);
      expect(again.seq).toBeGreaterThan(stayer!.seq);
      expect(again.view).toEqual({ state: "WAITING", position: 2, admittedUntil: 0 });
      expect(await where(concertId, [holder!, gone!, stayer!], t0 + 131_000)).toEqual(["ADMITTED", "EXPIRED", "WAITING 1"]);
    });
  });

  describe("views and pace", () => {
    it("returns each ticket's view in the order asked, the same as view()", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 5, t0);
      await store.tick(concertId, { ...defaults, maxActive: 2 }, open(t0 + 1_000));
      await store.leave(concertId, tickets[2]!, t0 + 2_000);
      const asked = [
        tickets[4]!,
        { userId: randomUUID(), seq: 1 },
        tickets[0]!,
        tickets[2]!,
        { userId: tickets[3]!.userId, seq: tickets[1]!.seq },
        tickets[3]!,
        tickets[1]!,
      ];
      const { views } = await store.views(concertId, asked, t0 + 3_000, false);
      const one = await Promise.all(asked.map((t) => store.view(concertId, t, t0 + 3_000, false)));
      expect(views).toEqual(one);
      expect(views.map(brief)).toEqual(["WAITING 2", "LOST", "ADMITTED", "LEFT", "EXPIRED", "WAITING 1", "ADMITTED"]);
    });

    it("reports admissions of the last minute (how many, oldest, newest), the first admission, sessions admitted, supply, pause and overrides", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const roomy: Policy = { ...defaults, maxActive: 10, sessionTtlMs: 600_000, abandonAfterMs: 600_000, random: false };
      const [a] = await line(concertId, 5, t0);
      const none = { admittedLastMinute: 0, recentSample: [], firstAdmissionAt: 0, admitted: 0, sessionEndsSample: [], paused: false, supplyOpen: true, draw: "OPEN", prequeuedUpTo: 0, overrides: {} };
      expect(await paceOf(concertId, t0)).toEqual(none);

      await store.tick(concertId, { ...roomy, maxActive: 2 }, open(t0 + 5_000));
      await store.tick(concertId, { ...roomy, maxActive: 3 }, open(t0 + 35_000));
      const ends = [t0 + 605_000, t0 + 635_000];
      const at40 = { ...none, admittedLastMinute: 3, recentSample: [t0 + 5_000, t0 + 5_000, t0 + 35_000], firstAdmissionAt: t0 + 5_000, admitted: 3, sessionEndsSample: ends };
      expect(await paceOf(concertId, t0 + 40_000)).toEqual(at40);
      expect(withEnds((await store.views(concertId, [a!], t0 + 40_000, false)).pace)).toEqual(at40);
      // Entering reports the same pace in the same step (EnterQueue's estimated wait needs no second call).
      expect(withEnds((await store.enter(concertId, randomUUID(), t0 + 40_000)).pace)).toEqual(at40);
      expect((await store.counts(concertId, t0 + 40_000)).admittedLastMinute).toBe(3);
      // A minute later the first two have left the window, the first admission time stays.
      expect(await paceOf(concertId, t0 + 70_000)).toEqual({ ...at40, admittedLastMinute: 1, recentSample: [t0 + 35_000] });
      expect((await store.counts(concertId, t0 + 70_000)).admittedLastMinute).toBe(1);

      await store.tick(concertId, roomy, closed(t0 + 70_500));
      expect((await paceOf(concertId, t0 + 71_000)).supplyOpen).toBe(false);
      await store.apply(concertId, { ...plain, paused: true, overrides: { maxActive: 4 }, version: 2 });
      expect((await store.views(concertId, [a!], t0 + 71_000, false)).pace).toMatchObject({ paused: true, overrides: { maxActive: 4 } });
    });
  });

  describe("counts and settings", () => {
    it("counts the room", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      await line(concertId, 5, t0);
      await store.tick(concertId, defaults, open(t0 + 1_000));
      expect(await store.counts(concertId, t0 + 1_000)).toEqual({ waiting: 2, admitted: 3, admittedLastMinute: 3, abandoned: 0 });
    });

    it("ticks with the overrides on top of the defaults, and a raised or lowered maxActive applies at the next tick", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const tickets = await line(concertId, 8, t0);
      expect((await store.tick(concertId, defaults, open(t0 + 1_000))).admitted).toBe(3);
      expect((await store.tick(concertId, defaults, open(t0 + 2_000, { ...plain, overrides: { maxActive: 5 }, version: 2 }))).admitted).toBe(2);
      expect((await store.counts(concertId, t0 + 2_000)).admitted).toBe(5);
      expect((await paceOf(concertId, t0 + 2_000)).overrides).toEqual({ maxActive: 5 });

      await store.apply(concertId, { ...plain, overrides: { maxActive: 3, ratePerMinute: 30 }, version: 3 });
      await store.leave(concertId, tickets[0]!, t0 + 3_000);
      expect((await store.tick(concertId, defaults, open(t0 + 4_000, { ...plain, overrides: { maxActive: 3, ratePerMinute: 30 }, version: 3 }))).admitted).toBe(0);
      expect(await where(concertId, tickets, t0 + 4_000)).toEqual(["LEFT", "ADMITTED", "ADMITTED", "ADMITTED", "ADMITTED", "WAITING 1", "WAITING 2", "WAITING 3"]);
      expect((await paceOf(concertId, t0 + 4_000)).overrides).toEqual({ maxActive: 3, ratePerMinute: 30 });
    });

    it("keeps the newest settings: an older version (a tick that read PostgreSQL before the change) does not undo a newer one", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      await line(concertId, 2, t0);
      await store.apply(concertId, { ...plain, paused: true, version: 5 });
      const stale = await store.tick(concertId, defaults, open(t0 + 1_000, { ...plain, paused: false, version: 4 }));
      expect(stale).toMatchObject({ admitted: 0, restored: false });
      expect((await paceOf(concertId, t0 + 1_000)).paused).toBe(true);
      // Overrides that a newer version no longer has go back to the defaults.
      await store.apply(concertId, { ...plain, overrides: { maxActive: 1 }, version: 6 });
      await store.apply(concertId, { ...plain, version: 7 });
      expect((await paceOf(concertId, t0 + 1_000)).overrides).toEqual({});
      expect((await store.tick(concertId, defaults, open(t0 + 2_000, { ...plain, version: 7 }))).admitted).toBe(2);
    });
  });

  describe("sold out", () => {
    it("settings that say sold out turn every waiting fan SOLD_OUT, keep newcomers out and stop admissions", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const oneSlot: Policy = { ...defaults, maxActive: 1 };
      const soldOut = { ...plain, soldOut: true, version: 2 };
      const tickets = await line(concertId, 4, t0);
      await store.tick(concertId, oneSlot, open(t0));
      await store.apply(concertId, soldOut);

      expect(await where(concertId, tickets.slice(1), t0 + 1_000)).toEqual(["SOLD_OUT", "SOLD_OUT", "SOLD_OUT"]);
      expect(await store.view(concertId, tickets[1]!, t0 + 1_000, false)).toEqual({ state: "SOLD_OUT", position: 0, admittedUntil: 0 });
      expect(await store.enter(concertId, randomUUID(), t0 + 1_000)).toMatchObject({
        seq: 0,
        view: { state: "SOLD_OUT", position: 0, admittedUntil: 0 },
      });
      expect((await store.enter(concertId, tickets[2]!.userId, t0 + 1_000)).seq).toBe(0);

      await store.leave(concertId, tickets[0]!, t0 + 2_000);
      expect((await store.tick(concertId, oneSlot, open(t0 + 3_000, soldOut))).admitted).toBe(0);
      const counts = await store.counts(concertId, t0 + 3_000);
      expect([counts.waiting, counts.admitted]).toEqual([0, 0]);
    });

    it("a sold-out room whose store copy was lost is sold out again after the first tick", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const userId = randomUUID();
      const early = { userId, seq: (await store.enter(concertId, userId, t0)).seq };
      expect(await store.tick(concertId, defaults, closed(t0 + 1_000, { ...plain, soldOut: true, version: 3 }))).toMatchObject({ restored: true });
      expect(await store.view(concertId, early!, t0 + 1_000, false)).toMatchObject({ state: "SOLD_OUT" });
    });
  });

  describe("pre-queue and draw", () => {
    const big: Policy = { ...defaults, maxActive: 100 };
    /** Fans entering one after the other at `now`, before a sale that opens at `opensAt`. */
    async function enterAll(concertId: string, count: number, now: number, opensAt: number): Promise<Ticket[]> {
      const tickets: Ticket[] = [];
      for (let i = 0; i < count; i++) {
        const userId = randomUUID();
        tickets.push({ userId, seq: (await store.enter(concertId, userId, now + i, opensAt)).seq });
      }
      return tickets;
    }

    it("keeps entries before the opening in a pre-queue with no place; nobody is admitted; leaving there removes the entry", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const opensAt = t0 + 60_000;
      await store.apply(concertId, plain);
      const tickets = await enterAll(concertId, 4, t0, opensAt);
      expect((await store.enter(concertId, tickets[0]!.userId, t0 + 10, opensAt)).view).toEqual({ state: "PREQUEUED", position: 0, admittedUntil: 0 });
      for (let i = 0; i < 3; i++) expect(await store.tick(concertId, big, { ...open(t0 + 1_000 * (i + 1)), saleOpensAt: opensAt })).toMatchObject({ admitted: 0, drawPending: false });
      await store.leave(concertId, tickets[3]!, t0 + 5_000);
      expect(await where(concertId, tickets, t0 + 5_000)).toEqual(["PREQUEUED", "PREQUEUED", "PREQUEUED", "LEFT"]);
      expect(await store.prequeue(concertId)).toEqual({ draw: "PREQUEUE", tickets: [] });
      expect((await store.counts(concertId, t0 + 5_000)).waiting).toBe(3);
      // Silence in the pre-queue loses nothing, whatever abandon_after says.
      expect(await store.tick(concertId, big, { ...open(t0 + 50_000), saleOpensAt: opensAt })).toMatchObject({ abandoned: 0 });
    });

    it("freezes the pre-queue at the first call after the opening; later arrivals wait behind it; the drawn order is the line's order", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const opensAt = t0 + 10_000;
      await store.apply(concertId, plain);
      const early = await enterAll(concertId, 5, t0, opensAt);
      // The first call at the opening is an entry: it freezes the pre-queue and joins the line behind it.
      const late = await enterAll(concertId, 2, opensAt, opensAt);
      expect(await where(concertId, late, opensAt + 5)).toEqual(["WAITING 6", "WAITING 7"]);
      expect(await store.tick(concertId, big, { ...open(opensAt + 100), saleOpensAt: opensAt })).toMatchObject({ admitted: 0, drawPending: true });
      const frozen = await store.prequeue(concertId);
      expect(frozen).toEqual({ draw: "DRAWING", tickets: early });
      // The entries made in the pre-queue are told apart from the later ones by their seq.
      expect((await store.views(concertId, [], opensAt + 100, false)).pace).toMatchObject({ draw: "DRAWING", prequeuedUpTo: early.at(-1)!.seq });
      expect(late.every((ticket) => ticket.seq > early.at(-1)!.seq)).toBe(true);
      // One of the pre-queue leaves while the draw is made: the frozen list keeps it, the draw skips it.
      await store.leave(concertId, early[1]!, opensAt + 150);
      expect((await store.prequeue(concertId)).tickets).toEqual(early);
      const drawn = [early[3]!, early[0]!, early[1]!, early[4]!, early[2]!];
      // A first drawer places its first chunk, then stops (a crash, or a second drawer overtakes it).
      await store.place(concertId, drawn.slice(0, 2), 1, false, opensAt + 200);
      // The frozen list is still whole for the next drawer, the placed fans have their places, the rest are ahead of the late arrivals.
      expect((await store.prequeue(concertId)).tickets).toEqual(early);
      expect(await where(concertId, [early[3]!, early[0]!, early[4]!, ...late], opensAt + 200)).toEqual(["WAITING 1", "WAITING 2", "PREQUEUED", "WAITING 6", "WAITING 7"]);
      // A second drawer places everything again from the same list: the placed are skipped, the others take the same places.
      await store.place(concertId, drawn.slice(0, 3), 1, false, opensAt + 250);
      await store.place(concertId, drawn.slice(3), 4, true, opensAt + 250);
      // The first drawer's last chunk, late, changes nothing.
      await store.place(concertId, drawn.slice(2), 3, true, opensAt + 300);
      expect(await store.prequeue(concertId)).toEqual({ draw: "OPEN", tickets: [] });
      expect(await where(concertId, [early[3]!, early[0]!, early[4]!, early[2]!, ...late], opensAt + 300)).toEqual([
        "WAITING 1",
        "WAITING 2",
        "WAITING 3",
        "WAITING 4",
        "WAITING 5",
        "WAITING 6",
      ]);
      expect(await store.tick(concertId, { ...big, maxActive: 3 }, { ...open(opensAt + 400), saleOpensAt: opensAt })).toMatchObject({ admitted: 3, drawPending: false });
      expect(await where(concertId, [early[3]!, early[0]!, early[4]!, early[2]!], opensAt + 400)).toEqual(["ADMITTED", "ADMITTED", "ADMITTED", "WAITING 1"]);
      // Placed fans count as present from the draw (200 ms after the opening); the later arrivals, silent since they entered, do not.
      expect(await store.tick(concertId, { ...big, maxActive: 3, abandonAfterMs: 1_000 }, { ...open(opensAt + 1_150), saleOpensAt: opensAt })).toMatchObject({ abandoned: 2 });
      expect(await where(concertId, [early[2]!, ...late], opensAt + 1_150)).toEqual(["WAITING 1", "EXPIRED", "EXPIRED"]);
    });

    it("a tick at the opening freezes the pre-queue too; a room first seen after the opening has no pre-queue", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      await store.apply(concertId, plain);
      const early = await enterAll(concertId, 2, t0, t0 + 1_000);
      expect(await store.tick(concertId, big, { ...open(t0 + 1_000), saleOpensAt: t0 + 1_000 })).toMatchObject({ drawPending: true, admitted: 0 });
      expect((await store.prequeue(concertId)).tickets).toEqual(early);

      const later = randomUUID();
      await store.apply(later, plain);
      const [fan] = await enterAll(later, 1, t0 + 2_000, t0 + 1_000);
      expect(await store.view(later, fan!, t0 + 2_000, false)).toMatchObject({ state: "WAITING", position: 1 });
      expect(await store.prequeue(later)).toEqual({ draw: "OPEN", tickets: [] });
      expect(await store.tick(later, big, { ...open(t0 + 2_100), saleOpensAt: t0 + 1_000 })).toMatchObject({ drawPending: false, admitted: 1 });
    });

    it("admits nobody before the opening, even in a room that is already OPEN (its sale moved later)", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      await store.apply(concertId, plain);
      // A room first seen with the sale open: OPEN, its fans in line.
      const fans = await enterAll(concertId, 2, t0, t0);
      expect(await where(concertId, fans, t0 + 10)).toEqual(["WAITING 1", "WAITING 2"]);
      // The sale is then put off: a tick with the new opening admits nobody until it.
      expect(await store.tick(concertId, big, { ...open(t0 + 1_000), saleOpensAt: t0 + 60_000 })).toMatchObject({ admitted: 0 });
      expect(await store.tick(concertId, big, { ...open(t0 + 60_000), saleOpensAt: t0 + 60_000 })).toMatchObject({ admitted: 2 });
    });

    it("a closed sale turns the pre-queue and the line CLOSED and keeps newcomers out", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      await store.apply(concertId, plain);
      const early = await enterAll(concertId, 2, t0, t0 + 60_000);
      await store.apply(concertId, { ...plain, closed: true, version: 2 });
      expect(await where(concertId, early, t0 + 100)).toEqual(["CLOSED", "CLOSED"]);
      expect(await store.enter(concertId, randomUUID(), t0 + 100, t0 + 60_000)).toMatchObject({ seq: 0, view: { state: "CLOSED" } });
      expect((await store.counts(concertId, t0 + 100)).waiting).toBe(0);
    });
  });

  describe("random queueing method", () => {
    it("admits distinct fans from anywhere in the line, never more than there is room for", async () => {
      const counts = new Map<number, number>();
      for (let round = 0; round < 30; round++) {
        const concertId = randomUUID();
        const t0 = Date.now();
        const tickets = await line(concertId, 10, t0);
        const settings = { ...plain, overrides: { random: true }, version: 2 };
        expect((await store.tick(concertId, { ...defaults, maxActive: 3 }, open(t0 + 1_000, settings))).admitted).toBe(3);
        const states = await where(concertId, tickets, t0 + 1_000);
        expect(states.filter((state) => state === "ADMITTED")).toHaveLength(3);
        states.forEach((state, i) => state === "ADMITTED" && counts.set(i, (counts.get(i) ?? 0) + 1));
        expect((await store.views(concertId, [], t0 + 1_000, false)).pace.overrides).toEqual({ random: true });
      }
      // 90 admissions over 10 places: FIFO would give the first three 30 each; by lot every place gets some.
      expect(counts.size).toBeGreaterThanOrEqual(8);
      expect(Math.max(...counts.values())).toBeLessThan(20);
    });
  });

  describe("lost data", () => {
    it("a ticket the store has no entry for is LOST, and entering again puts the fan at the back", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const userId = randomUUID();
      expect(await store.view(concertId, { userId, seq: 7 }, t0, true)).toEqual({ state: "LOST", position: 0, admittedUntil: 0 });
      expect((await store.views(concertId, [{ userId, seq: 7 }], t0, true)).views).toEqual([{ state: "LOST", position: 0, admittedUntil: 0 }]);
      expect(await store.leave(concertId, { userId, seq: 7 }, t0)).toMatchObject({ state: "LOST" });
      await line(concertId, 2, t0);
      expect((await store.enter(concertId, userId, t0 + 1)).view).toEqual({ state: "WAITING", position: 3, admittedUntil: 0 });
    });

    it("a ticket of an earlier entry of the same fan is EXPIRED, not LOST", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [first] = await line(concertId, 1, t0);
      await store.leave(concertId, first!, t0 + 1);
      const again = await store.enter(concertId, first!.userId, t0 + 2);
      expect(again.seq).not.toBe(first!.seq);
      expect(await store.view(concertId, first!, t0 + 3, false)).toMatchObject({ state: "EXPIRED" });
      expect(await store.view(concertId, { ...first!, seq: again.seq + 5 }, t0 + 3, false)).toMatchObject({ state: "EXPIRED" });
    });

    it("the first tick of a room restores its settings and admits nobody; the next admits (a tick carrying settings read before a pause cannot open a wiped room)", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const [fan] = [{ userId: randomUUID(), seq: 0 }];
      fan!.seq = (await store.enter(concertId, fan!.userId, t0)).seq;
      expect(await store.tick(concertId, defaults, open(t0))).toMatchObject({ restored: true, admitted: 0 });
      expect(await store.tick(concertId, defaults, open(t0 + 1))).toMatchObject({ restored: false, admitted: 1 });
    });

    it("after a stretch with no tick (the store or every queue instance away), nobody is dropped for silence until abandon_after has passed again", async () => {
      const concertId = randomUUID();
      const t0 = Date.now();
      const watched: Policy = { ...defaults, maxActive: 0, abandonAfterMs: 60_000, random: false };
      const [a] = await line(concertId, 1, t0);
      const tick = (now: number) => store.tick(concertId, watched, { ...open(now), stalledAfterMs: 5_000 });
      await tick(t0);
      // Three minutes without a tick: the fan's watch could not be counted. The first tick back drops nobody…
      expect(await tick(t0 + 180_000)).toMatchObject({ abandoned: 0 });
      let dropped = 0;
      for (let t = t0 + 181_000; t < t0 + 240_000; t += 1_000) dropped += (await tick(t)).abandoned;
      expect(dropped).toBe(0);
      expect(await where(concertId, [a!], t0 + 239_000)).toEqual(["WAITING 1"]);
      // …and a fan still silent a full abandon_after after the ticks came back is dropped.
      expect(await tick(t0 + 240_000)).toMatchObject({ abandoned: 1 });
      expect(await where(concertId, [a!], t0 + 240_000)).toEqual(["EXPIRED"]);
    });
  });
});

describe("the in-process store across a restart (the embedded default)", () => {
  const defaultsHere: Policy = { maxActive: 1, ratePerMinute: 0, sessionTtlMs: 60_000, abandonAfterMs: 120_000, random: false };
  const settings: RoomSettings = { paused: false, soldOut: false, closed: false, overrides: {}, version: 1 };
  const tickAt = (now: number): TickInput => ({ now, supplyOpen: true, batch: 1000, settings, stalledAfterMs: 86_400_000 });

  it("is written at close and read back once by the next start: places, sessions and arrival numbers carry on", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "boxoffice-rooms-")), "waiting-rooms.json");
    const concertId = randomUUID();
    const t0 = Date.now();
    const before = new MemoryQueueStore(file);
    const users = [randomUUID(), randomUUID(), randomUUID()];
    const tickets: Ticket[] = [];
    for (const userId of users) tickets.push({ userId, seq: (await before.enter(concertId, userId, t0)).seq });
    await before.tick(concertId, defaultsHere, tickAt(t0));
    await before.tick(concertId, defaultsHere, tickAt(t0 + 1));
    await before.close();
    expect(existsSync(file)).toBe(true);

    const after = new MemoryQueueStore(file);
    expect(existsSync(file)).toBe(false); // read once: a crash later cannot bring this line back
    expect((await after.views(concertId, tickets, t0 + 2, false)).views.map(brief)).toEqual(["ADMITTED", "WAITING 1", "WAITING 2"]);
    const newcomer = await after.enter(concertId, randomUUID(), t0 + 3);
    expect([newcomer.seq, newcomer.view.position]).toEqual([4, 3]);
    expect(await after.markLife()).toBe(false); // restored, not lost: no "store is empty" warning
    await after.leave(concertId, tickets[0]!, t0 + 4);
    expect((await after.tick(concertId, defaultsHere, tickAt(t0 + 5))).admitted).toBe(1);
    expect(brief(await after.view(concertId, tickets[1]!, t0 + 5, false))).toBe("ADMITTED");
  });

  it("starts empty, says so, and removes a file it cannot read", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "boxoffice-rooms-")), "waiting-rooms.json");
    writeFileSync(file, "{ not json");
    const logged = watchLogs();
    try {
      const store = new MemoryQueueStore(file);
      expect(logged.entries).toEqual([expect.objectContaining({ level: 40, message: expect.stringContaining("unreadable") })]);
      expect(existsSync(file)).toBe(false);
      expect(await store.markLife()).toBe(true);
    } finally {
      logged.stop();
    }
  });
});
