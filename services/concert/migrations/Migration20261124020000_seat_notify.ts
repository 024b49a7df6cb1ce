import { Migration } from "@mikro-orm/migrations";

/**
 * Every statement that changes seats notifies `concert_seats` with each date it
 * touched, whoever runs it, so every concert instance can drop its cached seat
 * map for that date.
 */
export class Migration20261124020000_seat_notify extends Migration {
  override name = "Migration20261124020000_seat_notify";

  override up(): void {
    this.addSql(`create function "concert"."seat_seat_changed_fn"() returns trigger language plpgsql as $$
      begin
        perform pg_notify('concert_seats', changed.schedule_id::text) from (select distinct schedule_id from new_seats) changed;
        return null;
      end $$;`);
    this.addSql(`create trigger "seat_changed" after update on "concert"."seat" referencing new table as new_seats
      for each statement execute function "concert"."seat_seat_changed_fn"();`);
  }

  override down(): void {
    this.addSql(`drop trigger if exists "seat_changed" on "concert"."seat";`);
    this.addSql(`drop function if exists "concert"."seat_seat_changed_fn"();`);
  }
}
