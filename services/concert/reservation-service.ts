import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ReservationSchema,
  ReservationState,
  type ConfirmReservationRequest,
  type GetReservationRequest,
  type GetUserReservationRequest,
  type HoldSeatsForUserRequest,
  type HoldBestAvailableRequest,
  type HoldSeatsRequest,
  type ListReservationsRequest,
  type Reservation as ReservationMessage,
  type ReleaseHoldRequest,
  type CancelReservationRequest,
  type ReleaseUserHoldRequest,
  type ReservationInternalService,
  type ReservationService,
} from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { admission, caller } from "../platform/access.js";
import { entityManager, statements } from "../platform/database.js";
import { check } from "../platform/validate.js";
import type { Cancellations } from "./cancellations.js";
import { holdStateNow, type HoldRecord, type Holds } from "./holds.js";

const states = {
  HELD: ReservationState.HELD,
  CONFIRMED: ReservationState.CONFIRMED,
  RELEASED: ReservationState.RELEASED,
  EXPIRED: ReservationState.EXPIRED,
  CANCELLED: ReservationState.CANCELLED,
} as const;

/** A hold as the contract's reservation; a HELD one past expires_at reads EXPIRED. */
export function reservationMessage(hold: HoldRecord): ReservationMessage {
  return create(ReservationSchema, {
    id: hold.id,
    state: states[holdStateNow(hold)],
    seatNumbers: hold.seatNumbers,
    amount: BigInt(hold.amount),
    expiresAt: timestampFromDate(hold.expiresAt),
    scheduleId: hold.scheduleId,
    concertId: hold.concertId,
    userId: hold.userId,
    createdAt: timestampFromDate(hold.createdAt),
    paymentId: hold.paymentId ?? "",
    cancelReason: hold.cancelReason ?? "",
    cancelledAt: hold.cancelledAt ? timestampFromDate(hold.cancelledAt) : undefined,
    refundedAt: hold.refundedAt ? timestampFromDate(hold.refundedAt) : undefined,
  });
}

/** The fan-facing reservations, served beside the seats they hold. */
export class ReservationHandlers implements ServiceImpl<typeof ReservationService> {
  constructor(
    private readonly holds: Holds,
    private readonly cancellations: Cancellations,
  ) {}

  async holdSeats(req: HoldSeatsRequest, ctx: HandlerContext) {
    const admitted = admission(ctx);
    const hold = await this.holds.hold(entityManager(ctx), {
      userId: admitted.userId,
      concertId: admitted.concertId,
      scheduleId: check.id(req.scheduleId, "schedule_id"),
      seatNumbers: check.seatNumbers(req.seatNumbers),
    });
    return { reservation: reservationMessage(hold) };
  }

  async holdBestAvailable(req: HoldBestAvailableRequest, ctx: HandlerContext) {
    const admitted = admission(ctx);
    const hold = await this.holds.holdBest(entityManager(ctx), {
      userId: admitted.userId,
      concertId: admitted.concertId,
      scheduleId: check.id(req.scheduleId, "schedule_id"),
      tier: req.tier === "" ? "" : check.text(req.tier, "tier", { max: 50 }),
      count: check.integer(req.count, "count", 1, 4),
    });
    return { reservation: reservationMessage(hold) };
  }

  async getReservation(req: GetReservationRequest, ctx: HandlerContext) {
    const hold = await this.holds.get(statements(ctx), caller(ctx).userId, check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(hold) };
  }

  async listReservations(req: ListReservationsRequest, ctx: HandlerContext) {
    const page = await this.holds.list(statements(ctx), caller(ctx).userId, req);
    return { reservations: page.rows.map(reservationMessage), nextPageToken: page.nextPageToken };
  }

  async releaseHold(req: ReleaseHoldRequest, ctx: HandlerContext) {
    const hold = await this.holds.release(entityManager(ctx), caller(ctx).userId, check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(hold) };
  }

  async cancelReservation(req: CancelReservationRequest, ctx: HandlerContext) {
    const hold = await this.cancellations.cancelByFan(entityManager(ctx), caller(ctx).userId, check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(hold) };
  }
}

/** For services that checked the fan's access at their own edge, and say for whom they act. */
export class ReservationInternalHandlers implements ServiceImpl<typeof ReservationInternalService> {
  constructor(private readonly holds: Holds) {}

  async holdSeatsForUser(req: HoldSeatsForUserRequest, ctx: HandlerContext) {
    const hold = await this.holds.hold(entityManager(ctx), {
      userId: check.id(req.userId, "user_id"),
      concertId: check.id(req.concertId, "concert_id"),
      scheduleId: check.id(req.scheduleId, "schedule_id"),
      seatNumbers: check.seatNumbers(req.seatNumbers),
      reuseOwnHold: req.reuseOwnHold,
    });
    return { reservation: reservationMessage(hold), reused: hold.reused === true };
  }

  async releaseUserHold(req: ReleaseUserHoldRequest, ctx: HandlerContext) {
    const hold = await this.holds.release(entityManager(ctx), check.id(req.userId, "user_id"), check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(hold) };
  }

  async getUserReservation(req: GetUserReservationRequest, ctx: HandlerContext) {
    const hold = await this.holds.get(statements(ctx), check.id(req.userId, "user_id"), check.id(req.reservationId, "reservation_id"));
    return { reservation: reservationMessage(hold) };
  }

  async confirmReservation(req: ConfirmReservationRequest, ctx: HandlerContext) {
    const hold = await this.holds.confirm(entityManager(ctx), {
      userId: check.id(req.userId, "user_id"),
      reservationId: check.id(req.reservationId, "reservation_id"),
      paymentId: check.id(req.paymentId, "payment_id"),
      amount: req.amount === 0n ? undefined : check.integer(req.amount, "amount", 1, Number.MAX_SAFE_INTEGER),
    });
    return { reservation: reservationMessage(hold) };
  }
}
