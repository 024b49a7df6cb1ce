import type { MikroORM } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { concertModule } from "../services/concert/index.js";
import { createConcert } from "../services/concert/concert-service.js";
import { Holds, holdStateNow, type SupplyAnnouncer } from "../services/concert/holds.js";
import { SeatMaps } from "../services/concert/seat-maps.js";
import { openDatabase, statementsOn } from "../services/platform/database.js";
import { Reason, Refused, type DomainError } from "../services/platform/errors.js";
import { bothDatabases } from "./support.js";

/**
 * The hold rules at the depth of the domain class: Holds called directly on a
 * real database (PostgreSQL and the embedded PGlite), the queue replaced by a
 * fake that records what it is told. A hold and its seats change together, one
 * statement each, so every check reads both.
 */

/** A queue that remembers which concerts were said to have seats again. */
class FakeQueue implements SupplyAnnouncer {
  told: string[] = [];
  async seatsFreed(concertIds: string[]) {
    this.told.push(...concertIds);
  }
}

async function refusalOf(work: Promise<unknown>): Promise<DomainError> {
  try {
    await work;
  } catch (error) {
    return error as DomainError;
  }
  throw new Error("expected a refusal");
}

describe.each(bothDatabases)("holds on $name", ({ name, open, poolSize }) => {
  let orm: MikroORM;
  let stop: () => Promise<void>;
  let queue: FakeQueue;
  let url: string;

  beforeAll(async () => {
    const database = await open();
    stop = database.stop;
    url = database.url;
    orm = await openDatabase(concertModule.database!, { url: database.url, poolSize });
  }, 60_000);
  afterAll(async () => {
    await orm?.close();
    await stop?.();
  });

  const em = () => orm.em.fork();
  const holdsFor = (holdMs = 60_000) => {
    queue = new FakeQueue();
    return new Holds(new SeatMaps(false), queue, holdMs);
  };

  async function date(seatCount = 6, price = 100) {
    const { concert, schedules } = await createConcert(em(), { title: "Holds", venue: "Hall", schedules: [{ startsAt: new Date(Date.now() + 864e5), seatCount, price }] });
    return { concertId: concert.id, scheduleId: schedules[0]!.id };
  }

  async function seats(scheduleId: string) {
    const rows = await em()
      .getConnection()
      .execute<{ number: number; state: string; reservation_id: string | null }[]>(
        `select number, state, reservation_id from "concert"."seat" where schedule_id = ? order by number`,
        [scheduleId],
      );
    return Object.fromEntries(rows.map((row) => [row.number, row.reservation_id ? `${row.state}:${row.reservation_id.slice(0, 8)}` : row.state]));
  }

  async function holdRows(scheduleId: string) {
    return em().getConnection().execute<{ id: string; state: string }[]>(`select id, state from "concert"."hold" where schedule_id = ?`, [scheduleId]);
  }

  it("a hold takes its seats and writes its record together; a refused one leaves neither", async () => {
    const holds = holdsFor();
    const { concertId, scheduleId } = await date();
    const fan = randomUUID();
    const held = await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [3, 2] });
    expect(held).toMatchObject({ state: "HELD", seatNumbers: [2, 3], amount: 200, userId: fan, concertId, scheduleId });
    const mark = `HELD:${held.id.slice(0, 8)}`;
    expect(await seats(scheduleId)).toEqual({ 1: "AVAILABLE", 2: mark, 3: mark, 4: "AVAILABLE", 5: "AVAILABLE", 6: "AVAILABLE" });

    // Seat 3 is taken: a hold of 3 and 4 takes neither, and writes no record.
    const refused = await refusalOf(holds.hold(em(), { userId: randomUUID(), concertId, scheduleId, seatNumbers: [3, 4] }));
    expect([refused.constructor.name, Reason[refused.reason]]).toEqual(["Refused", "SEAT_UNAVAILABLE"]);
    expect((await seats(scheduleId))[4]).toBe("AVAILABLE");
    expect((await holdRows(scheduleId)).map((row) => row.id)).toEqual([held.id]);

    // The fan's second hold on the date is refused by the one-hold-per-date index, which undoes the whole statement.
    const second = await refusalOf(holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [5] }));
    expect([Reason[second.reason], second.metadata]).toEqual(["HOLD_LIMIT_REACHED", { reservation_id: held.id }]);
    expect((await seats(scheduleId))[5]).toBe("AVAILABLE");
    // Asked again for the same seats, with reuse (a retried booking), the live hold is the answer.
    expect((await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [2, 3], reuseOwnHold: true })).id).toBe(held.id);
  });

  it("of 30 concurrent holds on one seat, exactly one wins and every record agrees with the seat", async () => {
    const holds = holdsFor();
    const { concertId, scheduleId } = await date(3);
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => holds.hold(em(), { userId: randomUUID(), concertId, scheduleId, seatNumbers: [2] })));
    const won = results.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    expect(won).toHaveLength(1);
    expect(results.filter((result) => result.status === "rejected").map((result) => Reason[(result.reason as Refused).reason])).toEqual(
      Array(29).fill("SEAT_UNAVAILABLE"),
    );
    expect((await seats(scheduleId))[2]).toBe(`HELD:${won[0]!.id.slice(0, 8)}`);
    expect(await holdRows(scheduleId)).toEqual([{ id: won[0]!.id, state: "HELD" }]);
  });

  it("confirming sells the seats for one payment: again with it returns the sale, another payment or another amount is refused", async () => {
    const holds = holdsFor();
    const { concertId, scheduleId } = await date();
    const fan = randomUUID();
    const held = await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1, 4] });
    const payment = randomUUID();

    const mismatch = await refusalOf(holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: payment, amount: 150 }));
    expect(Reason[mismatch.reason]).toBe("AMOUNT_MISMATCH");
    expect((await seats(scheduleId))[1]).toBe(`HELD:${held.id.slice(0, 8)}`);

    const sold = await holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: payment, amount: 200 });
    expect(sold).toMatchObject({ state: "CONFIRMED", paymentId: payment });
    const mark = `SOLD:${held.id.slice(0, 8)}`;
    expect(await seats(scheduleId)).toMatchObject({ 1: mark, 4: mark, 2: "AVAILABLE" });
    expect((await holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: payment })).state).toBe("CONFIRMED");
    const other = await refusalOf(holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: randomUUID() }));
    expect(Reason[other.reason]).toBe("RESERVATION_CONFIRMED");
    // Someone else's reservation is not found, and a sale cannot be released.
    expect(Reason[(await refusalOf(holds.confirm(em(), { userId: randomUUID(), reservationId: held.id, paymentId: payment }))).reason]).toBe(
      "RESERVATION_NOT_FOUND",
    );
    expect(Reason[(await refusalOf(holds.release(em(), fan, held.id))).reason]).toBe("RESERVATION_CONFIRMED");
    expect(queue.told).toEqual([]);
  });

  it("releasing frees the seats at once and tells the queue; confirming a released hold is refused", async () => {
    const holds = holdsFor();
    const { concertId, scheduleId } = await date(2);
    const fan = randomUUID();
    const held = await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1, 2] });
    const released = await holds.release(em(), fan, held.id);
    expect(released.state).toBe("RELEASED");
    expect(await seats(scheduleId)).toEqual({ 1: "AVAILABLE", 2: "AVAILABLE" });
    expect(queue.told).toEqual([concertId]);
    expect((await holds.release(em(), fan, held.id)).state).toBe("RELEASED");
    expect(queue.told).toEqual([concertId]);
    expect(Reason[(await refusalOf(holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: randomUUID() }))).reason]).toBe("HOLD_RELEASED");
    // The fan may hold on the date again.
    expect((await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [2] })).state).toBe("HELD");
  });

  it("a hold ends on the clock: its seats are free to others at once, it cannot be sold, and the sweep tidies both and tells the queue", async () => {
    const holds = holdsFor(300);
    const told = queue;
    const { concertId, scheduleId } = await date(2);
    const fan = randomUUID();
    const held = await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1] });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(holdStateNow(await holds.get(statementsOn(em()), fan, held.id))).toBe("EXPIRED");
    expect(Reason[(await refusalOf(holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: randomUUID() }))).reason]).toBe("HOLD_EXPIRED");
    // The fan's stale hold does not block a new one of theirs on the date (it is marked EXPIRED first).
    const again = await holdsFor(60_000).hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1] });
    expect((await seats(scheduleId))[1]).toBe(`HELD:${again.id.slice(0, 8)}`);

    const expiring = await holds.hold(em(), { userId: randomUUID(), concertId, scheduleId, seatNumbers: [2] });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await holds.sweep(em())).toBeGreaterThanOrEqual(1);
    expect((await holdRows(scheduleId)).find((row) => row.id === expiring.id)?.state).toBe("EXPIRED");
    // The seat of the swept hold is free; the seat re-held by the fan is untouched by the sweep of their old hold.
    expect(await seats(scheduleId)).toEqual({ 1: `HELD:${again.id.slice(0, 8)}`, 2: "AVAILABLE" });
    expect(told.told).toContain(concertId);
  });

  // Only PostgreSQL lets another session hold the lock meanwhile.
  it.skipIf(name !== "PostgreSQL")(
    "a confirm that waits for the fan's other holds of the concert past its hold's end is refused HOLD_EXPIRED: the hold cannot count twice with one made after it ran out",
    async () => {
      const holds = holdsFor(500);
      const { concertId, scheduleId } = await date(2);
      const fan = randomUUID();
      const held = await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1] });
      // Another session holds the fan's lock for the concert (a hold of theirs on another date, decided slowly).
      const other = new pg.Client({ connectionString: url });
      await other.connect();
      try {
        await other.query("begin");
        await other.query(`select pg_advisory_xact_lock(hashtextextended($1, 0))`, [`hold:${fan}:${concertId}`]);
        // The confirm starts while the hold is live, and waits.
        const confirming = refusalOf(holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: randomUUID() }));
        await new Promise((resolve) => setTimeout(resolve, 700));
        await other.query("commit");
        expect(Reason[(await confirming).reason]).toBe("HOLD_EXPIRED");
      } finally {
        await other.end();
      }
      expect((await seats(scheduleId))[1]).not.toBe("SOLD");
    },
  );

  // Only PostgreSQL runs two transactions at once; PGlite serialises them, so there they cannot deadlock.
  it.skipIf(name !== "PostgreSQL")(
    "a hold that deadlocks with the sweeper tidying the fan's run-out hold on the same seat is tried again and holds it",
    async () => {
      const holds = holdsFor(200);
      const { concertId, scheduleId } = await date(2);
      const fan = randomUUID();
      const stale = await holds.hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1] });
      await new Promise((resolve) => setTimeout(resolve, 300));
      // A sweep as its statement runs it, held open between its two steps: the run-out hold first, then its seats.
      const sweep = new pg.Client({ connectionString: url });
      await sweep.connect();
      try {
        await sweep.query("begin");
        await sweep.query(`update "concert"."hold" set state = 'EXPIRED' where id = $1`, [stale.id]);
        // The fan holds seat 1 again: it locks the seat, then waits on the sweep's row in the one-hold-per-date index...
        const again = holdsFor(60_000).hold(em(), { userId: fan, concertId, scheduleId, seatNumbers: [1] });
        await new Promise((resolve) => setTimeout(resolve, 200));
        // ...while the sweep waits on the seat: a deadlock, which PostgreSQL breaks by undoing one side.
        const freed = sweep
          .query(`update "concert"."seat" set state = 'AVAILABLE', reservation_id = null, held_until = null where reservation_id = $1 and state = 'HELD'`, [stale.id])
          .then(
            () => sweep.query("commit").then(() => "swept"),
            (error: { code?: string }) => sweep.query("rollback").then(() => error.code),
          );
        const [held, swept] = await Promise.all([again, freed]);
        expect(["swept", "40P01"]).toContain(swept);
        expect(held).toMatchObject({ state: "HELD", seatNumbers: [1], userId: fan });
        expect((await seats(scheduleId))[1]).toBe(`HELD:${held.id.slice(0, 8)}`);
        expect((await holdRows(scheduleId)).filter((row) => row.state === "HELD").map((row) => row.id)).toEqual([held.id]);
      } finally {
        await sweep.end();
      }
    },
  );
});
