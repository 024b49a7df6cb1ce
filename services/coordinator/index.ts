import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentInternalService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { QueueInternalService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationInternalService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { rawStreamSpec } from "../platform/raw-streams.js";
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
    const handlers = new CoordinatorHandlers(queueWatch, booking);
    return {
      implementations: [implementation(CoordinatorService, handlers)],
      // gRPC callers' watch streams skip Connect's per-stream pipeline: 10,000 waiting fans are 10,000 open streams.
      rawStreams: [rawStreamSpec(CoordinatorService.method.watchQueueStatus, (req, ctx) => handlers.watchQueueStatus(req, ctx))],
      stop: async () => queueWatch.close(),
    };
  },
};
