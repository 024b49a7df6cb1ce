import { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationInternalService, ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { Repeating } from "../platform/background.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Holds } from "./holds.js";
import { Migration20261124020000_reservations } from "./migrations/Migration20261124020000_reservations.js";
import { Reservation } from "./reservation.entity.js";
import { ReservationHandlers, ReservationInternalHandlers } from "./reservation-service.js";

/** Reservation service: seat holds and the sales they become. */
export const reservationModule: ServiceModule = {
  name: "reservation",
  database: { schema: "reservation", entities: [Reservation], migrations: [Migration20261124020000_reservations] },
  create: ({ config, orm, clients }) => {
    const holds = new Holds(clients.for(ConcertInternalService), clients.for(QueueInternalService), config.holdMs);
    const sweeper = new Repeating("reservation sweeper", config.holdSweepMs, () => holds.sweep(orm!.em.fork()));
    return {
      implementations: [
        implementation(ReservationService, new ReservationHandlers(holds)),
        implementation(ReservationInternalService, new ReservationInternalHandlers(holds)),
      ],
      start: async () => sweeper.start(),
      stop: () => sweeper.stop(),
    };
  },
};
