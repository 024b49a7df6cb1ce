import {
  ConcertAdminService as ConcertAdminServiceDesc,
  ConcertInternalService as ConcertInternalServiceDesc,
  ConcertService as ConcertServiceDesc,
} from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Concert, Schedule, Seat } from "./concert.entity.js";
import { ConcertAdminService, ConcertInternalService, ConcertService } from "./concert-service.js";
import { seedDemo } from "./demo.js";
import { Migration20261124000000_concerts } from "./migrations/Migration20261124000000_concerts.js";
import { Migration20261124010000_seat_holds } from "./migrations/Migration20261124010000_seat_holds.js";

/** Concert service: what is on sale, its dates and seats. */
export const concertModule: ServiceModule = {
  name: "concert",
  database: {
    schema: "concert",
    entities: [Concert, Schedule, Seat],
    migrations: [Migration20261124000000_concerts, Migration20261124010000_seat_holds],
    // The longest a hold waits for another hold on the same seats before it is refused.
    settings: { lock_timeout: "2s" },
  },
  create: ({ config, orm }) => ({
    implementations: [
      implementation(ConcertServiceDesc, new ConcertService()),
      implementation(ConcertInternalServiceDesc, new ConcertInternalService()),
      implementation(ConcertAdminServiceDesc, new ConcertAdminService()),
    ],
    start: async () => {
      if (config.seedDemo && (await seedDemo(orm!))) console.log("concert: loaded the demo concerts");
    },
  }),
};
