import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentInternalService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { QueueInternalService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationInternalService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Booking } from "./booking.js";
import { CoordinatorHandlers } from "./coordinator-service.js";
import { holdsPort, paymentsPort } from "./neighbours.js";
import { QueueWatch } from "./queue-watch.js";

/** Coordinator: the fan-facing booking flow across the other services. */
export const coordinatorModule: ServiceModule = {
  name: "coordinator",
  serves: [CoordinatorService],
  create: ({ config, clients }) => {
    const queueWatch = new QueueWatch(clients.for(QueueService), clients.for(QueueInternalService), {
      refreshMs: config.queue.watchRefreshMs,
      heartbeatMs: config.queue.watchHeartbeatMs,
    });
    const booking = new Booking(holdsPort(clients.for(ReservationInternalService)), paymentsPort(clients.for(PaymentInternalService)));
    return {
      implementations: [implementation(CoordinatorService, new CoordinatorHandlers(queueWatch, booking))],
      stop: async () => queueWatch.close(),
    };
  },
};
