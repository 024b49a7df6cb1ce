import type { Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { modules } from "../services/modules.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { admittedFan, bearer, client, concertOnSale, testConfig } from "./support.js";

/**
 * How often a booking enters each service: every call that reaches a service
 * is recorded at the callee (an outermost interceptor on every service of the
 * one-process suite, where calls between services stay in process but pass the
 * callee's interceptors). Calls between services carry the internal credential;
 * none carries the fan's queue token, so admission is checked once, at the edge
 * the fan called. The admission worker's own supply lookups are left out.
 */

const record: { method: string; internal: boolean; queueToken: boolean }[] = [];
const recorder: Interceptor = (next) => (req) => {
  const method = `${req.method.parent.name}/${req.method.name}`;
  if (method !== "ConcertInternalService/GetConcertSupply") {
    record.push({ method, internal: req.header.has("x-internal-credential"), queueToken: req.header.has("x-queue-token") });
  }
  return next(req);
};

let suite: Suite;
beforeAll(async () => {
  suite = await startSuite(testConfig({ HOLD_SWEEP_MS: "60000" }), modules, { interceptors: [recorder] });
});
afterAll(() => suite?.close());

async function callsOf(work: () => Promise<unknown>) {
  record.length = 0;
  await work();
  const between = record.filter((call) => call.internal);
  return { edge: record.filter((call) => !call.internal).map((call) => call.method), between: between.map((call) => call.method), gatedBetween: between.filter((call) => call.queueToken) };
}

describe("calls between services per booking", () => {
  it("BookSeats: 5 calls between services, none of them gated; ReserveSeats 1; Checkout 5; Pay 4", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [{ seatCount: 10, price: 100n }]);
    const fan = await admittedFan(suite, concertId);
    await client(suite, PointService).chargePoints({ amount: 10_000n, idempotencyKey: randomUUID() }, bearer(fan.token));
    const coordinator = client(suite, CoordinatorService);

    const book = await callsOf(() => coordinator.bookSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1, 2], idempotencyKey: randomUUID() }, fan.headers));
    expect(book.edge).toEqual(["CoordinatorService/BookSeats"]);
    expect(book.between).toEqual([
      "ReservationInternalService/HoldSeatsForUser",
      "PaymentInternalService/PayForUser",
      "PointInternalService/UsePoints",
      "ReservationInternalService/ConfirmReservation",
      "QueueInternalService/CompleteSession",
    ]);
    expect(book.gatedBetween).toEqual([]);

    const other = await admittedFan(suite, concertId);
    await client(suite, PointService).chargePoints({ amount: 10_000n, idempotencyKey: randomUUID() }, bearer(other.token));
    let reservationId = "";
    const reserve = await callsOf(async () => {
      reservationId = (await coordinator.reserveSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [3] }, other.headers)).reservation!.id;
    });
    expect(reserve.between).toEqual(["ReservationInternalService/HoldSeatsForUser"]);
    const checkout = await callsOf(async () => {
      const { payment, reservation } = await coordinator.checkout({ reservationId, idempotencyKey: randomUUID() }, other.headers);
      expect([payment!.state, reservation!.paymentId]).toEqual([PaymentState.SUCCEEDED, payment!.id]);
    });
    expect(checkout.between).toEqual([
      "PaymentInternalService/PayForUser",
      "ReservationInternalService/GetUserReservation",
      "PointInternalService/UsePoints",
      "ReservationInternalService/ConfirmReservation",
      "QueueInternalService/CompleteSession",
    ]);
    expect(checkout.gatedBetween).toEqual([]);

    const third = await admittedFan(suite, concertId);
    await client(suite, PointService).chargePoints({ amount: 10_000n, idempotencyKey: randomUUID() }, bearer(third.token));
    const held = (await coordinator.reserveSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [4] }, third.headers)).reservation!;
    const pay = await callsOf(async () => {
      const { payment, reservation } = await client(suite, PaymentService).pay({ reservationId: held.id, idempotencyKey: randomUUID() }, third.headers);
      expect(payment!.state).toBe(PaymentState.SUCCEEDED);
      expect(reservation).toMatchObject({ id: held.id, paymentId: payment!.id });
    });
    expect(pay.edge).toEqual(["PaymentService/Pay"]);
    expect(pay.between).toEqual([
      "ReservationInternalService/GetUserReservation",
      "PointInternalService/UsePoints",
      "ReservationInternalService/ConfirmReservation",
      "QueueInternalService/CompleteSession",
    ]);
  });
});
