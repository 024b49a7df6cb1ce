import { Migration } from "@mikro-orm/migrations";

export class Migration20261124000000_users extends Migration {
  override name = "Migration20261124000000_users";

  override up(): void {
    this.addSql(`create table "token"."user" ("id" uuid not null, "created_at" timestamptz not null, primary key ("id"));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "token"."user";`);
  }
}
