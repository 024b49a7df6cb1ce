import { Repeating } from "../platform/background.js";
import type { SaleDraw } from "./draws.js";
import type { Rooms } from "./rooms.js";
import type { Policy, QueueStore, RoomSettings, TickInput, TickResult } from "./store.js";
import type { SupplySource } from "./supply.js";
import { logger } from "../platform/log.js";

const queueLog = logger("queue");

/** How old a supply reading may be and still let the line move while the concert service does not answer. */
const lastKnownSupplyMaxAgeMs = 10_000;

/** Most entries one store step moves (admitted, expired, abandoned each): on Redis, a step of 1,000 admissions is one script of about 10–20 ms. */
const defaultBatch = 1_000;

export interface AdmissionWorkerOptions {
  tickMs: number;
  /** Most entries one store step moves; a tick takes as many steps as its room needs. */
  batch?: number;
  clock?: () => number;
}

/**
 * Moves every waiting room along: each tick ends run-out sessions, drops
 * abandoned places and admits from the head, following supply, as many as the
 * room may take (room in max_active, within rate_per_minute, the backlog
 * waiting). Every instance of the queue service runs one; each store step is
 * atomic, so together they never admit more than max_active.
 *
 * The rooms and their settings come from PostgreSQL at every tick and go into
 * the store's tick, so a store that lost its data (Redis restarted empty) has
 * every room moving again, paused ones still paused, after one tick.
 */
export class AdmissionWorker {
  readonly #loop: Repeating;
  readonly #clock: () => number;
  /** The rooms as last read, for ticks while PostgreSQL does not answer (settings only change through it). */
  #lastRooms: Map<string, RoomSettings> | undefined;
  /** Rooms moved now on a supply change, outside the ticks. */
  readonly #moving = new Set<Promise<void>>();
  #stopped = false;

  constructor(
    private readonly store: QueueStore,
    private readonly rooms: Rooms,
    private readonly supply: SupplySource,
    private readonly defaults: Policy,
    private readonly options: AdmissionWorkerOptions,
    private readonly draw?: SaleDraw,
  ) {
    this.#clock = options.clock ?? Date.now;
    this.#loop = new Repeating("queue admission", options.tickMs, () => this.tick());
  }

  start() {
    this.#loop.start();
  }

  /** Stops the ticks and waits for any room still being moved, so nothing changes the store after it closes. */
  async stop() {
    this.#stopped = true;
    await this.#loop.stop();
    await Promise.allSettled(this.#moving);
  }

  /** One pass over every room. */
  async tick(): Promise<void> {
    const rooms = await this.#rooms();
    if ((await this.store.markLife()) && rooms.size > 0) {
      queueLog.warn(
        `the waiting-room store is empty (it lost its data, or is new): ${rooms.size} rooms are restored from PostgreSQL; ` +
          "places that were in it are lost, and their fans are told to enter again",
      );
    }
    for (const [concertId, settings] of rooms) {
      try {
        await this.#tickRoom(concertId, settings);
      } catch (error) {
        this.#loop.report(error);
      }
    }
  }

  /** Seats came back: read the concert's supply afresh and move its line now. */
  async supplyChanged(concertId: string) {
    if (this.#stopped) return; // shutting down: the next instance's ticks move it
    this.supply.forget(concertId);
    const moving = (async () => this.#tickRoom(concertId, await this.rooms.get(concertId)))();
    this.#moving.add(moving);
    try {
      await moving;
    } finally {
      this.#moving.delete(moving);
    }
  }

  async #rooms(): Promise<Map<string, RoomSettings>> {
    try {
      return (this.#lastRooms = await this.rooms.all());
    } catch (error) {
      if (!this.#lastRooms) throw error;
      this.#loop.report(error);
      return this.#lastRooms;
    }
  }

  async #tickRoom(concertId: string, settings: RoomSettings) {
    // A tick waits at most one tick's length for the supply, then goes on with the last one known,
    // if that is recent: while the concert service is down for longer, the line waits.
    const supply = await this.supply.current(concertId, this.options.tickMs, lastKnownSupplyMaxAgeMs);
    const { sale } = supply;
    // Sold out when every seat is SOLD; open again when seats came back (a booking cancelled), unless the room has closed.
    const soldOut = supply.total > 0 && supply.sold === supply.total;
    if (soldOut && !settings.soldOut) settings = await this.rooms.change(concertId, { soldOut: true });
    else if (settings.soldOut && !soldOut && supply.available > 0 && !sale.cancelled && !settings.closed) settings = await this.rooms.change(concertId, { soldOut: false });
    // The sale's end closes the room for good: the line is told, and nobody enters any more.
    // A draft's times may still change (its room is listed once a policy is set early): the room is left alone until it is published.
    if (!sale.published) return;
    if ((sale.cancelled || this.#clock() >= sale.saleEndsAt) && !settings.closed) settings = await this.rooms.change(concertId, { closed: true });
    const input = (): TickInput => ({
      now: this.#clock(),
      saleOpensAt: sale.saleOpensAt,
      supplyOpen: supply.available > 0,
      batch: this.options.batch ?? defaultBatch,
      settings,
      stalledAfterMs: Math.max(5_000, 5 * this.options.tickMs),
    });
    // The sale has opened on a frozen pre-queue: draw it, then admit in the same tick.
    if ((await this.#steps(concertId, input)).drawPending && this.draw && (await this.draw.run(concertId))) await this.#steps(concertId, input);
  }

  /**
   * One room's tick as store steps, so that a tick admits in proportion to the
   * backlog while each step stays short: a step is one atomic store call (on
   * Redis one script, and Redis runs nothing else meanwhile) that moves at most
   * `batch` entries of each kind. A step that moved a full batch may have left
   * more (fans waiting with room for them, sessions run out, silent places), so
   * another follows. Each step reads max_active and the rate afresh, so steps
   * of several instances interleaved stay within both. A copy of the settings
   * just restored admits from the next tick on, and a pre-queue waiting for its
   * draw not at all: either ends the steps. So does one tick's length spent, so
   * that one room's backlog does not hold the other rooms up; the next tick
   * goes on with it. Returns the last step's result.
   */
  async #steps(concertId: string, input: () => TickInput): Promise<TickResult> {
    const until = performance.now() + this.options.tickMs;
    for (;;) {
      const step = input();
      const moved = await this.store.tick(concertId, this.defaults, step);
      const full = Math.max(moved.admitted, moved.expired, moved.abandoned) >= step.batch;
      if (!full || moved.restored || moved.drawPending || this.#stopped || performance.now() >= until) return moved;
    }
  }
}
