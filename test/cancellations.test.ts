import { Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { ScanResult, TicketState } from "../gen/boxoffice/ticket/v1/ticket_pb.js";
import { Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { outcome, refused } from "./outcomes.js";
import { startServerProcess, type ServerProcess } from "./server-process.js";
import { apiOf, bearer, gated, inDays, ledgerOf as ledgerRows, operator, scanner, serverEnv, startTestSuite, transport, waitForState, withQueueToken, type Api } from "./support.js";

/**
 * Cancellations and refunds (issue 18, item 3), through the API: a fan
 * cancels a paid booking (points back once, seats on sale, tickets void),
 * the cutoff and a used ticket refuse it, a cancel and a scan of one ticket
 * race and exactly one wins, an organiser cancels a date, and a sold-out room
 * admits again. On a suite on real PostgreSQL and on the embedded PGlite; the
 * refund run killed (SIGKILL) and restarted runs real server processes.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const day = 24 * 3600;

async function waitAdmitted(api: Api, queueToken: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status } = await api.queue.getQueueStatus({}, withQueueToken(queueToken));
    if (status!.state === QueueState.ADMITTED) return;
    if (Date.now() > deadline) throw new Error(`queue token still ${QueueState[status!.state]} after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** A new fan with `points`, admitted to the concert, who holds and pays for `seats` of the date: the booking and its payment. */
async function paidBooking(api: Api, concertId: string, scheduleId: string, seats: number[], points = 1_000n) {
  const user = await api.tokens.issueUserToken({});
  const auth = bearer(user.token);
  const { queueToken } = await api.tokens.issueQueueToken({ concertId }, auth);
  await waitAdmitted(api, queueToken);
  await api.points.chargePoints({ amount: points, idempotencyKey: randomUUID() }, auth);
  const headers = gated(user.token, queueToken);
  const { reservation } = await api.reservations.holdSeats({ scheduleId, seatNumbers: seats }, headers);
  const { payment } = await api.payments.pay({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, headers);
  expect(PaymentState[payment!.state]).toBe("SUCCEEDED");
  return { userId: user.userId, auth, reservationId: reservation!.id, paymentId: payment!.id, amount: payment!.amount, concertId, scheduleId };
}
type Booking = Awaited<ReturnType<typeof paidBooking>>;

/** The fan's whole ledger, and their balance. */
async function ledgerOf(api: Api, booking: Pick<Booking, "auth">) {
  const rows = await ledgerRows(api, booking.auth);
  const { balance } = await api.points.getBalance({}, booking.auth);
  return { rows, balance, sum: rows.reduce((total, row) => total + row.amount, 0n) };
}

/** The booking's points came back exactly once: one REFUND of its payment, the balance what was charged, and equal to the ledger. */
async function expectRefundedOnce(api: Api, booking: Booking, charged = 1_000n) {
  const { rows, balance, sum } = await ledgerOf(api, booking);
  expect(rows.filter((row) => row.kind === "REFUND")).toEqual([{ kind: "REFUND", amount: booking.amount, paymentId: booking.paymentId }]);
  expect([balance, sum]).toEqual([charged, charged]);
  const { payment } = await api.payments.getPayment({ paymentId: booking.paymentId }, booking.auth);
  expect(PaymentState[payment!.state]).toBe("REFUNDED");
}

const databases: { name: string; env: Record<string, string> }[] = [
  { name: "PostgreSQL", env: {} },
  { name: "embedded PGlite", env: { DATABASE_URL: "" } },
];

describe.each(databases)("cancellations on $name", ({ env }) => {
  let suite: Suite;
  let api: Api;
  beforeAll(async () => {
    suite = await startTestSuite(env);
    api = apiOf(transport(suite));
  }, 60_000);
  afterAll(() => suite?.close());

  async function concert(seats = 10, cancelCutoffSeconds?: number, dates = 1) {
    const created = await api.admin.createConcert(
      {
        title: `Cancel ${randomUUID().slice(0, 8)}`,
        venue: "Hall",
        schedules: Array.from({ length: dates }, (_, i) => ({ startsAt: inDays(10 + i), seatCount: seats, price: 100n })),
        seatLimit: 4,
        cancelCutoff: cancelCutoffSeconds === undefined ? undefined : { seconds: BigInt(cancelCutoffSeconds) },
      },
      operator,
    );
    return { concertId: created.concert!.id, scheduleIds: created.schedules.map((s) => s.id), cutoff: created.concert!.cancelCutoff };
  }
  const seatStates = async (booking: Booking, numbers: number[]) => {
    const fan = await api.tokens.issueUserToken({});
    const { queueToken } = await api.tokens.issueQueueToken({ concertId: booking.concertId }, bearer(fan.token));
    await waitAdmitted(api, queueToken);
    const { seats } = await api.concerts.listSeats({ scheduleId: booking.scheduleId }, gated(fan.token, queueToken));
    return numbers.map((n) => SeatState[seats.find((seat) => seat.number === n)!.state]);
  };

  it("a fan cancels a paid booking: CANCELLED, points back once (one REFUND in the ledger), seats AVAILABLE, tickets VOID; again is idempotent", async () => {
    const { concertId, scheduleIds, cutoff } = await concert();
    expect(cutoff?.seconds).toBe(BigInt(day)); // the default: a day before the date
    const booking = await paidBooking(api, concertId, scheduleIds[0]!, [3, 4]);
    expect((await api.tickets.listTickets({}, booking.auth)).tickets.map((t) => TicketState[t.state])).toEqual(["VALID", "VALID"]);

    const { reservation } = await api.reservations.cancelReservation({ reservationId: booking.reservationId }, booking.auth);
    expect([ReservationState[reservation!.state], reservation!.cancelReason, reservation!.paymentId]).toEqual(["CANCELLED", "cancelled at your request", booking.paymentId]);
    expect(reservation!.cancelledAt).toBeDefined();
    expect(reservation!.refundedAt).toBeDefined();
    await expectRefundedOnce(api, booking);
    expect(await seatStates(booking, [3, 4])).toEqual(["AVAILABLE", "AVAILABLE"]);
    const tickets = (await api.tickets.listTickets({}, booking.auth)).tickets;
    expect(tickets.map((t) => TicketState[t.state])).toEqual(["VOID", "VOID"]);
    expect((await api.scanner.scanTicket({ code: tickets[0]!.code, scheduleId: booking.scheduleId, gate: "Door" }, scanner)).result).toBe(ScanResult.VOID);

    const again = await Promise.all([1, 2, 3].map(() => api.reservations.cancelReservation({ reservationId: booking.reservationId }, booking.auth)));
    expect(again.map((r) => ReservationState[r.reservation!.state])).toEqual(["CANCELLED", "CANCELLED", "CANCELLED"]);
    await expectRefundedOnce(api, booking);
    // Someone else's booking is not found; a hold not paid for is released, not cancelled.
    const stranger = await api.tokens.issueUserToken({});
    await refused(api.reservations.cancelReservation({ reservationId: booking.reservationId }, bearer(stranger.token)), Code.NotFound, Reason.RESERVATION_NOT_FOUND);
    const { queueToken } = await api.tokens.issueQueueToken({ concertId }, bearer(stranger.token));
    await waitAdmitted(api, queueToken);
    const held = (await api.reservations.holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [3] }, gated(stranger.token, queueToken))).reservation!;
    await refused(api.reservations.cancelReservation({ reservationId: held.id }, bearer(stranger.token)), Code.FailedPrecondition, Reason.RESERVATION_NOT_CONFIRMED);
  });

  it("refused past the concert's cutoff, and once a ticket of the booking was admitted at the door", async () => {
    // The date is 10 days ahead; fans may cancel until 11 days before it: already past.
    const strict = await concert(10, 11 * day);
    const late = await paidBooking(api, strict.concertId, strict.scheduleIds[0]!, [1]);
    const error = await refused(api.reservations.cancelReservation({ reservationId: late.reservationId }, late.auth), Code.FailedPrecondition, Reason.CANCEL_CUTOFF_PASSED);
    expect(error.rawMessage).toContain("could be cancelled until");
    // The operator may move the cutoff before the sale only; an invalid one names the field.
    await refused(api.admin.createConcert({ title: "x", schedules: [{ startsAt: inDays(3), price: 1n }], cancelCutoff: { seconds: -1n } }, operator), Code.InvalidArgument, Reason.INVALID_ARGUMENT);

    const { concertId, scheduleIds } = await concert();
    const used = await paidBooking(api, concertId, scheduleIds[0]!, [5, 6]);
    const [ticket] = (await api.tickets.listTickets({}, used.auth)).tickets;
    expect((await api.scanner.scanTicket({ code: ticket!.code, scheduleId: used.scheduleId, gate: "Door" }, scanner)).result).toBe(ScanResult.ADMITTED);
    await refused(api.reservations.cancelReservation({ reservationId: used.reservationId }, used.auth), Code.FailedPrecondition, Reason.TICKET_USED);
    const { rows } = await ledgerOf(api, used);
    expect(rows.filter((row) => row.kind === "REFUND")).toEqual([]);
  });

  it("a cancel and a scan of one ticket at once: exactly one wins, round after round", async () => {
    const { concertId, scheduleIds } = await concert(40);
    const outcomes: Record<string, number> = {};
    for (let round = 0; round < 12; round++) {
      const booking = await paidBooking(api, concertId, scheduleIds[0]!, [round + 1]);
      const [ticket] = (await api.tickets.listTickets({}, booking.auth)).tickets;
      const cancelling = () => api.reservations.cancelReservation({ reservationId: booking.reservationId }, booking.auth);
      const scanning = () => api.scanner.scanTicket({ code: ticket!.code, scheduleId: booking.scheduleId, gate: `Gate ${round}` }, scanner);
      // Sent in either order, the other one a few milliseconds later or at once, so that each may be first to the row.
      const gap = () => sleep(round % 3);
      const [cancel, scan] =
        round % 2 === 0
          ? await Promise.allSettled([cancelling(), gap().then(scanning)])
          : await Promise.allSettled([gap().then(cancelling), scanning()]);
      const cancelled = cancel.status === "fulfilled" ? "CANCELLED" : outcome(cancel.reason);
      const scanned = scan.status === "fulfilled" ? ScanResult[scan.value.result] : outcome(scan.reason);
      const pair = `${cancelled} + ${scanned}`;
      expect(["CANCELLED + VOID", "FailedPrecondition/TICKET_USED + ADMITTED"], `round ${round}`).toContain(pair);
      outcomes[pair] = (outcomes[pair] ?? 0) + 1;
      const { rows, balance, sum } = await ledgerOf(api, booking);
      expect(balance).toBe(sum);
      expect(rows.filter((row) => row.kind === "REFUND").length).toBe(cancelled === "CANCELLED" ? 1 : 0);
    }
    console.log("cancel + scan outcomes:", outcomes);
  });

  it("an operator cancels a date: every booking on it CANCELLED with the reason and refunded once, holds refused; the concert's other date sells on", async () => {
    const { concertId, scheduleIds } = await concert(20, undefined, 2);
    const bookings = await Promise.all([1, 3, 5, 7, 9].map((seat) => paidBooking(api, concertId, scheduleIds[0]!, [seat])));
    const { schedule, cancelledBookings } = await api.admin.cancelSchedule({ scheduleId: scheduleIds[0]!, reason: "The hall flooded" }, operator);
    expect([cancelledBookings, schedule!.cancelled, schedule!.cancelReason, schedule!.availableSeats]).toEqual([5, true, "The hall flooded", 0]);
    const again = await api.admin.cancelSchedule({ scheduleId: scheduleIds[0]!, reason: "other" }, operator);
    expect([again.cancelledBookings, again.schedule!.cancelReason]).toEqual([0, "The hall flooded"]);
    for (const booking of bookings) {
      const deadline = Date.now() + 10_000;
      let reservation = (await api.reservations.getReservation({ reservationId: booking.reservationId }, booking.auth)).reservation!;
      while (!reservation.refundedAt && Date.now() < deadline) {
        await sleep(50);
        reservation = (await api.reservations.getReservation({ reservationId: booking.reservationId }, booking.auth)).reservation!;
      }
      expect([ReservationState[reservation.state], reservation.cancelReason]).toEqual(["CANCELLED", "The hall flooded"]);
      await expectRefundedOnce(api, booking);
    }
    const fan = await api.tokens.issueUserToken({});
    const { queueToken } = await api.tokens.issueQueueToken({ concertId }, bearer(fan.token));
    await waitAdmitted(api, queueToken);
    await refused(api.reservations.holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [2] }, gated(fan.token, queueToken)), Code.FailedPrecondition, Reason.SCHEDULE_CANCELLED);
    await api.reservations.holdSeats({ scheduleId: scheduleIds[1]!, seatNumbers: [2] }, gated(fan.token, queueToken));
    await refused(api.admin.cancelSchedule({ scheduleId: randomUUID() }, operator), Code.NotFound, Reason.SCHEDULE_NOT_FOUND);
  });

  it("CancelConcert with sales cancels and refunds every booking of every date", async () => {
    const { concertId, scheduleIds } = await concert(5, undefined, 2);
    const bookings = await Promise.all(scheduleIds.map((scheduleId) => paidBooking(api, concertId, scheduleId, [2])));
    await api.admin.cancelConcert({ concertId, reason: "The band split up" }, operator);
    for (const booking of bookings) {
      const deadline = Date.now() + 10_000;
      while (!(await api.reservations.getReservation({ reservationId: booking.reservationId }, booking.auth)).reservation!.refundedAt && Date.now() < deadline) await sleep(50);
      const { reservation } = await api.reservations.getReservation({ reservationId: booking.reservationId }, booking.auth);
      expect(reservation!.cancelReason).toBe("The band split up");
      await expectRefundedOnce(api, booking);
    }
  });

  it("a sold-out room admits again once a cancellation brings seats back", async () => {
    const { concertId, scheduleIds } = await concert(1);
    const booking = await paidBooking(api, concertId, scheduleIds[0]!, [1]);
    let waiting = await api.tokens.issueUserToken({});
    // The tick marks the room sold out (supply is cached 1 s): nobody enters, and EnterQueue says why. A new fan
    // each time, since one let in before the tick had seen the sale would stay admitted.
    const enter = async () => {
      waiting = await api.tokens.issueUserToken({});
      return api.queue.enterQueue({ concertId }, bearer(waiting.token));
    };
    const until = async (what: string, done: (entered: Awaited<ReturnType<typeof enter>>) => boolean) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const entered = await enter();
        if (done(entered)) return entered;
        if (Date.now() > deadline) throw new Error(`${what}: still ${QueueState[entered.status!.state]}`);
        await sleep(50);
      }
    };
    await until("the room sold out", (entered) => entered.queueToken === "" && entered.status!.state === QueueState.SOLD_OUT);
    await api.reservations.cancelReservation({ reservationId: booking.reservationId }, booking.auth);
    const { queueToken } = await until("the room open again", (entered) => entered.queueToken !== "");
    await waitForState(suite, queueToken, QueueState.ADMITTED);
    await api.reservations.holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1] }, gated(waiting.token, queueToken));
  });
});

describe("the refund run killed (SIGKILL) and restarted, on real PostgreSQL", () => {
  const databaseName = `boxoffice_cancel_${process.pid}_${Date.now().toString(36)}`;
  let dataDir: string;
  let env: NodeJS.ProcessEnv;
  const running: ServerProcess[] = [];
  let created = false;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "boxoffice-cancel-"));
    const databaseUrl = await createDatabase(databaseName);
    created = true;
    env = serverEnv(dataDir, { DATABASE_URL: databaseUrl, REFUND_RUN_MS: "200", PAYMENT_RECOVERY_MS: "2000" });
  }, 30_000);
  afterAll(async () => {
    try {
      for (const server of running) if (server.process.exitCode === null && server.process.signalCode === null) await server.stop();
    } finally {
      if (created) await dropDatabase(databaseName);
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 30_000);

  async function start() {
    const server = await startServerProcess(env);
    running.push(server);
    return { server, api: apiOf(createGrpcTransport({ baseUrl: server.url })) };
  }
  async function kill(server: ServerProcess) {
    const exited = new Promise((resolve) => server.process.once("exit", resolve));
    server.process.kill("SIGKILL");
    await exited;
  }

  it("an operator cancels a date with many bookings; the refund run is killed and restarted four times: every booking refunded exactly once, every balance its ledger", async () => {
    let { server, api } = await start();
    const created = await api.admin.createConcert(
      { title: "Killed refunds", venue: "Hall", schedules: [{ startsAt: inDays(10), seatCount: 60, price: 150n }], seatLimit: 4 },
      operator,
    );
    const [concertId, scheduleId] = [created.concert!.id, created.schedules[0]!.id];
    const bookings: Booking[] = [];
    for (let from = 1; from <= 48; from += 8) {
      bookings.push(...(await Promise.all(Array.from({ length: 8 }, (_, i) => paidBooking(api, concertId, scheduleId, [from + i])))));
    }
    const { cancelledBookings } = await api.admin.cancelSchedule({ scheduleId, reason: "Storm warning" }, operator);
    expect(cancelledBookings).toBe(bookings.length);
    // Killed at once, as the run starts; then a little later after each restart, while it resumes.
    await kill(server);
    for (const afterMs of [0, 30, 80, 150]) {
      ({ server } = await start());
      await sleep(afterMs);
      await kill(server);
    }
    ({ server, api } = await start());
    const deadline = Date.now() + 20_000;
    const refunded = async () => {
      const reservations = await Promise.all(bookings.map((b) => api.reservations.getReservation({ reservationId: b.reservationId }, b.auth)));
      return reservations.filter((r) => r.reservation!.refundedAt !== undefined).length;
    };
    while ((await refunded()) < bookings.length) {
      if (Date.now() > deadline) throw new Error(`only ${await refunded()} of ${bookings.length} refunded`);
      await sleep(100);
    }
    for (const booking of bookings) {
      const { reservation } = await api.reservations.getReservation({ reservationId: booking.reservationId }, booking.auth);
      expect([ReservationState[reservation!.state], reservation!.cancelReason]).toEqual(["CANCELLED", "Storm warning"]);
      await expectRefundedOnce(api, booking);
    }
    // Nothing more moves later: a run after all of them refunds nothing twice.
    await sleep(500);
    for (const booking of bookings.slice(0, 5)) await expectRefundedOnce(api, booking);
  }, 180_000);
});
