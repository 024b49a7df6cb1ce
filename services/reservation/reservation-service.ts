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
  type Reservation,
  type ReleaseHoldRequest,
  type ReservationInternalService,
  type ReservationService,
} from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { admission, caller } from "../platform/access.js";
import { entityManager } from "../platform/database.js";
import { InvalidInput } from "../platform/errors.js";
import { check } from "../platform/validate.js";
import { stateNow, type Holds, type ReservationRecord } from "./holds.js";

const states = {
  HELD: ReservationState.HELD,
  CONFIRMED: ReservationState.CONFIRMED,
  RELEASED: ReservationState.RELEASED,
  EXPIRED: ReservationState.EXPIRED,
} as const;

export function reservationMessage(reservation: ReservationRecord): Reservation {
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

function pageCursor(token: string): { createdAt: Date; id: string } | undefined {
  if (token === "") return undefined;
  const [millis, id] = Buffer.from(token, "base64url").toString().split("/");
  const createdAt = new Date(Number(millis));
  if (!id || Number.isNaN(createdAt.getTime())) throw new InvalidInput("page_token", "is not a token this service issued");
  return { createdAt, id: check.id(id, "page_token") };
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
    const pageSize = req.pageSize === 0 ? 20 : check.integer(req.pageSize, "page_size", 1, 100);
    const page = await this.holds.list(entityManager(ctx), caller(ctx).userId, pageSize, pageCursor(req.pageToken));
    const last = page.reservations.at(-1);
    return {
      reservations: page.reservations.map(reservationMessage),
      nextPageToken: page.more && last ? Buffer.from(`${last.createdAt.getTime()}/${last.id}`).toString("base64url") : "",
    };
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
