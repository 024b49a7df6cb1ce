import { defineEntity, p } from "@mikro-orm/postgresql";

/**
 * A concert's waiting room as operators set it: the source of truth for
 * pause, policy overrides and sold-out, and the list of rooms the admission
 * worker moves. The line itself lives in the queue store (Redis).
 */
export const Room = defineEntity({
  name: "Room",
  schema: "queue",
  tableName: "room",
  properties: {
    /** The deployment's key prefix: deployments sharing a database keep their rooms apart. */
    scope: p.string().length(200).primary(),
    concertId: p.uuid().primary(),
    paused: p.boolean().default(false),
    soldOut: p.boolean().default(false),
    /** Overrides of the service's default policy; null keeps the default. */
    maxActive: p.integer().nullable(),
    ratePerMinute: p.integer().nullable(),
    sessionTtlMs: p.integer().nullable(),
    abandonAfterMs: p.integer().nullable(),
    /** Rises with every change, so that the store's copy is replaced only by a newer one. */
    version: p.bigint("number").default(1),
    createdAt: p.datetime().defaultRaw("now()"),
    updatedAt: p.datetime().defaultRaw("now()"),
  },
});
