import { join } from "node:path";
import { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueInternalService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { implementation, type ServiceModule } from "../platform/suite.js";
import { AdmissionWorker } from "./admission.js";
import { localGate, remoteGate } from "./gate.js";
import { MemoryQueueStore } from "./memory-store.js";
import { roomMetrics } from "./metrics.js";
import { QueueAdminHandlers, QueueHandlers, QueueInternalHandlers } from "./queue-service.js";
import { QueueTokens } from "./queue-tokens.js";
import { Migration20261201100000_rooms } from "./migrations/Migration20261201100000_rooms.js";
import { RedisQueueStore } from "./redis-store.js";
import { Draw, Room } from "./room.entity.js";
import { Migration20261202100000_draws } from "./migrations/Migration20261202100000_draws.js";
import { concertSeeds, Draws, SaleDraw, saleFairness } from "./draws.js";
import { Rooms } from "./rooms.js";
import type { QueueStore } from "./store.js";
import { ConcertSupply } from "./supply.js";
import { WaitingRoom } from "./waiting-room.js";
import { logger, why } from "../platform/log.js";

const queueLog = logger("queue");

/** Queue service: the per-concert waiting rooms, their admission, and the gate. */
export const queueModule: ServiceModule = {
  name: "queue",
  serves: [QueueService, QueueInternalService, QueueAdminService],
  // The rooms and what operators set for them (the line itself is in the store).
  database: { schema: "queue", entities: [Room, Draw], migrations: [Migration20261201100000_rooms, Migration20261202100000_draws] },
  create: ({ config, clients, orm, metrics }) => {
    const { queue } = config;
    const redis = config.redisCluster ? { clusterNodes: config.redisCluster } : config.redisUrl ? { url: config.redisUrl } : undefined;
    const store: QueueStore = redis ? new RedisQueueStore(redis, queue.redisKeyPrefix, (operation, seconds) => metrics.storeSeconds.observe({ store: "redis", operation }, seconds)) : new MemoryQueueStore(join(config.dataDir, "waiting-rooms.json"));
    const rooms = new Rooms(orm!, queue.redisKeyPrefix);
    const supply = new ConcertSupply(clients.for(ConcertInternalService));
    const defaults = {
      maxActive: queue.maxActive,
      ratePerMinute: queue.ratePerMinute,
      sessionTtlMs: queue.sessionTtlMs,
      abandonAfterMs: queue.abandonAfterMs,
      random: false,
    };
    const tokens = new QueueTokens(config.tokenSecret);
    const room = new WaitingRoom(store, rooms, tokens, supply, defaults);
    const draws = new Draws(orm!, queue.redisKeyPrefix);
    const seeds = concertSeeds(clients.for(ConcertInternalService));
    const worker = new AdmissionWorker(store, rooms, supply, defaults, { tickMs: queue.tickMs }, new SaleDraw(store, draws, seeds, tokens));
    roomMetrics(metrics, store, rooms);
    return {
      implementations: [
        implementation(QueueService, new QueueHandlers(room, (concertId) => saleFairness(concertId, draws, seeds, store))),
        implementation(QueueInternalService, new QueueInternalHandlers(room, worker)),
        implementation(QueueAdminService, new QueueAdminHandlers(room)),
      ],
      gate: localGate(room),
      // The in-process store cannot be cut off from its service: only Redis is probed.
      probes: redis ? [{ store: "Redis (waiting room)", check: () => store.ping() }] : [],
      start: async () => {
        if (store instanceof RedisQueueStore) await importLegacyRooms(store, rooms);
        worker.start();
      },
      stop: async () => {
        await worker.stop();
        await store.close();
      },
    };
  },
  remoteGate: (clients) => remoteGate(clients.for(QueueInternalService)),
};

/**
 * An upgrade from the layout before PostgreSQL kept the rooms: their list and
 * settings were in Redis only. They are copied into queue.room once (the worker
 * ticks only rooms listed there, so until then they wait, as they were); with
 * Redis down at the start it is tried again at the next start.
 */
async function importLegacyRooms(store: RedisQueueStore, rooms: Rooms) {
  try {
    const legacy = await store.legacyRooms();
    for (const { concertId, ...change } of legacy) await rooms.change(concertId, change);
    await store.forgetLegacyRooms();
    if (legacy.length > 0) queueLog.info(`${legacy.length} rooms of the earlier layout are now kept in PostgreSQL`);
  } catch (error) {
    queueLog.error(`rooms of the earlier layout could not be imported now; the next start tries again: ${why(error)}`);
  }
}
