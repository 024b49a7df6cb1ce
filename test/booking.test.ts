import { create } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { PaymentSchema, PaymentState, type Payment } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { ReservationSchema, ReservationState, type Reservation } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { Booking, type HoldsPort, type PaymentRequest, type PaymentsPort } from "../services/coordinator/booking.js";
import type { Admission } from "../services/platform/access.js";
import { NotFound, Reason, Refused } from "../services/platform/errors.js";

/**
 * The coordinator's booking story at the depth of its domain class, with the
 * holds and the payments replaced by fakes behind the same ports: which
 * neighbour is asked what, how often, and what a retry gets.
 */

const concertId = randomUUID();
const scheduleId = randomUUID();
const userId = randomUUID();
const admission: Admission = { userId, concertId, queueToken: "q", admittedUntil: new Date(Date.now() + 60_000) };
const admitted = async () => admission;
const notAdmitted = async (): Promise<Admission> => {
  throw new Refused(Reason.QUEUE_TOKEN_EXPIRED, "the queue session is over");
};

class Neighbours implements HoldsPort, PaymentsPort {
  asked: string[] = [];
  /** Seats sold to someone (the fan included): holding them is refused. */
  sold = new Set<number>();
  /** Payments by idempotency key, with the reservation each paid for. */
  paid = new Map<string, { payment: Payment; reservation: Reservation }>();
  points = 0;
  /** The fan's live hold, if any. */
  live: Reservation | undefined;

  async hold(request: Parameters<HoldsPort["hold"]>[0]) {
    this.asked.push(`hold ${request.seatNumbers.join(",")}${request.reuseOwnHold ? " (reuse own)" : ""}`);
    if (request.seatNumbers.some((n) => this.sold.has(n))) throw new Refused(Reason.SEAT_UNAVAILABLE, "taken", { seats: request.seatNumbers.join(",") });
    if (this.live && request.reuseOwnHold && this.live.seatNumbers.join() === request.seatNumbers.join()) return Object.assign(this.live, { reused: true });
    this.live = create(ReservationSchema, { id: randomUUID(), userId, concertId, scheduleId, seatNumbers: request.seatNumbers, amount: 100n, state: ReservationState.HELD });
    return this.live;
  }

  async release(_userId: string, reservationId: string) {
    this.asked.push(`release ${reservationId === this.live?.id ? "the new hold" : "another hold"}`);
    if (this.live?.id === reservationId) this.live = undefined;
  }

  async pay(request: PaymentRequest) {
    this.asked.push(`pay${request.concertId === undefined ? " (replay only)" : ""}${request.reservation ? " with the reservation" : ""}`);
    const earlier = this.paid.get(request.idempotencyKey);
    if (earlier) {
      if (request.reservationId !== undefined && earlier.reservation.id !== request.reservationId) {
        throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used to pay for another reservation");
      }
      return earlier;
    }
    if (request.concertId === undefined) throw new NotFound(Reason.PAYMENT_NOT_FOUND, "no payment with that idempotency key");
    const reservation = request.reservation!;
    const ok = this.points >= Number(reservation.amount);
    const payment = create(PaymentSchema, {
      id: randomUUID(),
      reservationId: reservation.id,
      state: ok ? PaymentState.SUCCEEDED : PaymentState.FAILED,
      failureReason: ok ? Reason.UNSPECIFIED : Reason.INSUFFICIENT_POINTS,
    });
    const after = ok ? create(ReservationSchema, { ...reservation, state: ReservationState.CONFIRMED, paymentId: payment.id }) : reservation;
    if (ok) reservation.seatNumbers.forEach((n) => this.sold.add(n));
    if (ok) this.live = undefined;
    this.paid.set(request.idempotencyKey, { payment, reservation: after });
    return { payment, reservation: after };
  }
}

describe("Booking (the coordinator's story) with fake neighbours", () => {
  it("BookSeats asks each neighbour once: a hold, then a payment that is handed the new reservation", async () => {
    const n = new Neighbours();
    n.points = 1_000;
    const booked = await new Booking(n, n).book(userId, admitted, scheduleId, [2, 3], "key");
    expect(booked.payment.state).toBe(PaymentState.SUCCEEDED);
    expect(booked.reservation!.state).toBe(ReservationState.CONFIRMED);
    expect(n.asked).toEqual(["hold 2,3 (reuse own)", "pay with the reservation"]);
  });

  it("a BookSeats retried after it succeeded gets the first booking, with or without a live admission, and pays nothing more", async () => {
    const n = new Neighbours();
    n.points = 1_000;
    const booking = new Booking(n, n);
    const first = await booking.book(userId, admitted, scheduleId, [4], "key");
    n.asked = [];
    // Admitted again (queued anew): the seats are sold, so the key's payment is the answer.
    expect(await booking.book(userId, admitted, scheduleId, [4], "key")).toEqual(first);
    expect(n.asked).toEqual(["hold 4 (reuse own)", "pay (replay only)"]);
    n.asked = [];
    // The session ended with the payment: no admission, and the retry still gets it.
    expect(await booking.book(userId, notAdmitted, scheduleId, [4], "key")).toEqual(first);
    expect(n.asked).toEqual(["pay (replay only)"]);
  });

  it("a key that booked other seats is refused; without an admission and without an earlier payment the admission's refusal stands", async () => {
    const n = new Neighbours();
    n.points = 1_000;
    const booking = new Booking(n, n);
    await booking.book(userId, admitted, scheduleId, [5], "key");
    await expect(booking.book(userId, notAdmitted, scheduleId, [6], "key")).rejects.toMatchObject({ reason: Reason.IDEMPOTENCY_KEY_REUSED });
    await expect(booking.book(userId, notAdmitted, scheduleId, [6], "new key")).rejects.toMatchObject({ reason: Reason.QUEUE_TOKEN_EXPIRED });
    // Seats taken by someone else, with a new key: the hold's refusal stands.
    n.sold.add(7);
    await expect(booking.book(userId, admitted, scheduleId, [7], "another key")).rejects.toMatchObject({ reason: Reason.SEAT_UNAVAILABLE });
  });

  it("Checkout pays with the admission's concert; without an admission only the key's earlier payment is returned", async () => {
    const n = new Neighbours();
    n.points = 50;
    const booking = new Booking(n, n);
    const failed = await booking.book(userId, admitted, scheduleId, [1], "book");
    expect(failed.payment.failureReason).toBe(Reason.INSUFFICIENT_POINTS);
    n.asked = [];
    await expect(booking.checkout(userId, notAdmitted, failed.reservation!.id, "checkout")).rejects.toMatchObject({ reason: Reason.QUEUE_TOKEN_EXPIRED });
    expect(n.asked).toEqual(["pay (replay only)"]);
    expect((await booking.checkout(userId, notAdmitted, failed.reservation!.id, "book")).payment.id).toBe(failed.payment.id);
  });

  it("a retry after the first booking's hold ran out: the new hold goes back at once, and the first booking is the answer", async () => {
    const n = new Neighbours();
    n.points = 50;
    const booking = new Booking(n, n);
    const first = await booking.book(userId, admitted, scheduleId, [3], "key");
    expect(first.payment.failureReason).toBe(Reason.INSUFFICIENT_POINTS);
    // The hold runs out; the seat is free again, and the fan retries the very same booking.
    n.live = undefined;
    n.asked = [];
    const again = await booking.book(userId, admitted, scheduleId, [3], "key");
    expect(again.payment.id).toBe(first.payment.id);
    expect(n.asked).toEqual(["hold 3 (reuse own)", "pay with the reservation", "release the new hold", "pay (replay only)"]);
    expect(n.live).toBeUndefined();
  });
});
