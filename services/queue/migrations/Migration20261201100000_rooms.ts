import { Migration } from "@mikro-orm/migrations";

export class Migration20261201100000_rooms extends Migration {
  override name = "Migration20261201100000_rooms";

  override up(): void {
    this.addSql(
      `create table "queue"."room" ("scope" varchar(200) not null, "concert_id" uuid not null, "paused" boolean not null default false, "sold_out" boolean not null default false, "max_active" int null, "rate_per_minute" int null, "session_ttl_ms" int null, "abandon_after_ms" int null, "version" bigint not null default '1', "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), primary key ("scope", "concert_id"));`,
    );
  }

  override down(): void {
    this.addSql(`drop table if exists "queue"."room";`);
  }
}
