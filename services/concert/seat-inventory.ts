import type { EntityManager } from "@mikro-orm/postgresql";
import { NotFound, Reason, Refused } from "../platform/errors.js";
import type { SeatMaps } from "./seat-maps.js";

/**
 * A seat's state as of now, by the database's clock: a hold past its
 * held_until is AVAILABLE whether or not anything has tidied it up yet.
 * (A HELD seat without held_until stays held.)
 */
export const seatStateNow = `(case when seat.state = 'HELD' and seat.held_until <= now() then 'AVAILABLE' else seat.state end)`;

export interface HeldSeats {
  seats: { number: number; price: number }[];
  heldUntil: Date;
}

export interface SeatHold {
  scheduleId: string;
  concertId: string;
  seatNumbers: number[];
  reservationId: string;
  holdMs: number;
}

/**
 * Seat inventory: the only code that changes a seat's state. Every change is
 * one conditional statement, so the database decides every race. After each
 * change this instance's cached seat maps of the date are dropped at once
 * (other instances hear of it through the database's notification).
 */
export class SeatInventory {
  constructor(private readonly maps: SeatMaps) {}

  /**
   * Holds all the seats or none. The free seats are locked in seat order, so
   * concurrent holds never deadlock; a hold that meets a seat another hold is
   * taking waits for that one short transaction, then sees the seat taken (or
   * free again, if the other hold failed) — so of any number of concurrent holds
   * on a seat exactly one wins, and a loser's brief lock never makes everyone
   * lose. The wait is bounded by the concert pool's lock_timeout (2 s).
   */
  async hold(em: EntityManager, hold: SeatHold): Promise<HeldSeats> {
    try {
      const held = await this.#hold(em, hold);
      this.maps.forget([hold.scheduleId]);
      return held;
    } catch (error) {
      if ((error as { code?: unknown }).code === "55P03") {
        throw new Refused(Reason.SEAT_UNAVAILABLE, "those seats are being taken by someone else right now", {
          seats: hold.seatNumbers.join(","),
        });
      }
      throw error;
    }
  }

  async #hold(em: EntityManager, hold: SeatHold): Promise<HeldSeats> {
    // One statement, so one round trip and no transaction to open: lock the wanted seats that are
    // free now (in seat order), and take them only if every one of them is; otherwise touch none.
    const held = await em.getConnection().execute<{ number: number; price: string; held_until: Date }[]>(
      `with free as (
         select seat.schedule_id, seat.number from "concert"."seat" seat
          where seat.schedule_id = ? and seat.number = any(?::int[])
            and (seat.state = 'AVAILABLE' or (seat.state = 'HELD' and seat.held_until <= now()))
            and exists (select 1 from "concert"."schedule" schedule where schedule.id = seat.schedule_id and schedule.concert_id = ?)
          order by seat.number
          for update of seat)
       update "concert"."seat" seat
          set state = 'HELD', reservation_id = ?, held_until = now() + make_interval(secs => ? / 1000.0)
         from free
        where seat.schedule_id = free.schedule_id and seat.number = free.number
          and (select count(*) from free) = ?
       returning seat.number, seat.price, seat.held_until`,
      [hold.scheduleId, `{${hold.seatNumbers.join(",")}}`, hold.concertId, hold.reservationId, hold.holdMs, hold.seatNumbers.length],
    );
    if (held.length < hold.seatNumbers.length) throw await this.#whyNot(em, hold);
    return {
      seats: held.map((row) => ({ number: row.number, price: Number(row.price) })).sort((a, b) => a.number - b.number),
      heldUntil: new Date(held[0]!.held_until),
    };
  }

  /** Why a hold took nothing: no such date, another concert's date, no such seat, or seats taken. */
  async #whyNot(em: EntityManager, hold: SeatHold): Promise<Error> {
    const [schedule] = await em.getConnection().execute<{ concert_id: string; seat_count: number; taken: number[] | null }[]>(
      `select schedule.concert_id, schedule.seat_count,
              (select array_agg(seat.number order by seat.number) from "concert"."seat" seat
                where seat.schedule_id = schedule.id and seat.number = any(?::int[]) and ${seatStateNow} <> 'AVAILABLE') as taken
         from "concert"."schedule" schedule where schedule.id = ?`,
      [`{${hold.seatNumbers.join(",")}}`, hold.scheduleId],
    );
    if (!schedule) return new NotFound(Reason.SCHEDULE_NOT_FOUND, `no concert date with id ${hold.scheduleId}`);
    if (schedule.concert_id !== hold.concertId) return new Refused(Reason.NOT_ADMITTED, "that date belongs to another concert");
    const missing = hold.seatNumbers.filter((n) => n > schedule.seat_count);
    if (missing.length > 0) {
      return new NotFound(Reason.SEAT_NOT_FOUND, `that date has seats 1..${schedule.seat_count}; no seat ${missing.join(", ")}`, {
        seats: missing.join(","),
      });
    }
    // Seats that are free again by now were taken by a hold that has since failed: they count as taken too.
    const taken = schedule.taken?.length ? schedule.taken : hold.seatNumbers;
    return new Refused(Reason.SEAT_UNAVAILABLE, `seat ${taken.join(", ")} is already taken`, { seats: taken.join(",") });
  }

  /** Sells the reservation's seats while its hold is live, all or none; seats already sold to it count. */
  async sell(em: EntityManager, reservationId: string, scheduleId: string, seatCount: number): Promise<void> {
    await em.transactional(async (tx) => {
      const rows = await tx.getConnection().execute<{ number: number }[]>(
        `update "concert"."seat" set state = 'SOLD', held_until = null
          where schedule_id = ? and reservation_id = ?
            and (state = 'SOLD' or (state = 'HELD' and held_until > now()))
          returning number`,
        [scheduleId, reservationId],
        "all",
        tx.getTransactionContext(),
      );
      if (rows.length !== seatCount) throw new Refused(Reason.HOLD_EXPIRED, "the hold has ended; its seats are no longer held");
    });
    this.maps.forget([scheduleId]);
  }

  /** Frees seats still held for these reservations; returns how many and for which concerts. */
  async release(em: EntityManager, reservationIds: string[]): Promise<{ released: number; concertIds: string[] }> {
    if (reservationIds.length === 0) return { released: 0, concertIds: [] };
    const rows = await em.getConnection().execute<{ concert_id: string; schedule_id: string }[]>(
      `update "concert"."seat" seat set state = 'AVAILABLE', reservation_id = null, held_until = null
         from "concert"."schedule" schedule
        where seat.reservation_id = any(?::uuid[]) and seat.state = 'HELD' and schedule.id = seat.schedule_id
        returning schedule.concert_id, seat.schedule_id`,
      [`{${reservationIds.join(",")}}`],
    );
    this.maps.forget(new Set(rows.map((row) => row.schedule_id)));
    return { released: rows.length, concertIds: [...new Set(rows.map((row) => row.concert_id))] };
  }
}
