import type { Client } from "@connectrpc/connect";
import {
  QueueState,
  type QueueInternalService,
  type QueueService,
  type QueueStatus,
} from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { queueTokenHeader } from "../platform/access.js";
import { callDependency } from "../platform/clients.js";
import { shutdownError } from "../platform/host.js";
import { outsideTrace } from "../platform/tracing.js";

export interface WatchUpdate {
  status: QueueStatus;
  heartbeat: boolean;
}

export interface QueueWatchOptions {
  /** How often each concert's watched statuses are refreshed (one batched call per concert). */
  refreshMs: number;
  /** Longest silence before a heartbeat. */
  heartbeatMs: number;
}

const finalStates = new Set([QueueState.ADMITTED, QueueState.EXPIRED, QueueState.LEFT, QueueState.COMPLETED, QueueState.SOLD_OUT, QueueState.CLOSED]);
const batchSize = 1_000;

/** One open watch stream: its token, what it was last told, and where the next update waits. */
class Watcher {
  lastSentAt = Date.now();
  #pending: WatchUpdate | undefined;
  #wake: (() => void) | undefined;
  readonly #onAbort = () => this.#wake?.();

  constructor(
    readonly queueToken: string,
    public last: QueueStatus,
    private readonly signal: AbortSignal,
  ) {
    signal.addEventListener("abort", this.#onAbort);
  }

  /** Keeps only the newest update: a slow reader skips to the present instead of queueing history. */
  deliver(update: WatchUpdate) {
    // An unread change already says everything a heartbeat would.
    if (update.heartbeat && this.#pending && !this.#pending.heartbeat) return;
    this.#pending = update;
    this.last = update.status;
    this.lastSentAt = Date.now();
    this.#wake?.();
  }

  /** The next update, or undefined once the stream is cancelled. */
  async next(): Promise<WatchUpdate | undefined> {
    while (!this.#pending && !this.signal.aborted) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    const update = this.#pending;
    this.#pending = undefined;
    return this.signal.aborted ? undefined : update;
  }

  dispose() {
    this.signal.removeEventListener("abort", this.#onAbort);
  }
}

/**
 * The coordinator's watch streams, grouped by concert. Each concert with open
 * streams is refreshed by one batched GetQueueStatuses call per interval (per
 * 1,000 streams), however many fans watch; that call also keeps the watched
 * places from being abandoned. A stream hears only changes, and a heartbeat
 * when it has heard nothing for a while.
 */
export class QueueWatch {
  readonly #rooms = new Map<string, Set<Watcher>>();
  #timer: NodeJS.Timeout | undefined;
  #refreshing = false;

  constructor(
    private readonly queue: Client<typeof QueueService>,
    private readonly queueInternal: Client<typeof QueueInternalService>,
    private readonly options: QueueWatchOptions,
  ) {}

  /** Number of open streams, for tests and stats. */
  get size(): number {
    let size = 0;
    for (const watchers of this.#rooms.values()) size += watchers.size;
    return size;
  }

  /**
   * The status now, then every change, until a final state or until `signal`
   * aborts. The server's shutdown ends the watch with its Unavailable error
   * (the fan's place outlives this process, and the client should come back
   * for it); a caller's own cancel ends it quietly.
   */
  async *watch(queueToken: string, signal: AbortSignal): AsyncGenerator<WatchUpdate> {
    let status: QueueStatus | undefined;
    try {
      ({ status } = await callDependency("queue", () => this.queue.getQueueStatus({}, { headers: { [queueTokenHeader]: queueToken }, signal })));
    } catch (error) {
      throw shutdownError(signal) ?? error;
    }
    yield { status: status!, heartbeat: false };
    if (finalStates.has(status!.state)) return;

    const watcher = new Watcher(queueToken, status!, signal);
    this.#add(status!.concertId, watcher);
    try {
      for (;;) {
        const update = await watcher.next();
        if (!update) {
          const shutdown = shutdownError(signal);
          if (shutdown) throw shutdown;
          return;
        }
        yield update;
        if (finalStates.has(update.status.state)) return;
      }
    } finally {
      watcher.dispose();
      this.#remove(status!.concertId, watcher);
    }
  }

  close() {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #add(concertId: string, watcher: Watcher) {
    let watchers = this.#rooms.get(concertId);
    if (!watchers) this.#rooms.set(concertId, (watchers = new Set()));
    watchers.add(watcher);
    // Shared by every watcher: not in the trace of the one that happened to start it.
    this.#timer ??= outsideTrace(() => setInterval(() => void this.#refresh(), this.options.refreshMs));
  }

  #remove(concertId: string, watcher: Watcher) {
    const watchers = this.#rooms.get(concertId);
    watchers?.delete(watcher);
    if (watchers?.size === 0) this.#rooms.delete(concertId);
    if (this.#rooms.size === 0) this.close();
  }

  async #refresh() {
    if (this.#refreshing) return; // the previous round is still out; skip rather than pile up
    this.#refreshing = true;
    try {
      await Promise.all([...this.#rooms].map(([concertId, watchers]) => this.#refreshRoom(concertId, [...watchers])));
    } finally {
      this.#refreshing = false;
    }
  }

  async #refreshRoom(concertId: string, watchers: Watcher[]) {
    for (let start = 0; start < watchers.length; start += batchSize) {
      const batch = watchers.slice(start, start + batchSize);
      let statuses: QueueStatus[] | undefined;
      try {
        ({ statuses } = await this.queueInternal.getQueueStatuses({ concertId, queueTokens: batch.map((w) => w.queueToken) }));
      } catch {
        statuses = undefined; // the queue is unreachable: streams keep their last status and their heartbeats
      }
      const now = Date.now();
      batch.forEach((watcher, i) => {
        const status = statuses?.[i];
        if (status && status.state !== QueueState.UNSPECIFIED && changed(watcher.last, status)) {
          watcher.deliver({ status, heartbeat: false });
        } else if (now - watcher.lastSentAt >= this.options.heartbeatMs - this.options.refreshMs / 2) {
          watcher.deliver({ status: watcher.last, heartbeat: true });
        }
      });
    }
  }
}

/** A change worth telling the fan: state, place, reason (paused, resumed), session end, or the estimate by a whole second. */
function changed(before: QueueStatus, after: QueueStatus): boolean {
  const seconds = (value: { seconds: bigint } | undefined) => (value ? value.seconds : -1n);
  return (
    before.state !== after.state ||
    before.position !== after.position ||
    before.reason !== after.reason ||
    seconds(before.admittedUntil) !== seconds(after.admittedUntil) ||
    seconds(before.estimatedWait) !== seconds(after.estimatedWait)
  );
}
