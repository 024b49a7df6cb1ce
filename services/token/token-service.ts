import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import type { IssueQueueTokenRequest, TokenService as TokenServiceDesc } from "../../gen/boxoffice/token/v1/token_pb.js";
import { caller, callerKey } from "../platform/access.js";
import { callDependency } from "../platform/clients.js";
import { entityManager } from "../platform/database.js";
import { NotAuthenticated, Reason } from "../platform/errors.js";
import type { UserToken, UserTokens } from "../platform/tokens.js";
import { check } from "../platform/validate.js";
import { User } from "./user.entity.js";

export class TokenService implements ServiceImpl<typeof TokenServiceDesc> {
  constructor(
    private readonly tokens: UserTokens,
    private readonly queue: Client<typeof QueueService>,
  ) {}

  /**
   * A new user with its first token; for a caller with a valid token, a fresh
   * token for the same user. Given the identity provider's token, our own for
   * its account (the user is derived from the account, so the same on every
   * instance), ending when the provider's does: how long a sign-in lasts is the
   * provider's to say, and renewing an account's token keeps that end. Where
   * accounts are required, no anonymous user is made.
   */
  async issueUserToken(_req: unknown, ctx: HandlerContext) {
    const em = entityManager(ctx);
    const current = ctx.values.get(callerKey);
    if (!current) {
      if (this.tokens.requiresAccounts) {
        throw new NotAuthenticated(Reason.TOKEN_MISSING, "this deployment requires an account: send the identity provider's token (authorization: Bearer <token>)");
      }
      const user = em.create(User, { id: randomUUID() });
      await em.flush();
      return answer(await this.tokens.sign(user.id));
    }
    if (current.kind === "provider") {
      await em.upsert(User, { id: current.userId, createdAt: new Date() }, { onConflictAction: "ignore" });
      return answer(await this.tokens.sign(current.userId, { account: true, notAfter: current.expiresAt }));
    }
    const user = await em.findOne(User, { id: current.userId });
    if (!user) throw new NotAuthenticated(Reason.USER_NOT_FOUND, "the token's user does not exist");
    return answer(await this.tokens.sign(user.id, current.kind === "account" ? { account: true, notAfter: current.expiresAt } : {}));
  }

  /** The seed's queue-token flow: the queue service enters the caller into the concert's waiting room. */
  async issueQueueToken(req: IssueQueueTokenRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const user = caller(ctx);
    const entered = await callDependency("queue", () =>
      this.queue.enterQueue({ concertId }, { headers: { authorization: `Bearer ${user.token}` }, signal: ctx.signal }),
    );
    return { queueToken: entered.queueToken, status: entered.status };
  }
}

function answer(issued: UserToken) {
  return { userId: issued.userId, token: issued.token, expiresAt: timestampFromDate(issued.expiresAt) };
}
