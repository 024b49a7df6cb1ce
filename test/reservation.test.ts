import { timestampDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ErrorDetailSchema } from "../gen/boxoffice/common/v1/error_pb.js";
import { ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueAdminService, QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import {
  ReservationInternalService,
  ReservationService,
  ReservationState,
  type Reservation,
} from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { reasonOf, Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { admittedFan, bearer, client, concertOnSale, failure, gated, newUser, operator, startTestSuite, testSecrets } from "./support.js";
import { eventually, invalid, outcome, refused, seededRandom, tally } from "./outcomes.js";
import { dropKeys } from "./redis-keys.js";

/**
 * Seat holds end to end: ReservationService and its internal ConfirmReservation,
 * the seat states the concert service reports, and the coordinator's
 * ReserveSeats, on real servers over gRPC (h2c) against real PostgreSQL.
 *
 * The main suite keeps its waiting rooms in real Redis (a key prefix of its
 * own), so that a second suite on the same database and the same Redis is a
 * true second instance of every service: a fan admitted through one is admitted
 * through both.
 */

type Fan = Awaited<ReturnType<typeof admittedFan>>;

const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:reservation:${randomUUID()}:`;
const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };
const holdSeconds = 300;

let suite: Suite;
/** The test database, read directly to see who owns which seat row. */
let db: pg.Pool;

beforeAll(async () => {
  suite = await startTestSuite({ QUEUE_MAX_ACTIVE: "1000", REDIS_URL: redisUrl, REDIS_KEY_PREFIX: redisPrefix, HOLD_SECONDS: String(holdSeconds) });
  db = new pg.Pool({ connectionString: inject("databaseUrl"), max: 2 });
});
afterAll(async () => {
  await suite?.close();
  await db?.end();
  await dropKeys(redisUrl, redisPrefix);
});

// ---------------------------------------------------------------- helpers


/** `count` new fans admitted to the concert, entered concurrently in batches. */
async function admitMany(on: Suite, concertId: string, count: number, batch = 100): Promise<Fan[]> {
  const fans: Fan[] = [];
  while (fans.length < count) {
    const size = Math.min(batch, count - fans.length);
    fans.push(...(await Promise.all(Array.from({ length: size }, () => admittedFan(on, concertId)))));
  }
  return fans;
}

/** Seat states of a date as the concert service reports them: { number: "AVAILABLE" | "HELD" | "SOLD" }. */
async function seatStates(on: Suite, fan: Fan, scheduleId: string): Promise<Record<number, string>> {
  const { seats } = await client(on, ConcertService).listSeats({ scheduleId }, fan.headers);
  return Object.fromEntries(seats.map((seat) => [seat.number, SeatState[seat.state]]));
}

/** The numbers of the seats of a date in the given state. */
async function seatsIn(on: Suite, fan: Fan, scheduleId: string, state: string): Promise<number[]> {
  const states = await seatStates(on, fan, scheduleId);
  return Object.entries(states)
    .filter(([, s]) => s === state)
    .map(([n]) => Number(n));
}

async function availableSeats(on: Suite, concertId: string): Promise<number[]> {
  const { schedules } = await client(on, ConcertService).listSchedules({ concertId });
  return schedules.map((s) => s.availableSeats);
}

interface SeatRow {
  number: number;
  state: string;
  reservation_id: string | null;
  held_until: Date | null;
}

/** The seat rows of a date, straight from the concert schema. */
async function seatRows(scheduleId: string, pool = db): Promise<SeatRow[]> {
  const { rows } = await pool.query<SeatRow>(
    `select number, state, reservation_id, held_until from "concert"."seat" where schedule_id = $1 order by number`,
    [scheduleId],
  );
  return rows;
}

async function reservationRow(id: string, pool = db): Promise<{ state: string } | undefined> {
  const { rows } = await pool.query<{ state: string }>(`select state from "concert"."hold" where id = $1`, [id]);
  return rows[0];
}

const reservations = (on: Suite = suite) => client(on, ReservationService);
const confirmations = (on: Suite = suite) => client(on, ReservationInternalService);

// ---------------------------------------------------------------- the race

/** Checks the aftermath of a one-seat race: one HELD seat, owned by the winner's reservation. */
async function expectOneWinner(on: Suite, fans: Fan[], results: PromiseSettledResult<{ reservation?: Reservation }>[], scheduleId: string, seat: number) {
  expect(tally(results)).toEqual({ ok: 1, "FailedPrecondition/SEAT_UNAVAILABLE": fans.length - 1 });
  const winnerIndex = results.findIndex((result) => result.status === "fulfilled");
  const winner = fans[winnerIndex]!;
  const won = (results[winnerIndex] as PromiseFulfilledResult<{ reservation?: Reservation }>).value.reservation!;
  expect(won.state).toBe(ReservationState.HELD);
  expect(won.seatNumbers).toEqual([seat]);
  expect(won.userId).toBe(winner.userId);

  expect(await seatsIn(on, winner, scheduleId, "HELD")).toEqual([seat]);
  const rows = await seatRows(scheduleId);
  expect(rows.filter((row) => row.reservation_id !== null)).toEqual([expect.objectContaining({ number: seat, state: "HELD", reservation_id: won.id })]);
  const { reservation } = await reservations(on).getReservation({ reservationId: won.id }, bearer(winner.token));
  expect(reservation!.state).toBe(ReservationState.HELD);
  // The losers wrote no reservation.
  const { rows: records } = await db.query(`select id from "concert"."hold" where schedule_id = $1`, [scheduleId]);
  expect(records.map((r) => r.id)).toEqual([won.id]);
}

describe("concurrent holds on one seat", () => {
  it("of 500 fans holding the same seat at once, exactly one wins and 499 fail with SEAT_UNAVAILABLE", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
    const scheduleId = scheduleIds[0]!;
    const fans = await admitMany(suite, concertId, 500);

    const holds = reservations();
    const results = await Promise.allSettled(fans.map((fan) => holds.holdSeats({ scheduleId, seatNumbers: [7] }, fan.headers)));

    await expectOneWinner(suite, fans, results, scheduleId, 7);
    expect(await availableSeats(suite, concertId)).toEqual([9]);
  });

  describe("across two instances of every service on one database", () => {
    let second: Suite;
    beforeAll(async () => {
      second = await startTestSuite({ QUEUE_MAX_ACTIVE: "1000", REDIS_URL: redisUrl, REDIS_KEY_PREFIX: redisPrefix, DATABASE_POOL_SIZE: "6" });
    });
    afterAll(() => second?.close());

    it("of 500 fans split over both servers, exactly one wins", async () => {
      const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
      const scheduleId = scheduleIds[0]!;
      const fans = await admitMany(suite, concertId, 500);

      const servers = [reservations(suite), reservations(second)];
      const results = await Promise.allSettled(fans.map((fan, i) => servers[i % 2]!.holdSeats({ scheduleId, seatNumbers: [3] }, fan.headers)));

      await expectOneWinner(second, fans, results, scheduleId, 3);
    });

    it("each instance's seat map follows changes made through the other and by hand in the database", async () => {
      const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
      const scheduleId = scheduleIds[0]!;
      const [holder, watcher] = await admitMany(suite, concertId, 2);
      // Both instances have read (and may keep) the date's map while every seat was free.
      for (const on of [suite, second]) expect(await seatsIn(on, watcher!, scheduleId, "AVAILABLE")).toHaveLength(10);

      const { reservation } = await reservations(suite).holdSeats({ scheduleId, seatNumbers: [4] }, holder!.headers);
      expect(await seatsIn(suite, watcher!, scheduleId, "HELD")).toEqual([4]);
      await eventually("the other instance shows the hold", async () => (await seatsIn(second, watcher!, scheduleId, "HELD")).join() === "4", 2_000);

      await reservations(second).releaseHold({ reservationId: reservation!.id }, holder!.headers);
      for (const on of [suite, second]) {
        await eventually("both show the release", async () => (await seatsIn(on, watcher!, scheduleId, "AVAILABLE")).length === 10, 2_000);
      }

      await db.query(`update concert.seat set state = 'SOLD' where schedule_id = $1 and number = 9`, [scheduleId]);
      for (const on of [suite, second]) {
        await eventually("both show a seat sold by hand", async () => (await seatsIn(on, watcher!, scheduleId, "SOLD")).join() === "9", 2_000);
      }
    });
  });
});

describe("holds of several seats are all or none", () => {
  it("100 overlapping holds of 2-4 seats among 6: no seat has two holders, winners hold exactly their seats, losers hold nothing", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 6, price: 250n }]);
    const scheduleId = scheduleIds[0]!;
    const fans = await admitMany(suite, concertId, 100);
    const random = seededRandom(20261124);
    const wanted = fans.map(() => {
      const count = 2 + Math.floor(random() * 3);
      const pool = [1, 2, 3, 4, 5, 6];
      const picked: number[] = [];
      while (picked.length < count) picked.push(pool.splice(Math.floor(random() * pool.length), 1)[0]!);
      return picked;
    });

    const holds = reservations();
    const results = await Promise.allSettled(fans.map((fan, i) => holds.holdSeats({ scheduleId, seatNumbers: wanted[i]! }, fan.headers)));

    const counts = tally(results);
    expect(Object.keys(counts).filter((key) => key !== "ok")).toEqual(["FailedPrecondition/SEAT_UNAVAILABLE"]);
    // Without a winner there is nothing to check ownership of (and the first hold meets an empty date).
    expect(counts.ok ?? 0).toBeGreaterThan(0);

    const winners = results.flatMap((result, i) => (result.status === "fulfilled" ? [{ fan: fans[i]!, seats: [...wanted[i]!].sort((a, b) => a - b), id: result.value.reservation!.id }] : []));
    const heldByWinners = winners.flatMap((w) => w.seats);
    expect(new Set(heldByWinners).size, "a seat held by two reservations").toBe(heldByWinners.length);

    for (const winner of winners) {
      const { reservation } = await reservations().getReservation({ reservationId: winner.id }, bearer(winner.fan.token));
      expect(reservation!.state).toBe(ReservationState.HELD);
      expect(reservation!.seatNumbers).toEqual(winner.seats);
      expect(reservation!.amount).toBe(250n * BigInt(winner.seats.length));
    }

    const owner = new Map(winners.flatMap((w) => w.seats.map((n) => [n, w.id] as const)));
    for (const row of await seatRows(scheduleId)) {
      if (owner.has(row.number)) {
        expect(row, `seat ${row.number}`).toMatchObject({ state: "HELD", reservation_id: owner.get(row.number) });
      } else {
        // A failed hold leaves no trace on the seats it had got before it failed.
        expect(row, `seat ${row.number}`).toMatchObject({ state: "AVAILABLE", reservation_id: null });
      }
    }
    expect(await seatsIn(suite, fans[0]!, scheduleId, "HELD")).toEqual([...owner.keys()].sort((a, b) => a - b));
    expect(await availableSeats(suite, concertId)).toEqual([6 - owner.size]);
  });
});

describe("identical multi-seat holds racing", () => {
  it("of 12 fans holding the same four seats at once, exactly one wins, round after round", async () => {
    const rounds = 15;
    // A fan may win every round: a limit above what 15 rounds of four seats come to.
    const { concertId, scheduleIds } = await concertOnSale(
      suite,
      Array.from({ length: rounds }, () => ({ seatCount: 4, price: 100n })),
      { seatLimit: 100 },
    );
    const fans = await admitMany(suite, concertId, 12);
    const holds = reservations();
    const winnersPerRound: number[] = [];
    for (const scheduleId of scheduleIds) {
      const results = await Promise.allSettled(fans.map((fan) => holds.holdSeats({ scheduleId, seatNumbers: [4, 3, 2, 1] }, fan.headers)));
      expect(Object.keys(tally(results)).filter((key) => key !== "ok")).toEqual(["FailedPrecondition/SEAT_UNAVAILABLE"]);
      winnersPerRound.push(results.filter((result) => result.status === "fulfilled").length);
    }
    // Nobody winning would mean the losers' brief locks made everyone lose.
    expect(winnersPerRound).toEqual(Array.from({ length: rounds }, () => 1));
  });
});

// ---------------------------------------------------------------- the life of a hold

describe("seat states through the life of a hold", () => {
  it("ListSeats and ListSchedules show HELD on hold, AVAILABLE on release, SOLD on confirm", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 500n }, { seatCount: 5, price: 800n }]);
    const [first, second] = scheduleIds as [string, string];
    const fan = await admittedFan(suite, concertId);
    expect(await availableSeats(suite, concertId)).toEqual([10, 5]);

    const { reservation: held } = await reservations().holdSeats({ scheduleId: first, seatNumbers: [4, 2] }, fan.headers);
    expect(held!.seatNumbers).toEqual([2, 4]);
    expect(await seatsIn(suite, fan, first, "HELD")).toEqual([2, 4]);
    expect(await seatsIn(suite, fan, first, "AVAILABLE")).toHaveLength(8);
    expect(await availableSeats(suite, concertId)).toEqual([8, 5]);

    await reservations().releaseHold({ reservationId: held!.id }, bearer(fan.token));
    expect(await seatsIn(suite, fan, first, "AVAILABLE")).toHaveLength(10);
    expect(await availableSeats(suite, concertId)).toEqual([10, 5]);

    const { reservation: again } = await reservations().holdSeats({ scheduleId: first, seatNumbers: [1, 2, 3] }, fan.headers);
    const { reservation: sold } = await confirmations().confirmReservation(
      { reservationId: again!.id, paymentId: randomUUID(), userId: fan.userId },
      internal,
    );
    expect(sold!.state).toBe(ReservationState.CONFIRMED);
    const states = await seatStates(suite, fan, first);
    expect([1, 2, 3].map((n) => states[n])).toEqual(["SOLD", "SOLD", "SOLD"]);
    expect(await seatsIn(suite, fan, first, "AVAILABLE")).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(await availableSeats(suite, concertId)).toEqual([7, 5]);
    // The other date was never touched.
    expect(await seatsIn(suite, fan, second, "AVAILABLE")).toEqual([1, 2, 3, 4, 5]);
  });
});

// ---------------------------------------------------------------- rules

describe("one live hold per fan and date", () => {
  it("a second hold on the same date is HOLD_LIMIT_REACHED naming the live one; the first stays", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
    const fan = await admittedFan(suite, concertId);
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1] }, fan.headers);

    const error = await refused(
      reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [2] }, fan.headers),
      Code.FailedPrecondition,
      Reason.HOLD_LIMIT_REACHED,
    );
    expect(error.findDetails(ErrorDetailSchema)[0]?.metadata.reservation_id).toBe(reservation!.id);
    expect(await seatsIn(suite, fan, scheduleIds[0]!, "HELD")).toEqual([1]);
    const { reservation: first } = await reservations().getReservation({ reservationId: reservation!.id }, bearer(fan.token));
    expect(first!.state).toBe(ReservationState.HELD);
  });

  it("asking again for the seats one already holds (a retry whose answer was lost) is HOLD_LIMIT_REACHED naming the hold", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
    const fan = await admittedFan(suite, concertId);
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [4, 5] }, fan.headers);

    const error = await refused(
      reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [4, 5] }, fan.headers),
      Code.FailedPrecondition,
      Reason.HOLD_LIMIT_REACHED,
    );
    expect(error.findDetails(ErrorDetailSchema)[0]?.metadata.reservation_id).toBe(reservation!.id);
    expect(await seatsIn(suite, fan, scheduleIds[0]!, "HELD")).toEqual([4, 5]);
  });

  it("of 20 concurrent holds by one fan on different seats of a date, exactly one succeeds and the others leave no seat held", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 30, price: 100n }]);
    const scheduleId = scheduleIds[0]!;
    const fan = await admittedFan(suite, concertId);

    const holds = reservations();
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => holds.holdSeats({ scheduleId, seatNumbers: [i + 1] }, fan.headers)));

    expect(tally(results)).toEqual({ ok: 1, "FailedPrecondition/HOLD_LIMIT_REACHED": 19 });
    const seat = results.findIndex((result) => result.status === "fulfilled") + 1;
    expect(await seatsIn(suite, fan, scheduleId, "HELD")).toEqual([seat]);
    const rows = await seatRows(scheduleId);
    expect(rows.filter((row) => row.state !== "AVAILABLE" || row.reservation_id !== null).map((row) => row.number)).toEqual([seat]);
    const { reservations: mine } = await reservations().listReservations({}, bearer(fan.token));
    expect(mine.map((r) => r.seatNumbers)).toEqual([[seat]]);
  });

  it("after a release the fan can hold on that date again", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
    const fan = await admittedFan(suite, concertId);
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1] }, fan.headers);
    await reservations().releaseHold({ reservationId: reservation!.id }, bearer(fan.token));
    const { reservation: next } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1, 2] }, fan.headers);
    expect(next!.state).toBe(ReservationState.HELD);
    expect(await seatsIn(suite, fan, scheduleIds[0]!, "HELD")).toEqual([1, 2]);
  });

  it("holds on different dates are independent", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }, { seatCount: 10, price: 200n }]);
    const fan = await admittedFan(suite, concertId);
    const [a, b] = await Promise.all(scheduleIds.map((scheduleId) => reservations().holdSeats({ scheduleId, seatNumbers: [5] }, fan.headers)));
    expect([a!.reservation!.scheduleId, b!.reservation!.scheduleId]).toEqual(scheduleIds);
    expect([a!.reservation!.amount, b!.reservation!.amount]).toEqual([100n, 200n]);
    expect(await seatsIn(suite, fan, scheduleIds[0]!, "HELD")).toEqual([5]);
    expect(await seatsIn(suite, fan, scheduleIds[1]!, "HELD")).toEqual([5]);
  });
});

describe("HoldSeats input and access", () => {
  let concertId: string;
  let scheduleId: string;
  let fan: Fan;
  beforeAll(async () => {
    const created = await concertOnSale(suite, [{ seatCount: 8, price: 100n }]);
    concertId = created.concertId;
    scheduleId = created.scheduleIds[0]!;
    fan = await admittedFan(suite, concertId);
  });

  it("refuses 0 or 5 seats, a repeated seat and seat 0 as InvalidArgument naming seat_numbers", async () => {
    const holds = reservations();
    await invalid(holds.holdSeats({ scheduleId, seatNumbers: [] }, fan.headers), "seat_numbers");
    await invalid(holds.holdSeats({ scheduleId, seatNumbers: [1, 2, 3, 4, 5] }, fan.headers), "seat_numbers");
    await invalid(holds.holdSeats({ scheduleId, seatNumbers: [2, 3, 2] }, fan.headers), "seat_numbers");
    await invalid(holds.holdSeats({ scheduleId, seatNumbers: [0] }, fan.headers), "seat_numbers[0]");
    await invalid(holds.holdSeats({ scheduleId, seatNumbers: [1, -3] }, fan.headers), "seat_numbers[1]");
    await invalid(holds.holdSeats({ scheduleId: "not-a-uuid", seatNumbers: [1] }, fan.headers), "schedule_id");
    expect(await seatsIn(suite, fan, scheduleId, "AVAILABLE")).toHaveLength(8);
  });

  it("a seat beyond the date's seats is NotFound SEAT_NOT_FOUND, and the other seats asked for are not held", async () => {
    const error = await refused(reservations().holdSeats({ scheduleId, seatNumbers: [1, 9] }, fan.headers), Code.NotFound, Reason.SEAT_NOT_FOUND);
    expect(error.findDetails(ErrorDetailSchema)[0]?.metadata.seats).toBe("9");
    expect(await seatsIn(suite, fan, scheduleId, "AVAILABLE")).toHaveLength(8);
  });

  it("an unknown date is NotFound SCHEDULE_NOT_FOUND", async () => {
    await refused(reservations().holdSeats({ scheduleId: randomUUID(), seatNumbers: [1] }, fan.headers), Code.NotFound, Reason.SCHEDULE_NOT_FOUND);
  });

  it("a date of another concert than the queue token's is refused as NOT_ADMITTED and holds nothing", async () => {
    const other = await concertOnSale(suite, [{ seatCount: 4, price: 100n }]);
    const error = await failure(reservations().holdSeats({ scheduleId: other.scheduleIds[0]!, seatNumbers: [1] }, fan.headers));
    expect([Code.FailedPrecondition, Code.PermissionDenied]).toContain(error.code);
    expect(reasonOf(error)).toBe(Reason.NOT_ADMITTED);
    expect((await seatRows(other.scheduleIds[0]!)).every((row) => row.state === "AVAILABLE" && row.reservation_id === null)).toBe(true);
  });

  it("needs an admitted queue token: none is PermissionDenied, a waiting one FailedPrecondition NOT_ADMITTED, no user token Unauthenticated", async () => {
    const holds = reservations();
    await refused(holds.holdSeats({ scheduleId, seatNumbers: [1] }, bearer(fan.token)), Code.PermissionDenied, Reason.QUEUE_TOKEN_MISSING);
    await refused(
      holds.holdSeats({ scheduleId, seatNumbers: [1] }, { headers: { "x-queue-token": fan.queueToken } }),
      Code.Unauthenticated,
      Reason.TOKEN_MISSING,
    );

    await client(suite, QueueAdminService).pauseAdmission({ concertId }, operator);
    try {
      const user = await newUser(suite);
      const { queueToken } = await client(suite, QueueService).enterQueue({ concertId }, bearer(user.token));
      await refused(holds.holdSeats({ scheduleId, seatNumbers: [1] }, gated(user.token, queueToken)), Code.FailedPrecondition, Reason.NOT_ADMITTED);
    } finally {
      await client(suite, QueueAdminService).resumeAdmission({ concertId }, operator);
    }
    expect(await seatsIn(suite, fan, scheduleId, "AVAILABLE")).toHaveLength(8);
  });
});

// ---------------------------------------------------------------- ownership and listing

describe("a fan sees only their own reservations", () => {
  let concertId: string;
  let scheduleIds: string[];
  let owner: Fan;
  let stranger: Fan;
  beforeAll(async () => {
    ({ concertId, scheduleIds } = await concertOnSale(suite, Array.from({ length: 5 }, () => ({ seatCount: 10, price: 100n })), { seatLimit: 10 }));
    [owner, stranger] = await Promise.all([admittedFan(suite, concertId), admittedFan(suite, concertId)]);
  });

  it("GetReservation and ReleaseHold of another fan's reservation are NotFound RESERVATION_NOT_FOUND; the hold stays", async () => {
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [9] }, owner.headers);
    const id = reservation!.id;
    await refused(reservations().getReservation({ reservationId: id }, bearer(stranger.token)), Code.NotFound, Reason.RESERVATION_NOT_FOUND);
    await refused(reservations().releaseHold({ reservationId: id }, bearer(stranger.token)), Code.NotFound, Reason.RESERVATION_NOT_FOUND);
    await refused(reservations().getReservation({ reservationId: randomUUID() }, bearer(owner.token)), Code.NotFound, Reason.RESERVATION_NOT_FOUND);

    const { reservation: still } = await reservations().getReservation({ reservationId: id }, bearer(owner.token));
    expect(still!.state).toBe(ReservationState.HELD);
    expect(await seatsIn(suite, owner, scheduleIds[0]!, "HELD")).toEqual([9]);
    await reservations().releaseHold({ reservationId: id }, bearer(owner.token));
  });

  it("ListReservations returns only the caller's, newest first, two per page over five", async () => {
    const fan = await admittedFan(suite, concertId);
    const made: string[] = [];
    for (const scheduleId of scheduleIds) {
      // The stranger holds on every date too, in between.
      await reservations().holdSeats({ scheduleId, seatNumbers: [2] }, stranger.headers).catch(() => undefined);
      const { reservation } = await reservations().holdSeats({ scheduleId, seatNumbers: [1] }, fan.headers);
      made.push(reservation!.id);
    }

    const pages: string[][] = [];
    let pageToken = "";
    do {
      const page = await reservations().listReservations({ pageSize: 2, pageToken }, bearer(fan.token));
      expect(page.reservations.every((r) => r.userId === fan.userId)).toBe(true);
      pages.push(page.reservations.map((r) => r.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && pages.length < 10);
    expect(pages).toEqual([made.slice(3).reverse(), made.slice(1, 3).reverse(), made.slice(0, 1)]);

    const { reservations: all, nextPageToken } = await reservations().listReservations({}, bearer(fan.token));
    expect(all.map((r) => r.id)).toEqual([...made].reverse());
    expect(nextPageToken).toBe("");
    const created = all.map((r) => timestampMs(r.createdAt!));
    expect(created).toEqual([...created].sort((x, y) => y - x));
  });

  it("ListReservations refuses page_size 101 and a page_token it did not issue", async () => {
    await invalid(reservations().listReservations({ pageSize: 101 }, bearer(owner.token)), "page_size");
    await invalid(reservations().listReservations({ pageSize: -1 }, bearer(owner.token)), "page_size");
    await invalid(reservations().listReservations({ pageToken: "garbage" }, bearer(owner.token)), "page_token");
  });
});

// ---------------------------------------------------------------- release

describe("ReleaseHold", () => {
  it("releases a live hold at once, and again returns it RELEASED unchanged", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 6, price: 100n }]);
    const fan = await admittedFan(suite, concertId);
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1, 2, 3] }, fan.headers);

    const { reservation: released } = await reservations().releaseHold({ reservationId: reservation!.id }, bearer(fan.token));
    expect(released!.state).toBe(ReservationState.RELEASED);
    expect(released!.seatNumbers).toEqual([1, 2, 3]);
    expect(await seatsIn(suite, fan, scheduleIds[0]!, "AVAILABLE")).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await seatRows(scheduleIds[0]!)).every((row) => row.state === "AVAILABLE" && row.reservation_id === null)).toBe(true);
    expect((await reservationRow(reservation!.id))?.state).toBe("RELEASED");

    const { reservation: again } = await reservations().releaseHold({ reservationId: reservation!.id }, bearer(fan.token));
    expect(again).toEqual(released);
  });

  it("a released hold's seats can be held by another fan at once", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 6, price: 100n }]);
    const [fan, other] = await Promise.all([admittedFan(suite, concertId), admittedFan(suite, concertId)]);
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [4] }, fan.headers);
    await refused(reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [4] }, other.headers), Code.FailedPrecondition, Reason.SEAT_UNAVAILABLE);
    await reservations().releaseHold({ reservationId: reservation!.id }, bearer(fan.token));
    const { reservation: taken } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [4] }, other.headers);
    expect(taken!.userId).toBe(other.userId);
  });

  it("refuses a confirmed reservation with RESERVATION_CONFIRMED; the seats stay SOLD", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 6, price: 100n }]);
    const fan = await admittedFan(suite, concertId);
    const { reservation } = await reservations().holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [6] }, fan.headers);
    await confirmations().confirmReservation({ reservationId: reservation!.id, paymentId: randomUUID(), userId: fan.userId }, internal);

    await refused(reservations().releaseHold({ reservationId: reservation!.id }, bearer(fan.token)), Code.FailedPrecondition, Reason.RESERVATION_CONFIRMED);
    expect(await seatsIn(suite, fan, scheduleIds[0]!, "SOLD")).toEqual([6]);
    const { reservation: after } = await reservations().getReservation({ reservationId: reservation!.id }, bearer(fan.token));
    expect(after!.state).toBe(ReservationState.CONFIRMED);
  });
});

// ---------------------------------------------------------------- confirm

describe("ConfirmReservation (internal)", () => {
  let concertId: string;
  let scheduleId: string;
  beforeAll(async () => {
    const created = await concertOnSale(suite, [{ seatCount: 20, price: 300n }]);
    concertId = created.concertId;
    scheduleId = created.scheduleIds[0]!;
  });

  async function holdFor(seatNumbers: number[]) {
    const fan = await admittedFan(suite, concertId);
    const { reservation } = await reservations().holdSeats({ scheduleId, seatNumbers }, fan.headers);
    return { fan, reservation: reservation! };
  }

  it("needs the internal credential", async () => {
    const { fan, reservation } = await holdFor([1]);
    const request = { reservationId: reservation.id, paymentId: randomUUID(), userId: fan.userId };
    for (const options of [{}, bearer(fan.token), fan.headers, { headers: { "x-internal-credential": "wrong" } }]) {
      await refused(confirmations().confirmReservation(request, options), Code.PermissionDenied, Reason.INTERNAL_ONLY);
    }
    expect(await seatsIn(suite, fan, scheduleId, "SOLD")).toEqual([]);
  });

  it("turns a live hold into a sale: CONFIRMED with the payment id, seats SOLD; the same payment again returns the same", async () => {
    const { fan, reservation } = await holdFor([3, 2]);
    const paymentId = randomUUID();
    const { reservation: confirmed } = await confirmations().confirmReservation({ reservationId: reservation.id, paymentId, userId: fan.userId }, internal);
    expect(confirmed!.state).toBe(ReservationState.CONFIRMED);
    expect(confirmed!.paymentId).toBe(paymentId);
    expect(confirmed!.seatNumbers).toEqual([2, 3]);
    expect(confirmed!.amount).toBe(600n);
    const states = await seatStates(suite, fan, scheduleId);
    expect([states[2], states[3]]).toEqual(["SOLD", "SOLD"]);
    expect((await seatRows(scheduleId)).filter((row) => row.reservation_id === reservation.id).map((row) => [row.number, row.state])).toEqual([
      [2, "SOLD"],
      [3, "SOLD"],
    ]);

    const { reservation: again } = await confirmations().confirmReservation({ reservationId: reservation.id, paymentId, userId: fan.userId }, internal);
    expect(again).toEqual(confirmed);

    const { reservation: seen } = await reservations().getReservation({ reservationId: reservation.id }, bearer(fan.token));
    expect(seen).toEqual(confirmed);
  });

  it("refuses another payment for a confirmed reservation with RESERVATION_CONFIRMED", async () => {
    const { fan, reservation } = await holdFor([4]);
    const paymentId = randomUUID();
    await confirmations().confirmReservation({ reservationId: reservation.id, paymentId, userId: fan.userId }, internal);
    await refused(
      confirmations().confirmReservation({ reservationId: reservation.id, paymentId: randomUUID(), userId: fan.userId }, internal),
      Code.FailedPrecondition,
      Reason.RESERVATION_CONFIRMED,
    );
    const { reservation: seen } = await reservations().getReservation({ reservationId: reservation.id }, bearer(fan.token));
    expect(seen!.paymentId).toBe(paymentId);
  });

  it("refuses a released hold with HOLD_RELEASED; the seats stay AVAILABLE", async () => {
    const { fan, reservation } = await holdFor([5]);
    await reservations().releaseHold({ reservationId: reservation.id }, bearer(fan.token));
    await refused(
      confirmations().confirmReservation({ reservationId: reservation.id, paymentId: randomUUID(), userId: fan.userId }, internal),
      Code.FailedPrecondition,
      Reason.HOLD_RELEASED,
    );
    expect((await seatStates(suite, fan, scheduleId))[5]).toBe("AVAILABLE");
  });

  it("refuses another user's id or an unknown reservation with NotFound", async () => {
    const { fan, reservation } = await holdFor([6]);
    const stranger = await newUser(suite);
    await refused(
      confirmations().confirmReservation({ reservationId: reservation.id, paymentId: randomUUID(), userId: stranger.userId }, internal),
      Code.NotFound,
      Reason.RESERVATION_NOT_FOUND,
    );
    await refused(
      confirmations().confirmReservation({ reservationId: randomUUID(), paymentId: randomUUID(), userId: fan.userId }, internal),
      Code.NotFound,
      Reason.RESERVATION_NOT_FOUND,
    );
    expect((await seatStates(suite, fan, scheduleId))[6]).toBe("HELD");
  });

  it("names a malformed field", async () => {
    const { fan, reservation } = await holdFor([7]);
    await invalid(confirmations().confirmReservation({ reservationId: reservation.id, paymentId: "", userId: fan.userId }, internal), "payment_id");
    await invalid(confirmations().confirmReservation({ reservationId: "x", paymentId: randomUUID(), userId: fan.userId }, internal), "reservation_id");
  });
});

// ---------------------------------------------------------------- the coordinator

describe("CoordinatorService.ReserveSeats", () => {
  let concertId: string;
  let scheduleId: string;
  beforeAll(async () => {
    const created = await concertOnSale(suite, [{ seatCount: 8, price: 1234n }]);
    concertId = created.concertId;
    scheduleId = created.scheduleIds[0]!;
  });
  const coordinator = () => client(suite, CoordinatorService);

  it("holds the seats: a HELD reservation until now + HOLD_SECONDS, for the sum of the prices", async () => {
    const fan = await admittedFan(suite, concertId);
    const before = Date.now();
    const { reservation } = await coordinator().reserveSeats({ scheduleId, seatNumbers: [3, 1] }, fan.headers);
    const after = Date.now();
    expect(reservation!.state).toBe(ReservationState.HELD);
    expect(reservation!.seatNumbers).toEqual([1, 3]);
    expect(reservation!.amount).toBe(2468n);
    expect(reservation!.userId).toBe(fan.userId);
    expect(reservation!.concertId).toBe(concertId);
    const expires = timestampDate(reservation!.expiresAt!).getTime();
    expect(expires).toBeGreaterThanOrEqual(before + holdSeconds * 1000 - 1000);
    expect(expires).toBeLessThanOrEqual(after + holdSeconds * 1000 + 1000);

    const { reservation: seen } = await reservations().getReservation({ reservationId: reservation!.id }, bearer(fan.token));
    expect(seen).toEqual(reservation);
    expect(await seatsIn(suite, fan, scheduleId, "HELD")).toEqual([1, 3]);
  });

  it("an unknown date is NotFound SCHEDULE_NOT_FOUND", async () => {
    const fan = await admittedFan(suite, concertId);
    await refused(coordinator().reserveSeats({ scheduleId: randomUUID(), seatNumbers: [1] }, fan.headers), Code.NotFound, Reason.SCHEDULE_NOT_FOUND);
  });

  it("a seat beyond the date is NotFound SEAT_NOT_FOUND", async () => {
    const fan = await admittedFan(suite, concertId);
    await refused(coordinator().reserveSeats({ scheduleId, seatNumbers: [2, 9] }, fan.headers), Code.NotFound, Reason.SEAT_NOT_FOUND);
    expect((await seatStates(suite, fan, scheduleId))[2]).toBe("AVAILABLE");
  });

  it("a seat held by someone else is FailedPrecondition SEAT_UNAVAILABLE", async () => {
    const [holder, fan] = await Promise.all([admittedFan(suite, concertId), admittedFan(suite, concertId)]);
    await reservations().holdSeats({ scheduleId, seatNumbers: [5] }, holder.headers);
    const error = await refused(coordinator().reserveSeats({ scheduleId, seatNumbers: [4, 5] }, fan.headers), Code.FailedPrecondition, Reason.SEAT_UNAVAILABLE);
    expect(error.findDetails(ErrorDetailSchema)[0]?.metadata.seats).toBe("5");
    expect((await seatStates(suite, fan, scheduleId))[4]).toBe("AVAILABLE");
  });

  it("a date of another concert is refused as NOT_ADMITTED", async () => {
    const fan = await admittedFan(suite, concertId);
    const other = await concertOnSale(suite, [{ seatCount: 4, price: 100n }]);
    const error = await failure(coordinator().reserveSeats({ scheduleId: other.scheduleIds[0]!, seatNumbers: [1] }, fan.headers));
    expect([Code.FailedPrecondition, Code.PermissionDenied]).toContain(error.code);
    expect(reasonOf(error)).toBe(Reason.NOT_ADMITTED);
  });

  it("a waiting (not admitted) queue token is FailedPrecondition NOT_ADMITTED", async () => {
    const paused = await concertOnSale(suite, [{ seatCount: 4, price: 100n }]);
    await client(suite, QueueAdminService).pauseAdmission({ concertId: paused.concertId }, operator);
    try {
      const user = await newUser(suite);
      const { queueToken } = await client(suite, QueueService).enterQueue({ concertId: paused.concertId }, bearer(user.token));
      await refused(
        coordinator().reserveSeats({ scheduleId: paused.scheduleIds[0]!, seatNumbers: [1] }, gated(user.token, queueToken)),
        Code.FailedPrecondition,
        Reason.NOT_ADMITTED,
      );
    } finally {
      await client(suite, QueueAdminService).resumeAdmission({ concertId: paused.concertId }, operator);
    }
    expect((await seatRows(paused.scheduleIds[0]!)).every((row) => row.state === "AVAILABLE")).toBe(true);
  });

  it("no queue token is PermissionDenied QUEUE_TOKEN_MISSING", async () => {
    const user = await newUser(suite);
    await refused(coordinator().reserveSeats({ scheduleId, seatNumbers: [1] }, bearer(user.token)), Code.PermissionDenied, Reason.QUEUE_TOKEN_MISSING);
  });
});

// ---------------------------------------------------------------- expiry

describe("a hold ends on the clock", () => {
  describe("with no sweeper running (HOLD_SECONDS=1, HOLD_SWEEP_MS=60000, a database of its own)", () => {
    const databaseName = `boxoffice_test_reservation_${process.pid}_${Date.now().toString(36)}`;
    let clock: Suite;
    let own: pg.Pool;
    let concertId: string;
    let scheduleId: string;
    beforeAll(async () => {
      // A database of its own: the sweepers of every other suite in the run would otherwise tidy these holds.
      const url = await createDatabase(databaseName);
      clock = await startTestSuite({ DATABASE_URL: url, HOLD_SECONDS: "1", HOLD_SWEEP_MS: "60000", DATABASE_POOL_SIZE: "3" });
      own = new pg.Pool({ connectionString: url, max: 2 });
      const created = await concertOnSale(clock, [{ seatCount: 4, price: 100n }]);
    concertId = created.concertId;
    scheduleId = created.scheduleIds[0]!;
    });
    afterAll(async () => {
      await clock?.close();
      await own?.end();
      await dropDatabase(databaseName);
    });

    it("seats read HELD, then AVAILABLE after expires_at with the rows untouched; the reservation reads EXPIRED; the seat can be held again", async () => {
      const [fan, other] = await Promise.all([admittedFan(clock, concertId), admittedFan(clock, concertId)]);
      const { reservation } = await reservations(clock).holdSeats({ scheduleId, seatNumbers: [1, 2] }, fan.headers);
      const expiresAt = timestampMs(reservation!.expiresAt!);
      expect((await seatStates(clock, fan, scheduleId))[1]).toBe("HELD");
      expect(await availableSeats(clock, concertId)).toEqual([2]);

      await eventually("seat 1 AVAILABLE", async () => (await seatStates(clock, fan, scheduleId))[1] === "AVAILABLE");
      expect(Date.now()).toBeGreaterThanOrEqual(expiresAt - 100);
      expect(await seatsIn(clock, fan, scheduleId, "AVAILABLE")).toEqual([1, 2, 3, 4]);
      expect(await availableSeats(clock, concertId)).toEqual([4]);
      // Nothing tidied the rows: the clock alone decided.
      expect((await seatRows(scheduleId, own)).filter((row) => row.state === "HELD").map((row) => [row.number, row.reservation_id])).toEqual([
        [1, reservation!.id],
        [2, reservation!.id],
      ]);
      expect((await reservationRow(reservation!.id, own))?.state).toBe("HELD");

      const { reservation: seen } = await reservations(clock).getReservation({ reservationId: reservation!.id }, bearer(fan.token));
      expect(seen!.state).toBe(ReservationState.EXPIRED);
      const { reservations: listed } = await reservations(clock).listReservations({}, bearer(fan.token));
      expect(listed.map((r) => r.state)).toEqual([ReservationState.EXPIRED]);

      // Confirming the expired hold is refused, before and after someone else takes the seat.
      const confirm = () =>
        confirmations(clock).confirmReservation({ reservationId: reservation!.id, paymentId: randomUUID(), userId: fan.userId }, internal);
      await refused(confirm(), Code.FailedPrecondition, Reason.HOLD_EXPIRED);

      const { reservation: taken } = await reservations(clock).holdSeats({ scheduleId, seatNumbers: [1] }, other.headers);
      expect(taken!.state).toBe(ReservationState.HELD);
      await refused(confirm(), Code.FailedPrecondition, Reason.HOLD_EXPIRED);
      expect((await seatRows(scheduleId, own))[0]).toMatchObject({ number: 1, state: "HELD", reservation_id: taken!.id });
      expect((await seatStates(clock, other, scheduleId))[1]).toBe("HELD");

      // Releasing the expired hold changes nothing, and does not free the seat someone else now holds.
      const { reservation: released } = await reservations(clock).releaseHold({ reservationId: reservation!.id }, bearer(fan.token));
      expect(released!.state).toBe(ReservationState.EXPIRED);
      expect((await seatRows(scheduleId, own))[0]).toMatchObject({ state: "HELD", reservation_id: taken!.id });

      // The fan whose hold ran out can hold on that date again.
      const { reservation: next } = await reservations(clock).holdSeats({ scheduleId, seatNumbers: [2] }, fan.headers);
      expect(next!.state).toBe(ReservationState.HELD);
    });
  });

  describe("with a fast sweeper (HOLD_SECONDS=1, HOLD_SWEEP_MS=100)", () => {
    let swept: Suite;
    beforeAll(async () => {
      swept = await startTestSuite({ HOLD_SECONDS: "1", HOLD_SWEEP_MS: "100", DATABASE_POOL_SIZE: "3" });
    });
    afterAll(() => swept?.close());

    it("marks the reservation row EXPIRED and gives the seat rows back", async () => {
      const { concertId, scheduleIds } = await concertOnSale(swept, [{ seatCount: 4, price: 100n }]);
      const fan = await admittedFan(swept, concertId);
      const { reservation } = await reservations(swept).holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [3, 4] }, fan.headers);

      await eventually("reservation row EXPIRED", async () => (await reservationRow(reservation!.id))?.state === "EXPIRED");
      await eventually("seat rows tidied", async () =>
        (await seatRows(scheduleIds[0]!)).every((row) => row.state === "AVAILABLE" && row.reservation_id === null && row.held_until === null),
      );
      const { reservation: seen } = await reservations(swept).getReservation({ reservationId: reservation!.id }, bearer(fan.token));
      expect(seen!.state).toBe(ReservationState.EXPIRED);
    });
  });
});
