/**
 * The fan's reads: a balance, a booking, the list of bookings, a payment.
 * Prepares fans who each hold a seat, charged points and paid for it, so that
 * every read finds a real row; each call reads the next fan's, round robin.
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { PaymentService, PaymentState } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { admitFans, openConcert } from "./setup.js";

export interface ReadFan {
  /** The user token alone: none of these reads is gated. */
  headers: { authorization: string };
  reservationId: string;
  paymentId: string;
}

/** `fanTokens.length` fans, each with one paid booking and points left over. */
export async function prepareReaders(transport: Transport, operatorKey: string, fanTokens: string[]): Promise<ReadFan[]> {
  const { concertId, scheduleIds } = await openConcert(transport, operatorKey, {
    title: "Bench reads",
    dates: 1,
    seatsPerDate: fanTokens.length,
    maxActive: fanTokens.length + 1,
  });
  const admitted = await admitFans(transport, concertId, fanTokens);
  const reservations = createClient(ReservationService, transport);
  const points = createClient(PointService, transport);
  const payments = createClient(PaymentService, transport);
  return Promise.all(
    admitted.map(async (headers, i) => {
      const { reservation } = await reservations.holdSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [i + 1] }, { headers });
      await points.chargePoints({ amount: 5_000n, idempotencyKey: randomUUID() }, { headers });
      const { payment } = await payments.pay({ reservationId: reservation!.id, idempotencyKey: randomUUID() }, { headers });
      if (payment?.state !== PaymentState.SUCCEEDED) throw new Error(`a bench reader's payment ended ${PaymentState[payment?.state ?? 0]}`);
      return { headers: { authorization: headers.authorization! }, reservationId: reservation!.id, paymentId: payment.id };
    }),
  );
}

/** The read cases over `transport`, each call for the next fan. */
export function readCases(transport: Transport, fans: ReadFan[]) {
  const points = createClient(PointService, transport);
  const reservations = createClient(ReservationService, transport);
  const payments = createClient(PaymentService, transport);
  let next = 0;
  const fan = () => fans[next++ % fans.length]!;
  return [
    ["PointService/GetBalance", () => points.getBalance({}, { headers: fan().headers })],
    [
      "ReservationService/GetReservation",
      () => {
        const { reservationId, headers } = fan();
        return reservations.getReservation({ reservationId }, { headers });
      },
    ],
    ["ReservationService/ListReservations", () => reservations.listReservations({}, { headers: fan().headers })],
    [
      "PaymentService/GetPayment",
      () => {
        const { paymentId, headers } = fan();
        return payments.getPayment({ paymentId }, { headers });
      },
    ],
  ] as const;
}
