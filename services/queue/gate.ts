import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import type { AdmissionGate } from "../platform/access.js";
import { callDependency } from "../platform/clients.js";
import type { WaitingRoom } from "./waiting-room.js";

/** The gate in the queue service's own process: straight to the waiting room. */
export function localGate(room: WaitingRoom): AdmissionGate {
  return { checkAdmitted: (queueToken, userId) => room.admission(queueToken, { userId }) };
}

/** The gate elsewhere: QueueInternalService.CheckAdmission, whose refusals reach the caller as they are. */
export function remoteGate(queue: Client<typeof QueueInternalService>): AdmissionGate {
  return {
    async checkAdmitted(queueToken, userId) {
      const admitted = await callDependency("queue", () => queue.checkAdmission({ queueToken, userId }));
      return { userId: admitted.userId, concertId: admitted.concertId, queueToken, admittedUntil: timestampDate(admitted.admittedUntil!) };
    },
  };
}
