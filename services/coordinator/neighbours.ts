import type { Client } from "@connectrpc/connect";
import type { PaymentInternalService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import type { ReservationInternalService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { callDependency } from "../platform/clients.js";
import type { HoldsPort, PaymentsPort } from "./booking.js";

export function holdsPort(reservations: Client<typeof ReservationInternalService>): HoldsPort {
  return {
    hold: async (request) => {
      const { reservation, reused } = await callDependency("concert", () => reservations.holdSeatsForUser(request));
      return Object.assign(reservation!, { reused });
    },
    release: async (userId, reservationId) => {
      await callDependency("concert", () => reservations.releaseUserHold({ userId, reservationId }));
    },
  };
}

export function paymentsPort(payments: Client<typeof PaymentInternalService>): PaymentsPort {
  return {
    pay: async ({ userId, concertId, reservationId, idempotencyKey, reservation }) => {
      const paid = await callDependency("payment", () =>
        payments.payForUser({ userId, concertId: concertId ?? "", reservationId: reservationId ?? "", idempotencyKey, reservation, replayOnly: concertId === undefined }),
      );
      return { payment: paid.payment!, reservation: paid.reservation };
    },
  };
}
