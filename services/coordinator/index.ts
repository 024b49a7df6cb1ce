import { PaymentService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueInternalService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { CoordinatorHandlers } from "./coordinator-service.js";
import { QueueWatch } from "./queue-watch.js";

/** Coordinator: the fan-facing booking flow across the other services. */
export const coordinatorModule: ServiceModule = {
  name: "coordinator",
  create: ({ config, clients }) => {
    const queueWatch = new QueueWatch(clients.for(QueueService), clients.for(QueueInternalService), {
      refreshMs: config.queue.watchRefreshMs,
      heartbeatMs: config.queue.watchHeartbeatMs,
    });
    return {
      implementations: [implementation(
          CoordinatorService,
          new CoordinatorHandlers(queueWatch, {
            reservations: clients.for(ReservationService),
            payments: clients.for(PaymentService),
          }),
        ),],
      stop: async () => queueWatch.close(),
    };
  },
};
