import { UniqueConstraintViolationException, type EntityManager, type InferEntity } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { NotFound, Reason, Refused } from "../platform/errors.js";
import { Account, LedgerEntry, type LedgerKind } from "./point.entity.js";

export type Entry = InferEntity<typeof LedgerEntry>;
export const maxBalance = 1_000_000_000;

export interface Movement {
  balance: number;
  entry: Entry | undefined;
}

/**
 * Points: a balance and its append-only ledger, changed together in one
 * transaction, so the balance is always the sum of the entries. Every movement
 * is applied at most once: a charge per idempotency key, a debit and a refund
 * per payment (unique indexes decide races between retries).
 */
export class Ledger {
  async charge(em: EntityManager, userId: string, amount: number, idempotencyKey: string): Promise<Movement> {
    const first = (on = em.fork()) => on.findOne(LedgerEntry, { userId, kind: "CHARGE", idempotencyKey });
    const replay = (entry: Entry): Movement => {
      if (entry.amount !== amount) {
        throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used for a charge of another amount");
      }
      return { balance: entry.balanceAfter, entry };
    };
    const earlier = await first();
    if (earlier) return replay(earlier);
    return this.#move(em, userId, "CHARGE", amount, { idempotencyKey }, first, replay);
  }

  async use(em: EntityManager, userId: string, amount: number, paymentId: string): Promise<Movement> {
    const first = (on = em.fork()) => on.findOne(LedgerEntry, { paymentId, kind: "USE" });
    const replay = (entry: Entry): Movement => {
      if (entry.userId !== userId || entry.amount !== -amount) {
        throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this payment already debited another user or amount");
      }
      return { balance: entry.balanceAfter, entry };
    };
    const earlier = await first();
    if (earlier) return replay(earlier);
    return this.#move(em, userId, "USE", -amount, { paymentId }, first, replay);
  }

  /** Credits back what the payment debited; nothing when it debited nothing. */
  async refund(em: EntityManager, userId: string, paymentId: string): Promise<Movement> {
    const first = (on = em.fork()) => on.findOne(LedgerEntry, { paymentId, kind: "REFUND" });
    const replay = (entry: Entry): Movement => ({ balance: entry.balanceAfter, entry });
    const earlier = await first();
    if (earlier) return replay(earlier);
    const debit = await em.fork().findOne(LedgerEntry, { paymentId, kind: "USE" });
    if (!debit) return { balance: await this.balance(em, userId), entry: undefined };
    if (debit.userId !== userId) throw new NotFound(Reason.PAYMENT_NOT_FOUND, "that payment debited another user");
    return this.#move(em, userId, "REFUND", -debit.amount, { paymentId }, first, replay);
  }

  async balance(em: EntityManager, userId: string): Promise<number> {
    return (await em.fork().findOne(Account, { userId }))?.balance ?? 0;
  }

  /**
   * Moves points and writes the entry in one transaction. The balance update is
   * conditional (no overdraft, no charge above the limit), so concurrent
   * movements of one account serialize on its row and never overshoot. When a
   * concurrent retry wrote the same entry first, its result is returned.
   */
  async #move(
    em: EntityManager,
    userId: string,
    kind: LedgerKind,
    amount: number,
    key: { idempotencyKey?: string; paymentId?: string },
    /** The entry this movement would write, if it is there already; on the given EntityManager (inside the transaction). */
    first: (on?: EntityManager) => Promise<Entry | null>,
    replay: (entry: Entry) => Movement,
  ): Promise<Movement> {
    try {
      return await em.fork().transactional(async (tx) => {
        const connection = tx.getConnection();
        const context = tx.getTransactionContext();
        await connection.execute(
          `insert into "point"."account" (user_id, balance, updated_at) values (?, 0, now()) on conflict do nothing`,
          [userId],
          "run",
          context,
        );
        const [row] = await connection.execute<{ balance: string }[]>(
          `update "point"."account" set balance = balance + ?, updated_at = now()
            where user_id = ? and balance + ? >= 0 and (? <= 0 or ? = 'REFUND' or balance + ? <= ?)
            returning balance`,
          [amount, userId, amount, amount, kind, amount, maxBalance],
          "all",
          context,
        );
        if (!row) {
          // A concurrent retry of this very movement may have moved the balance first; then it is the answer.
          // (Read inside the transaction: a second pool connection here could starve the pool.)
          const done = await first(tx);
          if (done) return replay(done);
          if (kind === "USE") throw new Refused(Reason.INSUFFICIENT_POINTS, `the balance is lower than ${-amount} points`);
          throw new Refused(Reason.BALANCE_LIMIT_EXCEEDED, `a balance cannot go above ${maxBalance} points`);
        }
        const entry = tx.create(LedgerEntry, {
          id: randomUUID(),
          userId,
          kind,
          amount,
          balanceAfter: Number(row.balance),
          paymentId: key.paymentId ?? null,
          idempotencyKey: key.idempotencyKey ?? null,
        });
        await tx.flush();
        return { balance: entry.balanceAfter, entry };
      });
    } catch (error) {
      if (!(error instanceof UniqueConstraintViolationException)) throw error;
      const entry = await first();
      if (!entry) throw error;
      return replay(entry);
    }
  }
}
