import { Migration } from "@mikro-orm/migrations";

/** Seats remember which reservation holds them and until when, so availability is decided by the clock. */
export class Migration20261124010000_seat_holds extends Migration {
  override name = "Migration20261124010000_seat_holds";

  override up(): void {
    this.addSql(`alter table "concert"."seat" add column "reservation_id" uuid null, add column "held_until" timestamptz null;`);
    this.addSql(`create index "seat_reservation_id_index" on "concert"."seat" ("reservation_id") where "reservation_id" is not null;`);
  }

  override down(): void {
    this.addSql(`drop index if exists "concert"."seat_reservation_id_index";`);
    this.addSql(`alter table "concert"."seat" drop column "reservation_id", drop column "held_until";`);
  }
}
