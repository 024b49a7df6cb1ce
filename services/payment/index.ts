import { PaymentAdminService, PaymentInternalService, PaymentService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointInternalService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationInternalService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { Repeating } from "../platform/background.js";
import { rowsByState } from "../platform/metrics.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { Migration20261124040000_payments } from "./migrations/Migration20261124040000_payments.js";
import { Migration20261124050000_payment_lease } from "./migrations/Migration20261124050000_payment_lease.js";
import { Migration20261203010000_payment_refunds } from "./migrations/Migration20261203010000_payment_refunds.js";
import { pointsPort, reservationsPort, sessionsPort } from "./neighbours.js";
import { Payment } from "./payment.entity.js";
import { PaymentAdminHandlers, PaymentHandlers, PaymentInternalHandlers } from "./payment-service.js";
import { Payments } from "./payments.js";

/** Payment service: paying for holds with points, and recovering payments a crash interrupted. */
export const paymentModule: ServiceModule = {
  name: "payment",
  serves: [PaymentService, PaymentInternalService, PaymentAdminService],
  database: { schema: "payment", entities: [Payment], migrations: [Migration20261124040000_payments, Migration20261124050000_payment_lease, Migration20261203010000_payment_refunds] },
  create: ({ config, orm, clients, metrics }) => {
    const { paymentRecoveryMs } = config;
    rowsByState(metrics, "boxoffice_payments", "Payments by state (PENDING: being driven or waiting for recovery)", () =>
      orm!.em.getConnection().execute<{ state: string; n: number }[]>("select state, count(*)::int as n from payment.payment group by state"),
    );
    const payments = new Payments(
      {
        points: pointsPort(clients.for(PointInternalService)),
        reservations: reservationsPort(clients.for(ReservationInternalService)),
        sessions: sessionsPort(clients.for(QueueInternalService)),
      },
      paymentRecoveryMs,
    );
    // Stale after a third of the interval, looked for every sixth: settled well within the interval.
    const recovery = new Repeating("payment recovery", Math.max(10, Math.floor(paymentRecoveryMs / 6)), () =>
      payments.recover(orm!.em.fork(), paymentRecoveryMs / 3),
    );
    return {
      implementations: [
        implementation(PaymentService, new PaymentHandlers(payments)),
        implementation(PaymentInternalService, new PaymentInternalHandlers(payments)),
        implementation(PaymentAdminService, new PaymentAdminHandlers()),
      ],
      start: async () => recovery.start(),
      stop: () => recovery.stop(),
    };
  },
};
