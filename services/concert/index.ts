import {
  ConcertAdminService as ConcertAdminServiceDesc,
  ConcertInternalService as ConcertInternalServiceDesc,
  ConcertService as ConcertServiceDesc,
} from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { PaymentInternalService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationInternalService, ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TicketScannerService, TicketService } from "../../gen/boxoffice/ticket/v1/ticket_pb.js";
import { Repeating } from "../platform/background.js";
import { rowsByState } from "../platform/metrics.js";
import { listenTo, type Listening } from "../platform/notifications.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Concert, Hold, Schedule, Seat, TicketScan } from "./concert.entity.js";
import { ConcertAdminService, ConcertInternalService, ConcertService } from "./concert-service.js";
import { seedDemo } from "./demo.js";
import { Holds } from "./holds.js";
import { Migration20261124000000_concerts } from "./migrations/Migration20261124000000_concerts.js";
import { Migration20261124010000_seat_holds } from "./migrations/Migration20261124010000_seat_holds.js";
import { Migration20261124020000_seat_notify } from "./migrations/Migration20261124020000_seat_notify.js";
import { Migration20261201000000_holds } from "./migrations/Migration20261201000000_holds.js";
import { Migration20261202000000_sale_events } from "./migrations/Migration20261202000000_sale_events.js";
import { Migration20261202200000_tickets } from "./migrations/Migration20261202200000_tickets.js";
import { Migration20261203000000_cancellations } from "./migrations/Migration20261203000000_cancellations.js";
import { Migration20261203100000_seat_plans } from "./migrations/Migration20261203100000_seat_plans.js";
import { queueSupplyAnnouncer, refundsPort } from "./neighbours.js";
import { Cancellations } from "./cancellations.js";
import { ReservationHandlers, ReservationInternalHandlers } from "./reservation-service.js";
import { SeatMaps } from "./seat-maps.js";
import { TicketHandlers, TicketScannerHandlers } from "./ticket-service.js";
import { TicketCodes, Tickets } from "./tickets.js";
import { logger } from "../platform/log.js";

/** Concert service: what is on sale, its dates and seats, the fans' holds on them (ReservationService), and the tickets they become. */
export const concertModule: ServiceModule = {
  name: "concert",
  serves: [ConcertServiceDesc, ConcertInternalServiceDesc, ConcertAdminServiceDesc, ReservationService, ReservationInternalService, TicketService, TicketScannerService],
  database: {
    schema: "concert",
    entities: [Concert, Schedule, Seat, Hold, TicketScan],
    migrations: [
      Migration20261124000000_concerts,
      Migration20261124010000_seat_holds,
      Migration20261124020000_seat_notify,
      Migration20261201000000_holds,
      Migration20261202000000_sale_events,
      Migration20261202200000_tickets,
      Migration20261203000000_cancellations,
      Migration20261203100000_seat_plans,
    ],
    // The longest a hold waits for another hold on the same seats before it is refused.
    settings: { lock_timeout: "2s" },
  },
  create: ({ config, orm, clients, metrics }) => {
    const byState = (table: string) => async () => orm!.em.getConnection().execute<{ state: string; n: number }[]>(`select state, count(*)::int as n from concert.${table} group by state`);
    rowsByState(metrics, "boxoffice_holds", "Holds by state (HELD: live or not yet swept; CONFIRMED: sold)", byState("hold"));
    rowsByState(metrics, "boxoffice_seats", "Seats of every date by state (SOLD: the sales)", byState("seat"));
    // On a shared PostgreSQL other instances change seats too: cache seat maps only while hearing their notifications.
    const maps = new SeatMaps(config.databaseUrl !== undefined);
    const supply = queueSupplyAnnouncer(clients.for(QueueInternalService));
    const holds = new Holds(maps, supply, config.holdMs);
    const cancellations = new Cancellations(maps, supply, refundsPort(clients.for(PaymentInternalService)));
    const tickets = new Tickets(new TicketCodes(config.tokenSecret));
    const sweeper = new Repeating("hold sweeper", config.holdSweepMs, () => holds.sweep(orm!.em.fork()));
    // Refunds that a crash or an outage interrupted: the cancelled bookings whose points are not back yet.
    const refundRun = new Repeating("refund run", config.refundRunMs, () => cancellations.refundDue(orm!.em.fork()));
    let listening: Listening | undefined;
    return {
      implementations: [
        implementation(ConcertServiceDesc, new ConcertService(maps)),
        implementation(ConcertInternalServiceDesc, new ConcertInternalService()),
        implementation(ConcertAdminServiceDesc, new ConcertAdminService(cancellations)),
        implementation(ReservationService, new ReservationHandlers(holds, cancellations)),
        implementation(ReservationInternalService, new ReservationInternalHandlers(holds)),
        implementation(TicketService, new TicketHandlers(tickets)),
        implementation(TicketScannerService, new TicketScannerHandlers(tickets)),
      ],
      start: async () => {
        if (config.databaseUrl) {
          listening = listenTo(config.databaseUrl, "concert_seats", {
            onNotify: (scheduleId) => maps.forget([scheduleId]),
            onListening: (up) => maps.setCaching(up),
          });
        }
        if (config.seedDemo && (await seedDemo(orm!))) logger("concert").info("loaded the demo concerts");
        sweeper.start();
        refundRun.start();
        // What a crash left to refund is taken up at once, not a REFUND_RUN_MS later.
        cancellations.startRun(orm!.em.fork());
      },
      stop: async () => {
        await Promise.all([sweeper.stop(), refundRun.stop()]);
        await cancellations.idle();
        await listening?.close();
      },
    };
  },
};
