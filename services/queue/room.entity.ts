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
    /** The sale has ended (closed, cancelled, every date started); set once, by the admission worker. */
    closed: p.boolean().default(false),
    closedAt: p.datetime().nullable(),
    /** The random queueing method (admission by lot); null keeps the default (FIFO). */
    randomAdmission: p.boolean().nullable(),
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

/**
 * A sale's draw, as published by GetSaleFairness: the seed revealed at the
 * sale's opening and the frozen list of pre-queue entry ids it ordered. Written
 * once, before the line is put in that order.
 */
export const Draw = defineEntity({
  name: "Draw",
  schema: "queue",
  tableName: "draw",
  properties: {
    scope: p.string().length(200).primary(),
    concertId: p.uuid().primary(),
    seed: p.string().length(64),
    /** Ascending by the ids themselves, so the list says nothing of the order. */
    entryIds: p.json<string[]>(),
    drawnAt: p.datetime(),
  },
});
