import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ReservationSchema,
  ReservationState,
  type ConfirmReservationRequest,
  type GetReservationRequest,
  type HoldSeatsRequest,
  type ListReservationsRequest,
  type Reservation as ReservationMessage,
  type ReleaseHoldRequest,
  type ReservationInternalService,
  type ReservationService,
} from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { admission, caller } from "../platform/access.js";
import { entityManager } from "../platform/database.js";
import { newestFirst } from "../platform/pagination.js";
import { check } from "../platform/validate.js";
import { stateNow, type Holds, type ReservationRecord } from "./holds.js";
import { Reservation } from "./reservation.entity.js";

const states = {
  HELD: ReservationState.HELD,
  CONFIRMED: ReservationState.CONFIRMED,
  RELEASED: ReservationState.RELEASED,
  EXPIRED: ReservationState.EXPIRED,
} as const;

export function reservationMessage(reservation: ReservationRecord): ReservationMessage {
  return create(ReservationSchema, {
    id: reservation.id,
    state: states[stateNow(reservation)],
    seatNumbers: reservation.seatNumbers,
    amount: BigInt(reservation.amount),
    expiresAt: timestampFromDate(reservation.expiresAt),
    scheduleId: reservation.scheduleId,
    concertId: reservation.concertId,
    userId: reservation.userId,
    createdAt: timestampFromDate(reservation.createdAt),
    paymentId: reservation.paymentId ?? "",
  });
}

export class ReservationHandlers implements ServiceImpl<typeof ReservationService> {
  constructor(private readonly holds: Holds) {}

  async holdSeats(req: HoldSeatsRequest, ctx: HandlerContext) {
    const admitted = admission(ctx);
    const reservation = await this.holds.hold(entityManager(ctx), {
      userId: admitted.userId,
      concertId: admitted.concertId,
      scheduleId: check.id(req.scheduleId, "schedule_id"),
      seatNumbers: check.seatNumbers(req.seatNumbers),
    });
    return { reservation: reservationMessage(reservation) };
  }

  async getReservation(req: GetReservationRequest, ctx: HandlerContext) {
    const reservation = await this.holds.get(entityManager(ctx), caller(ctx).userId, check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(reservation) };
  }

  async listReservations(req: ListReservationsRequest, ctx: HandlerContext) {
    const page = await newestFirst(entityManager(ctx), Reservation, { userId: caller(ctx).userId }, req);
    return { reservations: page.rows.map(reservationMessage), nextPageToken: page.nextPageToken };
  }

  async releaseHold(req: ReleaseHoldRequest, ctx: HandlerContext) {
    const reservation = await this.holds.release(entityManager(ctx), caller(ctx).userId, check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(reservation) };
  }
}

export class ReservationInternalHandlers implements ServiceImpl<typeof ReservationInternalService> {
  constructor(private readonly holds: Holds) {}

  async confirmReservation(req: ConfirmReservationRequest, ctx: HandlerContext) {
    const reservation = await this.holds.confirm(
      entityManager(ctx),
      check.id(req.userId, "user_id"),
      check.id(req.reservationId, "reservation_id"),
      check.id(req.paymentId, "payment_id"),
    );
    return { reservation: reservationMessage(reservation) };
  }
}
