import { defineEntity, p } from "@mikro-orm/postgresql";

export const paymentStates = ["PENDING", "SUCCEEDED", "FAILED", "REFUNDED"] as const;
export type PaymentState = (typeof paymentStates)[number];

/** A payment for one reservation, and where its saga stands. */
export const Payment = defineEntity({
  name: "Payment",
  schema: "payment",
  tableName: "payment",
  indexes: [
    { name: "payment_user_newest_index", properties: ["userId", "createdAt", "id"] },
    { name: "payment_unsettled_index", properties: ["updatedAt"], where: `"state" = 'PENDING' or "session_to_end"` },
  ],
  uniques: [{ name: "payment_user_idempotency_key", properties: ["userId", "idempotencyKey"] }],
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    reservationId: p.uuid(),
    concertId: p.uuid(),
    idempotencyKey: p.string().length(128),
    amount: p.bigint("number"),
    state: p.enum(paymentStates),
    /** While FAILED: the Reason enum number, and a message for people. */
    failureReason: p.integer().default(0),
    failureMessage: p.string().length(500).default(""),
    /** Succeeded, but the fan's queue session is not ended yet (recovery retries it). */
    sessionToEnd: p.boolean().default(false),
    /** While a caller drives the saga: the end of its lease (the database's clock). Others leave the payment alone until then. */
    drivenUntil: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
