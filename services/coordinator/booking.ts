import type { Payment } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import type { Reservation } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import type { Admission } from "../platform/access.js";
import { NotFound, Reason, Refused } from "../platform/errors.js";

/** The holds, beside the seats. Refusals are thrown as the domain errors the hold raised (SEAT_UNAVAILABLE, HOLD_LIMIT_REACHED, ...). */
export interface HoldsPort {
  /** A new hold, or (reuseOwnHold) the fan's live hold on exactly these seats, then `reused`. */
  hold(request: { userId: string; concertId: string; scheduleId: string; seatNumbers: number[]; reuseOwnHold: boolean }): Promise<Reservation & { reused?: boolean }>;
  release(userId: string, reservationId: string): Promise<void>;
}

export interface PaymentRequest {
  userId: string;
  /** The concert the fan is admitted to; undefined when no admission could be shown: then only a replay is answered. */
  concertId: string | undefined;
  /** The reservation to pay for; undefined (with a replay) for whatever the key paid for. */
  reservationId: string | undefined;
  idempotencyKey: string;
  /** The reservation as just made, so that the payment need not read it again. */
  reservation?: Reservation;
}

/** The payments. A replay of a key that paid for nothing is NotFound PAYMENT_NOT_FOUND. */
export interface PaymentsPort {
  pay(request: PaymentRequest): Promise<{ payment: Payment; reservation: Reservation | undefined }>;
}

export interface Booked {
  payment: Payment;
  reservation: Reservation | undefined;
}

/**
 * The seed's booking, at the edge the fan called: admission is checked here,
 * once, and the holds and payments are told for whom they act. A booking
 * enters each neighbour once: a hold, then a payment (which debits, sells and
 * ends the queue session itself).
 */
export class Booking {
  constructor(
    private readonly holds: HoldsPort,
    private readonly payments: PaymentsPort,
  ) {}

  /** The seed's seat reservation: the hold checks the date and the seats, all or none. */
  reserve(admission: Admission, scheduleId: string, seatNumbers: number[]): Promise<Reservation> {
    return this.holds.hold({ userId: admission.userId, concertId: admission.concertId, scheduleId, seatNumbers, reuseOwnHold: false });
  }

  /**
   * Pays for a held reservation. New work needs the admission; without one, a
   * payment made earlier with the key is the answer (a successful payment ends
   * the queue session it was made in, so its retry comes without one).
   */
  async checkout(userId: string, admitted: () => Promise<Admission>, reservationId: string, idempotencyKey: string): Promise<Booked> {
    const admission = await attempt(admitted);
    if (admission instanceof Error) {
      return this.#replay(userId, reservationId, idempotencyKey, admission);
    }
    return this.payments.pay({ userId, concertId: admission.concertId, reservationId, idempotencyKey });
  }

  /**
   * The whole seed flow in one call: hold, then pay. If the payment fails, the
   * hold stays until it expires and the payment says why, so the fan can top up
   * and Checkout. The key makes a retry return the first booking: the fan's own
   * live hold on the seats is taken up again, and when the seats are sold (or no
   * admission can be shown) the payment made with the key is the answer.
   */
  async book(userId: string, admitted: () => Promise<Admission>, scheduleId: string, seatNumbers: number[], idempotencyKey: string): Promise<Booked> {
    const admission = await attempt(admitted);
    if (admission instanceof Error) return this.#earlierBooking(userId, idempotencyKey, scheduleId, seatNumbers, admission);
    let reservation: Reservation & { reused?: boolean };
    try {
      reservation = await this.holds.hold({ userId, concertId: admission.concertId, scheduleId, seatNumbers, reuseOwnHold: true });
    } catch (error) {
      const taken = error instanceof Refused && [Reason.SEAT_UNAVAILABLE, Reason.HOLD_LIMIT_REACHED].includes(error.reason);
      if (!taken) throw error;
      return this.#earlierBooking(userId, idempotencyKey, scheduleId, seatNumbers, error);
    }
    try {
      const paid = await this.payments.pay({ userId, concertId: admission.concertId, reservationId: reservation.id, idempotencyKey, reservation });
      return { payment: paid.payment, reservation: paid.reservation ?? reservation };
    } catch (error) {
      // The key paid for an earlier hold (of these seats, since ended: that booking is the answer; or of others:
      // refused). Either way the hold just made is nobody's booking: it goes back at once rather than block the seats.
      if (!(error instanceof Refused && error.reason === Reason.IDEMPOTENCY_KEY_REUSED)) throw error;
      if (!reservation.reused) await this.holds.release(userId, reservation.id);
      return this.#earlierBooking(userId, idempotencyKey, scheduleId, seatNumbers, error);
    }
  }

  /** The payment made earlier with the key (for this reservation, when given), or `otherwise`. */
  async #replay(userId: string, reservationId: string | undefined, idempotencyKey: string, otherwise: Error): Promise<Booked> {
    try {
      return await this.payments.pay({ userId, concertId: undefined, reservationId, idempotencyKey });
    } catch (error) {
      if (error instanceof NotFound && error.reason === Reason.PAYMENT_NOT_FOUND) throw otherwise;
      throw error;
    }
  }

  /** The booking made earlier with the key, which must have been of these seats; or `otherwise`. */
  async #earlierBooking(userId: string, idempotencyKey: string, scheduleId: string, seatNumbers: number[], otherwise: Error): Promise<Booked> {
    const earlier = await this.#replay(userId, undefined, idempotencyKey, otherwise);
    const booked = earlier.reservation;
    if (booked && (booked.scheduleId !== scheduleId || booked.seatNumbers.join() !== seatNumbers.join())) {
      throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used to book other seats");
    }
    return earlier;
  }
}

/** The admission, or the error that refused it. */
async function attempt(admitted: () => Promise<Admission>): Promise<Admission | Error> {
  try {
    return await admitted();
  } catch (error) {
    if (error instanceof Error) return error;
    throw error;
  }
}
