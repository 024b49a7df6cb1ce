import type { EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { NotFound, Reason, Refused } from "../platform/errors.js";
import { statementsOn, type Statements } from "../platform/database.js";
import { newestFirst } from "../platform/pagination.js";
import { Hold, type HoldState } from "./concert.entity.js";
import { holdableNow, holdRefusal, saleColumns, saleOf, saleRefusal, sellableNow, type SaleRow } from "./sale.js";
import { bestAvailable } from "./best-available.js";
import type { SeatMaps } from "./seat-maps.js";

/** A hold as its owner sees it (the record behind a reservation). */
export interface HoldRecord {
  id: string;
  userId: string;
  concertId: string;
  scheduleId: string;
  seatNumbers: number[];
  amount: number;
  state: HoldState;
  expiresAt: Date;
  createdAt: Date;
  paymentId: string | null | undefined;
  /** While CANCELLED: why, when, and when the points came back (unset: the refund is still to do). */
  cancelReason?: string | null;
  cancelledAt?: Date | null;
  refundedAt?: Date | null;
}

/**
 * The one rule of a hold's life, in both its forms: a hold (or a seat held for
 * it) is over at its end by the database's clock, whether or not anything has
 * tidied it up. Every read and every statement below goes by it.
 */
export const heldPastItsEnd = (state: string, until: number | null, now: number) => state === "HELD" && until !== null && until <= now;
/** The SQL form, for a seat: its state as of now. */
export const seatStateNow = `(case when seat.state = 'HELD' and seat.held_until <= now() then 'AVAILABLE' else seat.state end)`;
const seatFree = `(seat.state = 'AVAILABLE' or (seat.state = 'HELD' and seat.held_until <= now()))`;
const holdLive = `(hold.state = 'HELD' and hold.expires_at > now())`;
/** The seats a fan (the parameter) holds live or has bought of a concert: what its per-fan limit counts. */
const seatsOfFan = (concertId: string) => `(select coalesce(sum(jsonb_array_length(hold.seat_numbers)), 0) from "concert"."hold" hold
  where hold.user_id = ? and hold.concert_id = ${concertId} and (hold.state = 'CONFIRMED' or ${holdLive}))`;

/** A hold record's state now: HELD past expires_at reads EXPIRED. */
export function holdStateNow(hold: Pick<HoldRecord, "state" | "expiresAt">, now = Date.now()): HoldState {
  return heldPastItsEnd(hold.state, hold.expiresAt.getTime(), now) ? "EXPIRED" : hold.state;
}

/** A CTE (to follow others) that frees the seats of the holds of `from` still HELD (or, for bookings cancelled, SOLD) for them. */
export function freeSeatsOf(from: string, state: "HELD" | "SOLD" = "HELD"): string {
  return `, freed as (
         update "concert"."seat" seat set state = 'AVAILABLE', reservation_id = null, held_until = null
           from ${from} where seat.schedule_id = ${from}.schedule_id and seat.reservation_id = ${from}.id and seat.state = '${state}'
         returning seat.schedule_id)`;
}

/** Told when seats of a concert are free again (the queue then admits at once). */
export interface SupplyAnnouncer {
  seatsFreed(concertIds: string[]): Promise<void>;
}

export interface HoldRequest {
  userId: string;
  /** The concert the fan was admitted to; the date must be of it. */
  concertId: string;
  scheduleId: string;
  seatNumbers: number[];
  /** Answer the fan's live hold on exactly these seats instead of refusing (a retried booking). */
  reuseOwnHold?: boolean;
}

/** A best-available hold: `count` adjacent seats of a tier ("" on a date without a plan). */
export interface BestRequest {
  userId: string;
  concertId: string;
  scheduleId: string;
  tier: string;
  count: number;
}

/** How many times a best-available hold chooses again when plain holds take its seats first. */
const bestAttempts = 5;

export interface Confirmation {
  userId: string;
  reservationId: string;
  paymentId: string;
  /** When given, what the payment debited: a hold of another amount is not sold for it. */
  amount?: number;
}

/** The columns a new hold is inserted with. */
const insertedColumns = `id, user_id, concert_id, schedule_id, seat_numbers, amount, state, expires_at, created_at, payment_id`;
/** What a hold record is read with. */
export const columns = `${insertedColumns}, cancel_reason, cancelled_at, refunded_at`;
/** The same, qualified by the table's alias, for statements that join. */
export const holdColumns = columns
  .split(", ")
  .map((column) => `hold.${column}`)
  .join(", ");

export interface HoldRow {
  id: string;
  user_id: string;
  concert_id: string;
  schedule_id: string;
  seat_numbers: number[];
  amount: string | number;
  state: HoldState;
  expires_at: string | Date;
  created_at: string | Date;
  payment_id: string | null;
  cancel_reason: string | null;
  cancelled_at: string | Date | null;
  refunded_at: string | Date | null;
}

const dateOrNull = (value: string | Date | null) => (value === null ? null : new Date(value));

export function record(row: HoldRow): HoldRecord {
  return {
    id: row.id,
    userId: row.user_id,
    concertId: row.concert_id,
    scheduleId: row.schedule_id,
    seatNumbers: row.seat_numbers,
    amount: Number(row.amount),
    state: row.state,
    expiresAt: new Date(row.expires_at),
    createdAt: new Date(row.created_at),
    paymentId: row.payment_id,
    cancelReason: row.cancel_reason,
    cancelledAt: dateOrNull(row.cancelled_at),
    refundedAt: dateOrNull(row.refunded_at),
  };
}

const dateCancelled = (date: { date_cancelled: boolean }) =>
  date.date_cancelled ? new Refused(Reason.SCHEDULE_CANCELLED, "that date was cancelled by the organiser") : undefined;

/**
 * Seat holds, the story of the seed's temporary assignment: hold seats for a
 * few minutes, give them back, turn them into a sale, or let them run out. A
 * hold and its seats change together, each change one statement, so the
 * database decides every race and nothing
 * needs compensating. No other service is called while a statement runs.
 */
export class Holds {
  constructor(
    private readonly maps: SeatMaps,
    private readonly supply: SupplyAnnouncer,
    private readonly holdMs: number,
  ) {}

  /**
   * Takes the seats and writes the hold, all or none, in one statement: the
   * wanted seats that are free now are locked in seat order (so concurrent holds
   * never deadlock; one meeting a seat another hold is taking waits for that
   * statement, at most the pool's 2 s lock_timeout, then sees it taken or free
   * again), taken only if every one of them is, and the hold is inserted from
   * what was taken. The same statement takes nothing unless the date's seats may
   * be held now (the sale open, the date to come) and the fan's seats of the
   * concert, held and owned, stay within its limit. The one-hold-per-date index
   * refuses a second live hold of the fan, which undoes the whole statement.
   *
   * The limit counts holds of other dates, which no seat lock orders, and a
   * READ COMMITTED statement sees what was committed when it began: so the
   * count comes from `concert.fan_seats_locked` (a migration), which first
   * takes an advisory lock of the fan and concert, held to the statement's end,
   * and then counts in a snapshot of its own (a volatile function's query sees
   * what committed before it ran). Holds of one fan at one concert are decided
   * one after the other, each seeing the one before, in one round trip.
   */
  async hold(em: EntityManager, request: HoldRequest, retried = false): Promise<HoldRecord & { reused?: true }> {
    const id = randomUUID();
    let rows: HoldRow[];
    try {
      rows = await this.#take(em, request, id);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      // A deadlock with the sweeper tidying the fan's own run-out hold on the date (it locks that hold, then
      // the seats this statement has locked): PostgreSQL undid this statement, and the sweep has committed since.
      if (code === "40P01" && !retried) return this.hold(em, request, true);
      if (code === "55P03") {
        throw new Refused(Reason.SEAT_UNAVAILABLE, "those seats are being taken by someone else right now", { seats: request.seatNumbers.join(",") });
      }
      if (code !== "23505") throw error;
      // The fan holds seats on this date. A hold of theirs that has run out but is not tidied yet is marked EXPIRED, and the hold tried again.
      if (!retried && (await this.#expireStale(em, request.userId, request.scheduleId)) > 0) return this.hold(em, request, true);
      return this.#ownLiveHold(em, request);
    }
    if (rows.length === 0) {
      // Refused seats the fan holds already, or a limit their own hold fills (a retry of a hold whose answer was lost, say): name that hold.
      const refusal = await this.#whyNot(em, request);
      if (refusal.reason === Reason.SEAT_UNAVAILABLE || refusal.reason === Reason.FAN_LIMIT_REACHED) return this.#ownLiveHold(em, request, refusal);
      throw refusal;
    }
    this.maps.forget([request.scheduleId]);
    return record(rows[0]!);
  }

  /** The hold statement (see hold) for these seats: the new hold's row, or none when it took nothing. Runs in `em`'s transaction, if any. */
  #take(em: EntityManager, request: HoldRequest, id: string): Promise<HoldRow[]> {
    const numbers = `{${request.seatNumbers.join(",")}}`;
    return em.execute<HoldRow[]>(
      `with sale as (
         select 1 from "concert"."schedule" schedule join "concert"."concert" concert on concert.id = schedule.concert_id
          where schedule.id = ? and concert.id = ? and ${holdableNow} and "concert"."fan_seats_locked"(?::uuid, concert.id) + ?::int <= concert.seat_limit),
       free as (
         select seat.schedule_id, seat.number from "concert"."seat" seat
          where seat.schedule_id = ? and seat.number = any(?::int[]) and ${seatFree} and exists (select 1 from sale)
          order by seat.number
          for update of seat),
       taken as (
         update "concert"."seat" seat
            set state = 'HELD', reservation_id = ?, held_until = now() + make_interval(secs => ? / 1000.0)
           from free
          where seat.schedule_id = free.schedule_id and seat.number = free.number and (select count(*) from free) = ?
         returning seat.number, seat.price, seat.held_until)
       insert into "concert"."hold" (${insertedColumns})
       select ?, ?, ?, ?, jsonb_agg(number order by number), sum(price)::bigint, 'HELD', min(held_until), ?, null
         from taken having count(*) = ?
       returning ${columns}`,
      [
        request.scheduleId,
        request.concertId,
        request.userId,
        request.seatNumbers.length,
        request.scheduleId,
        numbers,
        id,
        this.holdMs,
        request.seatNumbers.length,
        id,
        request.userId,
        request.concertId,
        request.scheduleId,
        new Date(),
        request.seatNumbers.length,
      ],
    );
  }

  /**
   * Holds `count` adjacent seats of a tier chosen by the best-available rule
   * (best-available.ts), in one short transaction: it first takes an advisory
   * lock of the date and tier, so choosers of one tier go one after the other,
   * each reading the seats as the one before left them (READ COMMITTED: each
   * statement sees what committed before it began, and the lock is let go at
   * commit); then picks the block and runs the hold statement on it, which
   * still checks the sale, the fan's limit and that every seat is free. Two
   * choosers never pick the same seats or leave an orphan between their blocks.
   * A plain HoldSeats does not take the lock: when it took a chosen seat
   * meanwhile, the choice is made again, a few times at most.
   */
  async holdBest(em: EntityManager, request: BestRequest): Promise<HoldRecord> {
    const tier = request.tier === "" ? "" : ` in tier "${request.tier}"`;
    for (let attempt = 1; ; attempt++) {
      const id = randomUUID();
      let chosen: { numbers?: number[]; rows: HoldRow[]; tierSeats: number };
      try {
        chosen = await em.transactional(async (tx) => {
          await tx.execute(`select pg_advisory_xact_lock(hashtext(?), hashtext(?))`, [request.scheduleId, request.tier]);
          const seats = await tx.execute<{ number: number; section: string; row_label: string; row_position: number; place: number; free: boolean }[]>(
            `select seat.number, seat.section, seat.row_label, seat.row_position, seat.place, ${seatFree} as free
               from "concert"."seat" seat where seat.schedule_id = ? and seat.tier = ?`,
            [request.scheduleId, request.tier],
          );
          const numbers = bestAvailable(
            seats.map((seat) => ({ number: seat.number, section: seat.section, rowLabel: seat.row_label, rowPosition: seat.row_position, place: seat.place, free: seat.free })),
            request.count,
          );
          if (!numbers) return { rows: [], tierSeats: seats.length };
          // A run-out hold of the fan's on the date, not yet tidied, would make the one-hold index refuse (and undo the transaction).
          await this.#expireStale(tx, request.userId, request.scheduleId);
          return { numbers, rows: await this.#take(tx, { ...request, seatNumbers: numbers }, id), tierSeats: seats.length };
        });
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if ((code === "40P01" || code === "55P03") && attempt < bestAttempts) continue;
        if (code === "55P03") throw new Refused(Reason.SEAT_UNAVAILABLE, "those seats are being taken by someone else right now");
        if (code === "23505") return this.#ownLiveHold(em, { ...request, seatNumbers: [] });
        throw error;
      }
      if (chosen.rows.length > 0) {
        this.maps.forget([request.scheduleId]);
        return record(chosen.rows[0]!);
      }
      const refusal = await this.#whyNot(em, { ...request, seatNumbers: chosen.numbers ?? [] }, request.count);
      if (refusal.reason === Reason.FAN_LIMIT_REACHED) return this.#ownLiveHold(em, { ...request, seatNumbers: [] }, refusal);
      if (refusal.reason !== Reason.SEAT_UNAVAILABLE) throw refusal;
      if (chosen.tierSeats === 0) throw new NotFound(Reason.SEAT_NOT_FOUND, `this date has no seats${tier}`, { tier: request.tier });
      if (!chosen.numbers) {
        throw new Refused(Reason.SEAT_UNAVAILABLE, `no ${request.count} adjacent seats${tier} are free without leaving a single empty seat`, {
          tier: request.tier,
          count: String(request.count),
        });
      }
      // A plain hold took a chosen seat between the read and the hold: choose again.
      if (attempt >= bestAttempts) throw new Refused(Reason.SEAT_UNAVAILABLE, `the seats${tier} are being taken quickly; try again`, { tier: request.tier });
    }
  }

  /**
   * When the fan's own live hold may stand in the way: it, when reused; else HOLD_LIMIT_REACHED naming it, when
   * the one-hold index refused (no `seatsTaken`) or the taken seats are in it; else `seatsTaken`.
   */
  async #ownLiveHold(em: EntityManager, request: HoldRequest, seatsTaken?: Error): Promise<HoldRecord & { reused: true }> {
    const [live] = await em
      .getConnection()
      .execute<HoldRow[]>(`select ${columns} from "concert"."hold" hold where user_id = ? and schedule_id = ? and ${holdLive}`, [request.userId, request.scheduleId]);
    const wanted = [...request.seatNumbers].sort((a, b) => a - b).join();
    if (live && request.reuseOwnHold && live.seat_numbers.join() === wanted) return { ...record(live), reused: true };
    const overlaps = live && request.seatNumbers.some((n) => live.seat_numbers.includes(n));
    if (!seatsTaken || overlaps) {
      throw new Refused(
        Reason.HOLD_LIMIT_REACHED,
        "you already hold seats on this date; pay for them or release them first",
        live ? { reservation_id: live.id } : undefined,
      );
    }
    throw seatsTaken;
  }

  async #expireStale(em: EntityManager, userId: string, scheduleId: string): Promise<number> {
    const stale = await em.execute<{ id: string }[]>(
      `with expired as (
         update "concert"."hold" hold set state = 'EXPIRED' where user_id = ? and schedule_id = ? and state = 'HELD' and expires_at <= now() returning id, schedule_id)
       ${freeSeatsOf("expired")}
       select id from expired`,
      [userId, scheduleId],
    );
    return stale.length;
  }

  /** A date, its concert's sale and the fan's seats of it (held or owned), and which of `seatNumbers` are taken now. */
  async #dateOf(em: EntityManager, scheduleId: string, userId: string, seatNumbers: number[]) {
    const [date] = await em.getConnection().execute<(SaleRow & { concert_id: string; seat_count: number; starts_at: string | Date; date_cancelled: boolean; seat_limit: number; owned: string; taken: number[] | null })[]>(
      `select schedule.concert_id, schedule.seat_count, schedule.starts_at, schedule.cancelled_at is not null as date_cancelled, concert.seat_limit, ${saleColumns},
              ${seatsOfFan("concert.id")} as owned,
              (select array_agg(seat.number order by seat.number) from "concert"."seat" seat
                where seat.schedule_id = schedule.id and seat.number = any(?::int[]) and not ${seatFree}) as taken
         from "concert"."schedule" schedule join "concert"."concert" concert on concert.id = schedule.concert_id where schedule.id = ?`,
      [userId, `{${seatNumbers.join(",")}}`, scheduleId],
    );
    return date && { ...date, sale: saleOf(date), startsAt: new Date(date.starts_at), now: new Date(date.now), owned: Number(date.owned) };
  }

  /** Why a hold took nothing: no such date, another concert's date, the sale, no such seat, the fan's limit, or seats taken. */
  async #whyNot(em: EntityManager, request: HoldRequest, wanted = request.seatNumbers.length): Promise<Refused | NotFound> {
    const date = await this.#dateOf(em, request.scheduleId, request.userId, request.seatNumbers);
    if (!date) return new NotFound(Reason.SCHEDULE_NOT_FOUND, `no concert date with id ${request.scheduleId}`);
    if (date.concert_id !== request.concertId) return new Refused(Reason.NOT_ADMITTED, "that date belongs to another concert");
    const closed = dateCancelled(date) ?? holdRefusal(date.sale, date.startsAt, date.now);
    if (closed) return closed;
    const missing = request.seatNumbers.filter((n) => n > date.seat_count);
    if (missing.length > 0) {
      return new NotFound(Reason.SEAT_NOT_FOUND, `that date has seats 1..${date.seat_count}; no seat ${missing.join(", ")}`, {
        seats: missing.join(","),
      });
    }
    if (date.owned + wanted > date.seat_limit) {
      return new Refused(Reason.FAN_LIMIT_REACHED, `you may buy at most ${date.seat_limit} seats of this concert; you hold or own ${date.owned}`, {
        limit: String(date.seat_limit),
        held: String(date.owned),
      });
    }
    // Seats that are free again by now were taken by a hold that has since failed: they count as taken too.
    const taken = date.taken?.length ? date.taken : request.seatNumbers;
    return new Refused(Reason.SEAT_UNAVAILABLE, `seat ${taken.join(", ")} is already taken`, { seats: taken.join(",") });
  }

  async get(db: Statements, userId: string, reservationId: string): Promise<HoldRecord> {
    const [row] = await db.rows<HoldRow>(`select ${columns} from "concert"."hold" where id = $1 and user_id = $2`, [reservationId, userId]);
    // Someone else's reservation is as absent as one that does not exist.
    if (!row) throw new NotFound(Reason.RESERVATION_NOT_FOUND, `no reservation ${reservationId}`);
    return record(row);
  }

  async list(db: Statements, userId: string, page: { pageSize: number; pageToken: string }) {
    const { rows, nextPageToken } = await newestFirst<HoldRow>(db, { from: `"concert"."hold"`, columns, where: "user_id = $1", params: [userId] }, page);
    return { rows: rows.map(record), nextPageToken };
  }

  /** Gives a live hold's seats back at once, in one statement; an ended hold is returned as it is. */
  async release(em: EntityManager, userId: string, reservationId: string): Promise<HoldRecord> {
    const [row] = await em.getConnection().execute<HoldRow[]>(
      `with released as (
         update "concert"."hold" hold set state = 'RELEASED' where id = ? and user_id = ? and ${holdLive} returning ${columns})
       ${freeSeatsOf("released")}
       select * from released`,
      [reservationId, userId],
    );
    if (!row) {
      const hold = await this.get(statementsOn(em), userId, reservationId);
      if (hold.state === "CONFIRMED") throw new Refused(Reason.RESERVATION_CONFIRMED, "a paid reservation cannot be released; cancel it instead");
      return hold;
    }
    const released = record(row);
    this.maps.forget([released.scheduleId]);
    await this.supply.seatsFreed([released.concertId]);
    return released;
  }

  /**
   * Turns a live hold into a sale for a payment, in one statement: the live
   * hold and its seats are locked (hold first, then seats), and only if every
   * seat is still the hold's, the date has not started and the concert is not
   * cancelled are the seats SOLD and the hold CONFIRMED; otherwise nothing
   * changes. It first waits for the fan's holds of the concert (the per-fan
   * limit's lock) and then judges the hold live by the clock at that moment: a
   * hold sold just as it runs out cannot count twice with a new hold made just
   * after. The concert and date rows are taken FOR KEY SHARE, which only a
   * cancel's FOR UPDATE waits for (cancellations.ts): a sale and a cancel of
   * its concert or date never pass each other. Seats already SOLD to the hold count (a hold carried over from the
   * old layout, whose seats were sold before its record was; now a hold's seats
   * are SOLD only with it CONFIRMED). Idempotent per payment.
   */
  async confirm(em: EntityManager, confirmation: Confirmation): Promise<HoldRecord> {
    const { userId, reservationId, paymentId, amount } = confirmation;
    const [row] = await em.getConnection().execute<HoldRow[]>(
      `with fan as (select "concert"."fan_seats_locked"(?::uuid, (select concert_id from "concert"."hold" where id = ?)) as seats),
       live as (
         select hold.id, hold.schedule_id, jsonb_array_length(hold.seat_numbers) as seats from "concert"."hold" hold
          where hold.id = ? and hold.user_id = ? and ${holdLive} and (?::bigint is null or hold.amount = ?::bigint)
            and exists (select 1 from fan) and hold.expires_at > clock_timestamp()
          for update),
       selling as (
         select concert.id from live join "concert"."schedule" schedule on schedule.id = live.schedule_id
           join "concert"."concert" concert on concert.id = schedule.concert_id
          where ${sellableNow}
          for key share of schedule, concert),
       held as (
         select seat.schedule_id, seat.number from "concert"."seat" seat join live on seat.schedule_id = live.schedule_id
          where seat.reservation_id = live.id and seat.state in ('HELD', 'SOLD')
          for update of seat),
       whole as (select live.id from live where (select count(*) from held) = live.seats and exists (select 1 from selling)),
       sold as (
         update "concert"."seat" seat set state = 'SOLD', held_until = null
           from held where seat.schedule_id = held.schedule_id and seat.number = held.number and exists (select 1 from whole)
         returning seat.number),
       confirmed as (
         update "concert"."hold" hold set state = 'CONFIRMED', payment_id = ? from whole where hold.id = whole.id
         returning ${holdColumns})
       select * from confirmed`,
      [userId, reservationId, reservationId, userId, amount ?? null, amount ?? null, paymentId],
    );
    const confirmed = row && record(row);
    if (confirmed) {
      this.maps.forget([confirmed.scheduleId]);
      return confirmed;
    }
    const hold = await this.get(statementsOn(em), userId, reservationId);
    const state = holdStateNow(hold);
    if (state === "CONFIRMED") {
      if (hold.paymentId === paymentId) return hold;
      throw new Refused(Reason.RESERVATION_CONFIRMED, "the reservation is already paid for by another payment");
    }
    if (state === "RELEASED") throw new Refused(Reason.HOLD_RELEASED, "the hold was released; its seats are free again");
    if (state === "CANCELLED") throw new Refused(Reason.RESERVATION_CANCELLED, "the booking was cancelled");
    const date = await this.#dateOf(em, hold.scheduleId, userId, []);
    const unsellable = date && (dateCancelled(date) ?? saleRefusal(date.sale, date.startsAt, date.now));
    if (unsellable) throw unsellable;
    if (state === "HELD" && amount !== undefined && amount !== hold.amount) {
      throw new Refused(Reason.AMOUNT_MISMATCH, `the reservation costs ${hold.amount} points, not ${amount}`);
    }
    throw new Refused(Reason.HOLD_EXPIRED, "the hold has ended; its seats are no longer held");
  }

  /**
   * Tidies holds that ran out, in one statement: marks them EXPIRED and frees
   * their seats; then tells the queue the concerts have seats again.
   * Availability never waited for this: the clock already decided it.
   */
  async sweep(em: EntityManager, batch = 500): Promise<number> {
    const expired = await em.getConnection().execute<{ id: string; concert_id: string; schedule_id: string }[]>(
      `with expired as (
         update "concert"."hold" set state = 'EXPIRED'
          where id in (select id from "concert"."hold" where state = 'HELD' and expires_at <= now() order by expires_at limit ? for update skip locked)
         returning id, concert_id, schedule_id)
       ${freeSeatsOf("expired")}
       select id, concert_id, schedule_id from expired`,
      [batch],
    );
    if (expired.length === 0) return 0;
    this.maps.forget(new Set(expired.map((row) => row.schedule_id)));
    await this.supply.seatsFreed([...new Set(expired.map((row) => row.concert_id))]);
    return expired.length;
  }
}
