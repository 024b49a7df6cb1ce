import type { MikroORM } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bestAvailable } from "../services/concert/best-available.js";
import { createConcert, type SeatPlanDraft } from "../services/concert/catalog.js";
import { Holds, type SupplyAnnouncer } from "../services/concert/holds.js";
import { concertModule } from "../services/concert/index.js";
import { SeatMaps } from "../services/concert/seat-maps.js";
import { openDatabase } from "../services/platform/database.js";
import { Reason, type DomainError } from "../services/platform/errors.js";
import { bothDatabases } from "./support.js";

/**
 * Seat plans and best-available holds at the depth of the domain class, on
 * PostgreSQL and the embedded PGlite: a plan's seats as listed, the choice of
 * adjacent seats without orphans, and many fans choosing in one tier at once.
 */

const quiet: SupplyAnnouncer = { seatsFreed: async () => {} };

async function refusalOf(work: Promise<unknown>): Promise<DomainError> {
  try {
    await work;
  } catch (error) {
    return error as DomainError;
  }
  throw new Error("expected a refusal");
}

const labels = (n: number) => Array.from({ length: n }, (_, i) => String(i + 1));

describe.each(bothDatabases)("seat maps on $name", ({ open, poolSize }) => {
  let orm: MikroORM;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    const database = await open();
    stop = database.stop;
    orm = await openDatabase(concertModule.database!, { url: database.url, poolSize });
  }, 60_000);
  afterAll(async () => {
    await orm?.close();
    await stop?.();
  });

  const em = () => orm.em.fork();
  const holds = () => new Holds(new SeatMaps(false), quiet, 60_000);

  async function date(plan: SeatPlanDraft, seatLimit = 4) {
    const { concert, schedules } = await createConcert(em(), {
      title: "Seat map",
      venue: "Hall",
      seatLimit,
      schedules: [{ startsAt: new Date(Date.now() + 864e5), seatCount: 0, price: 0, plan }],
    });
    return { concertId: concert.id, scheduleId: schedules[0]!.id };
  }

  /** Stalls: rows A and B of 8 (Front, 500); Balcony: row A of 6 (Back, 200). */
  const hall: SeatPlanDraft = {
    sections: [
      {
        name: "Stalls",
        rows: [
          { label: "A", tier: "Front", seats: labels(8) },
          { label: "B", tier: "Front", seats: labels(8) },
        ],
      },
      { name: "Balcony", rows: [{ label: "A", tier: "Back", seats: ["101", "102", "103", "104", "105", "106"] }] },
    ],
    tiers: [
      { name: "Front", price: 500 },
      { name: "Back", price: 200 },
    ],
  };

  async function seatsOf(scheduleId: string) {
    return em().execute<{ number: number; row_label: string; section: string; place: number; state: string; reservation_id: string | null; held_until: Date | null }[]>(
      `select number, section, row_label, place, state, reservation_id, held_until from "concert"."seat" where schedule_id = ? order by number`,
      [scheduleId],
    );
  }

  it("lists a plan's seats with their section, row, label, tier and price, numbered 1..N in plan order; the concert's prices come from the tiers", async () => {
    const { concertId, scheduleId } = await date(hall);
    const map = (await new SeatMaps(false).get(em(), scheduleId))!;
    expect(map.seats).toHaveLength(22);
    expect(map.seats[0]).toMatchObject({ number: 1, section: "Stalls", rowLabel: "A", rowPosition: 1, label: "1", place: 1, tier: "Front", state: "AVAILABLE" });
    expect(Number(map.seats[0]!.price)).toBe(500);
    expect(map.seats[9]).toMatchObject({ number: 10, section: "Stalls", rowLabel: "B", rowPosition: 2, label: "2", place: 2, tier: "Front" });
    expect(map.seats[21]).toMatchObject({ number: 22, section: "Balcony", rowLabel: "A", rowPosition: 1, label: "106", place: 6, tier: "Back" });
    expect(Number(map.seats[21]!.price)).toBe(200);
    const [concert] = await em().execute<{ min_price: string; max_price: string }[]>(`select min_price, max_price from "concert"."concert" where id = ?`, [concertId]);
    expect([Number(concert!.min_price), Number(concert!.max_price)]).toEqual([200, 500]);
    const [schedule] = await em().execute<{ seat_count: number }[]>(`select seat_count from "concert"."schedule" where id = ?`, [scheduleId]);
    expect(schedule!.seat_count).toBe(22);
  });

  it("best-available holds adjacent seats in one row, the front row first, packed from an end, priced by the tier", async () => {
    const { concertId, scheduleId } = await date(hall);
    const h = holds();
    const first = await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Front", count: 2 });
    expect(first.seatNumbers).toEqual([1, 2]);
    expect(first.amount).toBe(1000);
    // Against the first pair: row A is left as 5-8, one run a further pair can take.
    const second = await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Front", count: 2 });
    expect(second.seatNumbers).toEqual([3, 4]);
    // Three in A's 5-8 would leave a single seat: row B, from its end.
    const third = await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Front", count: 3 });
    expect(third.seatNumbers).toEqual([9, 10, 11]);
    const back = await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Back", count: 1 });
    expect(back.seatNumbers).toEqual([17]);
    expect(back.amount).toBe(200);
    // And a hold by seat number still works on a plan's seats.
    const plain = await h.hold(em(), { userId: randomUUID(), concertId, scheduleId, seatNumbers: [21, 22] });
    expect(plain.amount).toBe(400);
  });

  it("never leaves a single empty seat beside a taken seat or the row's end", async () => {
    const row = (taken: number[], count: number, length = 8) =>
      bestAvailable(
        labels(length).map((_, i) => ({ number: i + 1, section: "S", rowLabel: "A", rowPosition: 1, place: i + 1, free: !taken.includes(i + 1) })),
        count,
      );
    // An empty row: from an end (the middle would leave two runs of 3, no room for another pair).
    expect(row([], 2)).toEqual([1, 2]);
    // Free 1-3: taking 1-2 or 2-3 would leave one seat.
    expect(row([4, 5, 6, 7, 8], 2)).toBeUndefined();
    expect(row([4, 5, 6, 7, 8], 3)).toEqual([1, 2, 3]);
    // Free 1-4 and 7-8: 7-8 fills its gap exactly.
    expect(row([5, 6], 2)).toEqual([7, 8]);
    // Free 2-8 (seat 1 taken): 2-3 against the taken seat (7-8 against the end is further from the middle); 4-5 would split the run.
    expect(row([1], 2)).toEqual([2, 3]);
    // Free 1-5: 2 of them: 1-2 (leaves 3) or 4-5 (leaves 3) fine, 2-3 leaves 1: orphan; 3-4 leaves 1-2 and 5: orphan.
    expect(row([6, 7, 8], 2)).toEqual([4, 5]);
    // Free 3-8 by itself, count 4: 3-6 leaves 7-8, 5-8 leaves 3-4; 4-7 leaves one each side.
    expect(row([1, 2], 4)).toEqual([3, 4, 5, 6]);

    // Through the database: seats taken by plain holds around.
    const { concertId, scheduleId } = await date({ sections: [{ name: "Only", rows: [{ label: "A", tier: "T", seats: labels(8) }] }], tiers: [{ name: "T", price: 10 }] });
    const h = holds();
    await h.hold(em(), { userId: randomUUID(), concertId, scheduleId, seatNumbers: [5, 6] });
    const best = await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "T", count: 2 });
    expect(best.seatNumbers).toEqual([7, 8]);
    const refusal = await refusalOf(h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "T", count: 3 }));
    expect(refusal.reason).toBe(Reason.SEAT_UNAVAILABLE);
    expect(refusal.message).toContain("without leaving a single empty seat");
  });

  it("is refused when no block fits, for a tier the date lacks, and beyond the fan's limit", async () => {
    const { concertId, scheduleId } = await date(hall, 3);
    const h = holds();
    const tooMany = await refusalOf(h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Back", count: 4 }));
    expect(tooMany.reason).toBe(Reason.FAN_LIMIT_REACHED);
    const none = await refusalOf(h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Nowhere", count: 1 }));
    expect(none.reason).toBe(Reason.SEAT_NOT_FOUND);
    // Six seats: 3 at one end (the middle would leave a single seat), then the other three cannot be split into 2.
    expect((await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Back", count: 3 })).seatNumbers).toEqual([17, 18, 19]);
    const full = await refusalOf(h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Back", count: 2 }));
    expect(full.reason).toBe(Reason.SEAT_UNAVAILABLE);
    expect((await h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Back", count: 3 })).seatNumbers).toEqual([20, 21, 22]);
  });

  it("many fans choosing in one tier at once never share a seat and never leave an orphan, round after round", async () => {
    // A tier of 40: five rows of 8; 30 fans ask for 2 each.
    const plan: SeatPlanDraft = {
      sections: [{ name: "Floor", rows: ["A", "B", "C", "D", "E"].map((label) => ({ label, tier: "Floor", seats: labels(8) })) }],
      tiers: [{ name: "Floor", price: 100 }],
    };
    for (let round = 0; round < 3; round++) {
      const { concertId, scheduleId } = await date(plan);
      const h = holds();
      // Half of the second round's fans ask for 3: blocks of several sizes meet.
      const counts = Array.from({ length: 30 }, (_, i) => (round === 1 && i % 2 === 0 ? 3 : 2));
      const outcomes = await Promise.allSettled(counts.map((count) => h.holdBest(em(), { userId: randomUUID(), concertId, scheduleId, tier: "Floor", count })));
      const held = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
      for (const o of outcomes) if (o.status === "rejected") expect((o.reason as DomainError).reason, String(o.reason)).toBe(Reason.SEAT_UNAVAILABLE);
      // Packed: pairs fill the rows of 8 (20 pairs fit in 40 seats; 30 asked), and mixed sizes leave little.
      if (round !== 1) expect(held.length).toBe(20);
      else expect(held.flatMap((hold) => hold.seatNumbers).length).toBeGreaterThanOrEqual(36);

      const seats = await seatsOf(scheduleId);
      const byNumber = new Map(seats.map((seat) => [seat.number, seat]));
      // No seat twice, and each seat is its hold's.
      const all = held.flatMap((hold) => hold.seatNumbers);
      expect(new Set(all).size).toBe(all.length);
      for (const hold of held) {
        const mine = hold.seatNumbers.map((n) => byNumber.get(n)!);
        for (const seat of mine) expect([seat.state, seat.reservation_id]).toEqual(["HELD", hold.id]);
        // Adjacent in one row.
        expect(new Set(mine.map((seat) => seat.row_label)).size).toBe(1);
        const places = mine.map((seat) => seat.place).sort((a, b) => a - b);
        expect(places).toEqual(places.map((_, i) => places[0]! + i));
      }
      expect(seats.filter((seat) => seat.state === "HELD")).toHaveLength(all.length);
      // No orphan: no row has a run of exactly one free seat.
      for (const label of ["A", "B", "C", "D", "E"]) {
        const row = seats.filter((seat) => seat.row_label === label).sort((a, b) => a.place - b.place);
        const runs = row.map((seat) => (seat.state === "AVAILABLE" ? "." : "x")).join("").split("x").filter((run) => run.length > 0);
        expect(runs.filter((run) => run.length === 1), `row ${label}: ${row.map((s) => (s.state === "AVAILABLE" ? "." : "x")).join("")}`).toEqual([]);
      }
      // The refused were refused rightly: no block of their size fits now.
      const left = seats.map((seat) => ({ number: seat.number, section: seat.section, rowLabel: seat.row_label, rowPosition: 1, place: seat.place, free: seat.state === "AVAILABLE" }));
      outcomes.forEach((o, i) => o.status === "rejected" && expect(bestAvailable(left, counts[i]!)).toBeUndefined());
    }
  }, 60_000);
});
