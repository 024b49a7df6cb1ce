import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  PaymentSchema,
  PaymentState,
  type GetPaymentRequest,
  type ListPaymentsRequest,
  type PayForUserRequest,
  type PayRequest,
  type RefundPaymentRequest,
  type Payment as PaymentMessage,
  type PaymentAdminService,
  type PaymentInternalService,
  type PaymentService,
} from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { admitted, caller } from "../platform/access.js";
import { entityManager, statements } from "../platform/database.js";
import { InvalidInput, NotFound, Reason } from "../platform/errors.js";
import { newestFirst } from "../platform/pagination.js";
import { check } from "../platform/validate.js";
import type { Paid, PaymentRecord, Payments } from "./payments.js";

const states = { PENDING: PaymentState.PENDING, SUCCEEDED: PaymentState.SUCCEEDED, FAILED: PaymentState.FAILED, REFUNDED: PaymentState.REFUNDED } as const;

/** What a payment is shown with. */
type ShownPayment = Pick<PaymentRecord, "id" | "state" | "failureReason" | "failureMessage" | "amount" | "reservationId" | "userId" | "createdAt" | "updatedAt">;

/** The columns a payment is shown from, read without the ORM (see Statements), and their row as `pg` returns it. */
const shownColumns = "id, user_id, reservation_id, amount, state, failure_reason, failure_message, created_at, updated_at";
interface ShownRow {
  id: string;
  user_id: string;
  reservation_id: string;
  amount: string | number;
  state: PaymentRecord["state"];
  failure_reason: number;
  failure_message: string;
  created_at: Date | string;
  updated_at: Date | string;
}

function shown(row: ShownRow): ShownPayment {
  return {
    id: row.id,
    userId: row.user_id,
    reservationId: row.reservation_id,
    amount: Number(row.amount),
    state: row.state,
    failureReason: row.failure_reason,
    failureMessage: row.failure_message,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

export function paymentMessage(payment: ShownPayment): PaymentMessage {
  return create(PaymentSchema, {
    id: payment.id,
    state: states[payment.state],
    failureReason: payment.failureReason,
    failureMessage: payment.failureMessage,
    amount: BigInt(payment.amount),
    reservationId: payment.reservationId,
    userId: payment.userId,
    createdAt: timestampFromDate(payment.createdAt),
    updatedAt: timestampFromDate(payment.updatedAt),
  });
}

const answer = ({ payment, reservation }: Paid) => ({ payment: paymentMessage(payment), reservation });

export class PaymentHandlers implements ServiceImpl<typeof PaymentService> {
  constructor(private readonly payments: Payments) {}

  async pay(req: PayRequest, ctx: HandlerContext) {
    const paid = await this.payments.pay(entityManager(ctx), {
      userId: caller(ctx).userId,
      admitted: () => admitted(ctx),
      reservationId: check.id(req.reservationId, "reservation_id"),
      idempotencyKey: check.idempotencyKey(req.idempotencyKey),
    });
    return answer(paid);
  }

  async getPayment(req: GetPaymentRequest, ctx: HandlerContext) {
    const userId = caller(ctx).userId;
    const byKey = req.paymentId === "" && req.idempotencyKey !== "";
    const [where, key] = byKey ? ["idempotency_key = $2", check.idempotencyKey(req.idempotencyKey)] : ["id = $2", check.id(req.paymentId, "payment_id")];
    const [payment] = await statements(ctx).rows<ShownRow>(`select ${shownColumns} from "payment"."payment" where user_id = $1 and ${where}`, [userId, key]);
    // Someone else's payment is as absent as one that does not exist.
    if (!payment) throw new NotFound(Reason.PAYMENT_NOT_FOUND, byKey ? "no payment with that idempotency key" : `no payment ${req.paymentId}`);
    return { payment: paymentMessage(shown(payment)) };
  }

  async listPayments(req: ListPaymentsRequest, ctx: HandlerContext) {
    const page = await newestFirst<ShownRow>(statements(ctx), { from: `"payment"."payment"`, columns: shownColumns, where: "user_id = $1", params: [caller(ctx).userId] }, req);
    return { payments: page.rows.map((row) => paymentMessage(shown(row))), nextPageToken: page.nextPageToken };
  }
}

/** For the coordinator, which checked the fan's access and admission at its own edge. */
export class PaymentInternalHandlers implements ServiceImpl<typeof PaymentInternalService> {
  constructor(private readonly payments: Payments) {}

  async payForUser(req: PayForUserRequest, ctx: HandlerContext) {
    const concertId = req.replayOnly ? undefined : check.id(req.concertId, "concert_id");
    // The caller's copy of the reservation saves a read; its amount is checked again when the hold is sold.
    if (req.reservation && req.reservation.amount <= 0n) throw new InvalidInput("reservation.amount", "must be positive");
    const paid = await this.payments.pay(entityManager(ctx), {
      userId: check.id(req.userId, "user_id"),
      admitted: async () => {
        if (concertId === undefined) throw new NotFound(Reason.PAYMENT_NOT_FOUND, "no payment with that idempotency key");
        return { concertId };
      },
      // A replay may leave it out: the payment made with the key is the answer, whatever it paid for.
      reservationId: req.replayOnly && req.reservationId === "" ? undefined : check.id(req.reservationId, "reservation_id"),
      idempotencyKey: check.idempotencyKey(req.idempotencyKey),
      reservation: req.reservation,
    });
    return answer(paid);
  }

  async refundPayment(req: RefundPaymentRequest, ctx: HandlerContext) {
    const payment = await this.payments.refund(entityManager(ctx), {
      userId: check.id(req.userId, "user_id"),
      paymentId: check.id(req.paymentId, "payment_id"),
      reservationId: check.id(req.reservationId, "reservation_id"),
    });
    return { payment: paymentMessage(payment) };
  }
}

/** Operators' view of the payments: counts by state per concert. */
export class PaymentAdminHandlers implements ServiceImpl<typeof PaymentAdminService> {
  async listPaymentCounts(_req: unknown, ctx: HandlerContext) {
    const rows = await entityManager(ctx).getConnection().execute<{ concert_id: string; pending: string; succeeded: string; failed: string; refunded: string }[]>(
      `select concert_id,
              count(*) filter (where state = 'PENDING') as pending,
              count(*) filter (where state = 'SUCCEEDED') as succeeded,
              count(*) filter (where state = 'FAILED') as failed,
              count(*) filter (where state = 'REFUNDED') as refunded
         from "payment"."payment" group by concert_id order by concert_id`,
    );
    return { concerts: rows.map((row) => ({ concertId: row.concert_id, pending: Number(row.pending), succeeded: Number(row.succeeded), failed: Number(row.failed), refunded: Number(row.refunded) })) };
  }
}
