import { defineEntity, p } from "@mikro-orm/postgresql";

export const reservationStates = ["HELD", "CONFIRMED", "RELEASED", "EXPIRED"] as const;
export type ReservationState = (typeof reservationStates)[number];

/**
 * A fan's hold on seats of one date, and the sale it becomes. The seats
 * themselves are the concert service's; this is the fan's record of them.
 */
export const Reservation = defineEntity({
  name: "Reservation",
  schema: "reservation",
  tableName: "reservation",
  indexes: [
    { name: "reservation_user_newest_index", properties: ["userId", "createdAt", "id"] },
    { name: "reservation_expiry_index", properties: ["expiresAt"], where: `"state" = 'HELD'` },
  ],
  uniques: [
    // At most one live hold per fan and date; stale HELD rows are expired before a new hold is written.
    { name: "reservation_one_hold_per_date", properties: ["userId", "scheduleId"], where: `"state" = 'HELD'` },
  ],
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    concertId: p.uuid(),
    scheduleId: p.uuid(),
    seatNumbers: p.json<number[]>(),
    amount: p.bigint("number"),
    state: p.enum(reservationStates),
    /** When the hold ends unless paid for, by the database's clock. */
    expiresAt: p.datetime(),
    createdAt: p.datetime().onCreate(() => new Date()),
    /** While CONFIRMED: the payment that bought the seats. */
    paymentId: p.uuid().nullable(),
  },
});
