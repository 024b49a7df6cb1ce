import type { Client, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { SeatState, type ConcertService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import type { CoordinatorService, ReserveSeatsRequest } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import type { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { queueTokenHeader } from "../platform/access.js";
import { callDependency } from "../platform/clients.js";
import { NotFound, Reason, Refused } from "../platform/errors.js";
import { check } from "../platform/validate.js";
import type { QueueWatch } from "./queue-watch.js";

/** The fan's own credentials, passed on to the services the coordinator calls for them. */
function onBehalf(ctx: HandlerContext) {
  return {
    headers: { authorization: ctx.requestHeader.get("authorization") ?? "", [queueTokenHeader]: ctx.requestHeader.get(queueTokenHeader) ?? "" },
    signal: ctx.signal,
  };
}

export interface CoordinatorClients {
  concerts: Client<typeof ConcertService>;
  reservations: Client<typeof ReservationService>;
}

/** The fan's one-stop entry to the booking flow. */
export class CoordinatorHandlers implements Partial<ServiceImpl<typeof CoordinatorService>> {
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
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const wanted = check.seatNumbers(req.seatNumbers);
    const { seats } = await callDependency("concert", () => this.clients.concerts.listSeats({ scheduleId }, onBehalf(ctx)));
    const byNumber = new Map(seats.map((seat) => [seat.number, seat]));
    const missing = wanted.filter((n) => !byNumber.has(n));
    if (missing.length > 0) {
      throw new NotFound(Reason.SEAT_NOT_FOUND, `that date has seats 1..${seats.length}; no seat ${missing.join(", ")}`, { seats: missing.join(",") });
    }
    const taken = wanted.filter((n) => byNumber.get(n)!.state !== SeatState.AVAILABLE);
    if (taken.length > 0) throw new Refused(Reason.SEAT_UNAVAILABLE, `seat ${taken.join(", ")} is already taken`, { seats: taken.join(",") });
    const { reservation } = await callDependency("reservation", () =>
      this.clients.reservations.holdSeats({ scheduleId, seatNumbers: wanted }, onBehalf(ctx)),
    );
    return { reservation };
  }
}
