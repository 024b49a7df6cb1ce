import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromDate, timestampFromMs, type Duration } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  AdmissionPolicySchema,
  DrawState,
  QueueingMethod,
  QueueState,
  type GetSaleFairnessRequest,
  QueueStatusSchema,
  type AdmissionPolicy,
  type CheckAdmissionRequest,
  type CompleteSessionRequest,
  type EnterQueueRequest,
  type GetQueueStatsRequest,
  type GetQueueStatusesRequest,
  type ListQueueStatsRequest,
  type PauseAdmissionRequest,
  type QueueAdminService,
  type QueueInternalService,
  type QueueService,
  type QueueStatus,
  type ResumeAdmissionRequest,
  type SetAdmissionPolicyRequest,
  type SupplyChangedRequest,
} from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { caller, queueTokenHeader } from "../platform/access.js";
import { InvalidInput, NotAuthenticated, Reason } from "../platform/errors.js";
import { audit } from "../platform/log.js";
import { check } from "../platform/validate.js";
import type { AdmissionWorker } from "./admission.js";
import { drawMethod } from "./draw.js";
import type { Fairness } from "./draws.js";
import type { Policy } from "./store.js";
import type { RoomStats, RoomStatus, WaitingRoom } from "./waiting-room.js";

const stateOf = {
  WAITING: QueueState.WAITING,
  ADMITTED: QueueState.ADMITTED,
  EXPIRED: QueueState.EXPIRED,
  LEFT: QueueState.LEFT,
  COMPLETED: QueueState.COMPLETED,
  SOLD_OUT: QueueState.SOLD_OUT,
  CLOSED: QueueState.CLOSED,
} as const;

export function statusMessage(status: RoomStatus): QueueStatus {
  return create(QueueStatusSchema, {
    concertId: status.concertId,
    state: stateOf[status.state],
    position: BigInt(status.position),
    peopleAhead: BigInt(Math.max(0, status.position - 1)),
    estimatedWait: status.estimatedWaitMs === undefined ? undefined : durationFromMs(status.estimatedWaitMs),
    admittedUntil: status.admittedUntil === undefined ? undefined : timestampFromMs(status.admittedUntil),
    reason: status.reason,
    detail: status.detail,
    saleOpensAt: status.saleOpensAt === undefined ? undefined : timestampFromMs(status.saleOpensAt),
    entryId: status.entryId,
  });
}

function statsMessage(stats: RoomStats) {
  return {
    waiting: BigInt(stats.waiting),
    admitted: BigInt(stats.admitted),
    admittedPerMinute: BigInt(stats.admittedLastMinute),
    abandoned: BigInt(stats.abandoned),
    paused: stats.paused,
    soldOut: stats.soldOut,
    policy: policyMessage(stats.policy),
    waitAtBack: stats.waitAtBackMs === undefined ? undefined : durationFromMs(stats.waitAtBackMs),
  };
}

function policyMessage(policy: Policy): AdmissionPolicy {
  return create(AdmissionPolicySchema, {
    maxActive: policy.maxActive,
    ratePerMinute: policy.ratePerMinute,
    sessionTtl: durationFromMs(policy.sessionTtlMs),
    abandonAfter: durationFromMs(policy.abandonAfterMs),
    method: policy.random ? QueueingMethod.RANDOM : QueueingMethod.FIFO,
  });
}

const dayMs = 86_400_000;

function policyDuration(value: Duration | undefined, field: string): number | undefined {
  if (!value) return undefined;
  const ms = Math.floor(durationMs(value));
  if (!Number.isSafeInteger(ms) || ms < 1000 || ms > dayMs) throw new InvalidInput(field, "must be between 1 second and 24 hours");
  return ms;
}

function queueToken(ctx: HandlerContext): string {
  const token = ctx.requestHeader.get(queueTokenHeader);
  if (!token) throw new NotAuthenticated(Reason.QUEUE_TOKEN_MISSING, `this RPC needs a queue token (${queueTokenHeader})`);
  return token;
}

/** The fan's side of the waiting room. */
export class QueueHandlers implements ServiceImpl<typeof QueueService> {
  constructor(
    private readonly room: WaitingRoom,
    private readonly fairness: (concertId: string) => Promise<Fairness>,
  ) {}

  async getSaleFairness(req: GetSaleFairnessRequest) {
    const { drawn, commitment, saleOpensAt, draw } = await this.fairness(check.id(req.concertId, "concert_id"));
    return {
      state: drawn ? DrawState.DRAWN : DrawState.COMMITTED,
      seedCommitment: commitment,
      seed: draw?.seed ?? "",
      entryIds: draw?.entryIds ?? [],
      saleOpensAt: saleOpensAt && timestampFromDate(saleOpensAt),
      drawnAt: draw && timestampFromDate(draw.drawnAt),
      method: drawMethod,
    };
  }

  async enterQueue(req: EnterQueueRequest, ctx: HandlerContext) {
    const entered = await this.room.enter(caller(ctx).userId, check.id(req.concertId, "concert_id"));
    return { queueToken: entered.queueToken, status: statusMessage(entered.status) };
  }

  async getQueueStatus(_req: unknown, ctx: HandlerContext) {
    return { status: statusMessage(await this.room.status(queueToken(ctx))) };
  }

  async leaveQueue(_req: unknown, ctx: HandlerContext) {
    return { status: statusMessage(await this.room.leave(queueToken(ctx))) };
  }
}

/** The gate and session end, for other boxoffice services. */
export class QueueInternalHandlers implements ServiceImpl<typeof QueueInternalService> {
  constructor(
    private readonly room: WaitingRoom,
    private readonly worker: AdmissionWorker,
  ) {}

  async supplyChanged(req: SupplyChangedRequest) {
    await this.worker.supplyChanged(check.id(req.concertId, "concert_id"));
    return {};
  }

  async checkAdmission(req: CheckAdmissionRequest) {
    if (!req.queueToken) throw new InvalidInput("queue_token", "is required");
    const admission = await this.room.admission(req.queueToken, {
      userId: req.userId ? check.id(req.userId, "user_id") : undefined,
      concertId: req.concertId ? check.id(req.concertId, "concert_id") : undefined,
    });
    return { userId: admission.userId, concertId: admission.concertId, admittedUntil: timestampFromDate(admission.admittedUntil) };
  }

  async getQueueStatuses(req: GetQueueStatusesRequest) {
    const concertId = check.id(req.concertId, "concert_id");
    check.count(req.queueTokens, "queue_tokens", 0, 1000);
    const statuses = await this.room.statuses(concertId, req.queueTokens);
    return { statuses: statuses.map((status) => (status ? statusMessage(status) : create(QueueStatusSchema, { concertId }))) };
  }

  async completeSession(req: CompleteSessionRequest) {
    await this.room.complete(check.id(req.userId, "user_id"), check.id(req.concertId, "concert_id"));
    return {};
  }
}

/** Operators' controls, effective at once on every instance (the state is shared). */
export class QueueAdminHandlers implements ServiceImpl<typeof QueueAdminService> {
  constructor(private readonly room: WaitingRoom) {}

  async getQueueStats(req: GetQueueStatsRequest) {
    return statsMessage(await this.room.stats(check.id(req.concertId, "concert_id")));
  }

  async listQueueStats(req: ListQueueStatsRequest) {
    const concertIds = check.count(req.concertIds, "concert_ids", 1, 1000).map((id, i) => check.id(id, `concert_ids[${i}]`));
    const stats = await this.room.statsOf(concertIds);
    return { stats: stats.map((room, i) => ({ concertId: concertIds[i]!, ...statsMessage(room) })) };
  }

  async pauseAdmission(req: PauseAdmissionRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const { before, after } = await this.room.setPaused(concertId, true);
    audit(ctx, { subject: `waiting room of concert ${concertId}`, before: { paused: before }, after: { paused: after } });
    return {};
  }

  async resumeAdmission(req: ResumeAdmissionRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const { before, after } = await this.room.setPaused(concertId, false);
    audit(ctx, { subject: `waiting room of concert ${concertId}`, before: { paused: before }, after: { paused: after } });
    return {};
  }

  async setAdmissionPolicy(req: SetAdmissionPolicyRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const policy = req.policy;
    if (!policy) throw new InvalidInput("policy", "is required");
    const change: Partial<Policy> = {
      maxActive: policy.maxActive === 0 ? undefined : check.integer(policy.maxActive, "policy.max_active", 1, 1_000_000),
      ratePerMinute: policy.ratePerMinute === undefined ? undefined : check.integer(policy.ratePerMinute, "policy.rate_per_minute", 0, 1_000_000),
      sessionTtlMs: policyDuration(policy.sessionTtl, "policy.session_ttl"),
      abandonAfterMs: policyDuration(policy.abandonAfter, "policy.abandon_after"),
      random: policy.method === QueueingMethod.UNSPECIFIED ? undefined : check.integer(policy.method, "policy.method", QueueingMethod.FIFO, QueueingMethod.RANDOM) === QueueingMethod.RANDOM,
    };
    const { before, after } = await this.room.setPolicy(concertId, change);
    audit(ctx, { subject: `admission policy of concert ${concertId}`, before, after });
    return { policy: policyMessage(after) };
  }
}
