import { Code, ConnectError, type CallOptions, type Client } from "@connectrpc/connect";
import type { EntityManager, InferEntity } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import type { PointInternalService } from "../../gen/boxoffice/point/v1/point_pb.js";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationState, type ReservationInternalService, type ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { callDependency } from "../platform/clients.js";
import { Forbidden, NotFound, Reason, reasonOf, Refused } from "../platform/errors.js";
import { Payment, type PaymentState } from "./payment.entity.js";

export type PaymentRecord = InferEntity<typeof Payment>;

export interface PaymentClients {
  points: Client<typeof PointInternalService>;
  reservations: Client<typeof ReservationService>;
  reservationsInternal: Client<typeof ReservationInternalService>;
  queue: Client<typeof QueueInternalService>;
}

export interface PayRequest {
  userId: string;
  /** Checks the fan's admission (for a new payment only) and says to which concert. */
  admitted: () => Promise<{ concertId: string }>;
  reservationId: string;
  idempotencyKey: string;
  /** The fan's credentials, to read the reservation as its owner. */
  onBehalf: CallOptions;
}

/**
 * How long a driver's claim on a payment lasts. A drive is at most four calls
 * of 5 s (debit, confirm, refund, end the session), and its calls are cut off
 * `writeMarginMs` before the lease ends anyway; a crashed driver's payment is
 * recovered once its lease has lapsed.
 */
export const leaseMs = 30_000;
/** Left at the end of a lease for recording the outcome. */
const writeMarginMs = 5_000;
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

/** A refusal from another service that ends a payment as FAILED (as opposed to an outage, which leaves it PENDING). */
function refusal(error: unknown): { reason: Reason; message: string } | undefined {
  if (!(error instanceof ConnectError) || ![Code.FailedPrecondition, Code.NotFound].includes(error.code)) return undefined;
  return { reason: reasonOf(error) ?? Reason.PAYMENT_FAILED, message: error.rawMessage };
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
  readonly #inFlight = new Map<string, Promise<PaymentRecord>>();

  constructor(private readonly clients: PaymentClients) {}

  async pay(em: EntityManager, request: PayRequest): Promise<PaymentRecord> {
    const fork = em.fork();
    let created: { payment: PaymentRecord; lease: Lease | null } | undefined;
    try {
      created = await this.#create(fork, request);
    } catch (error) {
      // Only new work needs the admission and a payable reservation: whatever refused it, an earlier payment
      // with this key is the answer (a replay). Looked up only now, so that a new payment does not pay for it.
      const earlier = await em.fork().findOne(Payment, { userId: request.userId, idempotencyKey: request.idempotencyKey });
      if (earlier) return this.#again(em, earlier, request.reservationId);
      throw error;
    }
    if (!created) {
      // An earlier or concurrent call with the same key recorded it first: that payment is the one.
      const first = await em.fork().findOneOrFail(Payment, { userId: request.userId, idempotencyKey: request.idempotencyKey });
      return this.#again(em, first, request.reservationId);
    }
    const { payment, lease } = created;
    return lease === null ? payment : this.#single(payment.id, () => this.#run(fork, payment, lease));
  }

  /**
   * Drives a payment as far as it can go now. Outages of the other services
   * leave it PENDING (the recovery loop comes back); refusals end it. When
   * another process is driving it, waits a little for the outcome, or with
   * `skipIfBusy` leaves it alone; either way returns it as it then stands.
   * A drive already in progress in this process is joined, not repeated.
   */
  async drive(em: EntityManager, paymentId: string, { skipIfBusy = false } = {}): Promise<PaymentRecord> {
    return this.#single(paymentId, () => this.#claimAndRun(em.fork(), paymentId, !skipIfBusy));
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
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) await this.drive(em, id, { skipIfBusy: true });
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return stale.length;
  }

  /**
   * Records a new payment, claimed by this caller, in one statement; undefined
   * when the key is taken (the unique index decides between concurrent calls).
   * A hold already ended fails without moving a point, and without a lease.
   */
  async #create(em: EntityManager, request: PayRequest): Promise<{ payment: PaymentRecord; lease: Lease | null } | undefined> {
    const { concertId } = await request.admitted();
    const { reservation } = await callDependency("reservation", () =>
      this.clients.reservations.getReservation({ reservationId: request.reservationId }, request.onBehalf),
    );
    if (reservation!.concertId !== concertId) {
      throw new Forbidden(Reason.NOT_ADMITTED, "the queue token admits you to another concert than this reservation's");
    }
    const ended = { [ReservationState.EXPIRED]: Reason.HOLD_EXPIRED, [ReservationState.RELEASED]: Reason.HOLD_RELEASED } as Record<number, Reason>;
    const endedReason = ended[reservation!.state];
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
        reservation!.concertId,
        request.idempotencyKey,
        Number(reservation!.amount),
        endedReason === undefined ? "PENDING" : "FAILED",
        endedReason ?? 0,
        endedReason === undefined ? "" : `the hold has ended (${ReservationState[reservation!.state]})`,
        endedReason === undefined,
        leaseMs / 1000,
      ],
    );
    return row && this.#mapped(em, row);
  }

  /**
   * Claims the payment if it has anything left to do and nobody holds it, and
   * reads it in the same statement: one round trip whether or not it is ours.
   */
  async #claimAndRun(em: EntityManager, paymentId: string, wait: boolean): Promise<PaymentRecord> {
    const [row] = await em.getConnection().execute(
      `with claimed as (
         update ${table} set driven_until = now() + make_interval(secs => ?)
          where id = ? and ("state" = 'PENDING' or "session_to_end") and (driven_until is null or driven_until <= now())
         returning *)
       select *, driven_until::text as lease from claimed
       union all
       select *, null from ${table} where id = ? and not exists (select 1 from claimed)`,
      [leaseMs / 1000, paymentId, paymentId],
    );
    if (!row) throw new NotFound(Reason.PAYMENT_NOT_FOUND, `no payment ${paymentId}`);
    const { payment, lease } = this.#mapped(em, row);
    if (lease !== null) return this.#run(em, payment, lease);
    return wait && payment.state === "PENDING" ? this.#awaitOther(em, payment) : payment;
  }

  /** Runs the saga from where the payment stands, under this caller's lease, and records the outcome (releasing the lease). */
  async #run(em: EntityManager, payment: PaymentRecord, lease: Lease): Promise<PaymentRecord> {
    // The calls end before the lease does, so two drivers never call out for one payment at once.
    const cutOff = new AbortController();
    const timer = setTimeout(() => cutOff.abort(), leaseMs - writeMarginMs);
    const { signal } = cutOff;
    try {
      const outcome = payment.state === "PENDING" ? await this.#settle(payment, signal) : undefined;
      const next: Outcome = outcome ?? {
        state: payment.state,
        failureReason: payment.failureReason,
        failureMessage: payment.failureMessage,
        sessionToEnd: payment.sessionToEnd,
      };
      if (next.sessionToEnd) next.sessionToEnd = !(await this.#endSession(payment, signal));
      return await this.#record(em, payment, lease, next);
    } catch (error) {
      // Unexpected (a bug, the database): let recovery have it now rather than when the lease lapses.
      await this.#release(em, payment.id, lease).catch(() => undefined);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The debit and the confirmation; undefined after an outage (the payment stays PENDING). */
  async #settle(payment: PaymentRecord, signal: AbortSignal): Promise<Outcome | undefined> {
    const { points, reservationsInternal } = this.clients;
    const { id: paymentId, userId, reservationId } = payment;
    try {
      await points.usePoints({ userId, amount: BigInt(payment.amount), paymentId }, { signal });
    } catch (error) {
      const refused = refusal(error);
      if (!refused) return this.#outage("debit", paymentId, error);
      return failed(refused.reason, refused.message);
    }
    try {
      await reservationsInternal.confirmReservation({ reservationId, paymentId, userId }, { signal });
    } catch (error) {
      const refused = refusal(error);
      if (!refused) return this.#outage("confirm", paymentId, error);
      try {
        await points.refundPoints({ userId, paymentId }, { signal });
      } catch (refundError) {
        return this.#outage("refund", paymentId, refundError);
      }
      return failed(refused.reason, refused.message);
    }
    return { state: "SUCCEEDED", failureReason: 0, failureMessage: "", sessionToEnd: true };
  }

  /**
   * The seed: paying ends the queue token. Done before SUCCEEDED is recorded,
   * so that the happy path records once: all three calls are idempotent per
   * payment, and a crash in between leaves it PENDING, to be driven again.
   * Best effort: when it fails, recovery retries it (`session_to_end`).
   */
  async #endSession(payment: PaymentRecord, signal: AbortSignal): Promise<boolean> {
    try {
      await this.clients.queue.completeSession({ userId: payment.userId, concertId: payment.concertId }, { signal });
      return true;
    } catch (error) {
      this.#outage("end the queue session of", payment.id, error);
      return false;
    }
  }

  /**
   * Records the outcome and releases the lease in one statement, only while the
   * lease is still this caller's; if it lapsed meanwhile, the new holder records
   * (the same outcome: every step is idempotent), and this reads the row.
   */
  async #record(em: EntityManager, payment: PaymentRecord, lease: Lease, next: Outcome): Promise<PaymentRecord> {
    // An unchanged payment keeps its updated_at: the recovery loop goes by how long it has been stuck.
    const changed = next.state !== payment.state || next.sessionToEnd !== payment.sessionToEnd;
    const [row] = await em.getConnection().execute(
      `update ${table}
          set "state" = ?, failure_reason = ?, failure_message = ?, session_to_end = ?, driven_until = null,
              updated_at = case when ? then now() else updated_at end
        where id = ? and driven_until = ?::timestamptz
       returning *`,
      [next.state, next.failureReason, next.failureMessage, next.sessionToEnd, changed, payment.id, lease],
    );
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
  #single(paymentId: string, drive: () => Promise<PaymentRecord>): Promise<PaymentRecord> {
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

  #outage(step: string, paymentId: string, error: unknown): undefined {
    console.error(`payment ${paymentId}: could not ${step} now, left for recovery:`, error instanceof Error ? error.message : error);
    return undefined;
  }

  async #again(em: EntityManager, payment: PaymentRecord, reservationId: string): Promise<PaymentRecord> {
    if (payment.reservationId !== reservationId) {
      throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used to pay for another reservation");
    }
    return payment.state === "PENDING" || payment.sessionToEnd ? this.drive(em, payment.id) : payment;
  }
}

function failed(reason: Reason, message: string): Outcome {
  return { state: "FAILED", failureReason: reason, failureMessage: message.slice(0, 500), sessionToEnd: false };
}
