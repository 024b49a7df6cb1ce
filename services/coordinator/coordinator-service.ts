import { Code, ConnectError, type Client, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { ErrorDetailSchema } from "../../gen/boxoffice/common/v1/error_pb.js";
import type { BookSeatsRequest, CheckoutRequest, CoordinatorService, ReserveSeatsRequest } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import type { PaymentService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import type { Reservation, ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { admitted, onBehalfOf, queueTokenHeader } from "../platform/access.js";
import { callDependency } from "../platform/clients.js";
import { Reason, Refused } from "../platform/errors.js";
import { check } from "../platform/validate.js";
import type { QueueWatch } from "./queue-watch.js";

export interface CoordinatorClients {
  reservations: Client<typeof ReservationService>;
  payments: Client<typeof PaymentService>;
}

/** The fan's one-stop entry to the booking flow. */
export class CoordinatorHandlers implements ServiceImpl<typeof CoordinatorService> {
  constructor(
    private readonly queueWatch: QueueWatch,
    private readonly clients: CoordinatorClients,
  ) {}

  /** Streams the waiting info of the caller's queue token until it reaches a final state. */
  async *watchQueueStatus(_req: unknown, ctx: HandlerContext) {
    // The access interceptor has made sure the header is there; the queue service checks the token.
    yield* this.queueWatch.watch(ctx.requestHeader.get(queueTokenHeader)!, ctx.signal);
  }

  /**
   * The seed's seat reservation: admission was checked at the door; the date and
   * its seats are checked with the concert service; then the seats are held.
   */
  async reserveSeats(req: ReserveSeatsRequest, ctx: HandlerContext) {
    return { reservation: await this.#reserve(req, ctx) };
  }

  /** Pays for a held reservation; on success the payment service ends the queue session. */
  async checkout(req: CheckoutRequest, ctx: HandlerContext) {
    const reservationId = check.id(req.reservationId, "reservation_id");
    const idempotencyKey = check.idempotencyKey(req.idempotencyKey);
    return this.#pay(reservationId, idempotencyKey, ctx);
  }

  /**
   * The whole seed flow in one call: hold, then pay. If the payment fails, the
   * hold stays until it expires and the payment says why, so the fan can top up
   * and Checkout. The idempotency key makes a retry return the first booking;
   * a new key for the same seats finds the fan's live hold and pays for it.
   */
  async bookSeats(req: BookSeatsRequest, ctx: HandlerContext) {
    const idempotencyKey = check.idempotencyKey(req.idempotencyKey);
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const wanted = check.seatNumbers(req.seatNumbers);
    const earlier = await this.#paymentWithKey(idempotencyKey, ctx);
    if (earlier) {
      const { reservation } = await callDependency("reservation", () =>
        this.clients.reservations.getReservation({ reservationId: earlier.reservationId }, onBehalfOf(ctx)),
      );
      if (reservation!.scheduleId !== scheduleId || reservation!.seatNumbers.join() !== wanted.join()) {
        throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used to book other seats");
      }
      return { payment: earlier, reservation };
    }
    await admitted(ctx);
    let reservationId: string;
    try {
      reservationId = (await this.#reserve({ scheduleId, seatNumbers: wanted }, ctx)).id;
    } catch (error) {
      const live = ConnectError.from(error).findDetails(ErrorDetailSchema)[0];
      if (live?.reason !== Reason.HOLD_LIMIT_REACHED || !live.metadata.reservation_id) throw error;
      const { reservation } = await callDependency("reservation", () =>
        this.clients.reservations.getReservation({ reservationId: live.metadata.reservation_id! }, onBehalfOf(ctx)),
      );
      if (reservation!.seatNumbers.join() !== wanted.join()) throw error;
      reservationId = reservation!.id;
    }
    return this.#pay(reservationId, idempotencyKey, ctx);
  }

  /** The caller's payment made with this key, if there is one. */
  async #paymentWithKey(idempotencyKey: string, ctx: HandlerContext) {
    try {
      const { payment } = await callDependency("payment", () => this.clients.payments.getPayment({ idempotencyKey }, onBehalfOf(ctx)));
      return payment;
    } catch (error) {
      if (ConnectError.from(error).code === Code.NotFound) return undefined;
      throw error;
    }
  }

  async #pay(reservationId: string, idempotencyKey: string, ctx: HandlerContext) {
    const { payment } = await callDependency("payment", () => this.clients.payments.pay({ reservationId, idempotencyKey }, onBehalfOf(ctx)));
    const { reservation } = await callDependency("reservation", () => this.clients.reservations.getReservation({ reservationId }, onBehalfOf(ctx)));
    return { payment, reservation };
  }

  /**
   * The seed's seat reservation: admission was checked at the door; HoldSeats
   * checks the date and the seats itself (no such date or seat, seats taken, or
   * the fan's own live hold on the date, named) and holds them, all or none.
   */
  async #reserve(req: { scheduleId: string; seatNumbers: number[] }, ctx: HandlerContext): Promise<Reservation> {
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const seatNumbers = check.seatNumbers(req.seatNumbers);
    const { reservation } = await callDependency("reservation", () => this.clients.reservations.holdSeats({ scheduleId, seatNumbers }, onBehalfOf(ctx)));
    return reservation!;
  }
}
