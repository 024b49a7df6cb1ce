import { Migration } from "@mikro-orm/migrations";

/**
 * A lease on a payment instead of a row lock: the caller driving its saga
 * claims it until `driven_until`, so no transaction stays open across the
 * calls to other services, and a crashed driver's claim simply lapses.
 */
export class Migration20261124050000_payment_lease extends Migration {
  override name = "Migration20261124050000_payment_lease";

  override up(): void {
    this.addSql(`alter table "payment"."payment" add column "driven_until" timestamptz null;`);
  }

  override down(): void {
    this.addSql(`alter table "payment"."payment" drop column "driven_until";`);
  }
}
