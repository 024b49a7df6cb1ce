import { Migration } from "@mikro-orm/migrations";

/**
 * Tickets are admitted at the door once: each admission is a row of
 * `ticket_scan` (when, at which gate), written by the same statement that
 * marks the seat used on its hold (`used_seats`), so that a change to the
 * booking conditional on that column and a scan of its ticket meet on the
 * hold row.
 */
export class Migration20261202200000_tickets extends Migration {
  override name = "Migration20261202200000_tickets";

  override up(): void {
    this.addSql(`alter table "concert"."hold" add column "used_seats" int[] not null default '{}';`);
    this.addSql(`create table "concert"."ticket_scan" ("reservation_id" uuid not null, "seat_number" int not null, "used_at" timestamptz not null, "gate" varchar(100) not null, primary key ("reservation_id", "seat_number"));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "concert"."ticket_scan";`);
    this.addSql(`alter table "concert"."hold" drop column "used_seats";`);
  }
}
