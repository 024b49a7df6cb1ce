import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { commitmentOf, drawnOrder } from "../services/queue/draw.js";
import { SaleDraw, saleFairness, type DrawRecord, type SeedSource } from "../services/queue/draws.js";
import { MemoryQueueStore } from "../services/queue/memory-store.js";
import { QueueTokens } from "../services/queue/queue-tokens.js";
import type { Policy, RoomSettings } from "../services/queue/store.js";

/**
 * The pre-queue's draw on its own: over many seeded sales, a fan's place does
 * not depend on when they arrived in the pre-queue; and the repo's verifier
 * script, which shares no code with the service, recomputes the order.
 */

const hex = (text: string) => createHash("sha256").update(text).digest("hex");
/** A UUID-shaped id made from text, so that every run draws the same sales. */
const uuidOf = (text: string) => hex(text).slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
const policy: Policy = { maxActive: 1_000, ratePerMinute: 0, sessionTtlMs: 600_000, abandonAfterMs: 120_000, random: false };
const settings: RoomSettings = { paused: false, soldOut: false, closed: false, overrides: {}, version: 1 };
const tokens = new QueueTokens("a fixed secret for a reproducible test");

/** One whole sale in the in-process store: `fans` enter in order before the opening, then the draw; their places by arrival. */
async function sale(name: string, fans: number): Promise<{ places: number[]; record: DrawRecord; seed: string }> {
  const store = new MemoryQueueStore();
  const concertId = uuidOf(`concert ${name}`);
  const seed = hex(`seed ${name}`);
  const t0 = 1_800_000_000_000;
  const opensAt = t0 + 3_600_000;
  await store.apply(concertId, settings);
  const tickets = [];
  for (let i = 0; i < fans; i++) {
    const userId = uuidOf(`${name} fan ${i}`);
    // Arrivals spread over the hour before the opening; the last a millisecond before it.
    tickets.push({ userId, seq: (await store.enter(concertId, userId, i === fans - 1 ? opensAt - 1 : t0 + i * 1_000, opensAt)).seq });
  }
  expect((await store.tick(concertId, policy, { now: opensAt, saleOpensAt: opensAt, supplyOpen: true, batch: 1_000, settings, stalledAfterMs: 1e9 })).drawPending).toBe(true);
  let record: DrawRecord | undefined;
  const seeds: SeedSource = { sale: async () => ({ commitment: commitmentOf(seed), saleOpensAt: new Date(opensAt), seed }) };
  const draw = new SaleDraw(store, { record: async (_, drawn) => void (record = drawn) }, seeds, tokens, () => opensAt);
  expect(await draw.run(concertId)).toBe(true);
  const views = await store.views(concertId, tickets, opensAt, false);
  return { places: views.views.map((view) => view.position), record: record!, seed };
}

describe("the pre-queue's draw", () => {
  it("gives every arrival order the same chance: over 400 seeded sales of 20 fans the place is independent of the arrival", async () => {
    const fans = 20;
    const sales = 400;
    const groups = 5; // arrival fifths × place fifths
    const table = Array.from({ length: groups }, () => new Array<number>(groups).fill(0));
    const meanPlace = new Array<number>(fans).fill(0);
    let rankProducts = 0;
    for (let n = 0; n < sales; n++) {
      const { places } = await sale(`statistics ${n}`, fans);
      expect([...places].sort((a, b) => a - b)).toEqual(Array.from({ length: fans }, (_, i) => i + 1));
      places.forEach((place, arrival) => {
        table[Math.floor((arrival * groups) / fans)]![Math.floor(((place - 1) * groups) / fans)]!++;
        meanPlace[arrival]! += place / sales;
        rankProducts += (arrival + 1 - (fans + 1) / 2) * (place - (fans + 1) / 2);
      });
    }
    // Pearson's chi-squared on the 5×5 table (16 degrees of freedom): the 0.1 % critical value is 39.25.
    const expected = (sales * fans) / (groups * groups);
    const chiSquared = table.flat().reduce((sum, observed) => sum + (observed - expected) ** 2 / expected, 0);
    expect(chiSquared).toBeLessThan(39.25);
    // Spearman's rank correlation between arrival and place, near 0 (FIFO would give 1).
    const variance = (fans * fans - 1) / 12;
    const rho = rankProducts / (sales * fans * variance);
    expect(Math.abs(rho)).toBeLessThan(0.05);
    // The first and the last to arrive (a millisecond before the opening) end up in the middle on average (10.5).
    expect(Math.abs(meanPlace[0]! - 10.5)).toBeLessThan(1.5);
    expect(Math.abs(meanPlace[fans - 1]! - 10.5)).toBeLessThan(1.5);
  });

  it("is recomputed by the repo's verifier script from the seed and the published list alone, and each fan finds their own place", async () => {
    const { record, seed } = await sale("verifier", 50);
    const dir = mkdtempSync(join(tmpdir(), "boxoffice-draw-"));
    const file = join(dir, "fairness.json");
    const publish = (extra: object) =>
      writeFileSync(file, JSON.stringify({ state: "DRAW_STATE_DRAWN", seedCommitment: commitmentOf(seed), seed, entryIds: record.entryIds, ...extra }));
    const verify = async (...args: string[]) => {
      const run = await promisify(execFile)(process.execPath, ["services/queue/verify-draw.ts", "--file", file, ...args]).catch((error: { stdout: string; code: number }) => error);
      return { ...(JSON.parse(run.stdout) as { order?: string[]; [key: string]: unknown }), exit: "code" in run ? run.code : 0 };
    };
    publish({});
    const verified = await verify();
    expect(verified).toMatchObject({ drawn: true, commitmentMatches: true, entries: 50, exit: 0 });
    expect(verified.order).toEqual(drawnOrder(seed, record.entryIds));
    expect(record.entryIds).toEqual([...record.entryIds].sort());
    const someone = (verified.order as string[])[17]!;
    expect(await verify("--entry", someone)).toMatchObject({ place: 18, of: 50 });
    // Another seed than the one committed to is caught.
    publish({ seed: hex("another seed") });
    expect(await verify()).toMatchObject({ commitmentMatches: false, exit: 1 });
  });

  it("shows the seed with the draw's record; without one only when the room can have had no pre-queue", async () => {
    const store = new MemoryQueueStore();
    const seed = hex("fairness seed");
    const opensAt = 1_800_000_000_000;
    const seeds = (revealed: boolean): SeedSource => ({ sale: async () => ({ commitment: commitmentOf(seed), saleOpensAt: new Date(opensAt), seed: revealed ? seed : undefined }) });
    const noRecord = { get: async () => undefined };
    const shown = (fairness: { drawn: boolean; draw?: DrawRecord }) => (fairness.drawn ? `DRAWN ${fairness.draw!.entryIds.length}` : "COMMITTED");
    const concert = (name: string) => uuidOf(`fairness ${name}`);

    // Before the opening: the commitment only, whatever the room.
    expect(shown(await saleFairness(concert("early"), noRecord, seeds(false), store, opensAt - 1))).toBe("COMMITTED");
    // A record is the answer once there is one.
    const record: DrawRecord = { seed, entryIds: ["a", "b"], drawnAt: new Date(opensAt) };
    expect(shown(await saleFairness(concert("drawn"), { get: async () => record }, seeds(true), store, opensAt + 1))).toBe("DRAWN 2");
    // Nobody entered: not in the first seconds after the opening (an instance whose clock is behind may still take a pre-queue entry), then an empty draw.
    expect(shown(await saleFairness(concert("nobody"), noRecord, seeds(true), store, opensAt + 1_000))).toBe("COMMITTED");
    expect(shown(await saleFairness(concert("nobody"), noRecord, seeds(true), store, opensAt + 6_000))).toBe("DRAWN 0");
    // A pre-queue waiting for its draw, or being drawn: the commitment only.
    await store.apply(concert("waiting"), settings);
    await store.enter(concert("waiting"), uuidOf("fan"), opensAt - 10, opensAt);
    expect(shown(await saleFairness(concert("waiting"), noRecord, seeds(true), store, opensAt + 6_000))).toBe("COMMITTED");
    await store.tick(concert("waiting"), policy, { now: opensAt + 6_000, saleOpensAt: opensAt, supplyOpen: true, batch: 1_000, settings, stalledAfterMs: 1e9 });
    expect((await store.prequeue(concert("waiting"))).draw).toBe("DRAWING");
    expect(shown(await saleFairness(concert("waiting"), noRecord, seeds(true), store, opensAt + 7_000))).toBe("COMMITTED");
    // A room that opened with no pre-queue: an empty draw at once.
    await store.apply(concert("open"), settings);
    await store.enter(concert("open"), uuidOf("late fan"), opensAt + 1, opensAt);
    expect(shown(await saleFairness(concert("open"), noRecord, seeds(true), store, opensAt + 2))).toBe("DRAWN 0");
  });

  it("waits while the concert service has not revealed the seed or cannot be reached, nobody admitted meanwhile, and draws once it answers", async () => {
    const store = new MemoryQueueStore();
    const concertId = uuidOf("concert waiting for its seed");
    const seed = hex("late seed");
    const opensAt = 1_800_000_000_000;
    await store.apply(concertId, settings);
    const tickets = [];
    for (let i = 0; i < 3; i++) {
      const userId = uuidOf(`late fan ${i}`);
      tickets.push({ userId, seq: (await store.enter(concertId, userId, opensAt - 100 + i, opensAt)).seq });
    }
    const tick = () => store.tick(concertId, policy, { now: opensAt + 10, saleOpensAt: opensAt, supplyOpen: true, batch: 1_000, settings, stalledAfterMs: 1e9 });
    expect((await tick()).drawPending).toBe(true);
    let answer: "hidden" | "down" | "revealed" = "hidden";
    const seeds: SeedSource = {
      sale: async () => {
        if (answer === "down") throw new Error("the concert service is unreachable");
        return { commitment: commitmentOf(seed), saleOpensAt: new Date(opensAt), seed: answer === "revealed" ? seed : undefined };
      },
    };
    const records: DrawRecord[] = [];
    const draw = new SaleDraw(store, { record: async (_, drawn) => void records.push(drawn) }, seeds, tokens, () => opensAt + 10);
    // The concert's clock is behind: no seed yet. Then it is down.
    expect(await draw.run(concertId)).toBe(false);
    answer = "down";
    await expect(draw.run(concertId)).rejects.toThrow(/unreachable/);
    expect(records).toEqual([]);
    expect(await tick()).toMatchObject({ admitted: 0, drawPending: true });
    expect((await store.views(concertId, tickets, opensAt + 10, false)).views.map((view) => view.state)).toEqual(["PREQUEUED", "PREQUEUED", "PREQUEUED"]);
    // It answers: drawn, recorded once, and the next tick admits.
    answer = "revealed";
    expect(await draw.run(concertId)).toBe(true);
    expect(records.map((record) => record.entryIds.length)).toEqual([3]);
    expect(await tick()).toMatchObject({ admitted: 3, drawPending: false });
  });
});
