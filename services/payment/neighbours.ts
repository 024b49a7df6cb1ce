import type { Client } from "@connectrpc/connect";
import type { PointInternalService } from "../../gen/boxoffice/point/v1/point_pb.js";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import type { ReservationInternalService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { callDependency } from "../platform/clients.js";
import { NotFound, Refused } from "../platform/errors.js";
import type { PointsPort, Refusal, ReservationsPort, SessionsPort } from "./payments.js";

/** A neighbour's refusal (FailedPrecondition or NotFound) as a Refusal; outages and anything else are thrown on. */
async function refusalOr<T>(call: Promise<T>): Promise<T | Refusal> {
  try {
    return await call;
  } catch (error) {
    if (error instanceof Refused || error instanceof NotFound) return { refused: error.reason, message: error.message };
    throw error;
  }
}

export function pointsPort(points: Client<typeof PointInternalService>): PointsPort {
  return {
    debit: (userId, amount, paymentId, signal) =>
      refusalOr(callDependency("point", () => points.usePoints({ userId, amount: BigInt(amount), paymentId }, { signal })).then(() => "debited" as const)),
    refund: async (userId, paymentId, signal) => {
      await callDependency("point", () => points.refundPoints({ userId, paymentId }, { signal }));
    },
  };
}

export function reservationsPort(reservations: Client<typeof ReservationInternalService>): ReservationsPort {
  return {
    get: async (userId, reservationId) => (await callDependency("concert", () => reservations.getUserReservation({ userId, reservationId }))).reservation!,
    confirm: ({ userId, reservationId, paymentId, amount }, signal) =>
      refusalOr(
        callDependency("concert", () => reservations.confirmReservation({ userId, reservationId, paymentId, amount: BigInt(amount) }, { signal })).then(
          (response) => response.reservation!,
        ),
      ),
  };
}

export function sessionsPort(queue: Client<typeof QueueInternalService>): SessionsPort {
  return {
    complete: async (userId, concertId, signal) => {
      await callDependency("queue", () => queue.completeSession({ userId, concertId }, { signal }));
    },
  };
}
