import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService, type BookSeatsResponse } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState, type Payment } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService, PointTransactionKind } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService, ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { bearer, client, concertOnSale, failure, gated, startTestSuite, waitForState, withQueueToken } from "./support.js";
import { brief, Watch } from "./watch.js";
import { outcome, refused } from "./outcomes.js";

/**
 * The seed's whole booking flow end to end, the way a backend caller drives it
 * over real gRPC (h2c): a user token and a queue token from the token service,
 * the coordinator's watch stream until admitted, the concert's dates and seats,
 * the coordinator's ReserveSeats, a points top-up, and the coordinator's
 * Checkout; and BookSeats, the same flow in one call.
 *
 * The suite admits one fan at a time per concert (QUEUE_MAX_ACTIVE=1), so a fan
 * really waits in line and watches the place move.
 */

let suite: Suite;
let tokens: ReturnType<typeof client<typeof TokenService>>;
let queue: ReturnType<typeof client<typeof QueueService>>;
let concerts: ReturnType<typeof client<typeof ConcertService>>;
let coordinator: ReturnType<typeof client<typeof CoordinatorService>>;
let points: ReturnType<typeof client<typeof PointService>>;
let payments: ReturnType<typeof client<typeof PaymentService>>;

beforeAll(async () => {
  suite = await startTestSuite({ QUEUE_MAX_ACTIVE: "1" });
  // Every client speaks gRPC over HTTP/2 cleartext (h2c).
  tokens = client(suite, TokenService, "grpc");
  queue = client(suite, QueueService, "grpc");
  concerts = client(suite, ConcertService, "grpc");
  coordinator = client(suite, CoordinatorService, "grpc");
  points = client(suite, PointService, "grpc");
  payments = client(suite, PaymentService, "grpc");
});
afterAll(() => suite?.close());

// ---------------------------------------------------------------- helpers


const paymentBrief = (payment: Payment | undefined) =>
  payment === undefined ? "none" : payment.state === PaymentState.FAILED ? `FAILED/${Reason[payment.failureReason]}` : PaymentState[payment.state];

/** The seed's first two steps, through the token service: a new user, then their queue token for the concert. */
async function queuedFan(concertId: string) {
  const user = await tokens.issueUserToken({});
  const entered = await tokens.issueQueueToken({ concertId }, bearer(user.token));
  return {
    userId: user.userId,
    token: user.token,
    auth: bearer(user.token),
    queueToken: entered.queueToken,
    entered: entered.status!,
    headers: gated(user.token, entered.queueToken),
  };
}
type Fan = Awaited<ReturnType<typeof queuedFan>>;

async function admittedFan(concertId: string): Promise<Fan> {
  const fan = await queuedFan(concertId);
  await waitForState(suite, fan.queueToken, QueueState.ADMITTED);
  return fan;
}

const queueState = async (fan: Fan) => brief((await queue.getQueueStatus({}, withQueueToken(fan.queueToken))).status);
const balance = async (fan: Fan) => (await points.getBalance({}, fan.auth)).balance;
const charge = (fan: Fan, amount: bigint) => points.chargePoints({ amount, idempotencyKey: randomUUID() }, fan.auth);

/** The fan's ledger, newest first, as [kind, amount, payment id]. */
async function ledger(fan: Fan): Promise<[string, bigint, string][]> {
  const { transactions } = await points.listPointTransactions({}, fan.auth);
  return transactions.map((t) => [PointTransactionKind[t.kind], t.amount, t.paymentId]);
}

async function seatStates(fan: Fan, scheduleId: string): Promise<Record<number, string>> {
  const { seats } = await concerts.listSeats({ scheduleId }, fan.headers);
  return Object.fromEntries(seats.map((seat) => [seat.number, SeatState[seat.state]]));
}

// ---------------------------------------------------------------- the seed flow

describe("the seed flow through the coordinator, over gRPC", () => {
  it("user token → queue token → watch until ADMITTED → dates → seats → ReserveSeats → ChargePoints → Checkout: seats SOLD, session COMPLETED, the gate closed", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [
      { seatCount: 10, price: 2_000n },
      { seatCount: 10, price: 3_000n },
    ]);
    const [firstDate, secondDate] = scheduleIds as [string, string];

    // Two fans are ahead: one holds the only admission slot, one waits.
    const first = await admittedFan(concertId);
    const second = await queuedFan(concertId);
    expect(brief(second.entered)).toBe("WAITING 1");

    // 1. A user token: a new user.
    const issued = await tokens.issueUserToken({});
    expect(issued.userId).toMatch(/^[0-9a-f-]{36}$/);
    expect(timestampMs(issued.expiresAt!)).toBeGreaterThan(Date.now());
    // 2. A queue token for the concert, with the waiting info.
    const entered = await tokens.issueQueueToken({ concertId }, bearer(issued.token));
    expect(entered.status).toMatchObject({ state: QueueState.WAITING, position: 2n, peopleAhead: 1n, concertId });
    const me: Fan = {
      userId: issued.userId,
      token: issued.token,
      auth: bearer(issued.token),
      queueToken: entered.queueToken,
      entered: entered.status!,
      headers: gated(issued.token, entered.queueToken),
    };
    // Not admitted yet: the seats are out of reach.
    await refused(concerts.listSeats({ scheduleId: firstDate }, me.headers), Code.FailedPrecondition, Reason.NOT_ADMITTED);

    // 3. Watch the place move until admitted.
    const watch = new Watch((signal) => coordinator.watchQueueStatus({}, { ...withQueueToken(me.queueToken), signal }));
    try {
      await watch.sees("WAITING 2");

      // The first fan buys a seat with BookSeats, which ends their session: the second is admitted, we move up.
      await charge(first, 2_000n);
      const firstBooking = await coordinator.bookSeats({ scheduleId: firstDate, seatNumbers: [1], idempotencyKey: randomUUID() }, first.headers);
      expect(paymentBrief(firstBooking.payment)).toBe("SUCCEEDED");
      await watch.sees("WAITING 1");
      expect(await queueState(second)).toBe("ADMITTED");

      // The second fan gives up the place: our turn.
      await queue.leaveQueue({}, withQueueToken(second.queueToken));
      await watch.ends();
    } finally {
      await watch.cancel();
    }
    expect(watch.error).toBeUndefined();
    expect(watch.changes).toEqual(["WAITING 2", "WAITING 1", "ADMITTED"]);
    expect(timestampMs(watch.last!.admittedUntil!)).toBeGreaterThan(Date.now());
    expect(await queueState(me)).toBe("ADMITTED");

    // Someone queues behind us; they wait for our slot.
    const next = await queuedFan(concertId);
    expect(brief(next.entered)).toBe("WAITING 1");

    // 4. The concert's dates, with the seats left.
    const { concerts: onSale } = await concerts.listConcerts({});
    expect(onSale.map((concert) => concert.id)).toContain(concertId);
    const { schedules } = await concerts.listSchedules({ concertId });
    expect(schedules.map((s) => [s.id, s.availableSeats])).toEqual([
      [firstDate, 9],
      [secondDate, 10],
    ]);

    // 5. The seats of the first date.
    const { seats } = await concerts.listSeats({ scheduleId: firstDate }, me.headers);
    expect(seats.map((seat) => seat.number)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(seats.every((seat) => seat.price === 2_000n)).toBe(true);
    expect(seats.filter((seat) => seat.state !== SeatState.AVAILABLE).map((seat) => [seat.number, SeatState[seat.state]])).toEqual([[1, "SOLD"]]);

    // 6. Reserve two of them: a hold.
    const { reservation } = await coordinator.reserveSeats({ scheduleId: firstDate, seatNumbers: [6, 5] }, me.headers);
    expect(reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [5, 6], amount: 4_000n, scheduleId: firstDate, concertId, userId: me.userId });
    const holdMs = timestampMs(reservation!.expiresAt!) - Date.now();
    expect(holdMs).toBeGreaterThan(4 * 60_000);
    expect(holdMs).toBeLessThanOrEqual(5 * 60_000);
    const held = await seatStates(me, firstDate);
    expect([held[5], held[6]]).toEqual(["HELD", "HELD"]);

    // 7. Top up the points.
    const charged = await points.chargePoints({ amount: 4_000n, idempotencyKey: randomUUID() }, me.auth);
    expect(charged.balance).toBe(4_000n);

    // 8. Check out: the payment service pays, the reservation is confirmed.
    const checkout = await coordinator.checkout({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, me.headers);
    expect(checkout.payment).toMatchObject({ state: PaymentState.SUCCEEDED, amount: 4_000n, reservationId: reservation!.id, userId: me.userId });
    expect(checkout.reservation).toMatchObject({ id: reservation!.id, state: ReservationState.CONFIRMED, paymentId: checkout.payment!.id });
    expect((await payments.getPayment({ paymentId: checkout.payment!.id }, me.auth)).payment!.state).toBe(PaymentState.SUCCEEDED);
    expect(await balance(me)).toBe(0n);
    expect(await ledger(me)).toEqual([
      ["USE", -4_000n, checkout.payment!.id],
      ["CHARGE", 4_000n, ""],
    ]);

    // The session has ended with the payment, and the gate is closed to this token.
    expect(await queueState(me)).toBe("COMPLETED");
    await refused(concerts.listSeats({ scheduleId: firstDate }, me.headers), Code.FailedPrecondition, Reason.QUEUE_TOKEN_EXPIRED);
    await refused(coordinator.reserveSeats({ scheduleId: secondDate, seatNumbers: [1] }, me.headers), Code.FailedPrecondition, Reason.QUEUE_TOKEN_EXPIRED);

    // The fan behind us gets the slot, and sees our seats sold.
    await waitForState(suite, next.queueToken, QueueState.ADMITTED);
    const after = await seatStates(next, firstDate);
    expect([after[1], after[5], after[6]]).toEqual(["SOLD", "SOLD", "SOLD"]);
    expect(Object.values(after).filter((state) => state === "AVAILABLE")).toHaveLength(7);
    expect((await concerts.listSchedules({ concertId })).schedules.map((s) => s.availableSeats)).toEqual([7, 10]);
  });
});

// ---------------------------------------------------------------- BookSeats

describe("BookSeats: hold and pay in one call", () => {
  /** A fan admitted to a new concert of one date (6 seats at `price`), with `points`, and their BookSeats that failed for want of points. */
  async function failedBooking(price: bigint, points: bigint) {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 6, price }]);
    const scheduleId = scheduleIds[0]!;
    const fan = await admittedFan(concertId);
    await charge(fan, points);
    const request = { scheduleId, seatNumbers: [3, 2], idempotencyKey: "book-short" };
    const booked = await coordinator.bookSeats(request, fan.headers);
    return { fan, scheduleId, request, booked };
  }

  it("with too few points the payment FAILS with INSUFFICIENT_POINTS and the hold stays; after a top-up Checkout of the returned reservation succeeds", async () => {
    const { fan, scheduleId, booked } = await failedBooking(2_500n, 1_000n);
    expect(paymentBrief(booked.payment)).toBe("FAILED/INSUFFICIENT_POINTS");
    expect(booked.payment!.failureMessage).not.toBe("");
    expect(booked.reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [2, 3], amount: 5_000n });
    const states = await seatStates(fan, scheduleId);
    expect([states[2], states[3]]).toEqual(["HELD", "HELD"]);
    expect(await balance(fan)).toBe(1_000n);
    expect((await ledger(fan)).map(([kind]) => kind)).toEqual(["CHARGE"]);
    expect(await queueState(fan)).toBe("ADMITTED");

    // Top up, then pay for the reservation BookSeats returned.
    await charge(fan, 4_000n);
    const checkout = await coordinator.checkout({ reservationId: booked.reservation!.id, idempotencyKey: "checkout-after-top-up" }, fan.headers);
    expect(paymentBrief(checkout.payment)).toBe("SUCCEEDED");
    expect(checkout.payment!.id).not.toBe(booked.payment!.id);
    expect(checkout.reservation).toMatchObject({ id: booked.reservation!.id, state: ReservationState.CONFIRMED, paymentId: checkout.payment!.id });
    expect(await balance(fan)).toBe(0n);
    expect((await ledger(fan)).filter(([kind]) => kind === "USE")).toEqual([["USE", -5_000n, checkout.payment!.id]]);
    expect(await queueState(fan)).toBe("COMPLETED");
    const { payments: mine } = await payments.listPayments({}, fan.auth);
    expect(mine.map(paymentBrief)).toEqual(["SUCCEEDED", "FAILED/INSUFFICIENT_POINTS"]);
  });

  it("BookSeats retried with the same key and seats after an INSUFFICIENT_POINTS failure finds its own hold and returns the same payment", async () => {
    const { fan, scheduleId, request, booked } = await failedBooking(2_500n, 1_000n);
    expect(paymentBrief(booked.payment)).toBe("FAILED/INSUFFICIENT_POINTS");

    const retried = await coordinator.bookSeats(request, fan.headers).then(
      (response) => ({ payment: response.payment!.id, state: paymentBrief(response.payment), reservation: response.reservation!.id }),
      outcome,
    );
    // Nothing more was held or paid.
    expect((await payments.listPayments({}, fan.auth)).payments.map((p) => p.id)).toEqual([booked.payment!.id]);
    const states = await seatStates(fan, scheduleId);
    expect(Object.values(states).filter((state) => state !== "AVAILABLE")).toEqual(["HELD", "HELD"]);
    expect(retried).toEqual({ payment: booked.payment!.id, state: "FAILED/INSUFFICIENT_POINTS", reservation: booked.reservation!.id });
  });

  it("BookSeats retried with the same key after its hold ended: the first booking is the answer, and the hold the retry made goes back at once", async () => {
    const { fan, scheduleId, request, booked } = await failedBooking(2_500n, 1_000n);
    const reservations = client(suite, ReservationService);
    await reservations.releaseHold({ reservationId: booked.reservation!.id }, fan.auth);

    const retried = await coordinator.bookSeats(request, fan.headers);
    expect({ payment: retried.payment!.id, reservation: retried.reservation!.id }).toEqual({ payment: booked.payment!.id, reservation: booked.reservation!.id });
    // The retry held the seats anew before the payment service said the key had paid for the first hold: given back.
    const { reservations: mine } = await reservations.listReservations({}, fan.auth);
    expect(mine.map((r) => ReservationState[r.state])).toEqual(["RELEASED", "RELEASED"]);
    expect(Object.values(await seatStates(fan, scheduleId)).every((state) => state === "AVAILABLE")).toBe(true);
    expect((await payments.listPayments({}, fan.auth)).payments.map((p) => p.id)).toEqual([booked.payment!.id]);
  });

  it("BookSeats retried with the same key and seats after it succeeded returns the same payment, and debits once", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 6, price: 1_200n }]);
    const scheduleId = scheduleIds[0]!;
    const fan = await admittedFan(concertId);
    await charge(fan, 5_000n);

    const request = { scheduleId, seatNumbers: [4], idempotencyKey: "book-once" };
    const booked = await coordinator.bookSeats(request, fan.headers);
    expect(paymentBrief(booked.payment)).toBe("SUCCEEDED");
    expect(booked.reservation!.state).toBe(ReservationState.CONFIRMED);

    const summary = (response: BookSeatsResponse) => ({
      payment: response.payment!.id,
      state: paymentBrief(response.payment),
      reservation: response.reservation!.id,
    });
    const attempt = (headers: Fan["headers"]) => coordinator.bookSeats(request, headers).then(summary, outcome);
    // The client lost the answer and retries the very same call...
    const sameToken = await attempt(fan.headers);
    // ...or, told the session is over, queues again and retries.
    const { queueToken } = await queue.enterQueue({ concertId }, fan.auth);
    await waitForState(suite, queueToken, QueueState.ADMITTED);
    const queuedAgain = await attempt(gated(fan.token, queueToken));

    // Never a second debit.
    expect(await balance(fan)).toBe(3_800n);
    expect((await ledger(fan)).filter(([kind]) => kind === "USE")).toEqual([["USE", -1_200n, booked.payment!.id]]);
    expect((await payments.listPayments({}, fan.auth)).payments.map((p) => p.id)).toEqual([booked.payment!.id]);
    // And the retry gets the first result.
    expect({ sameToken, queuedAgain }).toEqual({ sameToken: summary(booked), queuedAgain: summary(booked) });
  });
});
