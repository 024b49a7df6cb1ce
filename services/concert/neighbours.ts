import type { Client } from "@connectrpc/connect";
import type { PaymentInternalService } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { callDependency } from "../platform/clients.js";
import type { RefundsPort } from "./cancellations.js";
import type { SupplyAnnouncer } from "./holds.js";

/** The queue, told when seats are free again so that it admits at once. Best effort: it re-reads supply within a second anyway. */
export function queueSupplyAnnouncer(queue: Client<typeof QueueInternalService>): SupplyAnnouncer {
  return {
    async seatsFreed(concertIds) {
      for (const concertId of concertIds) await queue.supplyChanged({ concertId }).catch(() => {});
    },
  };
}

/** The payment service, which refunds a cancelled booking's payment. */
export function refundsPort(payments: Client<typeof PaymentInternalService>): RefundsPort {
  return {
    async refund({ userId, paymentId, reservationId }, signal) {
      await callDependency("payment", () => payments.refundPayment({ userId, paymentId, reservationId }, { signal }));
    },
  };
}
