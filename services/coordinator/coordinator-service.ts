import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { BookSeatsRequest, CheckoutRequest, CoordinatorService, ReserveSeatsRequest } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { admission, admitted, caller, queueTokenHeader } from "../platform/access.js";
import { check } from "../platform/validate.js";
import type { Booking } from "./booking.js";
import type { QueueWatch } from "./queue-watch.js";

/** The fan's one-stop entry to the booking flow. */
export class CoordinatorHandlers implements ServiceImpl<typeof CoordinatorService> {
  constructor(
    private readonly queueWatch: QueueWatch,
    private readonly booking: Booking,
  ) {}

  /**
   * Streams the waiting info of the caller's queue token until it reaches a
   * final state; a shutdown of this server ends it with Unavailable, and the
   * client watches again (here or on another instance) with the same token.
   * Served by Connect and by the raw gRPC path alike (see index.ts); it
   * returns the watch itself, not a generator around it, as each layer is
   * kept for every open stream.
   */
  watchQueueStatus(_req: unknown, ctx: Pick<HandlerContext, "requestHeader" | "signal">) {
    // The access check has made sure the header is there; the queue service checks the token.
    return this.queueWatch.watch(ctx.requestHeader.get(queueTokenHeader)!, ctx.signal);
  }

  /** The seed's seat reservation: admission was checked at the door; the hold checks the date and its seats. */
  async reserveSeats(req: ReserveSeatsRequest, ctx: HandlerContext) {
    const reservation = await this.booking.reserve(admission(ctx), check.id(req.scheduleId, "schedule_id"), check.seatNumbers(req.seatNumbers));
    return { reservation };
  }

  /** Pays for a held reservation; on success the payment service ends the queue session. */
  async checkout(req: CheckoutRequest, ctx: HandlerContext) {
    const reservationId = check.id(req.reservationId, "reservation_id");
    const idempotencyKey = check.idempotencyKey(req.idempotencyKey);
    return this.booking.checkout(caller(ctx).userId, () => admitted(ctx), reservationId, idempotencyKey);
  }

  /** Hold, then pay, in one call (see Booking.book). */
  async bookSeats(req: BookSeatsRequest, ctx: HandlerContext) {
    const idempotencyKey = check.idempotencyKey(req.idempotencyKey);
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const seatNumbers = check.seatNumbers(req.seatNumbers);
    return this.booking.book(caller(ctx).userId, () => admitted(ctx), scheduleId, seatNumbers, idempotencyKey);
  }
}
