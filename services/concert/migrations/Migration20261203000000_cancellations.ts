import { Migration } from "@mikro-orm/migrations";

/**
 * Cancellations: a concert's cutoff for fans' cancellations, a date cancelled
 * by the organiser, and a booking CANCELLED with its reason and, once its
 * points are back, `refunded_at`. A CANCELLED hold without `refunded_at` is
 * a refund still to do: the partial index is the refund run's to-do list.
 */
export class Migration20261203000000_cancellations extends Migration {
  override name = "Migration20261203000000_cancellations";

  override up(): void {
    this.addSql(`alter table "concert"."concert" add column "cancel_cutoff_seconds" int not null default 86400;`);
    this.addSql(`alter table "concert"."schedule" add column "cancel_reason" varchar(500) null, add column "cancelled_at" timestamptz null;`);
    this.addSql(
      `alter table "concert"."hold" add column "cancel_reason" varchar(500) null, add column "cancelled_at" timestamptz null, add column "refunded_at" timestamptz null;`,
    );
    this.addSql(`alter table "concert"."hold" drop constraint if exists "hold_state_check";`);
    this.addSql(`alter table "concert"."hold" add constraint "hold_state_check" check ("state" in ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED', 'CANCELLED'));`);
    this.addSql(`create index "hold_refund_due_index" on "concert"."hold" ("cancelled_at") where "state" = 'CANCELLED' and "refunded_at" is null;`);
  }

  override down(): void {
    this.addSql(`drop index if exists "concert"."hold_refund_due_index";`);
    this.addSql(`alter table "concert"."hold" drop constraint if exists "hold_state_check";`);
    this.addSql(`alter table "concert"."hold" add constraint "hold_state_check" check ("state" in ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED'));`);
    this.addSql(`alter table "concert"."hold" drop column "refunded_at", drop column "cancelled_at", drop column "cancel_reason";`);
    this.addSql(`alter table "concert"."schedule" drop column "cancelled_at", drop column "cancel_reason";`);
    this.addSql(`alter table "concert"."concert" drop column "cancel_cutoff_seconds";`);
  }
}
