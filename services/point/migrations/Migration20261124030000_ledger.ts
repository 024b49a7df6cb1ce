import { Migration } from "@mikro-orm/migrations";

export class Migration20261124030000_ledger extends Migration {
  override name = "Migration20261124030000_ledger";

  override up(): void {
    this.addSql(`create table "point"."account" ("user_id" uuid not null, "balance" bigint not null default '0', "updated_at" timestamptz not null, primary key ("user_id"));`);
    this.addSql(`alter table "point"."account" add constraint "account_balance_not_negative" check (balance >= 0);`);
    this.addSql(`create table "point"."ledger_entry" ("id" uuid not null, "user_id" uuid not null, "kind" text not null, "amount" bigint not null, "balance_after" bigint not null, "payment_id" uuid null, "idempotency_key" varchar(128) null, "created_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "ledger_entry_user_newest_index" on "point"."ledger_entry" ("user_id", "created_at", "id");`);
    this.addSql(`create unique index "ledger_entry_charge_key" on "point"."ledger_entry" ("user_id", "idempotency_key") where "kind" = 'CHARGE';`);
    this.addSql(`create unique index "ledger_entry_payment_kind" on "point"."ledger_entry" ("payment_id", "kind") where "payment_id" is not null;`);
    this.addSql(`alter table "point"."ledger_entry" add constraint "ledger_entry_kind_check" check ("kind" in ('CHARGE', 'USE', 'REFUND'));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "point"."ledger_entry";`);
    this.addSql(`drop table if exists "point"."account";`);
  }
}
