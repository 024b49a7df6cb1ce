import type { Client } from "@connectrpc/connect";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import type { SupplyAnnouncer } from "./holds.js";

/** The queue, told when seats are free again so that it admits at once. Best effort: it re-reads supply within a second anyway. */
export function queueSupplyAnnouncer(queue: Client<typeof QueueInternalService>): SupplyAnnouncer {
  return {
    async seatsFreed(concertIds) {
      for (const concertId of concertIds) await queue.supplyChanged({ concertId }).catch(() => {});
    },
  };
}
