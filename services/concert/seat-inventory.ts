import type { EntityManager } from "@mikro-orm/postgresql";
import { NotFound, Reason, Refused } from "../platform/errors.js";

/**
 * A seat's state as of now, by the database's clock: a hold past its
 * held_until is AVAILABLE whether or not anything has tidied it up yet.
 * (A HELD seat without held_until stays held.)
 */
export const seatStateNow = `(case when seat.state = 'HELD' and seat.held_until <= now() then 'AVAILABLE' else seat.state end)`;

/** Longest a hold waits for another hold's transaction on the same seats. */
const lockTimeoutMs = 2_000;

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
 * one conditional statement, so the database decides every race.
 */
export class SeatInventory {
  /**
   * Holds all the seats or none. The free seats are locked in seat order, so
   * concurrent holds never deadlock; a hold that meets a seat another hold is
   * taking waits for that one short transaction, then sees the seat taken (or
   * free again, if the other hold failed) — so of any number of concurrent holds
   * on a seat exactly one wins, and a loser's brief lock never makes everyone
   * lose. The wait is bounded by lock_timeout.
   */
  async hold(em: EntityManager, hold: SeatHold): Promise<HeldSeats> {
    try {
      return await this.#hold(em, hold);
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
    return em.transactional(async (tx) => {
      const connection = tx.getConnection();
      await connection.execute(`set local lock_timeout = '${lockTimeoutMs}ms'`, [], "run", tx.getTransactionContext());
      const [schedule] = await connection.execute<{ concert_id: string; seat_count: number }[]>(
        `select concert_id, seat_count from "concert"."schedule" where id = ?`,
        [hold.scheduleId],
        "all",
        tx.getTransactionContext(),
      );
      if (!schedule) throw new NotFound(Reason.SCHEDULE_NOT_FOUND, `no concert date with id ${hold.scheduleId}`);
      if (schedule.concert_id !== hold.concertId) throw new Refused(Reason.NOT_ADMITTED, "that date belongs to another concert");
      const missing = hold.seatNumbers.filter((n) => n > schedule.seat_count);
      if (missing.length > 0) {
        throw new NotFound(Reason.SEAT_NOT_FOUND, `that date has seats 1..${schedule.seat_count}; no seat ${missing.join(", ")}`, {
          seats: missing.join(","),
        });
      }
      const held = await connection.execute<{ number: number; price: string; held_until: Date }[]>(
        `with free as (
           select schedule_id, number from "concert"."seat"
           where schedule_id = ? and number = any(?::int[])
             and (state = 'AVAILABLE' or (state = 'HELD' and held_until <= now()))
           order by number
           for update)
         update "concert"."seat" seat
            set state = 'HELD', reservation_id = ?, held_until = now() + make_interval(secs => ? / 1000.0)
           from free where seat.schedule_id = free.schedule_id and seat.number = free.number
         returning seat.number, seat.price, seat.held_until`,
        [hold.scheduleId, `{${hold.seatNumbers.join(",")}}`, hold.reservationId, hold.holdMs],
        "all",
        tx.getTransactionContext(),
      );
      if (held.length < hold.seatNumbers.length) {
        const taken = hold.seatNumbers.filter((n) => !held.some((row) => row.number === n));
        // Throwing rolls the seats this statement did take back: all or none.
        throw new Refused(Reason.SEAT_UNAVAILABLE, `seat ${taken.join(", ")} is already taken`, { seats: taken.join(",") });
      }
      return {
        seats: held.map((row) => ({ number: row.number, price: Number(row.price) })).sort((a, b) => a.number - b.number),
        heldUntil: new Date(held[0]!.held_until),
      };
    });
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
  }

  /** Frees seats still held for these reservations; returns how many and for which concerts. */
  async release(em: EntityManager, reservationIds: string[]): Promise<{ released: number; concertIds: string[] }> {
    if (reservationIds.length === 0) return { released: 0, concertIds: [] };
    const rows = await em.getConnection().execute<{ concert_id: string }[]>(
      `update "concert"."seat" seat set state = 'AVAILABLE', reservation_id = null, held_until = null
         from "concert"."schedule" schedule
        where seat.reservation_id = any(?::uuid[]) and seat.state = 'HELD' and schedule.id = seat.schedule_id
        returning schedule.concert_id`,
      [`{${reservationIds.join(",")}}`],
    );
    return { released: rows.length, concertIds: [...new Set(rows.map((row) => row.concert_id))] };
  }
}
