import { defineEntity, p } from "@mikro-orm/postgresql";

/** A fan: anonymous, made when a token is first issued without one, or an account of the identity provider (its id derived from the account, tokens.ts accountUserId), recorded at its first IssueUserToken. */
export const User = defineEntity({
  name: "User",
  schema: "token",
  tableName: "user",
  properties: {
    id: p.uuid().primary(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
