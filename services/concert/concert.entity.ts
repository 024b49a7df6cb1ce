import { defineEntity, p } from "@mikro-orm/postgresql";

/** A show on sale. */
export const Concert = defineEntity({
  name: "Concert",
  schema: "concert",
  tableName: "concert",
  properties: {
    id: p.uuid().primary(),
    title: p.string().length(200),
    venue: p.string().length(200),
    createdAt: p.datetime().onCreate(() => new Date()),
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
  },
});

/**
 * A seat of a date: the one source of truth for what can be sold. The concert
 * service owns seat inventory; the reservation service changes it only through
 * ConcertInternalService (hold, sell, release).
 */
export const Seat = defineEntity({
  name: "Seat",
  schema: "concert",
  tableName: "seat",
  indexes: [{ name: "seat_reservation_id_index", properties: ["reservationId"], where: `"reservation_id" is not null` }],
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
    /** The reservation holding or having bought the seat. */
    reservationId: p.uuid().nullable(),
    /** A HELD seat is free again from this moment, whether or not anyone tidies it up. */
    heldUntil: p.datetime().nullable(),
  },
});
