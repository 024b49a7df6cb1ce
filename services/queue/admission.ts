import type { Policy, QueueStore } from "./store.js";
import type { SupplySource } from "./supply.js";

export interface AdmissionWorkerOptions {
  tickMs: number;
  /** Most entries one tick moves per step. */
  batch?: number;
  clock?: () => number;
}

/**
 * Moves every waiting room along: each tick ends run-out sessions, drops
 * abandoned places and admits from the head, following supply. Every instance
 * of the queue service runs one; the store's tick is atomic, so together they
 * never admit more than max_active.
 */
export class AdmissionWorker {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #lastError = 0;
  readonly #clock: () => number;

  constructor(
    private readonly store: QueueStore,
    private readonly supply: SupplySource,
    private readonly defaults: Policy,
    private readonly options: AdmissionWorkerOptions,
  ) {
    this.#clock = options.clock ?? Date.now;
  }

  start() {
    this.#stopped = false;
    this.#schedule();
  }

  async stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** One pass over every room. */
  async tick(): Promise<void> {
    for (const concertId of await this.store.rooms()) {
      try {
        await this.#tickRoom(concertId);
      } catch (error) {
        this.#report(error);
      }
    }
  }

  async #tickRoom(concertId: string) {
    const supply = await this.supply.of(concertId);
    if (supply.total > 0 && supply.sold === supply.total) await this.store.markSoldOut(concertId);
    await this.store.tick(concertId, this.defaults, {
      now: this.#clock(),
      supplyOpen: supply.available > 0,
      batch: this.options.batch ?? 1_000,
    });
  }

  #schedule() {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.tick()
        .catch((error: unknown) => this.#report(error))
        .finally(() => this.#schedule());
    }, this.options.tickMs);
  }

  /** Logs at most one failure a minute: a store that is down would otherwise flood the log. */
  #report(error: unknown) {
    const now = Date.now();
    if (now - this.#lastError < 60_000) return;
    this.#lastError = now;
    console.error("queue admission:", error instanceof Error ? error.message : error);
  }
}
