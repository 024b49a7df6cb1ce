import { Code, ConnectError, type CallOptions, type Client } from "@connectrpc/connect";
import { LockMode, UniqueConstraintViolationException, type EntityManager, type InferEntity } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import type { PointInternalService } from "../../gen/boxoffice/point/v1/point_pb.js";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationState, type ReservationInternalService, type ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { callDependency } from "../platform/clients.js";
import { Forbidden, NotFound, Reason, reasonOf, Refused } from "../platform/errors.js";
import { Payment } from "./payment.entity.js";

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

/** A refusal from another service that ends a payment as FAILED (as opposed to an outage, which leaves it PENDING). */
function refusal(error: unknown): { reason: Reason; message: string } | undefined {
  if (!(error instanceof ConnectError) || ![Code.FailedPrecondition, Code.NotFound].includes(error.code)) return undefined;
  return { reason: reasonOf(error) ?? Reason.PAYMENT_FAILED, message: error.rawMessage };
}

/**
 * Payments, as a saga keyed by the payment id: record PENDING → debit the
 * points → confirm the reservation → SUCCEEDED → end the fan's queue session.
 * When the reservation can no longer be confirmed the points are refunded and
 * the payment ends FAILED with the reason. Every step is idempotent per
 * payment, and one payment is driven by one caller at a time (a row lock), so
 * a retry, a concurrent duplicate or the recovery loop simply drives it again
 * from the start and lands in the same place.
 */
export class Payments {
  constructor(private readonly clients: PaymentClients) {}

  async pay(em: EntityManager, request: PayRequest): Promise<PaymentRecord> {
    const earlier = await em.findOne(Payment, { userId: request.userId, idempotencyKey: request.idempotencyKey });
    if (earlier) return this.#again(em, earlier, request.reservationId);

    const { concertId } = await request.admitted();
    const { reservation } = await callDependency("reservation", () =>
      this.clients.reservations.getReservation({ reservationId: request.reservationId }, request.onBehalf),
    );
    if (reservation!.concertId !== concertId) {
      throw new Forbidden(Reason.NOT_ADMITTED, "the queue token admits you to another concert than this reservation's");
    }
    // A hold already ended fails without moving a point; the insert still decides which call owns the key.
    const ended = { [ReservationState.EXPIRED]: Reason.HOLD_EXPIRED, [ReservationState.RELEASED]: Reason.HOLD_RELEASED } as Record<number, Reason>;
    const endedReason = ended[reservation!.state];
    const payment = em.create(Payment, {
      id: randomUUID(),
      userId: request.userId,
      reservationId: request.reservationId,
      concertId: reservation!.concertId,
      idempotencyKey: request.idempotencyKey,
      amount: Number(reservation!.amount),
      state: endedReason === undefined ? "PENDING" : "FAILED",
      failureReason: endedReason ?? 0,
      failureMessage: endedReason === undefined ? "" : `the hold has ended (${ReservationState[reservation!.state]})`,
    });
    try {
      await em.flush();
    } catch (error) {
      if (!(error instanceof UniqueConstraintViolationException)) throw error;
      // A concurrent call with the same key recorded it first: that payment is the one.
      const first = await em.fork().findOneOrFail(Payment, { userId: request.userId, idempotencyKey: request.idempotencyKey });
      return this.#again(em, first, request.reservationId);
    }
    return payment.state === "PENDING" ? this.drive(em, payment.id) : payment;
  }

  /**
   * Drives a payment as far as it can go now. Outages of the other services
   * leave it PENDING (the recovery loop comes back); refusals end it.
   * With `skipIfBusy`, a payment another caller is driving is left alone.
   */
  async drive(em: EntityManager, paymentId: string, { skipIfBusy = false } = {}): Promise<PaymentRecord> {
    return em.fork().transactional(async (tx) => {
      const payment = await tx.findOne(Payment, { id: paymentId }, { lockMode: skipIfBusy ? LockMode.PESSIMISTIC_PARTIAL_WRITE : LockMode.PESSIMISTIC_WRITE });
      if (!payment) {
        if (skipIfBusy) return (await em.fork().findOne(Payment, { id: paymentId }))!;
        throw new NotFound(Reason.PAYMENT_NOT_FOUND, `no payment ${paymentId}`);
      }
      if (payment.state === "PENDING") await this.#settle(payment);
      if (payment.sessionToEnd) await this.#endSession(payment);
      return payment;
    });
  }

  /** Payments left PENDING (or with a session to end) for longer than `olderThanMs`: drive each again. */
  async recover(em: EntityManager, olderThanMs: number, batch = 100): Promise<number> {
    const stale = await em.fork().find(
      Payment,
      { $or: [{ state: "PENDING" }, { sessionToEnd: true }], updatedAt: { $lt: new Date(Date.now() - olderThanMs) } },
      { fields: ["id"], limit: batch, orderBy: { updatedAt: "asc" } },
    );
    // A few at a time: a crash leaves many payments behind at once, and each waits on other services.
    const queue = stale.map(({ id }) => id);
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) await this.drive(em, id, { skipIfBusy: true });
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return stale.length;
  }

  async #settle(payment: PaymentRecord) {
    const { points, reservationsInternal } = this.clients;
    const { id: paymentId, userId, reservationId } = payment;
    try {
      await points.usePoints({ userId, amount: BigInt(payment.amount), paymentId });
    } catch (error) {
      const refused = refusal(error);
      if (!refused) return this.#outage("debit", paymentId, error);
      return this.#failed(payment, refused.reason, refused.message);
    }
    try {
      await reservationsInternal.confirmReservation({ reservationId, paymentId, userId });
    } catch (error) {
      const refused = refusal(error);
      if (!refused) return this.#outage("confirm", paymentId, error);
      try {
        await points.refundPoints({ userId, paymentId });
      } catch (refundError) {
        return this.#outage("refund", paymentId, refundError);
      }
      return this.#failed(payment, refused.reason, refused.message);
    }
    payment.state = "SUCCEEDED";
    payment.sessionToEnd = true;
  }

  /** The seed: paying ends the queue token. Best effort here; recovery retries it. */
  async #endSession(payment: PaymentRecord) {
    try {
      await this.clients.queue.completeSession({ userId: payment.userId, concertId: payment.concertId });
      payment.sessionToEnd = false;
    } catch (error) {
      this.#outage("end the queue session of", payment.id, error);
    }
  }

  #failed(payment: PaymentRecord, reason: Reason, message: string) {
    payment.state = "FAILED";
    payment.failureReason = reason;
    payment.failureMessage = message.slice(0, 500);
  }

  #outage(step: string, paymentId: string, error: unknown) {
    console.error(`payment ${paymentId}: could not ${step} now, left for recovery:`, error instanceof Error ? error.message : error);
  }

  async #again(em: EntityManager, payment: PaymentRecord, reservationId: string): Promise<PaymentRecord> {
    if (payment.reservationId !== reservationId) {
      throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used to pay for another reservation");
    }
    return payment.state === "PENDING" || payment.sessionToEnd ? this.drive(em, payment.id) : payment;
  }
}
