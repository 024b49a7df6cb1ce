import type { Client } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { ConcertInternalService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { ConcertSupply } from "../services/queue/supply.js";

/** A concert service whose GetConcertSupply answers as `answer` says, counting the calls. */
function concertService(answer: (call: number) => Promise<{ total: number; available: number; held: number; sold: number }>) {
  let calls = 0;
  const client = { getConcertSupply: () => answer(++calls) } as unknown as Client<typeof ConcertInternalService>;
  return { client, calls: () => calls };
}

const supply = (available: number) => ({ total: 10, available, held: 10 - available, sold: 0 });
const never = () => new Promise<never>(() => {});

describe("the queue's view of a concert's supply", () => {
  it("looks a concert up once to let fans in: a crowd entering does not wait on the concert service", async () => {
    let now = 0;
    const concert = concertService(async () => supply(5));
    const source = new ConcertSupply(concert.client, 1_000, () => now);
    await source.exists("c1");
    now += 60_000;
    await source.exists("c1");
    await source.exists("c1");
    expect(concert.calls()).toBe(1);
  });

  it("does not remember a concert that was not found", async () => {
    const concert = concertService(async () => {
      throw new Error("no such concert");
    });
    const source = new ConcertSupply(concert.client, 1_000, () => 0);
    await expect(source.exists("ghost")).rejects.toThrow();
    await expect(source.exists("ghost")).rejects.toThrow();
    expect(concert.calls()).toBe(2);
  });

  it("gives the admission tick the last supply known when a lookup is slow, and the fresh one once it is back", async () => {
    let now = 0;
    let release!: () => void;
    const concert = concertService((call) => {
      if (call === 1) return Promise.resolve(supply(5));
      if (call === 2) return new Promise((resolve) => (release = () => resolve(supply(0))));
      return never();
    });
    const source = new ConcertSupply(concert.client, 1_000, () => now);
    expect((await source.current("c1", 50, 10_000)).available).toBe(5);
    now += 2_000;
    const started = performance.now();
    expect((await source.current("c1", 50, 10_000)).available).toBe(5);
    expect(performance.now() - started).toBeLessThan(1_000);
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect((await source.current("c1", 50, 10_000)).available).toBe(0);
  });

  it("gives the last supply known when a lookup fails; with none known yet, waits for the first", async () => {
    let now = 0;
    const concert = concertService(async (call) => {
      if (call === 1) return supply(3);
      throw new Error("deadline exceeded");
    });
    const source = new ConcertSupply(concert.client, 1_000, () => now);
    const first = new ConcertSupply(concertService(() => new Promise((resolve) => setTimeout(() => resolve(supply(7)), 100))).client);
    expect((await first.current("c1", 20, 10_000)).available).toBe(7);
    expect((await source.current("c1", 50, 10_000)).available).toBe(3);
    now += 2_000;
    expect((await source.current("c1", 50, 10_000)).available).toBe(3);
    // Older than allowed: the failure itself is the answer (the line waits).
    now += 20_000;
    await expect(source.current("c1", 50, 10_000)).rejects.toThrow("deadline exceeded");
  });
});
