import { Migration } from "@mikro-orm/migrations";

export class Migration20261124000000_concerts extends Migration {
  override name = "Migration20261124000000_concerts";

  override up(): void {
    this.addSql(`create table "concert"."concert" ("id" uuid not null, "title" varchar(200) not null, "venue" varchar(200) not null, "created_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create table "concert"."schedule" ("id" uuid not null, "concert_id" uuid not null, "starts_at" timestamptz not null, "seat_count" int not null, primary key ("id"));`);
    this.addSql(`create index "schedule_concert_id_index" on "concert"."schedule" ("concert_id");`);
    this.addSql(`alter table "concert"."schedule" add constraint "schedule_concert_id_foreign" foreign key ("concert_id") references "concert"."concert" ("id");`);
    this.addSql(`create table "concert"."seat" ("schedule_id" uuid not null, "number" int not null, "price" bigint not null, "state" text check ("state" in ('AVAILABLE', 'HELD', 'SOLD')) not null default 'AVAILABLE', primary key ("schedule_id", "number"));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "concert"."seat";`);
    this.addSql(`drop table if exists "concert"."schedule";`);
    this.addSql(`drop table if exists "concert"."concert";`);
  }
}
