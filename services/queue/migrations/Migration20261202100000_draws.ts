import { Migration } from "@mikro-orm/migrations";

/** Sale events: a room's queueing method and its end, and each sale's published draw. */
export class Migration20261202100000_draws extends Migration {
  override name = "Migration20261202100000_draws";

  override up(): void {
    this.addSql(`alter table "queue"."room" add column "closed" boolean not null default false, add column "closed_at" timestamptz null, add column "random_admission" boolean null;`);
    this.addSql(
      `create table "queue"."draw" ("scope" varchar(200) not null, "concert_id" uuid not null, "seed" varchar(64) not null, "entry_ids" jsonb not null, "drawn_at" timestamptz not null, primary key ("scope", "concert_id"));`,
    );
  }

  override down(): void {
    this.addSql(`drop table if exists "queue"."draw";`);
    this.addSql(`alter table "queue"."room" drop column "closed", drop column "closed_at", drop column "random_admission";`);
  }
}
