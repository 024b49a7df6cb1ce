import { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueInternalService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { AdmissionWorker } from "./admission.js";
import { localGate, remoteGate } from "./gate.js";
import { MemoryQueueStore } from "./memory-store.js";
import { QueueAdminHandlers, QueueHandlers, QueueInternalHandlers } from "./queue-service.js";
import { QueueTokens } from "./queue-tokens.js";
import { RedisQueueStore } from "./redis-store.js";
import type { QueueStore } from "./store.js";
import { ConcertSupply } from "./supply.js";
import { WaitingRoom } from "./waiting-room.js";

/** Queue service: the per-concert waiting rooms, their admission, and the gate. */
export const queueModule: ServiceModule = {
  name: "queue",
  serves: [QueueService, QueueInternalService, QueueAdminService],
  create: ({ config, clients }) => {
    const { queue } = config;
    const store: QueueStore = config.redisUrl ? new RedisQueueStore(config.redisUrl, queue.redisKeyPrefix) : new MemoryQueueStore();
    const supply = new ConcertSupply(clients.for(ConcertInternalService));
    const defaults = {
      maxActive: queue.maxActive,
      ratePerMinute: queue.ratePerMinute,
      sessionTtlMs: queue.sessionTtlMs,
      abandonAfterMs: queue.abandonAfterMs,
    };
    const room = new WaitingRoom(store, new QueueTokens(config.tokenSecret), supply, defaults);
    const worker = new AdmissionWorker(store, supply, defaults, { tickMs: queue.tickMs });
    return {
      implementations: [
        implementation(QueueService, new QueueHandlers(room)),
        implementation(QueueInternalService, new QueueInternalHandlers(room, worker)),
        implementation(QueueAdminService, new QueueAdminHandlers(room)),
      ],
      gate: localGate(room),
      start: async () => worker.start(),
      stop: async () => {
        await worker.stop();
        await store.close();
      },
    };
  },
  remoteGate: (clients) => remoteGate(clients.for(QueueInternalService)),
};
