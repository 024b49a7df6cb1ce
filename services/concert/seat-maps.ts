import type { EntityManager } from "@mikro-orm/postgresql";
import { heldPastItsEnd } from "./holds.js";

export type SeatStateName = "AVAILABLE" | "HELD" | "SOLD";

export interface SeatRow {
  number: number;
  price: string;
  state: SeatStateName;
  /** While HELD: when the hold runs out, as ms since the epoch by the database's clock. */
  heldUntil: number | null;
  /** Where it is in the date's plan (concert.entity.ts). */
  section: string;
  rowLabel: string;
  rowPosition: number;
  label: string;
  place: number;
  tier: string;
}

export interface SeatMap {
  concertId: string;
  seats: SeatRow[];
  /** The database's clock minus this process's clock when the map was read. */
  clockSkewMs: number;
  /** The seats as last listed, good until the first hold in them runs out (this process's clock). */
  listing?: { until: number; seats: unknown[] };
}

/**
 * The seat maps of dates, as read from the database, kept while nothing has
 * changed them. Every statement that changes seats notifies `concert_seats`
 * (a trigger), and each concert instance drops that date's map when it hears
 * it; this instance's own changes drop it at once. A hold running out needs
 * no notification: a seat's state is worked out from the clock at every read.
 *
 * While the notifications may be incomplete (the listening connection is
 * down), nothing is cached and every read goes to the database.
 */
export class SeatMaps {
  readonly #maps = new Map<string, { at: number; map: Promise<SeatMap | undefined> }>();
  #caching: boolean;

  /**
   * `shared`: other processes change seats too, so caching waits for the listener.
   * `maxAgeMs`: a backstop; a map is read afresh at least this often whatever was heard.
   */
  constructor(
    shared: boolean,
    private readonly maxAgeMs = 5_000,
  ) {
    this.#caching = !shared;
  }

  /** The date's seat map, or undefined when there is no such date. */
  async get(em: EntityManager, scheduleId: string): Promise<SeatMap | undefined> {
    const now = Date.now();
    const cached = this.#maps.get(scheduleId);
    if (cached && now - cached.at < this.maxAgeMs) return cached.map;
    const loading = this.#load(em, scheduleId);
    if (!this.#caching) return loading;
    // Every read in the meantime shares this one; a change heard meanwhile drops it, and the next read loads afresh.
    const entry = { at: now, map: loading };
    this.#maps.set(scheduleId, entry);
    const drop = () => this.#maps.get(scheduleId) === entry && this.#maps.delete(scheduleId);
    loading.then((map) => map === undefined && drop(), drop);
    return loading;
  }

  /** The seats of these dates have changed. */
  forget(scheduleIds: Iterable<string>): void {
    for (const id of scheduleIds) this.#maps.delete(id);
  }

  /** Whether every change will be heard from now on (the listener is up); what was cached before is dropped either way. */
  setCaching(caching: boolean): void {
    this.#caching = caching;
    this.#maps.clear();
  }

  /**
   * The seats as an answer lists them, built once per map and reused until a
   * hold in it runs out: a crowd reading one date shares one list.
   */
  static listing<T>(map: SeatMap, now: number, build: (seat: SeatRow, state: SeatStateName) => T): T[] {
    if (map.listing && now < map.listing.until) return map.listing.seats as T[];
    let until = Infinity;
    const seats = map.seats.map((seat) => {
      const state = SeatMaps.stateNow(seat, map, now);
      if (state === "HELD" && seat.heldUntil !== null) until = Math.min(until, seat.heldUntil - map.clockSkewMs);
      return build(seat, state);
    });
    map.listing = { until, seats };
    return seats;
  }

  /** A seat's state now: a hold past its end is AVAILABLE. */
  static stateNow(seat: SeatRow, map: SeatMap, now = Date.now()): SeatStateName {
    return heldPastItsEnd(seat.state, seat.heldUntil, now + map.clockSkewMs) ? "AVAILABLE" : seat.state;
  }

  async #load(em: EntityManager, scheduleId: string): Promise<SeatMap | undefined> {
    const asked = Date.now();
    const rows = await em
      .getConnection()
      .execute<
        {
          concert_id: string;
          number: number;
          price: string;
          state: SeatStateName;
          held_until: string | Date | null;
          section: string;
          row_label: string;
          row_position: number;
          label: string;
          place: number;
          tier: string;
          db_now: string | Date;
        }[]
      >(
        `select schedule.concert_id, seat.number, seat.price, seat.state, seat.held_until,
                seat.section, seat.row_label, seat.row_position, seat.label, seat.place, seat.tier, now() as db_now
           from "concert"."schedule" schedule join "concert"."seat" seat on seat.schedule_id = schedule.id
          where schedule.id = ? order by seat.number`,
        [scheduleId],
      );
    // Every date has at least one seat, so no rows means no such date.
    if (rows.length === 0) return undefined;
    const answered = Date.now();
    return {
      concertId: rows[0]!.concert_id,
      seats: rows.map((row) => ({
        number: row.number,
        price: row.price,
        state: row.state,
        heldUntil: row.held_until === null ? null : new Date(row.held_until).getTime(),
        section: row.section,
        rowLabel: row.row_label,
        rowPosition: row.row_position,
        label: row.label,
        place: row.place,
        tier: row.tier,
      })),
      clockSkewMs: new Date(rows[0]!.db_now).getTime() - (asked + answered) / 2,
    };
  }
}
