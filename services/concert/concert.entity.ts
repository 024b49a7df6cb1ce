import { defineEntity, p } from "@mikro-orm/postgresql";
import { concertStatuses } from "./sale.js";

/** A show and its sale: when fans may queue, when they may buy, and how many seats each. */
export const Concert = defineEntity({
  name: "Concert",
  schema: "concert",
  tableName: "concert",
  properties: {
    id: p.uuid().primary(),
    title: p.string().length(200),
    venue: p.string().length(200),
    createdAt: p.datetime().onCreate(() => new Date()),
    status: p.enum(concertStatuses).default("PUBLISHED"),
    /** Whether ListConcerts shows it; an unlisted concert sells to those who have its id. */
    listed: p.boolean().default(true),
    prequeueOpensAt: p.datetime(),
    saleOpensAt: p.datetime(),
    /** Null: the sale ends when the last date starts. */
    saleClosesAt: p.datetime().nullable(),
    /** Most seats one fan may hold and own over all the dates. */
    seatLimit: p.integer().default(4),
    /** The secret (32 bytes, hex) that orders the pre-queue; told only by GetSale once the sale has opened. */
    seed: p.string().length(64).hidden().lazy(),
    /** SHA-256 (hex) of the seed's 32 bytes, public from the start. */
    seedCommitment: p.string().length(64),
    minPrice: p.bigint("number"),
    maxPrice: p.bigint("number"),
    /** The operator's id for an idempotent CreateConcert, and the SHA-256 of the request it came with. */
    requestId: p.string().length(100).nullable().unique(),
    requestHash: p.string().length(64).nullable(),
    cancelReason: p.string().length(500).nullable(),
    cancelledAt: p.datetime().nullable(),
    /** Fans may cancel a paid booking until this many seconds before its date starts. */
    cancelCutoffSeconds: p.integer().default(86400),
  },
});

/** One date of a concert, with its seats numbered 1..seatCount. */
export const Schedule = defineEntity({
  name: "Schedule",
  schema: "concert",
  tableName: "schedule",
  properties: {
    id: p.uuid().primary(),
    concert: () => p.manyToOne(Concert).index(),
    startsAt: p.datetime(),
    seatCount: p.integer(),
    /** Set when the organiser cancelled the date: nothing of it is held or sold any more. */
    cancelReason: p.string().length(500).nullable(),
    cancelledAt: p.datetime().nullable(),
  },
});

/**
 * A seat of a date: the one source of truth for what can be sold. Its hold
 * (reservation_id, held_until) is written by the same statements as the Hold
 * it belongs to, so the two never disagree.
 */
export const Seat = defineEntity({
  name: "Seat",
  schema: "concert",
  tableName: "seat",
  indexes: [
    { name: "seat_reservation_id_index", properties: ["reservationId"], where: `"reservation_id" is not null` },
    // The best-available chooser reads the seats of one tier of a date.
    { name: "seat_tier_index", properties: ["scheduleId", "tier"] },
  ],
  // Created by Migration20261124020000_seat_notify: every statement changing seats notifies
  // `concert_seats` with the dates it touched, so concert instances drop their cached seat maps.
  triggers: [
    {
      name: "seat_changed",
      timing: "after",
      events: ["update"],
      expression: `create trigger "seat_changed" after update on "concert"."seat" referencing new table as new_seats for each statement execute function "concert"."seat_seat_changed_fn"()`,
    },
  ],
  properties: {
    scheduleId: p.uuid().primary(),
    number: p.integer().primary(),
    price: p.bigint("number"),
    state: p.enum(["AVAILABLE", "HELD", "SOLD"] as const).default("AVAILABLE"),
    /** The hold (reservation) holding or having bought the seat. */
    reservationId: p.uuid().nullable(),
    /** A HELD seat is free again from this moment, whether or not anyone tidies it up. */
    heldUntil: p.datetime().nullable(),
    /** Where it is in the date's seat plan ("" names: a date without a plan, one section, row and tier). */
    section: p.string().length(50).default(""),
    rowLabel: p.string().length(50).default(""),
    /** Its row's place in the section, 1 = the front row. */
    rowPosition: p.integer().default(1),
    label: p.string().length(50).default(""),
    /** Its place in the row, 1 = the first seat listed: seats of one row with consecutive places are adjacent. */
    place: p.integer().default(0),
    tier: p.string().length(50).default(""),
  },
});

export const holdStates = ["HELD", "CONFIRMED", "RELEASED", "EXPIRED", "CANCELLED"] as const;
export type HoldState = (typeof holdStates)[number];

/**
 * A fan's hold on seats of one date, and the sale it becomes: the record behind
 * ReservationService (its id is the reservation id). It lives beside the seats
 * it holds, so holding, confirming, releasing and expiring each change both in
 * one statement.
 */
export const Hold = defineEntity({
  name: "Hold",
  schema: "concert",
  tableName: "hold",
  indexes: [
    { name: "hold_user_newest_index", properties: ["userId", "createdAt", "id"] },
    { name: "hold_expiry_index", properties: ["expiresAt"], where: `"state" = 'HELD'` },
    // The refund run's to-do list: bookings cancelled whose points are not back yet.
    { name: "hold_refund_due_index", properties: ["cancelledAt"], where: `"state" = 'CANCELLED' and "refunded_at" is null` },
  ],
  uniques: [
    // At most one live hold per fan and date; a HELD row past its end is marked EXPIRED before a new hold is written.
    { name: "hold_one_per_date", properties: ["userId", "scheduleId"], where: `"state" = 'HELD'` },
  ],
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    concertId: p.uuid(),
    scheduleId: p.uuid(),
    seatNumbers: p.json<number[]>(),
    amount: p.bigint("number"),
    state: p.enum(holdStates),
    /** When the hold ends unless paid for, by the database's clock (its seats' held_until). */
    expiresAt: p.datetime(),
    createdAt: p.datetime().onCreate(() => new Date()),
    /** While CONFIRMED: the payment that bought the seats. */
    paymentId: p.uuid().nullable(),
    /**
     * The seats whose tickets have been admitted at the door (tickets.ts): the scan marks them here, on the
     * hold row itself, so that any change to the booking conditional on this column meets every scan on the row.
     */
    usedSeats: p.array<number>().columnType("int[]").defaultRaw(`'{}'`),
    /** While CANCELLED: why (for the fan), when, and when its payment's points came back (null: a refund still to do). */
    cancelReason: p.string().length(500).nullable(),
    cancelledAt: p.datetime().nullable(),
    refundedAt: p.datetime().nullable(),
  },
});

/** A ticket's admission at the door: one per seat of a booking, written by the scan that marks the seat used on its hold. */
export const TicketScan = defineEntity({
  name: "TicketScan",
  schema: "concert",
  tableName: "ticket_scan",
  properties: {
    reservationId: p.uuid().primary(),
    seatNumber: p.integer().primary(),
    usedAt: p.datetime(),
    gate: p.string().length(100),
  },
});
