import { Migration } from "@mikro-orm/migrations";

/**
 * Seat plans: each seat has its section, row (label and place in the section),
 * label, place in its row and price tier. Seats of dates created before are
 * the default plan: one unnamed section, one unnamed row, their numbers as
 * labels, one unnamed tier. The index serves the best-available chooser, which
 * reads the seats of one tier of a date.
 */
export class Migration20261203100000_seat_plans extends Migration {
  override name = "Migration20261203100000_seat_plans";

  override up(): void {
    this.addSql(
      `alter table "concert"."seat" add column "section" varchar(50) not null default '', add column "row_label" varchar(50) not null default '',
         add column "row_position" int not null default 1, add column "label" varchar(50) not null default '', add column "place" int not null default 0,
         add column "tier" varchar(50) not null default '';`,
    );
    this.addSql(`update "concert"."seat" set "label" = "number"::text, "place" = "number";`);
    this.addSql(`create index "seat_tier_index" on "concert"."seat" ("schedule_id", "tier");`);
  }

  override down(): void {
    this.addSql(`drop index if exists "concert"."seat_tier_index";`);
    this.addSql(
      `alter table "concert"."seat" drop column "tier", drop column "place", drop column "label", drop column "row_position", drop column "row_label", drop column "section";`,
    );
  }
}
