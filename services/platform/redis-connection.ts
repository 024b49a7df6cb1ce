import { Cluster, Redis, type RedisOptions } from "ioredis";

/** Where the waiting room's Redis is: one server (or a proxy in front of some), or a Cluster reached through seed nodes. */
export type RedisTarget = { url: string } | { clusterNodes: string[] };

/** Both kinds answer the same commands, `defineCommand` scripts included. */
export type RedisClient = Redis | Cluster;

/** Waits between reconnection attempts: 50 ms, doubling, never more than 1 s, for ever. */
const backoff = (attempt: number) => Math.min(50 * 2 ** attempt, 1000);

/*
 * A call made while Redis is away fails at once (no offline queue), and one
 * already sent gives up after 2 s: long enough that a busy process, whose timers
 * run late, does not take its own lag for a hung Redis. So a fan's call answers
 * Unavailable instead of hanging, and nothing piles up in memory during an
 * outage. Calls made in the same tick go out in one write (auto-pipelining).
 */
export const commandTimeoutMs = 2_000;

/**
 * Calls `onTimeout` once `ms` have passed and the event loop has then read its
 * sockets once: the loop runs expired timers before it reads, so after a turn
 * longer than the timeout (a burst of calls being set up) a plain timer gives
 * up on an answer that has arrived and waits unread, and a healthy Redis is
 * taken for a hung one. The callers' own timeouts are timed this way; the
 * client's (ioredis `commandTimeout`, which counts from the write and cannot be
 * timed so) is only the backstop, at twice the length.
 */
export function timeoutAfterIo(ms: number, onTimeout: () => void): { clear(): void } {
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => (immediate = setImmediate(onTimeout)), ms);
  return {
    clear() {
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
  };
}

const perConnection = {
  commandTimeout: 2 * commandTimeoutMs,
  maxRetriesPerRequest: 1,
  connectTimeout: 1000,
} satisfies RedisOptions;

/** A client for the target, connecting (and reconnecting) on its own; wait for it with waitReady. */
export function connectRedis(target: RedisTarget): RedisClient {
  const client =
    "url" in target
      ? new Redis(target.url, { ...perConnection, enableOfflineQueue: false, enableAutoPipelining: true, retryStrategy: backoff })
      : new Cluster(target.clusterNodes, {
          // ioredis forces an offline queue on each node's connection; the Cluster's own decides.
          redisOptions: perConnection,
          enableOfflineQueue: false,
          enableAutoPipelining: true,
          clusterRetryStrategy: backoff,
          // A call for a master that is away fails at once, as on one server, instead of being tried
          // again every 100 ms up to 16 times (1.6 s) without ever reaching the command timeout.
          retryDelayOnFailover: 0,
          // Without it a node that restarts is only found again at the next slots refresh (5 s).
          clusterNodeRetryStrategy: backoff,
          // A cluster that is down or resharding fails the call at once too, instead of after 16 retries.
          retryDelayOnClusterDown: 0,
          retryDelayOnTryAgain: 0,
        });
  client.on("error", () => {}); // reconnection is automatic; the failed calls report the outage
  return client;
}

export function isReady(client: RedisClient): boolean {
  return client.status === "ready";
}

/** True once the client is ready (a Cluster: every slot served), false if timeoutMs passes first. */
export function waitReady(client: RedisClient, timeoutMs: number): Promise<boolean> {
  if (isReady(client)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const ready = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      client.off("ready", ready);
      resolve(false);
    }, timeoutMs);
    client.once("ready", ready);
  });
}
