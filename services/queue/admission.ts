import { Repeating } from "../platform/background.js";
import type { Policy, QueueStore } from "./store.js";
import type { SupplySource } from "./supply.js";

/** How old a supply reading may be and still let the line move while the concert service does not answer. */
const lastKnownSupplyMaxAgeMs = 10_000;

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
  readonly #loop: Repeating;
  readonly #clock: () => number;

  constructor(
    private readonly store: QueueStore,
    private readonly supply: SupplySource,
    private readonly defaults: Policy,
    private readonly options: AdmissionWorkerOptions,
  ) {
    this.#clock = options.clock ?? Date.now;
    this.#loop = new Repeating("queue admission", options.tickMs, () => this.tick());
  }

  start() {
    this.#loop.start();
  }

  stop() {
    return this.#loop.stop();
  }

  /** One pass over every room. */
  async tick(): Promise<void> {
    for (const concertId of await this.store.rooms()) {
      try {
        await this.#tickRoom(concertId);
      } catch (error) {
        this.#loop.report(error);
      }
    }
  }

  /** Seats came back: read the concert's supply afresh and move its line now. */
  async supplyChanged(concertId: string) {
    this.supply.forget(concertId);
    await this.#tickRoom(concertId);
  }

  async #tickRoom(concertId: string) {
    // A tick waits at most one tick's length for the supply, then goes on with the last one known,
    // if that is recent: while the concert service is down for longer, the line waits.
    const supply = await this.supply.current(concertId, this.options.tickMs, lastKnownSupplyMaxAgeMs);
    if (supply.total > 0 && supply.sold === supply.total) await this.store.markSoldOut(concertId);
    await this.store.tick(concertId, this.defaults, {
      now: this.#clock(),
      supplyOpen: supply.available > 0,
      batch: this.options.batch ?? 1_000,
    });
  }
}
