import { PointInternalService, PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Ledger } from "./ledger.js";
import { Migration20261124030000_ledger } from "./migrations/Migration20261124030000_ledger.js";
import { Account, LedgerEntry } from "./point.entity.js";
import { PointHandlers, PointInternalHandlers } from "./point-service.js";

/** Point service: prepaid balances and their ledger. */
export const pointModule: ServiceModule = {
  name: "point",
  serves: [PointService, PointInternalService],
  database: { schema: "point", entities: [Account, LedgerEntry], migrations: [Migration20261124030000_ledger] },
  create: () => {
    const ledger = new Ledger();
    return {
      implementations: [implementation(PointService, new PointHandlers(ledger)), implementation(PointInternalService, new PointInternalHandlers(ledger))],
    };
  },
};
