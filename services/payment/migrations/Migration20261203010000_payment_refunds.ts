import { Migration } from "@mikro-orm/migrations";

/** A payment whose booking was cancelled ends REFUNDED once its points are given back. */
export class Migration20261203010000_payment_refunds extends Migration {
  override name = "Migration20261203010000_payment_refunds";

  override up(): void {
    this.addSql(`alter table "payment"."payment" drop constraint if exists "payment_state_check";`);
    this.addSql(`alter table "payment"."payment" add constraint "payment_state_check" check ("state" in ('PENDING', 'SUCCEEDED', 'FAILED', 'REFUNDED'));`);
  }

  override down(): void {
    this.addSql(`alter table "payment"."payment" drop constraint if exists "payment_state_check";`);
    this.addSql(`alter table "payment"."payment" add constraint "payment_state_check" check ("state" in ('PENDING', 'SUCCEEDED', 'FAILED'));`);
  }
}
