/**
 * ChargePoints, Pay and BookSeats under load. Charging needs only a fan;
 * paying needs a fan admitted from the queue with a live hold and enough
 * points, and ends that fan's queue session, so every Pay call gets a fan
 * prepared for it. A booking (hold and pay in one call) gets an admitted fan
 * with points and a seat of its own.
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { Exhausted } from "./measure.js";
import { admitFans, openConcert } from "./setup.js";

const seatsPerDate = 500;

export interface PaymentCases {
  charge: () => Promise<unknown>;
  pay: () => Promise<unknown>;
  book: () => Promise<unknown>;
}

/**
 * Prepares `payers` fans, each admitted with one held seat and 1,000 points,
 * and as many bookers, each admitted with 1,000 points and a free seat to book;
 * returns the calls to measure.
 */
export async function paymentCases(transport: Transport, operatorKey: string, fanTokens: string[], payers: number): Promise<PaymentCases> {
  const dates = Math.ceil(payers / seatsPerDate);
  const { concertId, scheduleIds } = await openConcert(transport, operatorKey, { title: "Bench payments", dates: dates * 2, seatsPerDate, maxActive: 2 * payers + 1 });
  const admitted = await admitFans(transport, concertId, fanTokens.slice(0, 2 * payers));
  const fans = admitted.slice(0, payers);
  const seatOf = (i: number) => ({ scheduleId: scheduleIds[Math.floor(i / seatsPerDate)]!, seatNumbers: [(i % seatsPerDate) + 1] });
  const reservations = createClient(ReservationService, transport);
  const points = createClient(PointService, transport);
  const ready: { headers: Record<string, string>; reservationId: string }[] = [];
  for (let start = 0; start < fans.length; start += 200) {
    await Promise.all(
      fans.slice(start, start + 200).map(async (headers, j) => {
        const i = start + j;
        const { reservation } = await reservations.holdSeats(seatOf(i), { headers });
        await points.chargePoints({ amount: 1_000n, idempotencyKey: randomUUID() }, { headers });
        ready.push({ headers, reservationId: reservation!.id });
      }),
    );
  }
  const bookers: { headers: Record<string, string>; seat: ReturnType<typeof seatOf> }[] = [];
  for (let start = payers; start < admitted.length; start += 200) {
    await Promise.all(
      admitted.slice(start, start + 200).map(async (headers, j) => {
        await points.chargePoints({ amount: 1_000n, idempotencyKey: randomUUID() }, { headers });
        bookers.push({ headers, seat: seatOf(dates * seatsPerDate + start - payers + j) });
      }),
    );
  }
  const payments = createClient(PaymentService, transport);
  const coordinator = createClient(CoordinatorService, transport);
  let nextCharge = 0;
  return {
    charge: () => points.chargePoints({ amount: 1_000n, idempotencyKey: randomUUID() }, { headers: fans[nextCharge++ % fans.length]! }),
    pay: async () => {
      const fan = ready.pop();
      if (!fan) throw new Exhausted();
      const { payment } = await payments.pay({ reservationId: fan.reservationId, idempotencyKey: randomUUID() }, { headers: fan.headers });
      if (payment?.state !== PaymentState.SUCCEEDED) throw new Error(`a bench payment ended ${PaymentState[payment?.state ?? 0]}`);
    },
    book: async () => {
      const fan = bookers.pop();
      if (!fan) throw new Exhausted();
      const { payment } = await coordinator.bookSeats({ ...fan.seat, idempotencyKey: randomUUID() }, { headers: fan.headers });
      if (payment?.state !== PaymentState.SUCCEEDED) throw new Error(`a bench booking ended ${PaymentState[payment?.state ?? 0]}`);
    },
  };
}
