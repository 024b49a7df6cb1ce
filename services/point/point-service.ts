import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  PointTransactionKind,
  PointTransactionSchema,
  type ChargePointsRequest,
  type ListPointTransactionsRequest,
  type PointInternalService,
  type PointService,
  type PointTransaction,
  type RefundPointsRequest,
  type UsePointsRequest,
} from "../../gen/boxoffice/point/v1/point_pb.js";
import { caller } from "../platform/access.js";
import { entityManager, statements } from "../platform/database.js";
import { check } from "../platform/validate.js";
import { maxBalance, type Entry, type Ledger, type Movement } from "./ledger.js";

const kinds = { CHARGE: PointTransactionKind.CHARGE, USE: PointTransactionKind.USE, REFUND: PointTransactionKind.REFUND } as const;

function transactionMessage(entry: Entry): PointTransaction {
  return create(PointTransactionSchema, {
    id: entry.id,
    kind: kinds[entry.kind],
    amount: BigInt(entry.amount),
    balanceAfter: BigInt(entry.balanceAfter),
    paymentId: entry.paymentId ?? "",
    idempotencyKey: entry.idempotencyKey ?? "",
    createdAt: timestampFromDate(entry.createdAt),
  });
}

function movementMessage(movement: Movement) {
  return { balance: BigInt(movement.balance), transaction: movement.entry && transactionMessage(movement.entry) };
}

export class PointHandlers implements ServiceImpl<typeof PointService> {
  constructor(private readonly ledger: Ledger) {}

  async chargePoints(req: ChargePointsRequest, ctx: HandlerContext) {
    const amount = check.integer(req.amount, "amount", 1, 10_000_000);
    const key = check.idempotencyKey(req.idempotencyKey);
    return movementMessage(await this.ledger.charge(entityManager(ctx), caller(ctx).userId, amount, key));
  }

  async getBalance(_req: unknown, ctx: HandlerContext) {
    return { balance: BigInt(await this.ledger.balance(statements(ctx), caller(ctx).userId)) };
  }

  async listPointTransactions(req: ListPointTransactionsRequest, ctx: HandlerContext) {
    const page = await this.ledger.entries(statements(ctx), caller(ctx).userId, req);
    return { transactions: page.rows.map(transactionMessage), nextPageToken: page.nextPageToken };
  }
}

export class PointInternalHandlers implements ServiceImpl<typeof PointInternalService> {
  constructor(private readonly ledger: Ledger) {}

  async usePoints(req: UsePointsRequest, ctx: HandlerContext) {
    const amount = check.integer(req.amount, "amount", 1, maxBalance);
    const movement = await this.ledger.use(entityManager(ctx), check.id(req.userId, "user_id"), amount, check.id(req.paymentId, "payment_id"));
    return movementMessage(movement);
  }

  async refundPoints(req: RefundPointsRequest, ctx: HandlerContext) {
    const movement = await this.ledger.refund(entityManager(ctx), check.id(req.userId, "user_id"), check.id(req.paymentId, "payment_id"));
    return movementMessage(movement);
  }
}
