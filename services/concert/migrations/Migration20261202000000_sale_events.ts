import { Migration } from "@mikro-orm/migrations";

/**
 * Concerts get a life: a status (draft, published, cancelled), sale times, a
 * per-fan seat limit, the seed that orders the pre-queue (and its published
 * commitment), their price range, and the operator's request id for an
 * idempotent create. Concerts that exist are on sale since they were created,
 * as they were, each with a fresh seed.
 */
export class Migration20261202000000_sale_events extends Migration {
  override name = "Migration20261202000000_sale_events";

  override up(): void {
    this.addSql(`alter table "concert"."concert"
      add column "status" text not null default 'PUBLISHED',
      add column "listed" boolean not null default true,
      add column "prequeue_opens_at" timestamptz null,
      add column "sale_opens_at" timestamptz null,
      add column "sale_closes_at" timestamptz null,
      add column "seat_limit" int not null default 4,
      add column "seed" varchar(64) null,
      add column "seed_commitment" varchar(64) null,
      add column "min_price" bigint null,
      add column "max_price" bigint null,
      add column "request_id" varchar(100) null,
      add column "request_hash" varchar(64) null,
      add column "cancel_reason" varchar(500) null,
      add column "cancelled_at" timestamptz null;`);
    this.addSql(`alter table "concert"."concert" add constraint "concert_status_check" check ("status" in ('DRAFT', 'PUBLISHED', 'CANCELLED'));`);
    this.addSql(`update "concert"."concert" concert
      set prequeue_opens_at = concert.created_at, sale_opens_at = concert.created_at,
          seed = encode(sha256(gen_random_uuid()::text::bytea), 'hex'),
          min_price = coalesce(prices.min_price, 0), max_price = coalesce(prices.max_price, 0)
      from (select concert.id, min(seat.price) as min_price, max(seat.price) as max_price
              from "concert"."concert" concert
              left join "concert"."schedule" schedule on schedule.concert_id = concert.id
              left join "concert"."seat" seat on seat.schedule_id = schedule.id
             group by concert.id) prices
      where prices.id = concert.id;`);
    this.addSql(`update "concert"."concert" set seed_commitment = encode(sha256(decode(seed, 'hex')), 'hex');`);
    this.addSql(`alter table "concert"."concert"
      alter column "prequeue_opens_at" set not null, alter column "sale_opens_at" set not null, alter column "seed" set not null,
      alter column "seed_commitment" set not null, alter column "min_price" set not null, alter column "max_price" set not null;`);
    this.addSql(`alter table "concert"."concert" add constraint "concert_request_id_unique" unique ("request_id");`);
    // What the per-fan limit counts, after waiting for the fan's other holds of the concert (services/concert/holds.ts).
    this.addSql(`create function "concert"."fan_seats_locked"(fan uuid, of_concert uuid) returns bigint language plpgsql volatile as $$
      begin
        perform pg_advisory_xact_lock(hashtextextended('hold:' || fan || ':' || of_concert, 0));
        return (select coalesce(sum(jsonb_array_length(hold.seat_numbers)), 0) from "concert"."hold" hold
                 where hold.user_id = fan and hold.concert_id = of_concert
                   and (hold.state = 'CONFIRMED' or (hold.state = 'HELD' and hold.expires_at > now())));
      end $$;`);
  }

  override down(): void {
    this.addSql(`drop function if exists "concert"."fan_seats_locked"(uuid, uuid);`);
    this.addSql(`alter table "concert"."concert" drop constraint if exists "concert_request_id_unique", drop constraint if exists "concert_status_check",
      drop column "status", drop column "listed", drop column "prequeue_opens_at", drop column "sale_opens_at", drop column "sale_closes_at",
      drop column "seat_limit", drop column "seed", drop column "seed_commitment", drop column "min_price", drop column "max_price",
      drop column "request_id", drop column "request_hash", drop column "cancel_reason", drop column "cancelled_at";`);
  }
}
