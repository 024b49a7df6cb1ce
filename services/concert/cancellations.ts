import type { EntityManager } from "@mikro-orm/postgresql";
import { DependencyDown, NotFound, Reason, Refused } from "../platform/errors.js";
import { logger, why } from "../platform/log.js";
import { concertNow, type ConcertView } from "./catalog.js";
import { columns, freeSeatsOf, holdColumns, holdStateNow, record, type HoldRecord, type HoldRow, type SupplyAnnouncer } from "./holds.js";
import type { SeatMaps } from "./seat-maps.js";

const refundLog = logger("concert");

/** The payment service, which gives a cancelled booking's points back (idempotent per payment). */
export interface RefundsPort {
  /** Resolves once the payment's points are back (or it kept none); DependencyDown while that cannot be done now. */
  refund(booking: { userId: string; paymentId: string; reservationId: string }, signal?: AbortSignal): Promise<void>;
}

/** A fan's cancellation, and what a cancelled booking reads when it is the fan's own. */
export const cancelledByFan = "cancelled at your request";
const dateCancelledReason = "the date was cancelled by the organiser";
const concertCancelledReason = "the concert was cancelled by the organiser";

/** How many bookings one refund run pass takes, and refunds at once. */
const runBatch = 200;
const runWorkers = 4;

/**
 * Cancellations and their refunds. Every cancellation is recorded first, in
 * one statement (a fan's) or one short transaction (an organiser's): the
 * bookings CANCELLED with their reason, their seats AVAILABLE again, live
 * holds released. A CANCELLED booking without `refunded_at` is a refund still
 * to do: the refund run asks the payment service to refund its payment (which
 * the ledger does at most once per payment) and then sets `refunded_at`, one
 * statement. Nothing is held open while the payment service is called; a crash
 * anywhere leaves the to-do list as it was, and the next run (every
 * REFUND_RUN_MS, and at start) finishes it, so every cancelled booking is
 * refunded exactly once.
 */
export class Cancellations {
  /** The refund run in progress in this process: a cancel starts one, or joins it and runs once more after. */
  #running: Promise<number> | undefined;
  #again = false;
  readonly #unexpected = new Set<string>();

  constructor(
    private readonly maps: SeatMaps,
    private readonly supply: SupplyAnnouncer,
    private readonly refunds: RefundsPort,
  ) {}

  /**
   * A fan cancels a paid booking, in one statement: only while it is CONFIRMED,
   * no ticket of it was admitted (`used_seats` empty) and its date starts
   * later than the concert's cutoff. ScanTicket marks a seat used on this same
   * row under the condition that it is CONFIRMED, so a scan and a cancel of
   * one booking meet on the row: whichever updates it first wins, and the
   * other, re-checking its condition on the row as committed, changes nothing.
   * Then the points are refunded (left to the refund run when that cannot be
   * done now). Cancelling a cancelled booking answers it as it is.
   */
  async cancelByFan(em: EntityManager, userId: string, reservationId: string): Promise<HoldRecord> {
    const [row] = await em.getConnection().execute<HoldRow[]>(
      `with cancelled as (
         update "concert"."hold" hold set state = 'CANCELLED', cancel_reason = ?, cancelled_at = now()
          where hold.id = ? and hold.user_id = ? and hold.state = 'CONFIRMED' and cardinality(hold.used_seats) = 0
            and exists (select 1 from "concert"."schedule" schedule join "concert"."concert" concert on concert.id = schedule.concert_id
                         where schedule.id = hold.schedule_id and schedule.starts_at - make_interval(secs => concert.cancel_cutoff_seconds) > now())
         returning ${columns})
       ${freeSeatsOf("cancelled", "SOLD")}
       select * from cancelled`,
      [cancelledByFan, reservationId, userId],
    );
    if (row) {
      const cancelled = record(row);
      this.maps.forget([cancelled.scheduleId]);
      await this.supply.seatsFreed([cancelled.concertId]);
      return this.#refundNow(em, cancelled);
    }
    const [hold] = await em.getConnection().execute<(HoldRow & { used_seats: number[]; starts_at: string | Date; cutoff_at: string | Date })[]>(
      `select ${holdColumns}, hold.used_seats, schedule.starts_at,
              schedule.starts_at - make_interval(secs => concert.cancel_cutoff_seconds) as cutoff_at
         from "concert"."hold" hold join "concert"."schedule" schedule on schedule.id = hold.schedule_id
         join "concert"."concert" concert on concert.id = hold.concert_id
        where hold.id = ? and hold.user_id = ?`,
      [reservationId, userId],
    );
    // Someone else's booking is as absent as one that does not exist.
    if (!hold) throw new NotFound(Reason.RESERVATION_NOT_FOUND, `no reservation ${reservationId}`);
    const booking = record(hold);
    if (booking.state === "CANCELLED") return booking.refundedAt ? booking : this.#refundNow(em, booking);
    if (booking.state !== "CONFIRMED") {
      throw new Refused(Reason.RESERVATION_NOT_CONFIRMED, `only a paid booking can be cancelled; this one is ${holdStateNow(booking)} (release a hold instead)`);
    }
    if (hold.used_seats.length > 0) {
      throw new Refused(Reason.TICKET_USED, `a ticket of this booking was admitted at the door (seat ${hold.used_seats.join(", ")}): it can no longer be cancelled`, {
        seats: hold.used_seats.join(","),
      });
    }
    const cutoff = new Date(hold.cutoff_at);
    throw new Refused(Reason.CANCEL_CUTOFF_PASSED, `bookings of this date could be cancelled until ${cutoff.toISOString()}`, {
      cutoff_at: cutoff.toISOString(),
      starts_at: new Date(hold.starts_at).toISOString(),
    });
  }

  /**
   * The organiser cancels a date that has not started, in one short
   * transaction: the date row is locked FOR UPDATE, which waits for every sale
   * in flight (a confirm takes it FOR KEY SHARE) and holds off new ones; then
   * one statement, whose snapshot sees every sale there is, marks the date
   * cancelled, its bookings CANCELLED and their seats AVAILABLE (supply counts
   * no seat of a cancelled date). The refunds follow (the refund run). Idempotent.
   */
  async cancelSchedule(em: EntityManager, scheduleId: string, reason: string): Promise<{ changed: boolean; cancelledBookings: number; concertId: string }> {
    const done = await em.transactional(async (tx) => {
      const [date] = await tx.execute<{ concert_id: string; cancelled: boolean; started: boolean }[]>(
        `select concert_id, cancelled_at is not null as cancelled, starts_at <= now() as started from "concert"."schedule" where id = ? for update`,
        [scheduleId],
      );
      if (!date) throw new NotFound(Reason.SCHEDULE_NOT_FOUND, `no concert date with id ${scheduleId}`);
      if (date.cancelled) return { changed: false, cancelledBookings: 0, concertId: date.concert_id };
      if (date.started) throw new Refused(Reason.DATE_STARTED, "that date has started; it can no longer be cancelled");
      const [row] = await tx.execute<{ cancelled: string }[]>(
        `with date as (update "concert"."schedule" set cancelled_at = now(), cancel_reason = ? where id = ? returning id)
         ${this.#cancelBookings("hold.schedule_id = (select id from date)")}`,
        [reason || dateCancelledReason, scheduleId, reason || dateCancelledReason],
      );
      return { changed: true, cancelledBookings: Number(row!.cancelled), concertId: date.concert_id };
    });
    if (done.changed) {
      this.maps.forget([scheduleId]);
      await this.supply.seatsFreed([done.concertId]);
      this.startRun(em);
    }
    return done;
  }

  /**
   * The organiser cancels a concert, in one short transaction, as a date above:
   * the concert row locked FOR UPDATE (a confirm takes it FOR KEY SHARE), then
   * one statement cancels it and its bookings, and frees their seats.
   * The refunds follow. Idempotent.
   */
  async cancelConcert(em: EntityManager, concertId: string, reason: string): Promise<{ changed: boolean; cancelledBookings: number; after: ConcertView }> {
    const done = await em.transactional(async (tx) => {
      const [locked] = await tx.execute<{ status: string }[]>(`select status from "concert"."concert" where id = ? for update`, [concertId]);
      if (!locked) throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
      if (locked.status === "CANCELLED") return undefined;
      const [row] = await tx.execute<{ cancelled: string; dates: string[] | null }[]>(
        `with concert as (update "concert"."concert" set status = 'CANCELLED', cancel_reason = ?, cancelled_at = now() where id = ? returning id)
         ${this.#cancelBookings("hold.concert_id = (select id from concert)")}`,
        [reason, concertId, reason || concertCancelledReason],
      );
      return { cancelled: Number(row!.cancelled), dates: row!.dates ?? [] };
    });
    const after = await concertNow(em, concertId);
    if (done !== undefined) {
      this.maps.forget(done.dates);
      await this.supply.seatsFreed([concertId]);
      this.startRun(em);
    }
    return { changed: done !== undefined, cancelledBookings: done?.cancelled ?? 0, after };
  }

  /**
   * CTEs (after one that picked the date or concert) cancelling its bookings with the reason (the last
   * parameter) and freeing their seats; yields the count and the dates. Live holds are left to run out: no
   * sale of them can pass the cancel (sellableNow), and a payment for one is told why.
   */
  #cancelBookings(holds: string): string {
    return `, cancelled as (
         update "concert"."hold" hold set state = 'CANCELLED', cancel_reason = ?, cancelled_at = now()
          where ${holds} and hold.state = 'CONFIRMED' returning hold.id, hold.schedule_id)
       ${freeSeatsOf("cancelled", "SOLD")}
       select (select count(*) from cancelled) as cancelled, (select array_agg(distinct schedule_id) from freed) as dates`;
  }

  /** Waits for a refund run in progress (at shutdown, before the database closes). */
  async idle(): Promise<void> {
    await this.#running?.catch(() => undefined);
  }

  /** Starts a refund run now, in the background (a cancel's refunds follow at once); a run in progress runs once more after. */
  startRun(em: EntityManager): void {
    void this.refundDue(em).catch((error: unknown) => refundLog.error({ error: why(error) }, `refund run: ${why(error)}`));
  }

  /** The refund run: refunds every cancelled booking whose points are not back yet, a few at a time; the number refunded. */
  async refundDue(em: EntityManager): Promise<number> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      let refunded = 0;
      do {
        this.#again = false;
        refunded += await this.#pass(em.fork());
      } while (this.#again);
      return refunded;
    })().finally(() => (this.#running = undefined));
    return this.#running;
  }

  /** One pass over every booking due, a page at a time in (cancelled_at, id) order, so that one that cannot be refunded now holds up no other. */
  async #pass(em: EntityManager): Promise<number> {
    let refunded = 0;
    // The cursor's time as the database wrote it (text, to the microsecond): a date's bookings share one cancelled_at.
    let after: [string, string] = ["-infinity", ""];
    for (;;) {
      const due = await em.getConnection().execute<(HoldRow & { cursor_at: string })[]>(
        `select ${columns}, cancelled_at::text as cursor_at from "concert"."hold"
          where state = 'CANCELLED' and refunded_at is null and (cancelled_at, id::text) > (?::timestamptz, ?)
          order by cancelled_at, id::text limit ?`,
        [after[0], after[1], runBatch],
      );
      if (due.length === 0) return refunded;
      const last = due[due.length - 1]!;
      after = [last.cursor_at, last.id];
      const queue = due.map(record);
      const worker = async () => {
        for (let booking = queue.shift(); booking; booking = queue.shift()) if ((await this.#refundNow(em, booking)).refundedAt) refunded++;
      };
      await Promise.all(Array.from({ length: runWorkers }, worker));
      if (due.length < runBatch) return refunded;
    }
  }

  /** Refunds one cancelled booking's payment and records it; an outage leaves it to the refund run. */
  async #refundNow(em: EntityManager, booking: HoldRecord): Promise<HoldRecord> {
    if (!booking.paymentId) return booking;
    try {
      await this.refunds.refund({ userId: booking.userId, paymentId: booking.paymentId, reservationId: booking.id });
    } catch (error) {
      if (!(error instanceof DependencyDown)) this.#unexpectedly(booking.id, error);
      return booking;
    }
    const [row] = await em.getConnection().execute<HoldRow[]>(
      `update "concert"."hold" set refunded_at = coalesce(refunded_at, now()) where id = ? and state = 'CANCELLED' returning ${columns}`,
      [booking.id],
    );
    return row ? record(row) : booking;
  }

  /** A refund refused or failed for another reason than an outage: logged once per booking and process, retried by the run. */
  #unexpectedly(reservationId: string, error: unknown) {
    if (this.#unexpected.has(reservationId)) return;
    if (this.#unexpected.size >= 10_000) this.#unexpected.clear();
    this.#unexpected.add(reservationId);
    refundLog.error({ reservationId, error: why(error) }, `booking ${reservationId}: could not refund it, unexpectedly: ${why(error)}`);
  }
}
