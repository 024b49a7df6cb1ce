import { Migration } from "@mikro-orm/migrations";

export class Migration20261124020000_reservations extends Migration {
  override name = "Migration20261124020000_reservations";

  override up(): void {
    this.addSql(`create table "reservation"."reservation" ("id" uuid not null, "user_id" uuid not null, "concert_id" uuid not null, "schedule_id" uuid not null, "seat_numbers" jsonb not null, "amount" bigint not null, "state" text not null, "expires_at" timestamptz not null, "created_at" timestamptz not null, "payment_id" uuid null, primary key ("id"));`);
    this.addSql(`create index "reservation_user_newest_index" on "reservation"."reservation" ("user_id", "created_at", "id");`);
    this.addSql(`create index "reservation_expiry_index" on "reservation"."reservation" ("expires_at") where "state" = 'HELD';`);
    this.addSql(`create unique index "reservation_one_hold_per_date" on "reservation"."reservation" ("user_id", "schedule_id") where "state" = 'HELD';`);
    this.addSql(`alter table "reservation"."reservation" add constraint "reservation_state_check" check ("state" in ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED'));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "reservation"."reservation";`);
  }
}
