import { Migration } from "@mikro-orm/migrations";

/**
 * Holds move beside the seats they hold. Until now the reservation service kept
 * the fan's record in its own schema and changed seats through calls to this
 * service; a database at that schema keeps its live holds and sales: the
 * records are copied here (same ids, which the seats already name) and the
 * retired `reservation` schema is dropped.
 */
export class Migration20261201000000_holds extends Migration {
  override name = "Migration20261201000000_holds";

  override up(): void {
    this.addSql(`create table "concert"."hold" ("id" uuid not null, "user_id" uuid not null, "concert_id" uuid not null, "schedule_id" uuid not null, "seat_numbers" jsonb not null, "amount" bigint not null, "state" text not null, "expires_at" timestamptz not null, "created_at" timestamptz not null, "payment_id" uuid null, primary key ("id"));`);
    this.addSql(`create index "hold_user_newest_index" on "concert"."hold" ("user_id", "created_at", "id");`);
    this.addSql(`create index "hold_expiry_index" on "concert"."hold" ("expires_at") where "state" = 'HELD';`);
    this.addSql(`create unique index "hold_one_per_date" on "concert"."hold" ("user_id", "schedule_id") where "state" = 'HELD';`);
    this.addSql(`alter table "concert"."hold" add constraint "hold_state_check" check ("state" in ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED'));`);
    this.addSql(`do $$ begin
      if to_regclass('"reservation"."reservation"') is not null then
        insert into "concert"."hold" (id, user_id, concert_id, schedule_id, seat_numbers, amount, state, expires_at, created_at, payment_id)
        select id, user_id, concert_id, schedule_id, seat_numbers, amount, state, expires_at, created_at, payment_id from "reservation"."reservation"
        on conflict (id) do nothing;
        drop schema "reservation" cascade;
      end if;
    end $$;`);
  }

  override down(): void {
    this.addSql(`drop table if exists "concert"."hold";`);
  }
}
