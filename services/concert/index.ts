import {
  ConcertAdminService as ConcertAdminServiceDesc,
  ConcertInternalService as ConcertInternalServiceDesc,
  ConcertService as ConcertServiceDesc,
} from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Concert, Schedule, Seat } from "./concert.entity.js";
import { ConcertAdminService, ConcertInternalService, ConcertService } from "./concert-service.js";
import { seedDemo } from "./demo.js";
import { SeatInventory } from "./seat-inventory.js";
import { SeatMaps } from "./seat-maps.js";
import { listenTo, type Listening } from "../platform/notifications.js";
import { Migration20261124000000_concerts } from "./migrations/Migration20261124000000_concerts.js";
import { Migration20261124010000_seat_holds } from "./migrations/Migration20261124010000_seat_holds.js";
import { Migration20261124020000_seat_notify } from "./migrations/Migration20261124020000_seat_notify.js";

/** Concert service: what is on sale, its dates and seats. */
export const concertModule: ServiceModule = {
  name: "concert",
  database: {
    schema: "concert",
    entities: [Concert, Schedule, Seat],
    migrations: [Migration20261124000000_concerts, Migration20261124010000_seat_holds, Migration20261124020000_seat_notify],
    // The longest a hold waits for another hold on the same seats before it is refused.
    settings: { lock_timeout: "2s" },
  },
  create: ({ config, orm }) => {
    // On a shared PostgreSQL other instances change seats too: cache seat maps only while hearing their notifications.
    const maps = new SeatMaps(config.databaseUrl !== undefined);
    let listening: Listening | undefined;
    return {
      implementations: [
        implementation(ConcertServiceDesc, new ConcertService(maps)),
        implementation(ConcertInternalServiceDesc, new ConcertInternalService(new SeatInventory(maps))),
        implementation(ConcertAdminServiceDesc, new ConcertAdminService()),
      ],
      start: async () => {
        if (config.databaseUrl) {
          listening = listenTo(config.databaseUrl, "concert_seats", {
            onNotify: (scheduleId) => maps.forget([scheduleId]),
            onListening: (up) => maps.setCaching(up),
          });
        }
        if (config.seedDemo && (await seedDemo(orm!))) console.log("concert: loaded the demo concerts");
      },
      stop: async () => {
        await listening?.close();
      },
    };
  },
};
