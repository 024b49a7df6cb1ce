import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import type { IssueQueueTokenRequest, TokenService as TokenServiceDesc } from "../../gen/boxoffice/token/v1/token_pb.js";
import { caller, callerKey } from "../platform/access.js";
import { callDependency } from "../platform/clients.js";
import { entityManager } from "../platform/database.js";
import { NotAuthenticated, Reason } from "../platform/errors.js";
import type { UserTokens } from "../platform/tokens.js";
import { check } from "../platform/validate.js";
import { User } from "./user.entity.js";

export class TokenService implements ServiceImpl<typeof TokenServiceDesc> {
  constructor(
    private readonly tokens: UserTokens,
    private readonly queue: Client<typeof QueueService>,
  ) {}

  /** A new user with its first token, or, for a caller with a valid token, a fresh token for the same user. */
  async issueUserToken(_req: unknown, ctx: HandlerContext) {
    const em = entityManager(ctx);
    const current = ctx.values.get(callerKey);
    let userId: string;
    if (current) {
      const user = await em.findOne(User, { id: current.userId });
      if (!user) throw new NotAuthenticated(Reason.USER_NOT_FOUND, "the token's user does not exist");
      userId = user.id;
    } else {
      const user = em.create(User, { id: randomUUID() });
      await em.flush();
      userId = user.id;
    }
    const issued = await this.tokens.sign(userId);
    return { userId, token: issued.token, expiresAt: timestampFromDate(issued.expiresAt) };
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
