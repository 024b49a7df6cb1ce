import type { Client } from "@connectrpc/connect";
import { LockMode, UniqueConstraintViolationException, type EntityManager, type InferEntity } from "@mikro-orm/postgresql";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import type { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import type { QueueInternalService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { callDependency } from "../platform/clients.js";
import { DependencyDown, NotFound, Reason, reasonOf, Refused } from "../platform/errors.js";
import { Reservation, type ReservationState } from "./reservation.entity.js";

export type ReservationRecord = InferEntity<typeof Reservation>;

/** A reservation as its owner sees it: a HELD reservation past expires_at reads EXPIRED. */
export function stateNow(reservation: { state: ReservationState; expiresAt: Date }, now = Date.now()): ReservationState {
  return reservation.state === "HELD" && reservation.expiresAt.getTime() <= now ? "EXPIRED" : reservation.state;
}

export interface HoldRequest {
  userId: string;
  /** The concert the fan was admitted to. */
  concertId: string;
  scheduleId: string;
  seatNumbers: number[];
}

/**
 * Seat holds, the story of the seed's temporary assignment: hold seats for a
 * few minutes, give them back, or turn them into a sale. The seats themselves
 * change only in the concert service, where one conditional update decides
 * every race; this service keeps the fan's record and the one-hold-per-date rule.
 */
export class Holds {
  constructor(
    private readonly concerts: Client<typeof ConcertInternalService>,
    private readonly queue: Client<typeof QueueInternalService>,
    private readonly holdMs: number,
  ) {}

  async hold(em: EntityManager, request: HoldRequest): Promise<ReservationRecord> {
    // The seats first, under a new id: a crash before the record is written leaves
    // a hold that simply runs out, never a record without seats.
    const id = randomUUID();
    const held = await callDependency("concert", () =>
      this.concerts.holdSeats({ ...request, reservationId: id, holdMs: BigInt(this.holdMs) }),
    ).catch(async (error: unknown) => {
      // Cut off (deadline, outage): the seats may have been held all the same, for a reservation
      // that will never be written. Give them back now rather than when the hold runs out.
      if (error instanceof DependencyDown) await this.#giveBack([id]);
      // Refused seats the fan holds already (a retry of a hold whose answer was lost, say): name that hold.
      if (reasonOf(error) === Reason.SEAT_UNAVAILABLE) {
        const live = await this.#liveHold(em, request.userId, request.scheduleId);
        if (live && request.seatNumbers.some((n) => live.seat_numbers.includes(n))) throw this.#limitReached(live.id);
      }
      throw error;
    });
    const reservation: ReservationRecord = {
      id,
      userId: request.userId,
      concertId: request.concertId,
      scheduleId: request.scheduleId,
      seatNumbers: held.seats.map((seat) => seat.number),
      amount: held.seats.reduce((sum, seat) => sum + Number(seat.price), 0),
      state: "HELD",
      expiresAt: new Date(timestampMs(held.heldUntil!)),
      createdAt: new Date(),
      paymentId: null,
    };
    try {
      await this.#record(em, reservation);
      return reservation;
    } catch (error) {
      await this.#giveBack([id]);
      throw error;
    }
  }

  /**
   * Writes the record in one statement. The one-hold-per-date index refuses it
   * while the fan holds seats on the date; a hold of theirs that has run out
   * but is not tidied yet is marked EXPIRED first, and the write tried again.
   */
  async #record(em: EntityManager, reservation: ReservationRecord, retried = false): Promise<void> {
    try {
      await em.insert(Reservation, reservation);
    } catch (error) {
      if (!(error instanceof UniqueConstraintViolationException)) throw error;
      const { userId, scheduleId } = reservation;
      const stale = await em.nativeUpdate(Reservation, { userId, scheduleId, state: "HELD", expiresAt: { $lte: new Date() } }, { state: "EXPIRED" });
      if (stale > 0 && !retried) return this.#record(em, reservation, true);
      throw this.#limitReached((await this.#liveHold(em, userId, scheduleId))?.id);
    }
  }

  async get(em: EntityManager, userId: string, reservationId: string): Promise<ReservationRecord> {
    const reservation = await em.findOne(Reservation, { id: reservationId, userId });
    // Someone else's reservation is as absent as one that does not exist.
    if (!reservation) throw new NotFound(Reason.RESERVATION_NOT_FOUND, `no reservation ${reservationId}`);
    return reservation;
  }

  /** Gives a live hold's seats back at once; an ended hold is returned as it is. */
  async release(em: EntityManager, userId: string, reservationId: string): Promise<ReservationRecord> {
    const released = await em.transactional(async (tx) => {
      const reservation = await this.#locked(tx, userId, reservationId);
      const state = stateNow(reservation);
      if (state === "CONFIRMED") throw new Refused(Reason.RESERVATION_CONFIRMED, "a paid reservation cannot be released");
      if (state !== "HELD") return { reservation, changed: false };
      await callDependency("concert", () => this.concerts.releaseSeats({ reservationIds: [reservation.id] }));
      reservation.state = "RELEASED";
      return { reservation, changed: true };
    });
    if (released.changed) await this.#announce([released.reservation.concertId]);
    return released.reservation;
  }

  /**
   * Turns a live hold into a sale for a payment. Idempotent per payment; the
   * concert service's answer decides, so a retry after a crash between the
   * sale and this record still confirms.
   */
  async confirm(em: EntityManager, userId: string, reservationId: string, paymentId: string): Promise<ReservationRecord> {
    return em.transactional(async (tx) => {
      const reservation = await this.#locked(tx, userId, reservationId);
      if (reservation.state === "CONFIRMED") {
        if (reservation.paymentId === paymentId) return reservation;
        throw new Refused(Reason.RESERVATION_CONFIRMED, "the reservation is already paid for by another payment");
      }
      if (reservation.state === "RELEASED") throw new Refused(Reason.HOLD_RELEASED, "the hold was released; its seats are free again");
      await callDependency("concert", () =>
        this.concerts.sellSeats({ reservationId, scheduleId: reservation.scheduleId, seatCount: reservation.seatNumbers.length }),
      );
      reservation.state = "CONFIRMED";
      reservation.paymentId = paymentId;
      return reservation;
    });
  }

  /**
   * Tidies holds that ran out: marks them EXPIRED, frees their seats in the
   * concert service, and tells the queue the concerts have seats again.
   * Availability never waited for this: the clock already decided it.
   */
  async sweep(em: EntityManager, batch = 500): Promise<number> {
    const expired: { id: string; concert_id: string }[] = await em.getConnection().execute(
      `update "reservation"."reservation" set state = 'EXPIRED'
        where id in (select id from "reservation"."reservation" where state = 'HELD' and expires_at <= now()
                      order by expires_at limit ? for update skip locked)
        returning id, concert_id`,
      [batch],
    );
    if (expired.length === 0) return 0;
    await this.#giveBack(expired.map((row) => row.id));
    await this.#announce(expired.map((row) => row.concert_id));
    return expired.length;
  }

  #limitReached(reservationId: string | undefined) {
    return new Refused(
      Reason.HOLD_LIMIT_REACHED,
      "you already hold seats on this date; pay for them or release them first",
      reservationId ? { reservation_id: reservationId } : undefined,
    );
  }

  /** The fan's live hold on the date, if any: one indexed read (it runs for every refused hold, so no entity is built). */
  async #liveHold(em: EntityManager, userId: string, scheduleId: string): Promise<{ id: string; seat_numbers: number[] } | undefined> {
    const [live] = await em
      .getConnection()
      .execute<{ id: string; seat_numbers: number[] }[]>(
        `select id, seat_numbers from "reservation"."reservation" where user_id = ? and schedule_id = ? and state = 'HELD' and expires_at > now()`,
        [userId, scheduleId],
      );
    return live;
  }

  async #locked(tx: EntityManager, userId: string, reservationId: string) {
    const reservation = await tx.findOne(Reservation, { id: reservationId, userId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!reservation) throw new NotFound(Reason.RESERVATION_NOT_FOUND, `no reservation ${reservationId}`);
    return reservation;
  }

  async #giveBack(reservationIds: string[]) {
    await callDependency("concert", () => this.concerts.releaseSeats({ reservationIds })).catch((error: unknown) => {
      // The seats are free by the clock anyway when the hold runs out; this only tidies early.
      console.error("reservation: could not give seats back:", error instanceof Error ? error.message : error);
    });
  }

  /** Best effort: the queue re-reads supply within a second anyway. */
  async #announce(concertIds: string[]) {
    for (const concertId of new Set(concertIds)) {
      await this.queue.supplyChanged({ concertId }).catch(() => {});
    }
  }
}
