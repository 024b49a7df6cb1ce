import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { TransactionContext, type MikroORM } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, onTestFinished, vi } from "vitest";
import { ReservationSchema, ReservationState, type Reservation } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { paymentModule } from "../services/payment/index.js";
import { Payment } from "../services/payment/payment.entity.js";
import { Payments, type PointsPort, type Refusal, type ReservationsPort, type SessionsPort } from "../services/payment/payments.js";
import { openDatabase } from "../services/platform/database.js";
import { DependencyDown, NotFound, Reason, Refused } from "../services/platform/errors.js";
import { watchLogs } from "../services/platform/log.js";

/**
 * The payment saga at the depth of its domain class: Payments on a real
 * PostgreSQL payment schema, its neighbours (points, holds, queue sessions)
 * replaced by fakes behind the same ports. Each fake records its calls and
 * checks that no database transaction is open while it is called.
 */

const calls: string[] = [];
function called(name: string) {
  const open = TransactionContext.currentTransactionContext()?.em;
  if (open?.isInTransaction()) throw new Error(`${name} called with a transaction open`);
  calls.push(name);
}

class FakePoints implements PointsPort {
  balances = new Map<string, number>();
  debits = new Map<string, number>();
  refunds = new Set<string>();
  down = false;
  async debit(userId: string, amount: number, paymentId: string): Promise<"debited" | Refusal> {
    called("debit");
    if (this.down) throw new DependencyDown("the point service is unavailable; retry later");
    if (this.debits.has(paymentId)) return "debited";
    const balance = this.balances.get(userId) ?? 0;
    if (balance < amount) return { refused: Reason.INSUFFICIENT_POINTS, message: `the balance is lower than ${amount} points` };
    this.balances.set(userId, balance - amount);
    this.debits.set(paymentId, amount);
    return "debited";
  }
  async refund(userId: string, paymentId: string) {
    called("refund");
    if (this.down) throw new DependencyDown("the point service is unavailable; retry later");
    const debited = this.debits.get(paymentId);
    if (debited === undefined || this.refunds.has(paymentId)) return;
    this.refunds.add(paymentId);
    this.balances.set(userId, (this.balances.get(userId) ?? 0) + debited);
  }
}

class FakeHolds implements ReservationsPort {
  holds = new Map<string, Reservation>();
  down = false;
  /** Instead of answering: fail with this (a bug's error, say), or hang until the call's signal aborts. */
  misbehave: "error" | "hang" | undefined;
  hold(userId: string, amount: number, expiresInMs = 60_000): Reservation {
    const reservation = create(ReservationSchema, {
      id: randomUUID(),
      userId,
      concertId: concert,
      scheduleId: randomUUID(),
      seatNumbers: [1],
      amount: BigInt(amount),
      state: ReservationState.HELD,
      expiresAt: timestampFromDate(new Date(Date.now() + expiresInMs)),
    });
    this.holds.set(reservation.id, reservation);
    return reservation;
  }
  async get(userId: string, reservationId: string) {
    called("get");
    if (this.down) throw new DependencyDown("the concert service is unavailable; retry later");
    const found = this.holds.get(reservationId);
    if (!found || found.userId !== userId) throw new NotFound(Reason.RESERVATION_NOT_FOUND, `no reservation ${reservationId}`);
    return found;
  }
  async confirm({ userId, reservationId, paymentId, amount }: { userId: string; reservationId: string; paymentId: string; amount: number }, signal?: AbortSignal) {
    called("confirm");
    if (this.down) throw new DependencyDown("the concert service is unavailable; retry later");
    if (this.misbehave === "error") throw new Error("relation does not exist");
    if (this.misbehave === "hang") {
      await new Promise((resolve) => signal!.addEventListener("abort", resolve));
      throw new DependencyDown("the concert service is unavailable; retry later");
    }
    const found = this.holds.get(reservationId);
    if (!found || found.userId !== userId) return { refused: Reason.RESERVATION_NOT_FOUND, message: "no such reservation" };
    if (found.state === ReservationState.CONFIRMED) {
      return found.paymentId === paymentId ? found : { refused: Reason.RESERVATION_CONFIRMED, message: "paid by another payment" };
    }
    if (Number(found.expiresAt!.seconds) * 1000 + found.expiresAt!.nanos / 1e6 <= Date.now()) return { refused: Reason.HOLD_EXPIRED, message: "the hold has ended" };
    if (Number(found.amount) !== amount) return { refused: Reason.AMOUNT_MISMATCH, message: "another amount" };
    const sold = create(ReservationSchema, { ...found, state: ReservationState.CONFIRMED, paymentId });
    this.holds.set(reservationId, sold);
    return sold;
  }
}

class FakeSessions implements SessionsPort {
  completed: string[] = [];
  async complete(userId: string) {
    called("complete");
    this.completed.push(userId);
  }
}

const concert = randomUUID();
let orm: MikroORM;
let points: FakePoints;
let holds: FakeHolds;
let sessions: FakeSessions;
let payments: Payments;

beforeAll(async () => {
  orm = await openDatabase(paymentModule.database!, { url: inject("databaseUrl"), poolSize: 5 });
});
afterAll(() => orm?.close());
afterEach(() => vi.restoreAllMocks());

function fresh() {
  calls.length = 0;
  points = new FakePoints();
  holds = new FakeHolds();
  sessions = new FakeSessions();
  payments = new Payments({ points, reservations: holds, sessions });
}

const em = () => orm.em.fork();
const admitted = async () => ({ concertId: concert });

function fanWith(balance: number) {
  const userId = randomUUID();
  points.balances.set(userId, balance);
  return userId;
}

describe("the payment saga with fake neighbours", () => {
  it("debits, sells and ends the session, one call each; with the reservation given it is not read again", async () => {
    fresh();
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 600);
    const { payment, reservation: after } = await payments.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "k", reservation });
    expect(payment).toMatchObject({ state: "SUCCEEDED", amount: 600, concertId: concert, sessionToEnd: false });
    expect(after).toMatchObject({ id: reservation.id, state: ReservationState.CONFIRMED, paymentId: payment.id });
    expect(calls).toEqual(["debit", "confirm", "complete"]);
    expect(points.balances.get(userId)).toBe(400);
    expect(sessions.completed).toEqual([userId]);

    // Without it, the reservation is read once first.
    calls.length = 0;
    const second = holds.hold(userId, 100);
    await payments.pay(em(), { userId, admitted, reservationId: second.id, idempotencyKey: "k2" });
    expect(calls).toEqual(["get", "debit", "confirm", "complete"]);
  });

  it("too few points: FAILED with INSUFFICIENT_POINTS, and nothing is sold nor the session ended", async () => {
    fresh();
    const userId = fanWith(100);
    const reservation = holds.hold(userId, 600);
    const { payment, reservation: after } = await payments.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "k", reservation });
    expect([payment.state, Reason[payment.failureReason]]).toEqual(["FAILED", "INSUFFICIENT_POINTS"]);
    expect(after!.state).toBe(ReservationState.HELD);
    expect(calls).toEqual(["debit"]);
  });

  it("a hold that cannot be sold any more: the debit is refunded once and the payment FAILS with the hold's reason", async () => {
    fresh();
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 600, -1);
    const { payment, reservation: after } = await payments.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "k", reservation });
    expect([payment.state, Reason[payment.failureReason]]).toEqual(["FAILED", "HOLD_EXPIRED"]);
    expect(after!.state).toBe(ReservationState.EXPIRED);
    expect(calls).toEqual(["debit", "confirm", "refund"]);
    expect(points.balances.get(userId)).toBe(1_000);
  });

  it("a key again returns the first payment and moves nothing; the key for another reservation is refused", async () => {
    fresh();
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 300);
    const concurrent = await Promise.all(
      Array.from({ length: 20 }, () => payments.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "same", reservation })),
    );
    expect(new Set(concurrent.map((paid) => `${paid.payment.id} ${paid.payment.state}`)).size).toBe(1);
    expect(points.debits.size).toBe(1);
    expect(points.balances.get(userId)).toBe(700);
    const other = holds.hold(userId, 300);
    await expect(payments.pay(em(), { userId, admitted, reservationId: other.id, idempotencyKey: "same", reservation: other })).rejects.toMatchObject({
      reason: Reason.IDEMPOTENCY_KEY_REUSED,
    });
    // A replay needs no admission: the payment made with the key is the answer.
    const refused = async () => {
      throw new Refused(Reason.QUEUE_TOKEN_EXPIRED, "the session is over");
    };
    const replayed = await payments.pay(em(), { userId, admitted: refused, reservationId: undefined, idempotencyKey: "same" });
    expect(replayed.payment.id).toBe(concurrent[0]!.payment.id);
    expect(points.debits.size).toBe(1);
  });

  it("an outage leaves the payment PENDING and logged once; recovery passes while it lasts log nothing; when the hold's owner answers that the hold ran out, the points come back and it ends FAILED", async () => {
    fresh();
    const logged = watchLogs();
    onTestFinished(logged.stop);
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 500, 300);
    holds.down = true;
    const { payment } = await payments.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "k", reservation });
    expect(payment.state).toBe("PENDING");
    expect(points.balances.get(userId)).toBe(500);
    const mine = () => logged.entries.filter((entry) => entry.level >= 40 && entry.message.includes(payment.id));
    expect(mine()).toHaveLength(1);

    await new Promise((resolve) => setTimeout(resolve, 400));
    for (let pass = 0; pass < 3; pass++) await payments.recover(em(), 0);
    expect(mine()).toHaveLength(1);
    expect((await em().findOneOrFail(Payment, { id: payment.id })).state).toBe("PENDING");

    holds.down = false;
    await payments.recover(em(), 0);
    const settled = await em().findOneOrFail(Payment, { id: payment.id });
    expect([settled.state, Reason[settled.failureReason]]).toEqual(["FAILED", "HOLD_EXPIRED"]);
    expect(points.balances.get(userId)).toBe(1_000);
    expect(logged.entries.filter((entry) => entry.level === 30 && entry.message.includes(payment.id))).toHaveLength(1);
    // Settled: later passes leave it alone.
    calls.length = 0;
    await payments.recover(em(), 0);
    expect(calls).toEqual([]);
  });

  it("a payment whose reservation is of another concert than the admission is refused before anything is recorded", async () => {
    fresh();
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 500);
    await expect(
      payments.pay(em(), { userId, admitted: async () => ({ concertId: randomUUID() }), reservationId: reservation.id, idempotencyKey: "k", reservation }),
    ).rejects.toMatchObject({ reason: Reason.NOT_ADMITTED });
    expect(calls).toEqual([]);
    expect(await em().count(Payment, { userId })).toBe(0);
  });

  it("a neighbour's unexpected error is no verdict: the payment stays PENDING, logged once, and recovery settles it once the neighbour answers", async () => {
    fresh();
    const logged = watchLogs();
    onTestFinished(logged.stop);
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 400);
    holds.misbehave = "error";
    const { payment } = await payments.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "k", reservation });
    expect(payment.state).toBe("PENDING");
    for (let pass = 0; pass < 2; pass++) await payments.recover(em(), 0);
    expect(logged.entries.filter((entry) => entry.message.includes(`${payment.id}: could not confirm the reservation, unexpectedly`))).toHaveLength(1);
    holds.misbehave = undefined;
    await payments.recover(em(), 0);
    expect((await em().findOneOrFail(Payment, { id: payment.id })).state).toBe("SUCCEEDED");
    expect(points.balances.get(userId)).toBe(600);
  });

  it("a drive's calls are cut off before its lease ends: a neighbour that never answers leaves the payment PENDING and its lease free", async () => {
    fresh();
    // A recovery interval of 3 s: leases of 1 s, calls cut off after 750 ms.
    const quick = new Payments({ points, reservations: holds, sessions }, 3_000);
    const userId = fanWith(1_000);
    const reservation = holds.hold(userId, 400);
    holds.misbehave = "hang";
    const started = Date.now();
    const { payment } = await quick.pay(em(), { userId, admitted, reservationId: reservation.id, idempotencyKey: "k", reservation });
    const took = Date.now() - started;
    expect(payment.state).toBe("PENDING");
    expect(took).toBeGreaterThanOrEqual(700);
    expect(took).toBeLessThan(1_000);
    expect((await em().findOneOrFail(Payment, { id: payment.id })).drivenUntil).toBeNull();
    // The debit stands; the next drive sells and succeeds without debiting again.
    holds.misbehave = undefined;
    await quick.recover(em(), 0);
    expect((await em().findOneOrFail(Payment, { id: payment.id })).state).toBe("SUCCEEDED");
    expect([points.debits.size, points.balances.get(userId)]).toEqual([1, 600]);
  });
});
