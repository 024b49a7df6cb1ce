import type { EntityManager, InferEntity } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { NotFound, Reason, Refused } from "../platform/errors.js";
import { statementsOn, type Statements } from "../platform/database.js";
import { newestFirst } from "../platform/pagination.js";
import { LedgerEntry, type LedgerKind } from "./point.entity.js";

/** A ledger entry as the handlers read it: a LedgerEntry entity, or a row mapped here. */
export type Entry = Pick<
  InferEntity<typeof LedgerEntry>,
  "id" | "userId" | "kind" | "amount" | "balanceAfter" | "paymentId" | "idempotencyKey" | "createdAt"
>;
export const maxBalance = 1_000_000_000;

export interface Movement {
  balance: number;
  entry: Entry | undefined;
}

/** A ledger_entry row as raw `execute` returns it: bigints and timestamptz as strings. */
interface EntryRow {
  id: string;
  user_id: string;
  kind: LedgerKind;
  amount: string;
  balance_after: string;
  payment_id: string | null;
  idempotency_key: string | null;
  created_at: string;
}

/** The unique indexes that apply each movement at most once (see point.entity.ts). */
const movementKeys = new Set(["ledger_entry_charge_key", "ledger_entry_payment_kind"]);

const entryColumns = `id, user_id, kind, amount, balance_after, payment_id, idempotency_key, created_at`;

/**
 * The entry's columns after the CTE `account` yielded (balance, amount). Created
 * at the clock after the account row was locked, so one account's entries are in
 * created_at order as in their balance chain; to the millisecond, as the page
 * tokens (and the entities) have it.
 */
const newEntry = `insert into "point"."ledger_entry" (${entryColumns})
  select ?::uuid, ?::uuid, ?, account.amount, account.balance, ?::uuid, ?, date_trunc('milliseconds', clock_timestamp()) from account
  returning ${entryColumns}`;

/**
 * Points: a balance and its append-only ledger, changed together by one
 * statement, so the balance is always the sum of the entries. Every movement
 * is applied at most once: a charge per idempotency key, a debit and a refund
 * per payment (unique indexes decide races between retries).
 *
 * Each movement is one autocommit statement, one round trip: a conditional
 * change of the account row (no overdraft, no charge above the limit) yielding
 * the new balance, and the insert of the entry from it. Concurrent movements
 * of one account serialize on its row. When the statement wrote nothing (the
 * condition failed, or a unique violation undid all of it), an earlier entry of
 * the same movement, read afresh so that it sees whatever the statement waited
 * for, is the answer; only without one is the movement refused.
 */
export class Ledger {
  async charge(em: EntityManager, userId: string, amount: number, idempotencyKey: string): Promise<Movement> {
    const moved = await this.#move(
      em,
      // The account is created by its first charge (an amount above the limit creates nothing).
      `with account as (
         insert into "point"."account" as account (user_id, balance, updated_at)
         select ?::uuid, ?, now() where ? <= ?
         on conflict (user_id) do update set balance = account.balance + excluded.balance, updated_at = now()
          where account.balance + excluded.balance <= ?
         returning account.balance, ?::bigint as amount)
       ${newEntry}`,
      [userId, amount, amount, maxBalance, maxBalance, amount, randomUUID(), userId, "CHARGE", null, idempotencyKey],
    );
    if (moved) return { balance: moved.balanceAfter, entry: moved };
    // Already applied (perhaps by a concurrent retry, which is why this one could find itself above the limit).
    const earlier = await this.#entry(em, `user_id = ? and kind = 'CHARGE' and idempotency_key = ?`, [userId, idempotencyKey]);
    if (earlier) {
      if (earlier.amount !== amount) {
        throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this idempotency key was used for a charge of another amount");
      }
      return { balance: earlier.balanceAfter, entry: earlier };
    }
    throw new Refused(Reason.BALANCE_LIMIT_EXCEEDED, `a balance cannot go above ${maxBalance} points`);
  }

  async use(em: EntityManager, userId: string, amount: number, paymentId: string): Promise<Movement> {
    const moved = await this.#move(
      em,
      `with account as (
         update "point"."account" set balance = balance - ?, updated_at = now()
          where user_id = ? and balance >= ?
         returning balance, -?::bigint as amount)
       ${newEntry}`,
      [amount, userId, amount, amount, randomUUID(), userId, "USE", paymentId, null],
    );
    if (moved) return { balance: moved.balanceAfter, entry: moved };
    // A concurrent retry of this very debit may have moved the balance first; then it is the answer.
    const earlier = await this.#entry(em, `payment_id = ? and kind = 'USE'`, [paymentId]);
    if (earlier) {
      if (earlier.userId !== userId || earlier.amount !== -amount) {
        throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this payment already debited another user or amount");
      }
      return { balance: earlier.balanceAfter, entry: earlier };
    }
    throw new Refused(Reason.INSUFFICIENT_POINTS, `the balance is lower than ${amount} points`);
  }

  /** Credits back what the payment debited; nothing when it debited nothing. Never held to the limit. */
  async refund(em: EntityManager, userId: string, paymentId: string): Promise<Movement> {
    for (let attempt = 0; ; attempt++) {
      const moved = await this.#move(
        em,
        `with debit as (
           select -amount as amount from "point"."ledger_entry" where payment_id = ? and kind = 'USE' and user_id = ?),
         account as (
           update "point"."account" account set balance = account.balance + debit.amount, updated_at = now()
             from debit where account.user_id = ?
           returning account.balance, debit.amount)
         ${newEntry}`,
        [paymentId, userId, userId, randomUUID(), userId, "REFUND", paymentId, null],
      );
      if (moved) return { balance: moved.balanceAfter, entry: moved };
      const entries = await this.#entries(em, `payment_id = ? and kind in ('USE', 'REFUND')`, [paymentId]);
      const refund = entries.find((entry) => entry.kind === "REFUND");
      const debit = entries.find((entry) => entry.kind === "USE");
      if (refund) return { balance: refund.balanceAfter, entry: refund };
      if (!debit) return { balance: await this.balance(statementsOn(em), userId), entry: undefined };
      if (debit.userId !== userId) throw new NotFound(Reason.PAYMENT_NOT_FOUND, "that payment debited another user");
      // The debit was written after the statement looked: once more, and it is there.
      if (attempt > 0) throw new Error(`payment ${paymentId}: its debit is there but the refund wrote nothing`);
    }
  }

  async balance(db: Statements, userId: string): Promise<number> {
    const [account] = await db.rows<{ balance: string }>(`select balance from "point"."account" where user_id = $1`, [userId]);
    return account ? Number(account.balance) : 0;
  }

  /** A page of the user's entries, newest first. */
  async entries(db: Statements, userId: string, page: { pageSize: number; pageToken: string }): Promise<{ rows: Entry[]; nextPageToken: string }> {
    const found = await newestFirst<EntryRow>(db, { from: `"point"."ledger_entry"`, columns: entryColumns, where: "user_id = $1", params: [userId] }, page);
    return { rows: found.rows.map(entryOf), nextPageToken: found.nextPageToken };
  }

  /**
   * Runs one movement statement: the entry it wrote, or undefined when it wrote
   * none, because its condition held nothing or because an entry of this very
   * movement is there already (a committed one: the statement waited for it,
   * then the unique violation undid the whole statement).
   */
  async #move(em: EntityManager, sql: string, params: unknown[]): Promise<Entry | undefined> {
    try {
      const [row] = await em.getConnection().execute<EntryRow[]>(sql, params);
      return row && entryOf(row);
    } catch (error) {
      const { code, constraint } = error as { code?: unknown; constraint?: unknown };
      if (code === "23505" && typeof constraint === "string" && movementKeys.has(constraint)) return undefined;
      throw error;
    }
  }

  /** The entry matching `where`, if there is one (each `where` is a unique index's key). */
  async #entry(em: EntityManager, where: string, params: unknown[]): Promise<Entry | undefined> {
    return (await this.#entries(em, where, params))[0];
  }

  async #entries(em: EntityManager, where: string, params: unknown[]): Promise<Entry[]> {
    const rows = await em.getConnection().execute<EntryRow[]>(`select ${entryColumns} from "point"."ledger_entry" where ${where}`, params);
    return rows.map(entryOf);
  }
}

function entryOf(row: EntryRow): Entry {
  return {
    id: row.id,
    userId: row.user_id,
    kind: row.kind,
    amount: Number(row.amount),
    balanceAfter: Number(row.balance_after),
    paymentId: row.payment_id,
    idempotencyKey: row.idempotency_key,
    createdAt: new Date(row.created_at),
  };
}
