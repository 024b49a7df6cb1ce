import { defineEntity, p } from "@mikro-orm/postgresql";

/** A fan's balance. It always equals the sum of their ledger entries. */
export const Account = defineEntity({
  name: "Account",
  schema: "point",
  tableName: "account",
  checks: [{ name: "account_balance_not_negative", expression: "balance >= 0" }],
  properties: {
    userId: p.uuid().primary(),
    balance: p.bigint("number").default(0),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});

export const ledgerKinds = ["CHARGE", "USE", "REFUND"] as const;
export type LedgerKind = (typeof ledgerKinds)[number];

/** One movement of points; entries are only ever added. */
export const LedgerEntry = defineEntity({
  name: "LedgerEntry",
  schema: "point",
  tableName: "ledger_entry",
  indexes: [{ name: "ledger_entry_user_newest_index", properties: ["userId", "createdAt", "id"] }],
  uniques: [
    // A charge is applied once per idempotency key, a payment debited and refunded at most once each.
    { name: "ledger_entry_charge_key", properties: ["userId", "idempotencyKey"], where: `"kind" = 'CHARGE'` },
    { name: "ledger_entry_payment_kind", properties: ["paymentId", "kind"], where: `"payment_id" is not null` },
  ],
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    kind: p.enum(ledgerKinds),
    /** Signed: positive for CHARGE and REFUND, negative for USE. */
    amount: p.bigint("number"),
    balanceAfter: p.bigint("number"),
    paymentId: p.uuid().nullable(),
    idempotencyKey: p.string().length(128).nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
