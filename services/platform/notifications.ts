import pg from "pg";
import { logger, why } from "./log.js";

export interface ChannelHandlers {
  /** A notification's payload. */
  onNotify(payload: string): void;
  /** The listening connection came up (true) or went down (false): what was heard before may be incomplete. */
  onListening(listening: boolean): void;
}

export interface Listening {
  close(): Promise<void>;
}

/**
 * Keeps one connection LISTENing on a PostgreSQL channel, and reconnects after
 * a drop. Notifications sent while it was down are lost, which is why a
 * caller hears onListening(false) and then onListening(true) again.
 */
export function listenTo(url: string, channel: string, handlers: ChannelHandlers, retryMs = 1_000, heartbeatMs = 5_000): Listening {
  let client: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  // A connection that died without a word (a partition, a failover) would leave caches trusting a
  // silence: a query every few seconds, bounded in time, proves it alive or ends it.
  const heartbeat = setInterval(() => {
    const live = client;
    if (!live) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("no answer")), heartbeatMs)));
    Promise.race([live.query("select 1"), late])
      .catch(() => live.end().catch(() => {}))
      .finally(() => clearTimeout(timer));
  }, heartbeatMs);
  heartbeat.unref();

  const down = () => {
    if (client) handlers.onListening(false);
    client = undefined;
    if (!closed) retry = setTimeout(connect, retryMs);
  };
  async function connect() {
    const next = new pg.Client({ connectionString: url, keepAlive: true });
    next.on("notification", (message) => message.channel === channel && handlers.onNotify(message.payload ?? ""));
    next.on("error", () => next.end().catch(() => {}));
    next.on("end", () => client === next && down());
    try {
      await next.connect();
      await next.query(`listen "${channel}"`);
    } catch (error) {
      logger("notifications").warn({ channel, error: why(error) }, `listening on ${channel} failed, retrying: ${why(error)}`);
      await next.end().catch(() => {});
      if (!closed) retry = setTimeout(connect, retryMs);
      return;
    }
    if (closed) return void (await next.end());
    client = next;
    handlers.onListening(true);
  }
  void connect();
  return {
    async close() {
      closed = true;
      clearTimeout(retry);
      clearInterval(heartbeat);
      const last = client;
      client = undefined;
      await last?.end();
    },
  };
}
