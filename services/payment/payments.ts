import type { EntityManager, InferEntity } from "@mikro-orm/postgresql";
import { create } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { ReservationSchema, ReservationState, type Reservation } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { DependencyDown, Forbidden, NotFound, Reason, Refused } from "../platform/errors.js";
import { Payment, type PaymentState } from "./payment.entity.js";
import { logger, why } from "../platform/log.js";

const paymentLog = logger("payment");

export type PaymentRecord = InferEntity<typeof Payment>;
export type { Reservation };

/** A refusal by a neighbour that ends a payment FAILED (an outage, by contrast, is a DependencyDown and leaves it PENDING). */
export interface Refusal {
  refused: Reason;
  message: string;
}

/** The fan's points (the point service). Every movement is keyed by the payment, so a repeat moves nothing. */
export interface PointsPort {
  debit(userId: string, amount: number, paymentId: string, signal?: AbortSignal): Promise<"debited" | Refusal>;
  refund(userId: string, paymentId: string, signal?: AbortSignal): Promise<void>;
}

/** The holds (served beside the seats). */
export interface ReservationsPort {
  /** A reservation of the fan; NotFound when it is not theirs. */
  get(userId: string, reservationId: string): Promise<Reservation>;
  /** Sells the hold for the payment (idempotent per payment), or says why it cannot be sold. */
  confirm(request: { userId: string; reservationId: string; paymentId: string; amount: number }, signal?: AbortSignal): Promise<Reservation | Refusal>;
}

/** The fan's queue session, which a payment ends (the seed: paying ends the queue token). */
export interface SessionsPort {
  complete(userId: string, concertId: string, signal?: AbortSignal): Promise<void>;
}

export interface PaymentNeighbours {
  points: PointsPort;
  reservations: ReservationsPort;
  sessions: SessionsPort;
}

export interface PayRequest {
  userId: string;
  /** The fan's admission, checked at the edge the fan called; asked for a new payment only, not for a replay. */
  admitted: () => Promise<{ concertId: string }>;
  /** Undefined only for a replay (admitted refuses): the payment made with the key, whatever it paid for. */
  reservationId: string | undefined;
  idempotencyKey: string;
  /** The reservation as the caller has just read or made it, so that it need not be read again. */
  reservation?: Reservation;
}

/** A payment and the reservation as it left it (undefined where it could not be read). */
export interface Paid {
  payment: PaymentRecord;
  reservation: Reservation | undefined;
}

const isRefusal = (result: unknown): result is Refusal => typeof result === "object" && result !== null && "refused" in result;

/**
 * How long a driver's claim on a payment lasts, at most: a crashed driver's
 * payment is recovered once its lease has lapsed, so the lease is also kept
 * within a third of the recovery interval, but at least a second.
 * A drive's calls are cut off a quarter of the lease before it ends, leaving
 * that to record the outcome: two drivers never call out for one payment at
 * once, and a drive cut off leaves the payment PENDING for recovery.
 */
export const maxLeaseMs = 30_000;
/** Pauses of a caller polling for the outcome of a drive in another process: 1.55 s in all, well within the 5 s deadline between services. */
const awaitOtherMs = [50, 100, 200, 400, 800];

/** A driver's claim: the lease's end as the database wrote it, as text so that it compares exactly (microseconds). */
type Lease = string;

/** What a drive decided, to record. */
interface Outcome {
  state: PaymentState;
  failureReason: number;
  failureMessage: string;
  sessionToEnd: boolean;
}

const table = `"payment"."payment"`;

/** How a hold can end unsold, and the reason a payment for it fails with: read both ways. */
const endings: [ReservationState, Reason][] = [
  [ReservationState.EXPIRED, Reason.HOLD_EXPIRED],
  [ReservationState.RELEASED, Reason.HOLD_RELEASED],
];

/** A step of the saga that could not be done now: the payment stays PENDING for recovery. */
class Stuck {
  constructor(readonly why: string) {}
}

/**
 * Payments, as a saga keyed by the payment id: record PENDING → debit the
 * points → confirm the reservation → end the fan's queue session → SUCCEEDED.
 * When the reservation can no longer be confirmed the points are refunded and
 * the payment ends FAILED with the reason. Every step is idempotent per
 * payment, so a retry, a concurrent duplicate or the recovery loop simply
 * drives it again from the start and lands in the same place.
 *
 * One caller drives a payment at a time, under a lease on its row
 * (`driven_until`), claimed and released by single conditional statements:
 * no transaction or connection is held while other services are called.
 * Duplicates in one process share the drive in progress; a caller that finds
 * another process driving waits briefly for its outcome.
 */
export class Payments {
  /** Drives in progress in this process, by payment id. */
  readonly #inFlight = new Map<string, Promise<Paid>>();
  /** Payments whose unexpected failure this process has logged (bounded: cleared when large). */
  readonly #unexpected = new Set<string>();

  readonly #leaseMs: number;

  /** `recoveryMs`: the longest a payment may stay PENDING after a crash (PAYMENT_RECOVERY_MS). */
  constructor(
    private readonly neighbours: PaymentNeighbours,
    recoveryMs = 3 * maxLeaseMs,
  ) {
    // At least a second, so that a drive has time to run; then a crash is still settled within the interval
    // (lease lapsed, then the next recovery pass, a sixth of the interval later) for intervals from 1.2 s.
    this.#leaseMs = Math.min(maxLeaseMs, Math.max(1_000, Math.floor(recoveryMs / 3)));
  }

  async pay(em: EntityManager, request: PayRequest): Promise<Paid> {
    const fork = em.fork();
    let created: { payment: PaymentRecord; lease: Lease | null; reservation: Reservation } | undefined;
    try {
      created = await this.#create(fork, request);
    } catch (error) {
      // Only new work needs the admission and a payable reservation: whatever refused it, an earlier payment
      // with this key is the answer (a replay). Looked up only now, so that a new payment does not pay for it.
      const earlier = await em.fork().findOne(Payment, { userId: request.userId, idempotencyKey: request.idempotencyKey });
      if (earlier) return this.#again(em, earlier, request);
      throw error;
    }
    if (!created) {
      // An earlier or concurrent call with the same key recorded it first: that payment is the one.
      const first = await em.fork().findOneOrFail(Payment, { userId: request.userId, idempotencyKey: request.idempotencyKey });
      return this.#again(em, first, request);
    }
    const { payment, lease, reservation } = created;
    if (lease === null) return { payment, reservation: this.#asLeft(reservation, payment) };
    return this.#single(payment.id, () => this.#run(fork, payment, lease, reservation));
  }

  /**
   * Drives a payment as far as it can go now. Outages of the other services
   * leave it PENDING (the recovery loop comes back); refusals end it. When
   * another process is driving it, waits a little for the outcome, or with
   * `skipIfBusy` leaves it alone; either way returns it as it then stands.
   * A drive already in progress in this process is joined, not repeated.
   */
  async drive(em: EntityManager, paymentId: string, { skipIfBusy = false } = {}): Promise<Paid> {
    return this.#single(paymentId, () => this.#claimAndRun(em.fork(), paymentId, !skipIfBusy));
  }

  /**
   * Gives back the points of a payment whose booking was cancelled, and marks
   * it REFUNDED. The ledger refunds a payment at most once (its unique index),
   * so any number of calls, concurrent or after a crash, move the points once;
   * the mark is one conditional statement. A payment still PENDING is driven
   * first (its confirm then finds the booking cancelled, and a failed payment
   * is refunded by the saga itself); one that cannot settle now is an outage,
   * retried by the caller. Nothing is held open while the point service is called.
   */
  async refund(em: EntityManager, request: { userId: string; paymentId: string; reservationId: string }): Promise<PaymentRecord> {
    let payment = await em.fork().findOne(Payment, { id: request.paymentId, userId: request.userId, reservationId: request.reservationId });
    if (!payment) throw new NotFound(Reason.PAYMENT_NOT_FOUND, `no payment ${request.paymentId} of that user for that reservation`);
    if (payment.state === "PENDING") payment = (await this.drive(em, payment.id)).payment;
    if (payment.state === "PENDING") throw new DependencyDown(`payment ${payment.id} is still being settled; retry later`);
    if (payment.state !== "SUCCEEDED") return payment;
    const reservation = await this.neighbours.reservations.get(payment.userId, payment.reservationId);
    if (reservation.state !== ReservationState.CANCELLED) throw new Refused(Reason.RESERVATION_CONFIRMED, "the booking is not cancelled: its payment is not refunded");
    await this.neighbours.points.refund(payment.userId, payment.id);
    const [row] = await em
      .getConnection()
      .execute(`update ${table} set "state" = 'REFUNDED', updated_at = now() where id = ? and "state" = 'SUCCEEDED' returning *`, [payment.id]);
    if (row) paymentLog.info({ paymentId: payment.id }, `payment ${payment.id}: refunded, its booking was cancelled`);
    return row ? em.map(Payment, row) : em.fork().findOneOrFail(Payment, { id: payment.id });
  }

  /** Payments left PENDING (or with a session to end) for longer than `olderThanMs`, and driven by no one: drive each again. */
  async recover(em: EntityManager, olderThanMs: number, batch = 100): Promise<number> {
    const stale = await em.getConnection().execute<{ id: string }[]>(
      `select id from ${table}
        where ("state" = 'PENDING' or "session_to_end") and updated_at < now() - make_interval(secs => ?)
          and (driven_until is null or driven_until <= now())
        order by updated_at limit ?`,
      [olderThanMs / 1000, batch],
    );
    // A few at a time: a crash leaves many payments behind at once, and each waits on other services.
    const queue = stale.map(({ id }) => id);
    const worker = async () => {
      // One payment's failure (its database row, say) does not stop the others.
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) await this.drive(em, id, { skipIfBusy: true }).catch(() => undefined);
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return stale.length;
  }

  /**
   * Records a new payment, claimed by this caller, in one statement; undefined
   * when the key is taken (the unique index decides between concurrent calls).
   * A hold already ended fails without moving a point, and without a lease.
   */
  async #create(em: EntityManager, request: PayRequest): Promise<{ payment: PaymentRecord; lease: Lease | null; reservation: Reservation } | undefined> {
    const { concertId } = await request.admitted();
    if (request.reservationId === undefined) throw new Error("a new payment needs the reservation it pays for");
    const reservation = request.reservation ?? (await this.neighbours.reservations.get(request.userId, request.reservationId));
    if (reservation.id !== request.reservationId || reservation.userId !== request.userId) {
      throw new NotFound(Reason.RESERVATION_NOT_FOUND, `no reservation ${request.reservationId}`);
    }
    if (reservation.concertId !== concertId) {
      throw new Forbidden(Reason.NOT_ADMITTED, "the queue token admits you to another concert than this reservation's");
    }
    const endedReason = endings.find(([state]) => state === reservation.state)?.[1];
    const [row] = await em.getConnection().execute(
      `insert into ${table} (id, user_id, reservation_id, concert_id, idempotency_key, amount, "state", failure_reason, failure_message,
                             driven_until, created_at, updated_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, ?, case when ? then now() + make_interval(secs => ?) end, now(), now())
       on conflict (user_id, idempotency_key) do nothing
       returning *, driven_until::text as lease`,
      [
        randomUUID(),
        request.userId,
        request.reservationId,
        reservation.concertId,
        request.idempotencyKey,
        Number(reservation.amount),
        endedReason === undefined ? "PENDING" : "FAILED",
        endedReason ?? 0,
        endedReason === undefined ? "" : `the hold has ended (${ReservationState[reservation.state]})`,
        endedReason === undefined,
        this.#leaseMs / 1000,
      ],
    );
    return row && { ...this.#mapped(em, row), reservation };
  }

  /**
   * Claims the payment if it has anything left to do and nobody holds it, and
   * reads it in the same statement: one round trip whether or not it is ours.
   */
  async #claimAndRun(em: EntityManager, paymentId: string, wait: boolean): Promise<Paid> {
    const [row] = await em.getConnection().execute(
      `with claimed as (
         update ${table} set driven_until = now() + make_interval(secs => ?)
          where id = ? and ("state" = 'PENDING' or "session_to_end") and (driven_until is null or driven_until <= now())
         returning *)
       select *, driven_until::text as lease from claimed
       union all
       select *, null from ${table} where id = ? and not exists (select 1 from claimed)`,
      [this.#leaseMs / 1000, paymentId, paymentId],
    );
    if (!row) throw new NotFound(Reason.PAYMENT_NOT_FOUND, `no payment ${paymentId}`);
    const { payment, lease } = this.#mapped(em, row);
    if (lease !== null) return this.#run(em, payment, lease, undefined);
    return { payment: wait && payment.state === "PENDING" ? await this.#awaitOther(em, payment) : payment, reservation: undefined };
  }

  /**
   * Runs the saga from where the payment stands, under this caller's lease, and
   * records the outcome (releasing the lease). `reservation` is given for a new
   * payment only.
   */
  async #run(em: EntityManager, payment: PaymentRecord, lease: Lease, reservation: Reservation | undefined): Promise<Paid> {
    const cutOff = AbortSignal.timeout(Math.floor((this.#leaseMs * 3) / 4));
    try {
      const settled = payment.state === "PENDING" ? await this.#settle(payment, cutOff) : undefined;
      const next: Outcome = settled?.outcome ?? {
        state: payment.state,
        failureReason: payment.failureReason,
        failureMessage: payment.failureMessage,
        sessionToEnd: payment.sessionToEnd,
      };
      if (next.sessionToEnd) next.sessionToEnd = !(await this.#endSession(payment, cutOff));
      const recorded = await this.#record(em, payment, lease, next, settled?.stuck, reservation !== undefined);
      return { payment: recorded, reservation: settled?.confirmed ?? (reservation && this.#asLeft(reservation, recorded)) };
    } catch (error) {
      // Unexpected (a bug, the database): let recovery have it now rather than when the lease lapses.
      await this.#release(em, payment.id, lease).catch(() => undefined);
      throw error;
    }
  }

  /** The debit and the confirmation; no outcome when a step could not be done now (the payment stays PENDING, `stuck` says why). */
  async #settle(payment: PaymentRecord, signal: AbortSignal): Promise<{ outcome?: Outcome; confirmed?: Reservation; stuck?: string }> {
    const { points, reservations } = this.neighbours;
    const { id: paymentId, userId, reservationId, amount } = payment;
    const step = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
      if (signal.aborted) throw new Stuck(`could not ${name} before the drive's lease ran out`);
      try {
        return await work();
      } catch (error) {
        if (!(error instanceof DependencyDown)) this.#unexpectedly(paymentId, name, error);
        throw new Stuck(`could not ${name}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    try {
      const debited = await step("debit the points", () => points.debit(userId, amount, paymentId, signal));
      if (isRefusal(debited)) return { outcome: failed(debited) };
      const confirmed = await step("confirm the reservation", () => reservations.confirm({ userId, reservationId, paymentId, amount }, signal));
      if (!isRefusal(confirmed)) return { outcome: { state: "SUCCEEDED", failureReason: 0, failureMessage: "", sessionToEnd: true }, confirmed };
      await step("refund the points", () => points.refund(userId, paymentId, signal));
      return { outcome: failed(confirmed) };
    } catch (error) {
      if (error instanceof Stuck) return { stuck: error.why };
      throw error;
    }
  }

  /**
   * Anything but an outage that a neighbour answered (an internal error, say) is
   * no verdict on the payment either: it stays PENDING for recovery, and the fan
   * is told so rather than Internal. Logged once per payment and process.
   */
  #unexpectedly(paymentId: string, step: string, error: unknown) {
    if (this.#unexpected.has(paymentId)) return;
    if (this.#unexpected.size >= 10_000) this.#unexpected.clear();
    this.#unexpected.add(paymentId);
    paymentLog.error({ paymentId, step, error: why(error) }, `payment ${paymentId}: could not ${step}, unexpectedly: ${why(error)}`);
  }

  /**
   * The seed: paying ends the queue token. Done before SUCCEEDED is recorded,
   * so that the happy path records once: all three calls are idempotent per
   * payment, and a crash in between leaves it PENDING, to be driven again.
   * Best effort: when it fails, recovery retries it (`session_to_end`).
   */
  async #endSession(payment: PaymentRecord, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return false;
    try {
      await this.neighbours.sessions.complete(payment.userId, payment.concertId, signal);
      return true;
    } catch (error) {
      if (error instanceof DependencyDown) return false;
      throw error;
    }
  }

  /**
   * Records the outcome and releases the lease in one statement, only while the
   * lease is still this caller's; if it lapsed meanwhile, the new holder records
   * (the same outcome: every step is idempotent), and this reads the row.
   * A payment is logged once per change of its state, not at every pass.
   */
  async #record(em: EntityManager, payment: PaymentRecord, lease: Lease, next: Outcome, stuck: string | undefined, fresh: boolean): Promise<PaymentRecord> {
    // An unchanged payment keeps its updated_at: the recovery loop goes by how long it has been stuck.
    const changed = next.state !== payment.state || next.sessionToEnd !== payment.sessionToEnd;
    const [row] = await em.getConnection().execute(
      `update ${table}
          set "state" = case when "state" = 'REFUNDED' then "state" else ? end, failure_reason = ?, failure_message = ?, session_to_end = ?, driven_until = null,
              updated_at = case when ? then now() else updated_at end
        where id = ? and driven_until = ?::timestamptz
       returning *`,
      [next.state, next.failureReason, next.failureMessage, next.sessionToEnd, changed, payment.id, lease],
    );
    // What recovery deals with is logged once per change of state, never at every pass: a new payment an
    // outage leaves PENDING, and each later change of a payment that was left. (A payment settled at once is not.)
    if (stuck && fresh) paymentLog.warn({ paymentId: payment.id }, `payment ${payment.id}: left PENDING for recovery, ${stuck}`);
    else if (changed && !fresh) paymentLog.info({ paymentId: payment.id }, `payment ${payment.id}: recovered, ${payment.state} → ${next.state}${next.sessionToEnd ? " (queue session still to end)" : ""}`);
    return row ? em.map(Payment, row) : em.refreshOrFail(payment);
  }

  async #release(em: EntityManager, paymentId: string, lease: Lease) {
    await em.getConnection().execute(`update ${table} set driven_until = null where id = ? and driven_until = ?::timestamptz`, [paymentId, lease], "run");
  }

  /** Another process is driving it: polls for its outcome for a while, then answers with the payment as it stands. */
  async #awaitOther(em: EntityManager, payment: PaymentRecord): Promise<PaymentRecord> {
    for (const ms of awaitOtherMs) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      payment = await em.refreshOrFail(payment);
      if (payment.state !== "PENDING" || payment.drivenUntil == null) break;
    }
    return payment;
  }

  /** One drive per payment in this process: a caller that finds one in progress shares its result. */
  #single(paymentId: string, drive: () => Promise<Paid>): Promise<Paid> {
    let flight = this.#inFlight.get(paymentId);
    if (!flight) {
      flight = drive().finally(() => this.#inFlight.delete(paymentId));
      this.#inFlight.set(paymentId, flight);
    }
    return flight;
  }

  /** A row from `returning *, driven_until::text as lease` as an entity, and the lease (null when not claimed). */
  #mapped(em: EntityManager, row: Record<string, unknown>): { payment: PaymentRecord; lease: Lease | null } {
    const { lease, ...columns } = row;
    return { payment: em.map(Payment, columns), lease: (lease as Lease | null) ?? null };
  }

  /** The reservation as a payment that did not sell it left it: a refusal to sell says how it ended. */
  #asLeft(reservation: Reservation, payment: PaymentRecord): Reservation {
    const state = payment.state === "FAILED" ? endings.find(([, reason]) => reason === payment.failureReason)?.[0] : undefined;
    return state === undefined ? reservation : create(ReservationSchema, { ...reservation, state });
  }

  /** A replay: the payment made earlier with the key, driven on if it is not settled, with its reservation as it stands. */
  async #again(em: EntityManager, payment: PaymentRecord, request: PayRequest): Promise<Paid> {
    if (request.reservationId !== undefined && payment.reservationId !== request.reservationId) {
      throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used to pay for another reservation");
    }
    const paid = payment.state === "PENDING" || payment.sessionToEnd ? await this.drive(em, payment.id) : { payment, reservation: undefined };
    if (paid.reservation) return paid;
    if (request.reservation?.id === payment.reservationId && paid.payment.state !== "SUCCEEDED") return { payment: paid.payment, reservation: this.#asLeft(request.reservation, paid.payment) };
    const reservation = await this.neighbours.reservations.get(payment.userId, payment.reservationId).catch((error: unknown) => {
      if (error instanceof DependencyDown) return undefined;
      throw error;
    });
    return { payment: paid.payment, reservation };
  }
}

function failed(refusal: Refusal): Outcome {
  return { state: "FAILED", failureReason: refusal.refused, failureMessage: refusal.message.slice(0, 500), sessionToEnd: false };
}
