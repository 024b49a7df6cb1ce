import { defineEntity, p } from "@mikro-orm/postgresql";

/** A fan. Users are anonymous: a user is created when a token is first issued. */
export const User = defineEntity({
  name: "User",
  schema: "token",
  tableName: "user",
  properties: {
    id: p.uuid().primary(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
