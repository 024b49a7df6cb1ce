import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { PaymentService, PaymentState, type Payment, type PayResponse } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointInternalService, PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService, ReservationState, type Reservation } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { dropKeys } from "./redis-keys.js";
import { admittedFan, bearer, client, concertOnSale, failure, gated, startTestSuite, testSecrets, waitForState, withQueueToken } from "./support.js";
import { eventually, holdsFor, invalid, outcome, refused, seededRandom, tally } from "./outcomes.js";

/**
 * Payments end to end: PaymentService.Pay and its saga (debit the points,
 * confirm the reservation, end the queue session; refund and FAIL when the hold
 * can no longer be confirmed), crash recovery of payments left PENDING, and a
 * randomized run of many fans at once, on real servers over gRPC (h2c) against
 * real PostgreSQL and Redis, read back directly from the point, payment,
 * reservation and concert schemas.
 *
 * Every suite of this file shares one database and one Redis key prefix: they
 * are instances of one deployment, so whichever instance's recovery loop picks
 * up a payment ends the right queue session.
 */

type Fan = Awaited<ReturnType<typeof admittedFan>>;

const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:payments:${randomUUID()}:`;
const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };
/** The recovery interval of every suite here: a payment is never PENDING longer than this after a crash. */
const recoveryMs = 2_000;
const deployment = { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: redisPrefix, QUEUE_MAX_ACTIVE: "1000", PAYMENT_RECOVERY_MS: String(recoveryMs) };

let suite: Suite;
let c: Clients;
let db: pg.Pool;

beforeAll(async () => {
  suite = await startTestSuite(deployment);
  c = clientsOf(suite);
  db = new pg.Pool({ connectionString: inject("databaseUrl"), max: 3 });
});
afterAll(async () => {
  await suite?.close();
  await db?.end();
  await dropKeys(redisUrl, redisPrefix);
});

// ---------------------------------------------------------------- helpers

/** One client (one HTTP/2 connection) per service of a suite. */
function clientsOf(on: Suite) {
  return {
    points: client(on, PointService),
    pointsInternal: client(on, PointInternalService),
    payments: client(on, PaymentService),
    reservations: client(on, ReservationService),
    queue: client(on, QueueService),
    concerts: client(on, ConcertService),
  };
}
type Clients = ReturnType<typeof clientsOf>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const charge = (cl: Clients, fan: Fan, amount: bigint) => cl.points.chargePoints({ amount, idempotencyKey: randomUUID() }, bearer(fan.token));
const balanceOf = async (cl: Clients, fan: Fan) => (await cl.points.getBalance({}, bearer(fan.token))).balance;
const queueState = async (cl: Clients, fan: Fan) => (await cl.queue.getQueueStatus({}, withQueueToken(fan.queueToken))).status!.state;
const reservationOf = async (cl: Clients, fan: Fan, reservationId: string) =>
  (await cl.reservations.getReservation({ reservationId }, bearer(fan.token))).reservation!;

async function hold(cl: Clients, fan: Fan, scheduleId: string, seatNumbers: number[]): Promise<Reservation> {
  return (await cl.reservations.holdSeats({ scheduleId, seatNumbers }, fan.headers)).reservation!;
}

/** A payment in a short readable form: "SUCCEEDED" or "FAILED/HOLD_EXPIRED". */
const brief = (payment: Pick<Payment, "state" | "failureReason">) =>
  payment.state === PaymentState.FAILED ? `FAILED/${Reason[payment.failureReason]}` : PaymentState[payment.state];

interface LedgerRow {
  user_id: string;
  kind: "CHARGE" | "USE" | "REFUND";
  amount: number;
  balance_after: number;
  payment_id: string | null;
}

async function ledgerOfPayment(paymentId: string): Promise<[string, number][]> {
  const { rows } = await db.query<LedgerRow>(
    `select kind, amount::float8 as amount from point.ledger_entry where payment_id = $1 order by created_at, kind desc`,
    [paymentId],
  );
  return rows.map((row) => [row.kind, row.amount]);
}

async function ledgerOfUser(userId: string): Promise<LedgerRow[]> {
  const { rows } = await db.query<LedgerRow>(
    `select user_id, kind, amount::float8 as amount, balance_after::float8 as balance_after, payment_id
       from point.ledger_entry where user_id = $1 order by created_at, balance_after`,
    [userId],
  );
  return rows;
}

interface PaymentRow {
  id: string;
  user_id: string;
  reservation_id: string;
  state: "PENDING" | "SUCCEEDED" | "FAILED";
  failure_reason: number;
  amount: number;
  session_to_end: boolean;
  updated_at: Date;
}

async function paymentRows(where: string, params: unknown[]): Promise<PaymentRow[]> {
  const { rows } = await db.query<PaymentRow>(
    `select id, user_id, reservation_id, state, failure_reason, amount::float8 as amount, session_to_end, updated_at
       from payment.payment where ${where} order by created_at`,
    params,
  );
  return rows;
}

async function seatRows(scheduleId: string) {
  const { rows } = await db.query<{ number: number; state: string; reservation_id: string | null }>(
    `select number, state, reservation_id from concert.seat where schedule_id = $1 order by number`,
    [scheduleId],
  );
  return rows;
}

/**
 * Writes a PENDING payment straight into the payment table, as the payment
 * service would have just before a crash: `updatedAgoMs` is how long ago the
 * crash happened. Returns the stored updated_at (the database's clock).
 */
async function insertPending(payment: { id: string; fan: Fan; reservation: Reservation; updatedAgoMs: number }): Promise<Date> {
  return (await insertPendingAtOnce([payment], payment.updatedAgoMs))[0]!;
}

/**
 * Several PENDING payments in one statement: one crash, one moment. With
 * `leaseLeftMs`, the crashed driver's lease on them still runs that long.
 */
async function insertPendingAtOnce(payments: { id: string; fan: Fan; reservation: Reservation }[], updatedAgoMs: number, leaseLeftMs?: number): Promise<Date[]> {
  const { rows } = await db.query<{ updated_at: Date }>(
    `insert into payment.payment (id, user_id, reservation_id, concert_id, idempotency_key, amount, state, created_at, updated_at, driven_until)
     select id, user_id, reservation_id, concert_id, 'crashed-' || id, amount, 'PENDING',
            now() - $6 * interval '1 millisecond', now() - $6 * interval '1 millisecond', now() + $7 * interval '1 millisecond'
       from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[]) as p(id, user_id, reservation_id, concert_id, amount)
     returning updated_at`,
    [
      payments.map((p) => p.id),
      payments.map((p) => p.fan.userId),
      payments.map((p) => p.reservation.id),
      payments.map((p) => p.reservation.concertId),
      payments.map((p) => Number(p.reservation.amount)),
      updatedAgoMs,
      leaseLeftMs ?? null,
    ],
  );
  return rows.map((row) => row.updated_at);
}

async function settled(paymentId: string, timeoutMs = 5_000): Promise<PaymentRow> {
  let row: PaymentRow | undefined;
  await eventually(
    `payment ${paymentId} settled`,
    async () => {
      [row] = await paymentRows("id = $1", [paymentId]);
      return row !== undefined && row.state !== "PENDING" && !row.session_to_end;
    },
    timeoutMs,
  );
  return row!;
}

// ---------------------------------------------------------------- Pay

describe("Pay for a held reservation", () => {
  it("debits the points, confirms the reservation, sells the seats and ends the queue session", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 1_500n }]);
    const scheduleId = scheduleIds[0]!;
    const [fan, onlooker] = await Promise.all([admittedFan(suite, concertId), admittedFan(suite, concertId)]);
    await charge(c, fan, 5_000n);
    const reservation = await hold(c, fan, scheduleId, [4, 3]);
    expect(reservation.amount).toBe(3_000n);

    const { payment } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: "pay-once" }, fan.headers);
    expect(payment).toMatchObject({
      state: PaymentState.SUCCEEDED,
      failureReason: Reason.UNSPECIFIED,
      failureMessage: "",
      amount: 3_000n,
      reservationId: reservation.id,
      userId: fan.userId,
    });

    // The reservation is sold, to this payment.
    expect(await reservationOf(c, fan, reservation.id)).toMatchObject({ state: ReservationState.CONFIRMED, paymentId: payment!.id });
    expect((await seatRows(scheduleId)).filter((row) => row.state !== "AVAILABLE")).toEqual([
      { number: 3, state: "SOLD", reservation_id: reservation.id },
      { number: 4, state: "SOLD", reservation_id: reservation.id },
    ]);
    const { seats } = await c.concerts.listSeats({ scheduleId }, onlooker.headers);
    expect(seats.filter((seat) => seat.state !== SeatState.AVAILABLE).map((seat) => [seat.number, SeatState[seat.state]])).toEqual([
      [3, "SOLD"],
      [4, "SOLD"],
    ]);
    expect((await c.concerts.listSchedules({ concertId })).schedules.map((s) => s.availableSeats)).toEqual([8]);

    // The points are debited once, for this payment.
    expect(await balanceOf(c, fan)).toBe(2_000n);
    expect(await ledgerOfPayment(payment!.id)).toEqual([["USE", -3_000]]);

    // The queue session has ended.
    expect(await queueState(c, fan)).toBe(QueueState.COMPLETED);
    expect(await queueState(c, onlooker)).toBe(QueueState.ADMITTED);

    // And the payment reads the same everywhere.
    expect((await c.payments.getPayment({ paymentId: payment!.id }, bearer(fan.token))).payment).toEqual(payment);
    const listed = await c.payments.listPayments({}, bearer(fan.token));
    expect(listed.payments).toEqual([payment]);
    expect(listed.nextPageToken).toBe("");
    expect(await paymentRows("id = $1", [payment!.id])).toMatchObject([{ state: "SUCCEEDED", session_to_end: false, amount: 3_000 }]);
  });

  it("GetPayment and ListPayments show a payment to its owner only: to anyone else it is NotFound PAYMENT_NOT_FOUND", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 100n }]);
    const [owner, stranger] = await Promise.all([admittedFan(suite, concertId), admittedFan(suite, concertId)]);
    await charge(c, owner, 100n);
    const reservation = await hold(c, owner, scheduleIds[0]!, [1]);
    const { payment } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: randomUUID() }, owner.headers);
    expect(payment!.state).toBe(PaymentState.SUCCEEDED);

    await refused(c.payments.getPayment({ paymentId: payment!.id }, bearer(stranger.token)), Code.NotFound, Reason.PAYMENT_NOT_FOUND);
    expect((await c.payments.listPayments({}, bearer(stranger.token))).payments).toEqual([]);
    await refused(c.payments.getPayment({ paymentId: randomUUID() }, bearer(owner.token)), Code.NotFound, Reason.PAYMENT_NOT_FOUND);
    await invalid(c.payments.getPayment({ paymentId: "not-a-uuid" }, bearer(owner.token)), "payment_id");
    await refused(c.payments.getPayment({ paymentId: payment!.id }), Code.Unauthenticated, Reason.TOKEN_MISSING);
    expect((await c.payments.getPayment({ paymentId: payment!.id }, bearer(owner.token))).payment!.id).toBe(payment!.id);
  });

  it("paying another fan's reservation is refused and moves nothing", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 300n }]);
    const [owner, stranger] = await Promise.all([admittedFan(suite, concertId), admittedFan(suite, concertId)]);
    await charge(c, stranger, 1_000n);
    const reservation = await hold(c, owner, scheduleIds[0]!, [2]);

    const error = await failure(c.payments.pay({ reservationId: reservation.id, idempotencyKey: randomUUID() }, stranger.headers));
    // Someone else's reservation is as absent as one that does not exist (or, at least, forbidden).
    expect(error.code === Code.PermissionDenied || outcome(error) === "NotFound/RESERVATION_NOT_FOUND", outcome(error)).toBe(true);

    expect((await reservationOf(c, owner, reservation.id)).state).toBe(ReservationState.HELD);
    expect(await balanceOf(c, stranger)).toBe(1_000n);
    expect((await ledgerOfUser(stranger.userId)).map((row) => row.kind)).toEqual(["CHARGE"]);
    expect(await paymentRows("user_id = $1", [stranger.userId])).toEqual([]);
    expect(await queueState(c, stranger)).toBe(QueueState.ADMITTED);
  });

  it("refuses a reservation that does not exist, malformed input and a missing queue token", async () => {
    const { concertId } = await concertOnSale(suite, [{ seatCount: 4, price: 300n }]);
    const fan = await admittedFan(suite, concertId);
    await refused(c.payments.pay({ reservationId: randomUUID(), idempotencyKey: randomUUID() }, fan.headers), Code.NotFound, Reason.RESERVATION_NOT_FOUND);
    await invalid(c.payments.pay({ reservationId: "nope", idempotencyKey: randomUUID() }, fan.headers), "reservation_id");
    await invalid(c.payments.pay({ reservationId: randomUUID(), idempotencyKey: "" }, fan.headers), "idempotency_key");
    await invalid(c.payments.pay({ reservationId: randomUUID(), idempotencyKey: "k".repeat(129) }, fan.headers), "idempotency_key");
    await refused(c.payments.pay({ reservationId: randomUUID(), idempotencyKey: randomUUID() }, bearer(fan.token)), Code.PermissionDenied, Reason.QUEUE_TOKEN_MISSING);
    expect(await paymentRows("user_id = $1", [fan.userId])).toEqual([]);
  });

  it("a released hold: the payment FAILS with HOLD_RELEASED and no point moves", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 300n }]);
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 1_000n);
    const reservation = await hold(c, fan, scheduleIds[0]!, [1]);
    await c.reservations.releaseHold({ reservationId: reservation.id }, bearer(fan.token));

    const { payment } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: randomUUID() }, fan.headers);
    expect(brief(payment!)).toBe("FAILED/HOLD_RELEASED");
    expect(payment!.failureMessage).not.toBe("");
    expect(await ledgerOfPayment(payment!.id)).toEqual([]);
    expect(await balanceOf(c, fan)).toBe(1_000n);
    expect(await queueState(c, fan)).toBe(QueueState.ADMITTED);
  });
});

describe("Pay is idempotent per key", () => {
  it("100 concurrent Pay calls with one key make one payment and one debit, and every caller gets that payment", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 1_500n }]);
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 10_000n);
    const reservation = await hold(c, fan, scheduleIds[0]!, [1]);

    const results = await Promise.allSettled(
      Array.from({ length: 100 }, () => c.payments.pay({ reservationId: reservation.id, idempotencyKey: "one-key" }, fan.headers)),
    );

    // The money first: one payment, one debit, whatever the callers were told.
    const rows = await paymentRows("user_id = $1", [fan.userId]);
    expect(rows.map((row) => row.state)).toEqual(["SUCCEEDED"]);
    expect(await ledgerOfPayment(rows[0]!.id)).toEqual([["USE", -1_500]]);
    expect(await balanceOf(c, fan)).toBe(8_500n);

    expect(tally(results)).toEqual({ ok: 100 });
    const payments = results.map((result) => (result as PromiseFulfilledResult<PayResponse>).value.payment!);
    expect(new Set(payments.map((p) => p.id))).toEqual(new Set([rows[0]!.id]));
    expect(new Set(payments.map(brief))).toEqual(new Set(["SUCCEEDED"]));
  });

  it("Pay retried with the same key after it succeeded returns the same payment (the spec: same key, same request, first result)", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 700n }]);
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 1_000n);
    const reservation = await hold(c, fan, scheduleIds[0]!, [2]);
    const request = { reservationId: reservation.id, idempotencyKey: "retried-after-success" };
    const { payment: first } = await c.payments.pay(request, fan.headers);
    expect(brief(first!)).toBe("SUCCEEDED");

    // The client lost the answer and retries the very same call.
    const retry = await c.payments.pay(request, fan.headers).then(
      (response) => response.payment!,
      (error: unknown) => outcome(error),
    );
    expect(await ledgerOfPayment(first!.id)).toEqual([["USE", -700]]);
    expect(await balanceOf(c, fan)).toBe(300n);
    expect(retry).toEqual(first);
  });

  it("the same key for another reservation is FailedPrecondition IDEMPOTENCY_KEY_REUSED, and nothing is paid", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 500n }, { seatCount: 4, price: 500n }]);
    const fan = await admittedFan(suite, concertId);
    const first = await hold(c, fan, scheduleIds[0]!, [1]);
    const { payment } = await c.payments.pay({ reservationId: first.id, idempotencyKey: "k" }, fan.headers);
    expect(brief(payment!)).toBe("FAILED/INSUFFICIENT_POINTS");

    await charge(c, fan, 5_000n);
    const second = await hold(c, fan, scheduleIds[1]!, [1]);
    await refused(c.payments.pay({ reservationId: second.id, idempotencyKey: "k" }, fan.headers), Code.FailedPrecondition, Reason.IDEMPOTENCY_KEY_REUSED);

    expect((await paymentRows("user_id = $1", [fan.userId])).map((row) => row.id)).toEqual([payment!.id]);
    expect((await reservationOf(c, fan, second.id)).state).toBe(ReservationState.HELD);
    expect(await balanceOf(c, fan)).toBe(5_000n);
  });

  it("with too few points the payment FAILS with INSUFFICIENT_POINTS, nothing is debited and the hold stays; after a top-up a new key pays", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 1_500n }]);
    const scheduleId = scheduleIds[0]!;
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 1_000n);
    const reservation = await hold(c, fan, scheduleId, [3]);

    const { payment: refusedPayment } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: "short" }, fan.headers);
    expect(brief(refusedPayment!)).toBe("FAILED/INSUFFICIENT_POINTS");
    expect(refusedPayment!.failureMessage).not.toBe("");
    expect(await ledgerOfPayment(refusedPayment!.id)).toEqual([]);
    expect(await balanceOf(c, fan)).toBe(1_000n);
    expect((await reservationOf(c, fan, reservation.id)).state).toBe(ReservationState.HELD);
    expect((await seatRows(scheduleId)).find((row) => row.number === 3)).toEqual({ number: 3, state: "HELD", reservation_id: reservation.id });
    expect(await queueState(c, fan)).toBe(QueueState.ADMITTED);

    await charge(c, fan, 2_000n);
    // The spent key keeps its first result, even now that the points are there.
    const { payment: replayed } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: "short" }, fan.headers);
    expect(replayed).toEqual(refusedPayment);
    expect(await balanceOf(c, fan)).toBe(3_000n);

    const { payment } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: "topped-up" }, fan.headers);
    expect(brief(payment!)).toBe("SUCCEEDED");
    expect(await balanceOf(c, fan)).toBe(1_500n);
    expect((await reservationOf(c, fan, reservation.id)).state).toBe(ReservationState.CONFIRMED);
    expect(await queueState(c, fan)).toBe(QueueState.COMPLETED);
    const listed = await c.payments.listPayments({ pageSize: 1 }, bearer(fan.token));
    expect(listed.payments.map(brief)).toEqual(["SUCCEEDED"]);
    const older = await c.payments.listPayments({ pageSize: 1, pageToken: listed.nextPageToken }, bearer(fan.token));
    expect(older.payments.map((p) => p.id)).toEqual([refusedPayment!.id]);
    expect(older.nextPageToken).toBe("");
  });
});

// ---------------------------------------------------------------- recovery with live holds

describe("recovery of payments a crash left PENDING", () => {
  it("after the debit, with the hold still live: recovery confirms it — SUCCEEDED, seats SOLD, one debit, session COMPLETED", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 800n }]);
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 2_000n);
    const reservation = await hold(c, fan, scheduleIds[0]!, [1, 2]);
    const paymentId = randomUUID();
    await c.pointsInternal.usePoints({ userId: fan.userId, amount: reservation.amount, paymentId }, internal);
    await insertPending({ id: paymentId, fan, reservation, updatedAgoMs: 2_000 });

    const row = await settled(paymentId);
    expect(row).toMatchObject({ state: "SUCCEEDED", failure_reason: 0 });
    expect(await ledgerOfPayment(paymentId)).toEqual([["USE", -1_600]]);
    expect(await balanceOf(c, fan)).toBe(400n);
    expect(await reservationOf(c, fan, reservation.id)).toMatchObject({ state: ReservationState.CONFIRMED, paymentId });
    expect((await seatRows(scheduleIds[0]!)).filter((seat) => seat.state === "SOLD").map((seat) => seat.number)).toEqual([1, 2]);
    await eventually("queue session COMPLETED", async () => (await queueState(c, fan)) === QueueState.COMPLETED);
    expect((await c.payments.getPayment({ paymentId }, bearer(fan.token))).payment!.state).toBe(PaymentState.SUCCEEDED);
  });

  it("before the debit: recovery debits once and succeeds", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 900n }]);
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 1_000n);
    const reservation = await hold(c, fan, scheduleIds[0]!, [4]);
    const paymentId = randomUUID();
    await insertPending({ id: paymentId, fan, reservation, updatedAgoMs: 2_000 });

    expect(await settled(paymentId)).toMatchObject({ state: "SUCCEEDED" });
    expect(await ledgerOfPayment(paymentId)).toEqual([["USE", -900]]);
    expect(await balanceOf(c, fan)).toBe(100n);
    expect((await reservationOf(c, fan, reservation.id)).state).toBe(ReservationState.CONFIRMED);
    await eventually("queue session COMPLETED", async () => (await queueState(c, fan)) === QueueState.COMPLETED);
    // Later rounds of recovery leave it alone.
    await holdsFor(3 * recoveryMs, async () => expect(await ledgerOfPayment(paymentId)).toEqual([["USE", -900]]));
  });

  it("no payment stays PENDING past the recovery interval, whatever step it crashed at: 20 payments of an instance crashing at once", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 20, price: 500n }]);
    const scheduleId = scheduleIds[0]!;
    const kinds = [
      { name: "debited, hold live", points: 1_000n, debit: true, release: false, expected: "SUCCEEDED", ledger: [["USE", -500]] },
      { name: "not debited, hold live", points: 1_000n, debit: false, release: false, expected: "SUCCEEDED", ledger: [["USE", -500]] },
      { name: "debited, hold released", points: 1_000n, debit: true, release: true, expected: "FAILED/HOLD_RELEASED", ledger: [["USE", -500], ["REFUND", 500]] },
      { name: "not debited, hold released", points: 1_000n, debit: false, release: true, expected: "FAILED/HOLD_RELEASED", ledger: "no points kept" },
      { name: "not debited, too few points", points: 100n, debit: false, release: false, expected: "FAILED/INSUFFICIENT_POINTS", ledger: [] },
    ] as const;
    // Four payments of each kind, all in flight on the instance that crashes.
    const cases = [...kinds, ...kinds, ...kinds, ...kinds];
    const fans = await Promise.all(cases.map(() => admittedFan(suite, concertId)));

    const crashes = await Promise.all(
      cases.map(async (spec, i) => {
        const fan = fans[i]!;
        await charge(c, fan, spec.points);
        const reservation = await hold(c, fan, scheduleId, [i + 1]);
        const paymentId = randomUUID();
        if (spec.debit) await c.pointsInternal.usePoints({ userId: fan.userId, amount: reservation.amount, paymentId }, internal);
        if (spec.release) await c.reservations.releaseHold({ reservationId: reservation.id }, bearer(fan.token));
        return { spec, fan, paymentId, reservation };
      }),
    );
    // They all crash at the same moment, now.
    const crashedAt = await insertPendingAtOnce(
      crashes.map((crash) => ({ id: crash.paymentId, fan: crash.fan, reservation: crash.reservation })),
      0,
    );

    const rows = await Promise.all(crashes.map((crash) => settled(crash.paymentId, 10 * recoveryMs)));
    const pendingFor = rows.map((row, i) => row.updated_at.getTime() - crashedAt[i]!.getTime());
    expect(
      pendingFor.filter((ms) => ms > recoveryMs),
      `PENDING for ${pendingFor.join(", ")} ms; the recovery interval is ${recoveryMs} ms`,
    ).toEqual([]);

    for (const [i, crash] of crashes.entries()) {
      const row = rows[i]!;
      expect(`${crash.spec.name}: ${row.state === "FAILED" ? `FAILED/${Reason[row.failure_reason]}` : row.state}`).toBe(`${crash.spec.name}: ${crash.spec.expected}`);
      const ledger = await ledgerOfPayment(crash.paymentId);
      if (crash.spec.ledger === "no points kept") {
        // Either never debited, or debited and refunded.
        expect([JSON.stringify([]), JSON.stringify([["USE", -500], ["REFUND", 500]])]).toContain(JSON.stringify(ledger));
      } else {
        expect(ledger, crash.spec.name).toEqual(crash.spec.ledger);
      }
      const expectedBalance = crash.spec.expected === "SUCCEEDED" ? crash.spec.points - 500n : crash.spec.points;
      expect(await balanceOf(c, crash.fan), crash.spec.name).toBe(expectedBalance);
    }
  });
});

// ---------------------------------------------------------------- one driver at a time: the lease

describe("a payment is driven under a lease, never with a transaction open across calls to other services", () => {
  const leaseOf = async (paymentId: string) =>
    (await db.query<{ driven_until: Date | null }>(`select driven_until from payment.payment where id = $1`, [paymentId])).rows[0]!.driven_until;

  it("an outage of the point service leaves the payment PENDING, Pay says so and lets go of it; another instance's recovery loop pays it later", async () => {
    // A payment instance whose point service is down; the rest of the deployment is the shared suite.
    const cut = await startTestSuite({ ...deployment, SERVICES: "payment", QUEUE_URL: suite.host.url, CONCERT_URL: suite.host.url, POINT_URL: "http://127.0.0.1:1" });
    try {
      const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 600n }]);
      const fan = await admittedFan(suite, concertId);
      await charge(c, fan, 1_000n);
      const reservation = await hold(c, fan, scheduleIds[0]!, [2]);
      const request = { reservationId: reservation.id, idempotencyKey: "through-an-outage" };

      const { payment } = await client(cut, PaymentService).pay(request, fan.headers);
      expect(brief(payment!)).toBe("PENDING");
      expect(await ledgerOfPayment(payment!.id)).toEqual([]);
      // Released by the statement that recorded the attempt: no one has to wait for it to lapse.
      expect(await leaseOf(payment!.id)).toBeNull();

      const row = await settled(payment!.id, 10 * recoveryMs);
      expect(row).toMatchObject({ state: "SUCCEEDED", session_to_end: false });
      expect(await ledgerOfPayment(payment!.id)).toEqual([["USE", -600]]);
      expect(await leaseOf(payment!.id)).toBeNull();
      expect(await queueState(c, fan)).toBe(QueueState.COMPLETED);
      // A retry, even on the instance cut off from the points, now gets the outcome.
      expect((await client(cut, PaymentService).pay(request, fan.headers)).payment).toMatchObject({ id: payment!.id, state: PaymentState.SUCCEEDED });
    } finally {
      await cut.close();
    }
  });

  it("while a driver's lease runs, recovery loops leave the payment alone and a retried Pay waits briefly, then answers PENDING; once the lease lapses, recovery pays it", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 400n }]);
    const fan = await admittedFan(suite, concertId);
    await charge(c, fan, 1_000n);
    const reservation = await hold(c, fan, scheduleIds[0]!, [3]);
    const paymentId = randomUUID();
    // A driver that crashed a moment ago, its lease still running for 4 s: recovery would otherwise take it at once.
    const leaseLeftMs = 4_000;
    const [crashedAt] = await insertPendingAtOnce([{ id: paymentId, fan, reservation }], 2_000, leaseLeftMs);
    const leaseEnds = (await leaseOf(paymentId))!;

    const started = Date.now();
    const { payment } = await c.payments.pay({ reservationId: reservation.id, idempotencyKey: `crashed-${paymentId}` }, fan.headers);
    const waited = Date.now() - started;
    expect(payment).toMatchObject({ id: paymentId, state: PaymentState.PENDING });
    expect(waited).toBeGreaterThanOrEqual(1_000);
    expect(waited).toBeLessThan(3_000);
    expect(await ledgerOfPayment(paymentId)).toEqual([]);
    expect(await paymentRows("id = $1", [paymentId])).toMatchObject([{ state: "PENDING", updated_at: crashedAt }]);

    const row = await settled(paymentId, leaseLeftMs + 5 * recoveryMs);
    expect(row.state).toBe("SUCCEEDED");
    expect(row.updated_at.getTime()).toBeGreaterThanOrEqual(leaseEnds.getTime());
    expect(await ledgerOfPayment(paymentId)).toEqual([["USE", -400]]);
    expect(await leaseOf(paymentId)).toBeNull();
  });

  it("100 concurrent Pay calls with one key spread over two instances: one payment, one debit, and every caller gets it SUCCEEDED", async () => {
    const other = await startTestSuite(deployment);
    try {
      const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 4, price: 1_200n }]);
      const fan = await admittedFan(suite, concertId);
      await charge(c, fan, 5_000n);
      const reservation = await hold(c, fan, scheduleIds[0]!, [1]);
      const instances = [c.payments, client(other, PaymentService)];

      // As a client does: an Unavailable answer (a call between services past its deadline on a loaded machine) is
      // retried with the same key; what matters is one payment, one debit, and the same answer for everyone.
      const pay = async (i: number) => {
        for (let attempt = 0; ; attempt++) {
          try {
            return await instances[i % 2]!.pay({ reservationId: reservation.id, idempotencyKey: "two-instances" }, fan.headers);
          } catch (error) {
            if (attempt >= 3 || ConnectError.from(error).code !== Code.Unavailable) throw error;
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        }
      };
      const results = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => pay(i)));

      const rows = await paymentRows("user_id = $1", [fan.userId]);
      expect(rows.map((row) => row.state)).toEqual(["SUCCEEDED"]);
      expect(await ledgerOfPayment(rows[0]!.id)).toEqual([["USE", -1_200]]);
      expect(await balanceOf(c, fan)).toBe(3_800n);
      expect(await leaseOf(rows[0]!.id)).toBeNull();
      const refused = results.flatMap((result) => (result.status === "rejected" ? [ConnectError.from(result.reason).rawMessage] : []));
      expect(tally(results), [...new Set(refused)].join("; ")).toEqual({ ok: 100 });
      const payments = results.map((result) => (result as PromiseFulfilledResult<PayResponse>).value.payment!);
      expect(new Set(payments.map((p) => `${p.id} ${brief(p)}`))).toEqual(new Set([`${rows[0]!.id} SUCCEEDED`]));
    } finally {
      await other.close();
    }
  });
});

// ---------------------------------------------------------------- holds that end before they are paid

describe("holds that end before they are paid (HOLD_SECONDS=1)", () => {
  let clock: Suite;
  let cc: Clients;
  beforeAll(async () => {
    clock = await startTestSuite({ ...deployment, HOLD_SECONDS: "1", DATABASE_POOL_SIZE: "4" });
    cc = clientsOf(clock);
  });
  afterAll(() => clock?.close());

  async function expiredHold(price: bigint, points: bigint) {
    const { concertId, scheduleIds } = await concertOnSale(clock, [{ seatCount: 4, price }]);
    const fan = await admittedFan(clock, concertId);
    await charge(cc, fan, points);
    const reservation = await hold(cc, fan, scheduleIds[0]!, [1]);
    return { fan, reservation, scheduleId: scheduleIds[0]! };
  }

  const waitExpired = (fan: Fan, reservation: Reservation) =>
    eventually("the hold EXPIRED", async () => (await reservationOf(cc, fan, reservation.id)).state === ReservationState.EXPIRED, 5_000, 50);

  it("paying an expired hold FAILS with HOLD_EXPIRED and keeps no points", async () => {
    const { fan, reservation, scheduleId } = await expiredHold(700n, 2_000n);
    await waitExpired(fan, reservation);

    const { payment } = await cc.payments.pay({ reservationId: reservation.id, idempotencyKey: randomUUID() }, fan.headers);
    expect(brief(payment!)).toBe("FAILED/HOLD_EXPIRED");
    expect(await balanceOf(cc, fan)).toBe(2_000n);
    expect([JSON.stringify([]), JSON.stringify([["USE", -700], ["REFUND", 700]])]).toContain(JSON.stringify(await ledgerOfPayment(payment!.id)));
    expect((await seatRows(scheduleId)).filter((row) => row.state === "SOLD")).toEqual([]);
    expect((await reservationOf(cc, fan, reservation.id)).state).toBe(ReservationState.EXPIRED);
    expect(await queueState(cc, fan)).toBe(QueueState.ADMITTED);
  });

  it("a crash after the debit, the hold then expiring: recovery refunds exactly once and ends the payment FAILED with HOLD_EXPIRED", async () => {
    const { fan, reservation, scheduleId } = await expiredHold(700n, 2_000n);
    const paymentId = randomUUID();
    const used = await cc.pointsInternal.usePoints({ userId: fan.userId, amount: 700n, paymentId }, internal);
    expect(used.balance).toBe(1_300n);
    await waitExpired(fan, reservation);
    await insertPending({ id: paymentId, fan, reservation, updatedAgoMs: 1_000 });

    const row = await settled(paymentId);
    expect(row.state === "FAILED" ? `FAILED/${Reason[row.failure_reason]}` : row.state).toBe("FAILED/HOLD_EXPIRED");
    expect(await ledgerOfPayment(paymentId)).toEqual([
      ["USE", -700],
      ["REFUND", 700],
    ]);
    expect(await balanceOf(cc, fan)).toBe(2_000n);
    // Further recovery rounds and a retried refund change nothing.
    await holdsFor(3 * recoveryMs, async () => expect(await ledgerOfPayment(paymentId)).toHaveLength(2));
    await cc.pointsInternal.refundPoints({ userId: fan.userId, paymentId }, internal);
    expect(await balanceOf(cc, fan)).toBe(2_000n);

    const { payment } = await cc.payments.getPayment({ paymentId }, bearer(fan.token));
    expect(brief(payment!)).toBe("FAILED/HOLD_EXPIRED");
    expect((await seatRows(scheduleId)).filter((seat) => seat.state === "SOLD")).toEqual([]);
    expect(await queueState(cc, fan)).toBe(QueueState.ADMITTED);
  });
});

// ---------------------------------------------------------------- randomized run

describe("a randomized run (HOLD_SECONDS=2)", () => {
  const holdSeconds = 2;
  let run: Suite;
  let rc: Clients;
  beforeAll(async () => {
    run = await startTestSuite({ ...deployment, HOLD_SECONDS: String(holdSeconds), HOLD_SWEEP_MS: "250", DATABASE_POOL_SIZE: "5" });
    rc = clientsOf(run);
  });
  afterAll(() => run?.close());

  type Step =
    | { op: "charge"; amount: bigint; reuse: "none" | "same" | "other" }
    | { op: "hold"; date: number; seats: number[] }
    | { op: "pay"; retry: boolean }
    | { op: "release" }
    | { op: "expire"; date: number; seats: number[] }
    | { op: "crash"; debit: boolean }
    | { op: "wait"; ms: number };

  function drawPlan(random: () => number, steps: number, dates: number, seatCount: number): Step[] {
    const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
    const seats = () => {
      const pool = Array.from({ length: seatCount }, (_, i) => i + 1);
      const count = random() < 0.7 ? 1 : 2;
      return Array.from({ length: count }, () => pool.splice(Math.floor(random() * pool.length), 1)[0]!);
    };
    const weighted: [Step["op"], number][] = [
      ["charge", 20],
      ["hold", 24],
      ["pay", 24],
      ["release", 6],
      ["expire", 8],
      ["crash", 8],
      ["wait", 10],
    ];
    const total = weighted.reduce((sum, [, w]) => sum + w, 0);
    return Array.from({ length: steps }, (): Step => {
      let r = random() * total;
      const op = weighted.find(([, w]) => (r -= w) < 0)![0];
      switch (op) {
        case "charge":
          return { op, amount: pick([500n, 1_500n, 3_000n, 6_000n]), reuse: random() < 0.15 ? "same" : random() < 0.06 ? "other" : "none" };
        case "hold":
        case "expire":
          return { op, date: Math.floor(random() * dates), seats: seats() };
        case "pay":
          return { op, retry: random() < 0.3 };
        case "crash":
          return { op, debit: random() < 0.6 };
        case "wait":
          return { op, ms: Math.floor(random() * 400) };
        default:
          return { op: "release" };
      }
    });
  }

  it("30 fans charging, holding, paying, releasing, crashing and letting holds expire at once: no point lost or created, no seat sold twice", async () => {
    const seed = 20261125;
    const random = seededRandom(seed);
    const seatCount = 10;
    const dates = [400n, 700n, 1_100n, 1_600n].map((price) => ({ seatCount, price }));
    // The plans hold and buy on every date: a per-fan limit above what one fan can come to.
    const { concertId, scheduleIds } = await concertOnSale(run, dates, { seatLimit: 100 });
    const fans = await Promise.all(Array.from({ length: 30 }, () => admittedFan(run, concertId)));
    const plans = fans.map(() => drawPlan(random, 14, dates.length, seatCount));

    const outcomes: Record<string, number> = {};
    const surprises: string[] = [];
    const note = (name: string, allowed: boolean) => {
      outcomes[name] = (outcomes[name] ?? 0) + 1;
      if (!allowed) surprises.push(name);
    };
    /** What each fan's client saw: final payment states, and the charges that were applied. */
    const seenPayments = new Map<string, string>();
    const charged = new Map<string, bigint>(); // userId → sum of distinct applied charges
    const crashedPayments: string[] = [];

    async function fanRun(start: Fan, plan: Step[]) {
      let fan = start;
      const held: Reservation[] = [];
      let lastCharge: { key: string; amount: bigint; transactionId: string } | undefined;
      const reenter = async () => {
        const { queueToken } = await rc.queue.enterQueue({ concertId }, bearer(fan.token));
        await waitForState(run, queueToken, QueueState.ADMITTED);
        fan = { ...fan, queueToken, headers: gated(fan.token, queueToken) };
      };
      /** A gated call; when the session has ended (a payment, perhaps a recovered one, completed it) the fan queues again. */
      const gatedCall = async <T>(name: string, call: () => Promise<T>, allowed: string[]): Promise<T | undefined> => {
        try {
          return await call();
        } catch (error) {
          const result = outcome(error);
          note(`${name}:${result}`, allowed.includes(result) || result === "FailedPrecondition/QUEUE_TOKEN_EXPIRED");
          if (result === "FailedPrecondition/QUEUE_TOKEN_EXPIRED") await reenter();
          return undefined;
        }
      };
      const pay = async (name: string, reservation: Reservation, idempotencyKey: string, allowedStates: string[]) => {
        const response = await gatedCall(name, () => rc.payments.pay({ reservationId: reservation.id, idempotencyKey }, fan.headers), []);
        if (!response) return undefined;
        const payment = response.payment!;
        note(`${name}:${brief(payment)}`, allowedStates.includes(brief(payment)));
        seenPayments.set(payment.id, brief(payment));
        if (payment.state === PaymentState.SUCCEEDED) await reenter();
        return payment;
      };
      const payable = ["SUCCEEDED", "FAILED/INSUFFICIENT_POINTS", "FAILED/HOLD_EXPIRED", "FAILED/HOLD_RELEASED", "FAILED/RESERVATION_CONFIRMED"];

      for (const step of plan) {
        switch (step.op) {
          case "charge": {
            const reuse = step.reuse !== "none" && lastCharge;
            const key = reuse ? lastCharge!.key : randomUUID();
            const amount = step.reuse === "other" && reuse ? lastCharge!.amount + 1n : reuse ? lastCharge!.amount : step.amount;
            try {
              const { transaction } = await rc.points.chargePoints({ amount, idempotencyKey: key }, bearer(fan.token));
              if (reuse) {
                note(`charge:replayed`, step.reuse === "same" && transaction!.id === lastCharge!.transactionId);
              } else {
                note("charge:ok", true);
                charged.set(fan.userId, (charged.get(fan.userId) ?? 0n) + amount);
                lastCharge = { key, amount, transactionId: transaction!.id };
              }
            } catch (error) {
              note(`charge:${outcome(error)}`, step.reuse === "other" && outcome(error) === "FailedPrecondition/IDEMPOTENCY_KEY_REUSED");
            }
            break;
          }
          case "hold": {
            const held1 = await gatedCall(
              "hold",
              () => hold(rc, fan, scheduleIds[step.date]!, step.seats),
              ["FailedPrecondition/SEAT_UNAVAILABLE", "FailedPrecondition/HOLD_LIMIT_REACHED"],
            );
            if (held1) {
              note("hold:ok", true);
              held.push(held1);
            }
            break;
          }
          case "pay": {
            const reservation = held.at(-1);
            if (!reservation) break;
            const key = randomUUID();
            const payment = await pay("pay", reservation, key, payable);
            if (!payment) break;
            if (payment.failureReason !== Reason.INSUFFICIENT_POINTS) held.pop();
            if (step.retry) {
              // The same request again (after queueing again if the first one ended the session): the same payment.
              const again = await pay("pay-retry", reservation, key, payable);
              if (again) note(`pay-retry:${again.id === payment.id && brief(again) === brief(payment) ? "same" : "different"}`, again.id === payment.id && brief(again) === brief(payment));
            }
            break;
          }
          case "release": {
            const reservation = held.pop();
            if (!reservation) break;
            try {
              const { reservation: after } = await rc.reservations.releaseHold({ reservationId: reservation.id }, bearer(fan.token));
              note(`release:${ReservationState[after!.state]}`, ["RELEASED", "EXPIRED", "CONFIRMED"].includes(ReservationState[after!.state]));
            } catch (error) {
              // A recovered crash payment may have bought it meanwhile.
              note(`release:${outcome(error)}`, outcome(error) === "FailedPrecondition/RESERVATION_CONFIRMED");
            }
            break;
          }
          case "expire": {
            const reservation = await gatedCall(
              "expire-hold",
              () => hold(rc, fan, scheduleIds[step.date]!, step.seats),
              ["FailedPrecondition/SEAT_UNAVAILABLE", "FailedPrecondition/HOLD_LIMIT_REACHED"],
            );
            if (!reservation) break;
            await sleep(timestampMs(reservation.expiresAt!) - Date.now() + 150);
            await pay("expired-pay", reservation, randomUUID(), ["FAILED/HOLD_EXPIRED"]);
            break;
          }
          case "crash": {
            const reservation = held.at(-1);
            if (!reservation) break;
            const paymentId = randomUUID();
            if (step.debit) {
              try {
                await rc.pointsInternal.usePoints({ userId: fan.userId, amount: reservation.amount, paymentId }, internal);
                note("crash:debited", true);
              } catch (error) {
                note(`crash:${outcome(error)}`, outcome(error) === "FailedPrecondition/INSUFFICIENT_POINTS");
              }
            }
            await insertPending({ id: paymentId, fan, reservation, updatedAgoMs: 0 });
            crashedPayments.push(paymentId);
            note("crash:left PENDING", true);
            break;
          }
          case "wait":
            await sleep(step.ms);
            break;
        }
      }
    }

    await Promise.all(fans.map((fan, i) => fanRun(fan, plans[i]!)));
    const context = () => JSON.stringify(outcomes, null, 1);
    expect(surprises, context()).toEqual([]);

    const userIds = fans.map((fan) => fan.userId);
    await eventually("no payment PENDING", async () => (await paymentRows("user_id = any($1::uuid[]) and state = 'PENDING'", [userIds])).length === 0, 10 * recoveryMs);

    // ---- the books
    const payments = await paymentRows("user_id = any($1::uuid[])", [userIds]);
    const { rows: ledgerRows } = await db.query<LedgerRow>(
      `select user_id, kind, amount::float8 as amount, balance_after::float8 as balance_after, payment_id
         from point.ledger_entry where user_id = any($1::uuid[])`,
      [userIds],
    );
    const { rows: accounts } = await db.query<{ user_id: string; balance: number }>(
      `select user_id, balance::float8 as balance from point.account where user_id = any($1::uuid[])`,
      [userIds],
    );
    const balances = new Map(accounts.map((a) => [a.user_id, a.balance]));
    const sum = (rows: LedgerRow[]) => rows.reduce((total, row) => total + row.amount, 0);

    // Per user: the balance is the sum of the ledger, the charges are those the clients saw applied,
    // and what is left is the charges minus what SUCCEEDED payments cost.
    for (const userId of userIds) {
      const own = ledgerRows.filter((row) => row.user_id === userId);
      const charges = sum(own.filter((row) => row.kind === "CHARGE"));
      const spent = payments.filter((p) => p.user_id === userId && p.state === "SUCCEEDED").reduce((total, p) => total + p.amount, 0);
      expect({ userId, balance: balances.get(userId) ?? 0, charges, left: charges - spent }).toEqual({
        userId,
        balance: sum(own),
        charges: Number(charged.get(userId) ?? 0n),
        left: sum(own),
      });
    }
    // Globally: balances = charges − uses + refunds.
    const byKind = (kind: LedgerRow["kind"]) => Math.abs(sum(ledgerRows.filter((row) => row.kind === kind)));
    expect([...balances.values()].reduce((a, b) => a + b, 0)).toBe(byKind("CHARGE") - byKind("USE") + byKind("REFUND"));

    // Every payment's points: SUCCEEDED has one USE of its amount and no REFUND; FAILED kept nothing.
    const paymentById = new Map(payments.map((p) => [p.id, p]));
    for (const payment of payments) {
      const uses = ledgerRows.filter((row) => row.payment_id === payment.id && row.kind === "USE").map((row) => row.amount);
      const refunds = ledgerRows.filter((row) => row.payment_id === payment.id && row.kind === "REFUND").map((row) => row.amount);
      const books = { id: payment.id, state: payment.state, uses, refunds };
      if (payment.state === "SUCCEEDED") expect(books).toEqual({ ...books, uses: [-payment.amount], refunds: [] });
      else if (uses.length === 0) expect(books).toEqual({ ...books, state: "FAILED", refunds: [] });
      else expect(books).toEqual({ ...books, state: "FAILED", uses: [-payment.amount], refunds: [payment.amount] });
    }
    // No point moved for a payment that does not exist, or for someone else's.
    const orphans = ledgerRows.filter((row) => row.payment_id !== null && paymentById.get(row.payment_id)?.user_id !== row.user_id);
    expect(orphans).toEqual([]);
    // What the clients were told is final.
    for (const [id, seen] of seenPayments) {
      const row = paymentById.get(id)!;
      expect(`${id} ${row.state === "FAILED" ? `FAILED/${Reason[row.failure_reason]}` : row.state}`).toBe(`${id} ${seen}`);
    }

    // ---- the seats: each SOLD seat belongs to exactly one CONFIRMED reservation, bought by exactly one SUCCEEDED payment.
    const { rows: reservations } = await db.query<{ id: string; schedule_id: string; state: string; seat_numbers: number[]; payment_id: string | null }>(
      `select id, schedule_id, state, seat_numbers, payment_id from concert.hold where schedule_id = any($1::uuid[])`,
      [scheduleIds],
    );
    const reservationById = new Map(reservations.map((r) => [r.id, r]));
    const succeededFor = (reservationId: string) => payments.filter((p) => p.reservation_id === reservationId && p.state === "SUCCEEDED");
    let sold = 0;
    for (const scheduleId of scheduleIds) {
      for (const seat of await seatRows(scheduleId)) {
        if (seat.state !== "SOLD") continue;
        sold++;
        const owner = seat.reservation_id ? reservationById.get(seat.reservation_id) : undefined;
        const buyers = owner ? succeededFor(owner.id).map((p) => p.id) : [];
        expect({ seat: `${scheduleId}#${seat.number}`, state: owner?.state, in: owner?.seat_numbers.includes(seat.number), buyers }).toEqual({
          seat: `${scheduleId}#${seat.number}`,
          state: "CONFIRMED",
          in: true,
          buyers: [owner?.payment_id],
        });
      }
    }
    for (const reservation of reservations.filter((r) => r.state === "CONFIRMED")) {
      const seats = (await seatRows(reservation.schedule_id)).filter((seat) => reservation.seat_numbers.includes(seat.number));
      expect(seats.every((seat) => seat.state === "SOLD" && seat.reservation_id === reservation.id), `seats of ${reservation.id}`).toBe(true);
    }
    for (const payment of payments.filter((p) => p.state === "SUCCEEDED")) {
      const reservation = reservationById.get(payment.reservation_id);
      expect({ payment: payment.id, state: reservation?.state, paymentId: reservation?.payment_id }).toEqual({
        payment: payment.id,
        state: "CONFIRMED",
        paymentId: payment.id,
      });
    }

    // The run did exercise what it is meant to.
    const count = (prefix: string) => Object.entries(outcomes).reduce((total, [name, n]) => total + (name.startsWith(prefix) ? n : 0), 0);
    expect(sold, context()).toBeGreaterThan(0);
    expect(count("pay:SUCCEEDED"), context()).toBeGreaterThan(0);
    expect(count("pay:FAILED/INSUFFICIENT_POINTS"), context()).toBeGreaterThan(0);
    expect(count("expired-pay:FAILED/HOLD_EXPIRED"), context()).toBeGreaterThan(0);
    expect(count("hold:FailedPrecondition/SEAT_UNAVAILABLE"), context()).toBeGreaterThan(0);
    expect(crashedPayments.length, context()).toBeGreaterThan(0);
  }, 60_000);
});
