import { toJsonString } from "@bufbuild/protobuf";
import { timestampFromDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Reason } from "../gen/boxoffice/common/v1/error_pb.js";
import { SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { PaymentState, type Payment } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { GetSaleFairnessResponseSchema, QueueAdminService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { reasonOf } from "../services/platform/errors.js";
import { ReservationState, type Reservation } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { startServerProcess, type ServerProcess } from "./server-process.js";
import { apiOf, bearer, gated, inDays, ledgerOf as ledgerRows, operator, serverEnv, withQueueToken } from "./support.js";

/**
 * The booking flow against a real `npm start` process (services/main.ts as a
 * child process), once on each database it can run on: the embedded PGlite
 * under DATA_DIR, and real PostgreSQL at DATABASE_URL. Both run the waiting room
 * in process memory (no REDIS_URL) and are driven only through the public and
 * internal APIs over gRPC (h2c), so the two modes are checked the same way.
 *
 * Holds last 2 s (HOLD_SECONDS=2), so every flow that pays does it promptly, and
 * expiry is seen on the clock. The last test SIGKILLs the process while payments
 * are in flight and restarts it on the same data.
 */

const holdSeconds = 2;
const recoveryMs = 2_000;
/**
 * How long a payment's driver holds its lease with this recovery interval (services/payment/payments.ts: a
 * third of PAYMENT_RECOVERY_MS, at least a second). A payment whose drive a crash cut short is recovered once
 * the lease has lapsed: within the recovery interval of the restarted process being up.
 */
const documentedLeaseMs = 1_000;
const baseEnv = (dataDir: string) => serverEnv(dataDir, { HOLD_SECONDS: String(holdSeconds), PAYMENT_RECOVERY_MS: String(recoveryMs) });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Mode {
  name: "embedded" | "postgresql";
  /** Prepares the data (a temp DATA_DIR; a fresh database) and returns the env the process runs with. */
  prepare(): Promise<NodeJS.ProcessEnv>;
  cleanup(): Promise<void>;
}

function embedded(): Mode {
  let dataDir: string | undefined;
  return {
    name: "embedded",
    prepare: async () => {
      dataDir = mkdtempSync(join(tmpdir(), "boxoffice-booking-embedded-"));
      return baseEnv(dataDir);
    },
    cleanup: async () => {
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function postgresql(): Mode {
  const databaseName = `boxoffice_booking_${process.pid}_${Date.now().toString(36)}`;
  let dataDir: string | undefined;
  let created = false;
  return {
    name: "postgresql",
    prepare: async () => {
      // A data folder too, so that nothing is written under the repository's .data/.
      dataDir = mkdtempSync(join(tmpdir(), "boxoffice-booking-pg-"));
      const databaseUrl = await createDatabase(databaseName);
      created = true;
      return { ...baseEnv(dataDir), DATABASE_URL: databaseUrl };
    },
    cleanup: async () => {
      if (created) await dropDatabase(databaseName);
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

const paymentBrief = (payment: Pick<Payment, "state" | "failureReason"> | undefined) =>
  payment === undefined ? "none" : payment.state === PaymentState.FAILED ? `FAILED/${Reason[payment.failureReason]}` : PaymentState[payment.state];

const outcomeOf = (error: unknown) => {
  const connectError = ConnectError.from(error);
  return `${Code[connectError.code]}: ${connectError.rawMessage}`;
};

describe.each([embedded(), postgresql()])("booking on a real server process, $name database", (mode) => {
  /** Every process started for this mode, stopped (or found dead) in afterAll. */
  const started: { server: ServerProcess; log: string[]; exitCode?: number | null; signal?: NodeJS.Signals | null }[] = [];
  let env: NodeJS.ProcessEnv;
  let server: ServerProcess;
  let c: ReturnType<typeof clientsOf>;

  /** One client per service of a process, gRPC over h2c. */
  const clientsOf = (url: string) => apiOf(createGrpcTransport({ baseUrl: url }));

  async function start(): Promise<ServerProcess> {
    const begun = Date.now();
    const next = await startServerProcess(env);
    const entry: (typeof started)[number] = { server: next, log: [] };
    const keep = (chunk: Buffer) => {
      entry.log.push(chunk.toString());
      if (entry.log.length > 400) entry.log.splice(0, entry.log.length - 400);
    };
    next.process.stdout!.on("data", keep);
    next.process.stderr!.on("data", keep);
    next.process.once("exit", (code, signal) => Object.assign(entry, { exitCode: code, signal }));
    started.push(entry);
    console.log(`[${mode.name}] server ${next.process.pid} listening on ${next.url} after ${Date.now() - begun} ms`);
    return next;
  }

  beforeAll(async () => {
    env = await mode.prepare();
    server = await start();
    c = clientsOf(server.url);
  }, 90_000);

  afterEach((context) => {
    if (context.task.result?.state !== "fail") return;
    for (const entry of started) {
      const tail = entry.log.join("").split("\n").slice(-60).join("\n");
      console.log(`[${mode.name}] output of server ${entry.server.process.pid} (exit ${entry.exitCode ?? entry.signal ?? "running"}):\n${tail}`);
    }
  });

  afterAll(async () => {
    const codes: (number | null)[] = [];
    try {
      for (const entry of started) {
        if (entry.exitCode !== undefined || entry.signal !== undefined) continue; // killed by the test, already gone
        // SIGTERM, and SIGKILL should it not have exited well after the shutdown grace.
        const killer = setTimeout(() => entry.server.process.kill("SIGKILL"), 15_000);
        codes.push(await entry.server.stop().finally(() => clearTimeout(killer)));
      }
    } finally {
      await mode.cleanup();
    }
    // A SIGTERM ends every live process cleanly.
    expect(codes.every((code) => code === 0), `exit codes after SIGTERM: ${codes.join(", ")}`).toBe(true);
  }, 30_000);

  // ------------------------------------------------------------ helpers

  async function concertOnSale(specs: { seatCount: number; price: bigint }[]) {
    const created = await c.admin.createConcert(
      {
        title: `Booking ${mode.name} ${randomUUID().slice(0, 8)}`,
        venue: "Test Hall",
        schedules: specs.map((spec, i) => ({ startsAt: inDays(20 + i), seatCount: spec.seatCount, price: spec.price })),
      },
      operator,
    );
    return { concertId: created.concert!.id, scheduleIds: created.schedules.map((s) => s.id) };
  }

  async function waitAdmitted(queueToken: string, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { status } = await c.queue.getQueueStatus({}, withQueueToken(queueToken));
      if (status!.state === QueueState.ADMITTED) return status!;
      if (Date.now() > deadline) throw new Error(`queue token still ${QueueState[status!.state]} after ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** A new user, then their queue token for the concert (IssueQueueToken), admitted. */
  async function admittedFan(concertId: string) {
    const user = await c.tokens.issueUserToken({});
    const { queueToken } = await c.tokens.issueQueueToken({ concertId }, bearer(user.token));
    await waitAdmitted(queueToken);
    return { userId: user.userId, token: user.token, auth: bearer(user.token), concertId, queueToken, headers: gated(user.token, queueToken) };
  }
  type Fan = Awaited<ReturnType<typeof admittedFan>>;

  /** The fan queues again (EnterQueue: a new queue token) and is admitted. */
  async function requeue(fan: Fan): Promise<Fan> {
    const { queueToken } = await c.queue.enterQueue({ concertId: fan.concertId }, fan.auth);
    await waitAdmitted(queueToken);
    return { ...fan, queueToken, headers: gated(fan.token, queueToken) };
  }

  const charge = (fan: Fan, amount: bigint) => c.points.chargePoints({ amount, idempotencyKey: randomUUID() }, fan.auth);
  const balanceOf = async (fan: Fan) => (await c.points.getBalance({}, fan.auth)).balance;
  const queueStateOf = async (fan: Fan) => QueueState[(await c.queue.getQueueStatus({}, withQueueToken(fan.queueToken))).status!.state];
  const reservationOf = async (fan: Fan, reservationId: string) => (await c.reservations.getReservation({ reservationId }, fan.auth)).reservation!;

  /** The fan's whole ledger (every page), newest first. */
  const ledgerOf = (fan: Fan) => ledgerRows(c, fan.auth, 2);

  /** The fan's payments (every page), newest first. */
  async function paymentsOf(fan: Fan) {
    const all: Payment[] = [];
    let pageToken = "";
    do {
      const page = await c.payments.listPayments({ pageSize: 2, pageToken }, fan.auth);
      all.push(...page.payments);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return all;
  }

  /** Seat number → state, as an admitted fan reads the date. */
  async function seatStates(fan: Fan, scheduleId: string, numbers: number[]) {
    const { seats } = await c.concerts.listSeats({ scheduleId }, fan.headers);
    const byNumber = new Map(seats.map((seat) => [seat.number, SeatState[seat.state]]));
    return numbers.map((n) => byNumber.get(n));
  }

  // ------------------------------------------------------------ the tests

  it("hold then release: the seats read HELD, then AVAILABLE after ReleaseHold, the reservation RELEASED, and another fan holds them at once", async () => {
    const { concertId, scheduleIds } = await concertOnSale([{ seatCount: 6, price: 1_000n }]);
    const scheduleId = scheduleIds[0]!;
    const [fan, other] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);

    const { reservation } = await c.reservations.holdSeats({ scheduleId, seatNumbers: [3, 2] }, fan.headers);
    expect(reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [2, 3], amount: 2_000n, scheduleId, concertId, userId: fan.userId });
    const expiresAt = timestampMs(reservation!.expiresAt!);
    expect(await seatStates(other, scheduleId, [1, 2, 3, 4])).toEqual(["AVAILABLE", "HELD", "HELD", "AVAILABLE"]);

    const released = await c.reservations.releaseHold({ reservationId: reservation!.id }, fan.auth);
    expect(released.reservation?.state).toBe(ReservationState.RELEASED);
    expect(await seatStates(other, scheduleId, [2, 3])).toEqual(["AVAILABLE", "AVAILABLE"]);
    expect((await reservationOf(fan, reservation!.id)).state).toBe(ReservationState.RELEASED);

    // The other fan takes the same seats straight away: the release freed them, not the clock.
    const { reservation: taken } = await c.reservations.holdSeats({ scheduleId, seatNumbers: [2, 3] }, other.headers);
    expect(Date.now()).toBeLessThan(expiresAt);
    expect(taken).toMatchObject({ state: ReservationState.HELD, seatNumbers: [2, 3], userId: other.userId });
    expect(taken!.id).not.toBe(reservation!.id);
    expect(await seatStates(fan, scheduleId, [2, 3])).toEqual(["HELD", "HELD"]);
    // The released reservation stays released.
    expect((await reservationOf(fan, reservation!.id)).state).toBe(ReservationState.RELEASED);
  });

  it("a hold expires on the clock: EXPIRED after expires_at, the seats AVAILABLE, and paying it FAILS with HOLD_EXPIRED without moving a point", async () => {
    const { concertId, scheduleIds } = await concertOnSale([{ seatCount: 4, price: 700n }]);
    const scheduleId = scheduleIds[0]!;
    const fan = await admittedFan(concertId);
    await charge(fan, 5_000n);

    const { reservation } = await c.reservations.holdSeats({ scheduleId, seatNumbers: [1] }, fan.headers);
    const expiresAt = timestampMs(reservation!.expiresAt!);
    const holdMs = expiresAt - timestampMs(reservation!.createdAt!);
    expect(holdMs).toBeGreaterThan(holdSeconds * 1000 - 100);
    expect(holdMs).toBeLessThanOrEqual(holdSeconds * 1000 + 100);
    expect(await seatStates(fan, scheduleId, [1])).toEqual(["HELD"]);

    await sleep(Math.max(0, expiresAt - Date.now()) + 300);
    expect((await reservationOf(fan, reservation!.id)).state).toBe(ReservationState.EXPIRED);
    expect(await seatStates(fan, scheduleId, [1])).toEqual(["AVAILABLE"]);

    const { payment } = await c.payments.pay({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, fan.headers);
    expect(paymentBrief(payment)).toBe("FAILED/HOLD_EXPIRED");
    expect(await balanceOf(fan)).toBe(5_000n);
    expect((await ledgerOf(fan)).map((row) => row.kind)).toEqual(["CHARGE"]);
    expect((await reservationOf(fan, reservation!.id)).state).toBe(ReservationState.EXPIRED);
    // The fan is still admitted (no sale ended the session) and the seat is free for anyone.
    expect(await queueStateOf(fan)).toBe("ADMITTED");
  });

  it("ReserveSeats then Checkout: SUCCEEDED, CONFIRMED, seats SOLD, one debit, session COMPLETED, and fast", async () => {
    const { concertId, scheduleIds } = await concertOnSale([{ seatCount: 6, price: 1_500n }]);
    const scheduleId = scheduleIds[0]!;
    const [fan, onlooker] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    await charge(fan, 5_000n);

    const { reservation } = await c.coordinator.reserveSeats({ scheduleId, seatNumbers: [5, 4] }, fan.headers);
    expect(reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [4, 5], amount: 3_000n });

    const begun = performance.now();
    const checkout = await c.coordinator.checkout({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, fan.headers);
    const tookMs = performance.now() - begun;
    expect(paymentBrief(checkout.payment)).toBe("SUCCEEDED");
    expect(checkout.payment).toMatchObject({ amount: 3_000n, reservationId: reservation!.id, userId: fan.userId });
    expect(checkout.reservation).toMatchObject({ id: reservation!.id, state: ReservationState.CONFIRMED, paymentId: checkout.payment!.id });
    // A 2 s hold is paid well within it: no stall on the database (the embedded one used to hang 5 s, then Unavailable).
    expect(tookMs, `Checkout took ${Math.round(tookMs)} ms`).toBeLessThan(1_000);

    expect(await seatStates(onlooker, scheduleId, [3, 4, 5, 6])).toEqual(["AVAILABLE", "SOLD", "SOLD", "AVAILABLE"]);
    expect((await c.concerts.listSchedules({ concertId })).schedules.map((s) => s.availableSeats)).toEqual([4]);
    expect(await balanceOf(fan)).toBe(2_000n);
    expect((await ledgerOf(fan)).map((row) => [row.kind, row.amount, row.paymentId])).toEqual([
      ["USE", -3_000n, checkout.payment!.id],
      ["CHARGE", 5_000n, ""],
    ]);
    expect(await queueStateOf(fan)).toBe("COMPLETED");
    expect((await c.payments.getPayment({ paymentId: checkout.payment!.id }, fan.auth)).payment!.state).toBe(PaymentState.SUCCEEDED);
    // Sold stays sold after the hold's time is up.
    await sleep(Math.max(0, timestampMs(reservation!.expiresAt!) - Date.now()) + 300);
    expect((await reservationOf(fan, reservation!.id)).state).toBe(ReservationState.CONFIRMED);
    expect(await seatStates(onlooker, scheduleId, [4, 5])).toEqual(["SOLD", "SOLD"]);
  });

  it("BookSeats with too few points FAILS with INSUFFICIENT_POINTS and keeps the hold; after ChargePoints, Checkout with a new key succeeds", async () => {
    const { concertId, scheduleIds } = await concertOnSale([{ seatCount: 6, price: 2_500n }]);
    const scheduleId = scheduleIds[0]!;
    const [fan, onlooker] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    await charge(fan, 1_000n);

    const booked = await c.coordinator.bookSeats({ scheduleId, seatNumbers: [2, 1], idempotencyKey: randomUUID() }, fan.headers);
    expect(paymentBrief(booked.payment)).toBe("FAILED/INSUFFICIENT_POINTS");
    expect(booked.reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [1, 2], amount: 5_000n });
    expect((await reservationOf(fan, booked.reservation!.id)).state).toBe(ReservationState.HELD);
    expect(await balanceOf(fan)).toBe(1_000n);

    await charge(fan, 4_000n);
    const checkout = await c.coordinator.checkout({ reservationId: booked.reservation!.id, idempotencyKey: randomUUID() }, fan.headers);
    expect(paymentBrief(checkout.payment)).toBe("SUCCEEDED");
    expect(checkout.payment!.id).not.toBe(booked.payment!.id);
    expect(checkout.reservation).toMatchObject({ id: booked.reservation!.id, state: ReservationState.CONFIRMED, paymentId: checkout.payment!.id });
    expect(await balanceOf(fan)).toBe(0n);
    expect((await ledgerOf(fan)).filter((row) => row.kind === "USE")).toEqual([{ kind: "USE", amount: -5_000n, paymentId: checkout.payment!.id }]);
    expect(await seatStates(onlooker, scheduleId, [1, 2])).toEqual(["SOLD", "SOLD"]);
    expect((await paymentsOf(fan)).map(paymentBrief)).toEqual(["SUCCEEDED", "FAILED/INSUFFICIENT_POINTS"]);
  });

  it("BookSeats in one call with enough points succeeds; retried with the same key it returns the same payment and debits once", async () => {
    const { concertId, scheduleIds } = await concertOnSale([{ seatCount: 6, price: 1_200n }]);
    const scheduleId = scheduleIds[0]!;
    const [fan, onlooker] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    await charge(fan, 5_000n);

    const request = { scheduleId, seatNumbers: [6], idempotencyKey: randomUUID() };
    const booked = await c.coordinator.bookSeats(request, fan.headers);
    expect(paymentBrief(booked.payment)).toBe("SUCCEEDED");
    expect(booked.reservation).toMatchObject({ state: ReservationState.CONFIRMED, seatNumbers: [6], amount: 1_200n, paymentId: booked.payment!.id });
    expect(await queueStateOf(fan)).toBe("COMPLETED");

    // The client lost the answer and retries the very same call (its queue session has ended meanwhile).
    const retried = await c.coordinator.bookSeats(request, fan.headers);
    expect(retried.payment?.id).toBe(booked.payment!.id);
    expect(paymentBrief(retried.payment)).toBe("SUCCEEDED");
    expect(retried.reservation?.id).toBe(booked.reservation!.id);

    expect(await balanceOf(fan)).toBe(3_800n);
    expect((await ledgerOf(fan)).filter((row) => row.kind === "USE")).toEqual([{ kind: "USE", amount: -1_200n, paymentId: booked.payment!.id }]);
    expect((await paymentsOf(fan)).map((p) => p.id)).toEqual([booked.payment!.id]);
    expect(await seatStates(onlooker, scheduleId, [5, 6])).toEqual(["AVAILABLE", "SOLD"]);
  });

  it("a scheduled sale: the pre-queue waits with no place, is drawn at the opening in the verifier's order, and a fan buys at most the concert's limit", async () => {
    const opensAt = Date.now() + 3_000;
    const { concert, schedules } = await c.admin.createConcert(
      {
        title: `Scheduled ${mode.name} ${randomUUID().slice(0, 8)}`,
        venue: "Test Hall",
        schedules: [20, 21, 22].map((days) => ({ startsAt: inDays(days), seatCount: 10, price: 10n })),
        prequeueOpensAt: timestampFromDate(new Date(Date.now() - 1_000)),
        saleOpensAt: timestampFromDate(new Date(opensAt)),
        seatLimit: 3,
      },
      operator,
    );
    const concertId = concert!.id;
    await createClient(QueueAdminService, createGrpcTransport({ baseUrl: server.url })).setAdmissionPolicy({ concertId, policy: { maxActive: 3 } }, operator);
    const fans = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const user = await c.tokens.issueUserToken({});
        const { queueToken, status } = await c.queue.enterQueue({ concertId }, bearer(user.token));
        expect(status).toMatchObject({ state: QueueState.WAITING, position: 0n, reason: Reason.SALE_NOT_OPEN });
        return { user, queueToken, entryId: status!.entryId };
      }),
    );
    expect((await c.queue.getSaleFairness({ concertId })).seed).toBe("");
    let fairness = await c.queue.getSaleFairness({ concertId });
    while (fairness.entryIds.length === 0) {
      // Nobody is admitted before the opening.
      if (Date.now() < opensAt - 200) expect((await c.queue.getQueueStatus({}, withQueueToken(fans[0]!.queueToken))).status!.state).toBe(QueueState.WAITING);
      await sleep(50);
      fairness = await c.queue.getSaleFairness({ concertId });
    }
    expect(Date.now()).toBeGreaterThanOrEqual(opensAt);
    const dir = mkdtempSync(join(tmpdir(), "boxoffice-fairness-"));
    writeFileSync(join(dir, "fairness.json"), toJsonString(GetSaleFairnessResponseSchema, fairness));
    const verified = JSON.parse((await promisify(execFile)(process.execPath, ["services/queue/verify-draw.ts", "--file", join(dir, "fairness.json")])).stdout) as { order: string[] };
    rmSync(dir, { recursive: true, force: true });
    // The line is in the verifier's order: the first three (max_active) admitted, the others waiting 1..5 behind them.
    expect([...verified.order].sort()).toEqual(fans.map((fan) => fan.entryId).sort());
    const inOrder = verified.order.map((entryId) => fans.find((fan) => fan.entryId === entryId)!);
    const states = await Promise.all(inOrder.map(async (fan) => (await c.queue.getQueueStatus({}, withQueueToken(fan.queueToken))).status!));
    expect(states.map((status) => (status.state === QueueState.ADMITTED ? 0 : Number(status.position)))).toEqual([0, 0, 0, 1, 2, 3, 4, 5]);
    const fan = inOrder[0]!;
    const headers = gated(fan.user.token, fan.queueToken);
    // Three seats over the concert's dates at most, however they are asked for at once.
    const asks = schedules.map((schedule) => c.reservations.holdSeats({ scheduleId: schedule.id, seatNumbers: [1, 2] }, headers));
    const outcomes = await Promise.allSettled(asks);
    const held = outcomes.flatMap((outcome) => (outcome.status === "fulfilled" ? outcome.value.reservation!.seatNumbers : []));
    expect(held).toHaveLength(2); // one hold of two; a second would make four
    for (const outcome of outcomes) if (outcome.status === "rejected") expect(reasonOf(ConnectError.from(outcome.reason))).toBe(Reason.FAN_LIMIT_REACHED);
  });

  it("a restart (SIGTERM, started again on the same data) keeps the waiting line: a fan waiting before it keeps the place, the pause stays, and is admitted after it", async () => {
    const { concertId } = await concertOnSale([{ seatCount: 4, price: 1_000n }]);
    const admin = createClient(QueueAdminService, createGrpcTransport({ baseUrl: server.url }));
    await admin.setAdmissionPolicy({ concertId, policy: { maxActive: 1 } }, operator);
    const first = await c.tokens.issueUserToken({});
    const second = await c.tokens.issueUserToken({});
    const ahead = await c.queue.enterQueue({ concertId }, bearer(first.token));
    await waitAdmitted(ahead.queueToken);
    const waiting = await c.queue.enterQueue({ concertId }, bearer(second.token));
    expect([QueueState[waiting.status!.state], waiting.status!.position]).toEqual(["WAITING", 1n]);
    await admin.pauseAdmission({ concertId }, operator);

    expect(await server.stop()).toBe(0);
    server = await start();
    c = clientsOf(server.url);

    const after = (await c.queue.getQueueStatus({}, withQueueToken(waiting.queueToken))).status!;
    expect([QueueState[after.state], after.position, after.reason]).toEqual(["WAITING", 1n, Reason.QUEUE_PAUSED]);
    const stillAdmitted = (await c.queue.getQueueStatus({}, withQueueToken(ahead.queueToken))).status!;
    expect(QueueState[stillAdmitted.state]).toBe("ADMITTED");
    await createClient(QueueAdminService, createGrpcTransport({ baseUrl: server.url })).resumeAdmission({ concertId }, operator);
    await c.queue.leaveQueue({}, withQueueToken(ahead.queueToken));
    await waitAdmitted(waiting.queueToken);
  });

  it("kill -9 while payments are in flight, restart on the same data: no payment stays PENDING, every balance is its ledger, debited iff paid, and paying again works", async () => {
    const fanCount = 6;
    const price = 1_000n;
    const funds = 5_000n;
    // Seats 1..6 for the payments the crash interrupts, 7..12 for paying again after the restart, 13 to time a Pay.
    const { concertId, scheduleIds } = await concertOnSale([{ seatCount: 2 * fanCount + 1, price }]);
    const scheduleId = scheduleIds[0]!;
    let fans = await Promise.all(Array.from({ length: fanCount }, () => admittedFan(concertId)));
    const timer = await admittedFan(concertId);
    await Promise.all([...fans, timer].map((fan) => charge(fan, funds)));
    const [timerHold, ...holds] = await Promise.all(
      [timer, ...fans].map(async (fan, i) => (await c.reservations.holdSeats({ scheduleId, seatNumbers: [i === 0 ? 2 * fanCount + 1 : i] }, fan.headers)).reservation!),
    );
    const keys = fans.map(() => `crash-${randomUUID()}`);

    // How long one Pay takes here, so that the kill lands among the payments whatever the database's speed.
    const timedFrom = performance.now();
    expect(paymentBrief((await c.payments.pay({ reservationId: timerHold!.id, idempotencyKey: randomUUID() }, timer.headers)).payment)).toBe("SUCCEEDED");
    const payMs = Math.max(2, performance.now() - timedFrom);

    // The Pays go out half a Pay apart and the process is SIGKILLed 2.25 Pays after the first: the first
    // have answered, some are in the middle of their saga, the last are sent to a dead process.
    const victim = server;
    const old = c;
    const exited = new Promise((resolve) => victim.process.once("exit", resolve));
    const pays = fans.map((fan, i) =>
      sleep(i * payMs * 0.5).then(() =>
        old.payments.pay({ reservationId: holds[i]!.id, idempotencyKey: keys[i]! }, fan.headers).then((r) => paymentBrief(r.payment), outcomeOf),
      ),
    );
    await sleep(Math.max(25, payMs * 2.25));
    victim.process.kill("SIGKILL");
    const killedAt = Date.now();
    await exited;
    const answered = await Promise.all(pays);
    console.log(`[${mode.name}] one Pay took ${Math.round(payMs)} ms; the Pays before the kill answered ${JSON.stringify(answered)}`);

    // A new process on the same database (same DATA_DIR, same DATABASE_URL).
    server = await start();
    c = clientsOf(server.url);
    const restartedAt = Date.now();

    // Every payment that was recorded settles: SUCCEEDED or FAILED, never left PENDING. A payment whose
    // drive the kill cut short stays under that driver's lease (30 s, README: "After a crash in the middle
    // of a drive, add the 30 s lease"); recovery takes it within PAYMENT_RECOVERY_MS after the lease lapses.
    const found = async () =>
      Promise.all(
        fans.map((fan, i) =>
          c.payments.getPayment({ idempotencyKey: keys[i]! }, fan.auth).then(
            (r) => r.payment!,
            (error: unknown) => {
              if (ConnectError.from(error).code === Code.NotFound) return undefined;
              throw error;
            },
          ),
        ),
      );
    let crashPayments = await found();
    // No payment stays PENDING past the recovery interval once the service is back (and its crashed driver's lease has lapsed).
    const settledBy = Math.max(killedAt + documentedLeaseMs, restartedAt) + recoveryMs + 500;
    while (crashPayments.some((p) => p?.state === PaymentState.PENDING) && Date.now() < settledBy) {
      await sleep(250);
      crashPayments = await found();
    }
    console.log(`[${mode.name}] crash payments ${Date.now() - restartedAt} ms after the restart (${Date.now() - killedAt} ms after the kill): ${JSON.stringify(crashPayments.map(paymentBrief))}`);
    expect(crashPayments.map(paymentBrief).filter((state) => state === "PENDING")).toEqual([]);
    // The crash came after the first payment was under way: the restart had something to recover.
    expect(crashPayments.filter((p) => p !== undefined).length).toBeGreaterThan(0);
    // What a fan was told before the crash still holds after it.
    for (const [i, told] of answered.entries()) if (told === "SUCCEEDED" || told.startsWith("FAILED/")) expect(paymentBrief(crashPayments[i])).toBe(told);

    for (const [i, fan] of fans.entries()) {
      const payment = crashPayments[i];
      // One payment at most per fan, the one made with its key.
      expect((await paymentsOf(fan)).map((p) => p.id)).toEqual(payment ? [payment.id] : []);
      const ledger = await ledgerOf(fan);
      const balance = await balanceOf(fan);
      expect(balance).toBe(ledger.reduce((sum, row) => sum + row.amount, 0n));
      const paid = payment?.state === PaymentState.SUCCEEDED;
      expect(balance, `fan ${i}: payment ${paymentBrief(payment)}, ledger ${JSON.stringify(ledger, (_, v) => (typeof v === "bigint" ? Number(v) : v))}`).toBe(
        paid ? funds - price : funds,
      );
      const moved = ledger.filter((row) => row.paymentId !== "");
      if (payment) expect(moved.every((row) => row.paymentId === payment.id)).toBe(true);
      expect(moved.reduce((sum, row) => sum + row.amount, 0n)).toBe(paid ? -price : 0n);
      if (paid) expect((await reservationOf(fan, holds[i]!.id)).state).toBe(ReservationState.CONFIRMED);
      else expect((await reservationOf(fan, holds[i]!.id)).state).not.toBe(ReservationState.CONFIRMED);
    }

    // The queue lived in the killed process: every fan queues again, holds a new seat and pays. A fan whose payment
    // never reached the server still holds the crash seat until its 2 s hold ends (one live hold per date): after it.
    await sleep(Math.max(0, ...holds.map((hold) => timestampMs(hold!.expiresAt!) - Date.now())) + 100);
    fans = await Promise.all(fans.map(requeue));
    const again = await Promise.all(
      fans.map(async (fan, i) => {
        const { reservation } = await c.reservations.holdSeats({ scheduleId, seatNumbers: [fanCount + i + 1] }, fan.headers);
        return (await c.payments.pay({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, fan.headers)).payment!;
      }),
    );
    expect(again.map(paymentBrief)).toEqual(fans.map(() => "SUCCEEDED"));
    for (const [i, fan] of fans.entries()) {
      const paidBefore = crashPayments[i]?.state === PaymentState.SUCCEEDED;
      const ledger = await ledgerOf(fan);
      const balance = await balanceOf(fan);
      expect(balance).toBe(ledger.reduce((sum, row) => sum + row.amount, 0n));
      expect(balance).toBe(funds - price - (paidBefore ? price : 0n));
    }
    // Each crash seat is sold exactly when its payment succeeded; the new seats are all sold.
    const onlooker = await admittedFan(concertId);
    const states = await seatStates(
      onlooker,
      scheduleId,
      Array.from({ length: 2 * fanCount }, (_, n) => n + 1),
    );
    expect(states.slice(0, fanCount)).toEqual(crashPayments.map((p) => (p?.state === PaymentState.SUCCEEDED ? "SOLD" : "AVAILABLE")));
    expect(states.slice(fanCount)).toEqual(fans.map(() => "SOLD"));
  }, 60_000);
});
