import { join } from "node:path";
import { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueInternalService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { AdmissionWorker } from "./admission.js";
import { localGate, remoteGate } from "./gate.js";
import { MemoryQueueStore } from "./memory-store.js";
import { QueueAdminHandlers, QueueHandlers, QueueInternalHandlers } from "./queue-service.js";
import { QueueTokens } from "./queue-tokens.js";
import { Migration20261201100000_rooms } from "./migrations/Migration20261201100000_rooms.js";
import { RedisQueueStore } from "./redis-store.js";
import { Room } from "./room.entity.js";
import { Rooms } from "./rooms.js";
import type { QueueStore } from "./store.js";
import { ConcertSupply } from "./supply.js";
import { WaitingRoom } from "./waiting-room.js";

/** Queue service: the per-concert waiting rooms, their admission, and the gate. */
export const queueModule: ServiceModule = {
  name: "queue",
  serves: [QueueService, QueueInternalService, QueueAdminService],
  // The rooms and what operators set for them (the line itself is in the store).
  database: { schema: "queue", entities: [Room], migrations: [Migration20261201100000_rooms] },
  create: ({ config, clients, orm }) => {
    const { queue } = config;
    const redis = config.redisCluster ? { clusterNodes: config.redisCluster } : config.redisUrl ? { url: config.redisUrl } : undefined;
    const store: QueueStore = redis ? new RedisQueueStore(redis, queue.redisKeyPrefix) : new MemoryQueueStore(join(config.dataDir, "waiting-rooms.json"));
    const rooms = new Rooms(orm!, queue.redisKeyPrefix);
    const supply = new ConcertSupply(clients.for(ConcertInternalService));
    const defaults = {
      maxActive: queue.maxActive,
      ratePerMinute: queue.ratePerMinute,
      sessionTtlMs: queue.sessionTtlMs,
      abandonAfterMs: queue.abandonAfterMs,
    };
    const room = new WaitingRoom(store, rooms, new QueueTokens(config.tokenSecret), supply, defaults);
    const worker = new AdmissionWorker(store, rooms, supply, defaults, { tickMs: queue.tickMs });
    return {
      implementations: [
        implementation(QueueService, new QueueHandlers(room)),
        implementation(QueueInternalService, new QueueInternalHandlers(room, worker)),
        implementation(QueueAdminService, new QueueAdminHandlers(room)),
      ],
      gate: localGate(room),
      // The in-process store cannot be cut off from its service: only Redis is probed.
      probes: redis ? [{ store: "Redis (waiting room)", check: () => store.ping() }] : [],
      start: async () => worker.start(),
      stop: async () => {
        await worker.stop();
        await store.close();
      },
    };
  },
  remoteGate: (clients) => remoteGate(clients.for(QueueInternalService)),
};
