import { Migration } from "@mikro-orm/migrations";

export class Migration20261124040000_payments extends Migration {
  override name = "Migration20261124040000_payments";

  override up(): void {
    this.addSql(`create table "payment"."payment" ("id" uuid not null, "user_id" uuid not null, "reservation_id" uuid not null, "concert_id" uuid not null, "idempotency_key" varchar(128) not null, "amount" bigint not null, "state" text not null, "failure_reason" int not null default 0, "failure_message" varchar(500) not null default '', "session_to_end" boolean not null default false, "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "payment_user_newest_index" on "payment"."payment" ("user_id", "created_at", "id");`);
    this.addSql(`create index "payment_unsettled_index" on "payment"."payment" ("updated_at") where "state" = 'PENDING' or "session_to_end";`);
    this.addSql(`alter table "payment"."payment" add constraint "payment_user_idempotency_key" unique ("user_id", "idempotency_key");`);
    this.addSql(`alter table "payment"."payment" add constraint "payment_state_check" check ("state" in ('PENDING', 'SUCCEEDED', 'FAILED'));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "payment"."payment";`);
  }
}
