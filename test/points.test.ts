import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  PointInternalService,
  PointService,
  PointTransactionKind,
  type ChargePointsResponse,
  type UsePointsResponse,
} from "../gen/boxoffice/point/v1/point_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { bearer, client, startTestSuite, testSecrets } from "./support.js";
import { invalid, outcome, refused, tally } from "./outcomes.js";

/**
 * Points end to end: PointService (ChargePoints, GetBalance,
 * ListPointTransactions) and PointInternalService (UsePoints, RefundPoints) on
 * a real server over gRPC (h2c), against real PostgreSQL, read back directly
 * from the point schema: the balance always equals the sum of the ledger, and
 * every movement is applied at most once, however many retries race.
 */

const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };
const maxBalance = 1_000_000_000n;
const maxCharge = 10_000_000n;

let suite: Suite;
let db: pg.Pool;
let points: Client<typeof PointService>;
let pointsInternal: Client<typeof PointInternalService>;
let tokens: Client<typeof TokenService>;
/** Every user this file made, for the closing ledger check. */
const users: string[] = [];

beforeAll(async () => {
  suite = await startTestSuite();
  db = new pg.Pool({ connectionString: inject("databaseUrl"), max: 2 });
  points = client(suite, PointService);
  pointsInternal = client(suite, PointInternalService);
  tokens = client(suite, TokenService);
});
afterAll(async () => {
  await suite?.close();
  await db?.end();
});

// ---------------------------------------------------------------- helpers

interface User {
  userId: string;
  token: string;
  auth: ReturnType<typeof bearer>;
}

async function newUser(): Promise<User> {
  const { userId, token } = await tokens.issueUserToken({});
  users.push(userId);
  return { userId, token, auth: bearer(token) };
}

const key = () => randomUUID();

interface LedgerRow {
  id: string;
  kind: string;
  amount: number;
  balance_after: number;
  payment_id: string | null;
  idempotency_key: string | null;
}

/** The user's ledger rows straight from the point schema, oldest first. */
async function ledger(userId: string): Promise<LedgerRow[]> {
  const { rows } = await db.query<LedgerRow>(
    `select id, kind, amount::float8 as amount, balance_after::float8 as balance_after, payment_id, idempotency_key
       from point.ledger_entry where user_id = $1 order by created_at, balance_after`,
    [userId],
  );
  return rows;
}

/** The stored balance, or undefined when the user has no account row. */
async function storedBalance(userId: string): Promise<number | undefined> {
  const { rows } = await db.query<{ balance: number }>(`select balance::float8 as balance from point.account where user_id = $1`, [userId]);
  return rows[0]?.balance;
}

async function balance(user: User): Promise<bigint> {
  return (await points.getBalance({}, user.auth)).balance;
}

async function charge(user: User, amount: bigint, idempotencyKey: string = key()): Promise<ChargePointsResponse> {
  return points.chargePoints({ amount, idempotencyKey }, user.auth);
}

/** Checks that the entries, ordered by balance_after, chain: each starts where the one before ended. */
function expectChained(rows: LedgerRow[], start = 0) {
  const ordered = [...rows].sort((a, b) => a.balance_after - b.balance_after);
  let before = start;
  for (const row of ordered) {
    expect(row.balance_after - row.amount, `entry ${row.id} does not start at the balance before it`).toBe(before);
    before = row.balance_after;
  }
}

/**
 * Whether the entries chain from `start` (each starting where the one before
 * ended) in some order that keeps created_at non-decreasing; entries stamped in
 * the same millisecond may come in any order among themselves.
 */
function chainsInTimeOrder(rows: { created_at: Date; amount: number; balance_after: number }[], start = 0): boolean {
  const byTime = new Map<number, { amount: number; balance_after: number }[]>();
  for (const row of rows) byTime.set(row.created_at.getTime(), [...(byTime.get(row.created_at.getTime()) ?? []), row]);
  const groups = [...byTime.entries()].sort(([a], [b]) => a - b).map(([, group]) => group);
  const walk = (g: number, left: { amount: number; balance_after: number }[], before: number): boolean => {
    if (left.length === 0) return g + 1 >= groups.length || walk(g + 1, groups[g + 1]!, before);
    const tried = new Set<number>();
    return left.some((row, i) => {
      // Entries of one amount starting at one balance are interchangeable: try one of them.
      if (row.balance_after - row.amount !== before || tried.has(row.amount)) return false;
      tried.add(row.amount);
      return walk(g, left.filter((_, j) => j !== i), row.balance_after);
    });
  };
  return groups.length === 0 || walk(0, groups[0]!, start);
}

// ---------------------------------------------------------------- ChargePoints

describe("ChargePoints", () => {
  it("adds the amount to the balance and writes one CHARGE entry with the key and the balance after", async () => {
    const user = await newUser();
    const first = await charge(user, 5_000n, "first-charge");
    expect(first.balance).toBe(5_000n);
    expect(first.transaction).toMatchObject({
      kind: PointTransactionKind.CHARGE,
      amount: 5_000n,
      balanceAfter: 5_000n,
      idempotencyKey: "first-charge",
      paymentId: "",
    });
    expect(first.transaction!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Math.abs(timestampMs(first.transaction!.createdAt!) - Date.now())).toBeLessThan(10_000);

    const second = await charge(user, 300n, "second-charge");
    expect(second.balance).toBe(5_300n);
    expect(second.transaction!.balanceAfter).toBe(5_300n);
    expect(await balance(user)).toBe(5_300n);

    expect(await storedBalance(user.userId)).toBe(5_300);
    expect(await ledger(user.userId)).toEqual([
      { id: first.transaction!.id, kind: "CHARGE", amount: 5_000, balance_after: 5_000, payment_id: null, idempotency_key: "first-charge" },
      { id: second.transaction!.id, kind: "CHARGE", amount: 300, balance_after: 5_300, payment_id: null, idempotency_key: "second-charge" },
    ]);
  });

  it("the same key with the same amount returns the first result (entry and balance then) and writes nothing", async () => {
    const user = await newUser();
    const first = await charge(user, 1_000n, "retried");
    await charge(user, 500n, "another");

    const again = await charge(user, 1_000n, "retried");
    expect(again).toEqual(first);
    expect(again.balance).toBe(1_000n);
    expect(await balance(user)).toBe(1_500n);
    expect((await ledger(user.userId)).map((row) => [row.kind, row.amount, row.idempotency_key])).toEqual([
      ["CHARGE", 1_000, "retried"],
      ["CHARGE", 500, "another"],
    ]);
  });

  it("the same key with another amount is FailedPrecondition IDEMPOTENCY_KEY_REUSED and changes nothing", async () => {
    const user = await newUser();
    await charge(user, 1_000n, "k");
    await refused(charge(user, 999n, "k"), Code.FailedPrecondition, Reason.IDEMPOTENCY_KEY_REUSED);
    await refused(charge(user, 1_001n, "k"), Code.FailedPrecondition, Reason.IDEMPOTENCY_KEY_REUSED);
    expect(await balance(user)).toBe(1_000n);
    expect(await ledger(user.userId)).toHaveLength(1);
  });

  it("keys belong to the user: another user charging with the same key is a charge of their own", async () => {
    const [alice, bob] = await Promise.all([newUser(), newUser()]);
    const a = await charge(alice, 700n, "shared-key");
    const b = await charge(bob, 900n, "shared-key");
    expect(b.transaction!.id).not.toBe(a.transaction!.id);
    expect([await balance(alice), await balance(bob)]).toEqual([700n, 900n]);
  });

  it("an amount of 0, negative or above 10,000,000 is InvalidArgument naming amount; 1 and 10,000,000 are accepted", async () => {
    const user = await newUser();
    for (const amount of [0n, -1n, -5_000n, maxCharge + 1n, 2n ** 62n]) {
      await invalid(charge(user, amount), "amount");
    }
    expect(await storedBalance(user.userId)).toBeUndefined();
    expect(await ledger(user.userId)).toEqual([]);

    expect((await charge(user, 1n)).balance).toBe(1n);
    expect((await charge(user, maxCharge)).balance).toBe(maxCharge + 1n);
  });

  it("an idempotency_key empty, of 129 characters or with control characters is InvalidArgument naming idempotency_key; 128 characters are accepted", async () => {
    const user = await newUser();
    for (const idempotencyKey of ["", "k".repeat(129), "line\nbreak"]) {
      await invalid(charge(user, 100n, idempotencyKey), "idempotency_key");
    }
    expect(await ledger(user.userId)).toEqual([]);
    const longest = "k".repeat(128);
    expect((await charge(user, 100n, longest)).transaction!.idempotencyKey).toBe(longest);
  });

  it("a charge taking the balance above 1,000,000,000 is FailedPrecondition BALANCE_LIMIT_EXCEEDED; exactly the limit is allowed", async () => {
    const user = await newUser();
    const keys = Array.from({ length: 100 }, (_, i) => `top-up-${i}`);
    const results = await Promise.allSettled(keys.map((k) => charge(user, maxCharge, k)));
    expect(tally(results)).toEqual({ ok: 100 });
    expect(await balance(user)).toBe(maxBalance);

    await refused(charge(user, 1n), Code.FailedPrecondition, Reason.BALANCE_LIMIT_EXCEEDED);
    await refused(charge(user, maxCharge), Code.FailedPrecondition, Reason.BALANCE_LIMIT_EXCEEDED);
    // A retry of a charge already applied is not a new charge: it replays rather than hitting the limit.
    const replay = await charge(user, maxCharge, keys[0]);
    expect(replay.transaction!.idempotencyKey).toBe(keys[0]);

    expect(await balance(user)).toBe(maxBalance);
    const rows = await ledger(user.userId);
    expect(rows).toHaveLength(100);
    expectChained(rows);
  });

  it("needs a user token: Unauthenticated TOKEN_MISSING or TOKEN_INVALID", async () => {
    await refused(points.chargePoints({ amount: 100n, idempotencyKey: key() }), Code.Unauthenticated, Reason.TOKEN_MISSING);
    await refused(points.chargePoints({ amount: 100n, idempotencyKey: key() }, bearer("forged")), Code.Unauthenticated, Reason.TOKEN_INVALID);
    await refused(points.getBalance({}), Code.Unauthenticated, Reason.TOKEN_MISSING);
  });
});

describe("ChargePoints under real concurrency", () => {
  it("100 concurrent charges with distinct keys: the balance is exactly their sum, with 100 entries that chain", async () => {
    const user = await newUser();
    const amounts = Array.from({ length: 100 }, (_, i) => BigInt(i + 1));
    const results = await Promise.allSettled(amounts.map((amount) => charge(user, amount)));
    expect(tally(results)).toEqual({ ok: 100 });

    expect(await balance(user)).toBe(5_050n);
    expect(await storedBalance(user.userId)).toBe(5_050);
    const rows = await ledger(user.userId);
    expect(rows).toHaveLength(100);
    // Each entry starts exactly where another ended: no lost update, no two entries on one balance.
    expectChained(rows);
    // What each caller was told is what was written.
    const told = results.map((result) => (result as PromiseFulfilledResult<ChargePointsResponse>).value);
    expect(new Set(told.map((response) => response.balance)).size).toBe(100);
    for (const response of told) {
      const row = rows.find((r) => r.id === response.transaction!.id)!;
      expect([BigInt(row.amount), BigInt(row.balance_after)]).toEqual([response.transaction!.amount, response.balance]);
    }
  });

  it("100 concurrent charges with the same key: one entry, and every caller gets the same first result", async () => {
    const user = await newUser();
    const results = await Promise.allSettled(Array.from({ length: 100 }, () => charge(user, 2_500n, "the-one-key")));
    expect(tally(results)).toEqual({ ok: 100 });
    const responses = results.map((result) => (result as PromiseFulfilledResult<ChargePointsResponse>).value);
    for (const response of responses) expect(response).toEqual(responses[0]);
    expect(responses[0]!.balance).toBe(2_500n);

    expect(await balance(user)).toBe(2_500n);
    expect((await ledger(user.userId)).map((row) => [row.id, row.amount])).toEqual([[responses[0]!.transaction!.id, 2_500]]);
  });

  it("100 concurrent retries of a charge that brings the balance to the limit all get the first result", async () => {
    const user = await newUser();
    await Promise.all(Array.from({ length: 99 }, () => charge(user, maxCharge)));
    expect(await balance(user)).toBe(maxBalance - maxCharge);

    // Every retry is the same request: none may be refused for a limit that only the charge itself reaches.
    const results = await Promise.allSettled(Array.from({ length: 100 }, () => charge(user, maxCharge, "last-top-up")));
    // Ledger first: the charge is applied once, whatever the callers were told.
    expect(await balance(user)).toBe(maxBalance);
    expect((await ledger(user.userId)).filter((row) => row.idempotency_key === "last-top-up")).toHaveLength(1);
    expect(tally(results)).toEqual({ ok: 100 });
    const responses = results.map((result) => (result as PromiseFulfilledResult<ChargePointsResponse>).value);
    for (const response of responses) expect(response).toEqual(responses[0]);
  });
});

// ---------------------------------------------------------------- reading

describe("GetBalance and ListPointTransactions", () => {
  it("a user who never charged has balance 0 and an empty ledger", async () => {
    const user = await newUser();
    expect(await balance(user)).toBe(0n);
    const page = await points.listPointTransactions({}, user.auth);
    expect(page.transactions).toEqual([]);
    expect(page.nextPageToken).toBe("");
    expect(await storedBalance(user.userId)).toBeUndefined();
  });

  it("lists only the caller's entries, newest first, two per page, with every kind", async () => {
    const [user, other] = await Promise.all([newUser(), newUser()]);
    const paymentId = randomUUID();
    const made: string[] = [];
    for (const amount of [100n, 200n, 300n]) {
      made.push((await charge(user, amount)).transaction!.id);
      await charge(other, amount); // someone else's entries, in between
    }
    made.push((await pointsInternal.usePoints({ userId: user.userId, amount: 250n, paymentId }, internal)).transaction!.id);
    made.push((await pointsInternal.refundPoints({ userId: user.userId, paymentId }, internal)).transaction!.id);

    const pages: string[][] = [];
    const kinds: PointTransactionKind[] = [];
    let pageToken = "";
    do {
      const page = await points.listPointTransactions({ pageSize: 2, pageToken }, user.auth);
      pages.push(page.transactions.map((t) => t.id));
      kinds.push(...page.transactions.map((t) => t.kind));
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && pages.length < 10);
    const newest = [...made].reverse();
    expect(pages).toEqual([newest.slice(0, 2), newest.slice(2, 4), newest.slice(4)]);
    expect(kinds).toEqual([
      PointTransactionKind.REFUND,
      PointTransactionKind.USE,
      PointTransactionKind.CHARGE,
      PointTransactionKind.CHARGE,
      PointTransactionKind.CHARGE,
    ]);

    const { transactions } = await points.listPointTransactions({}, user.auth);
    expect(transactions.map((t) => t.id)).toEqual(newest);
    expect(transactions.map((t) => [t.amount, t.balanceAfter])).toEqual([
      [250n, 600n],
      [-250n, 350n],
      [300n, 600n],
      [200n, 300n],
      [100n, 100n],
    ]);
    expect(transactions.slice(0, 2).map((t) => t.paymentId)).toEqual([paymentId, paymentId]);
    const created = transactions.map((t) => timestampMs(t.createdAt!));
    expect(created).toEqual([...created].sort((a, b) => b - a));
  });

  it("refuses page_size 101 and a page_token it did not issue, naming the field", async () => {
    const user = await newUser();
    await invalid(points.listPointTransactions({ pageSize: 101 }, user.auth), "page_size");
    await invalid(points.listPointTransactions({ pageSize: -1 }, user.auth), "page_size");
    await invalid(points.listPointTransactions({ pageToken: "garbage" }, user.auth), "page_token");
  });
});

// ---------------------------------------------------------------- PointInternalService

describe("PointInternalService", () => {
  it("answers only callers holding the internal credential: PermissionDenied INTERNAL_ONLY, and nothing moves", async () => {
    const user = await newUser();
    await charge(user, 1_000n);
    const use = { userId: user.userId, amount: 100n, paymentId: randomUUID() };
    for (const options of [{}, user.auth, { headers: { "x-internal-credential": "wrong" } }, { headers: { "x-internal-credential": "" } }]) {
      await refused(pointsInternal.usePoints(use, options), Code.PermissionDenied, Reason.INTERNAL_ONLY);
      await refused(pointsInternal.refundPoints({ userId: user.userId, paymentId: use.paymentId }, options), Code.PermissionDenied, Reason.INTERNAL_ONLY);
    }
    expect(await balance(user)).toBe(1_000n);
    expect(await ledger(user.userId)).toHaveLength(1);
  });

  it("UsePoints writes a negative USE entry, once per payment: the same payment again returns the same entry", async () => {
    const user = await newUser();
    await charge(user, 1_000n);
    const paymentId = randomUUID();
    const used = await pointsInternal.usePoints({ userId: user.userId, amount: 600n, paymentId }, internal);
    expect(used.balance).toBe(400n);
    expect(used.transaction).toMatchObject({ kind: PointTransactionKind.USE, amount: -600n, balanceAfter: 400n, paymentId, idempotencyKey: "" });

    // Retried, even now that the balance no longer covers it: the first debit, not a second.
    const again = await pointsInternal.usePoints({ userId: user.userId, amount: 600n, paymentId }, internal);
    expect(again).toEqual(used);
    expect(await balance(user)).toBe(400n);
    expect((await ledger(user.userId)).filter((row) => row.kind === "USE")).toEqual([
      { id: used.transaction!.id, kind: "USE", amount: -600, balance_after: 400, payment_id: paymentId, idempotency_key: null },
    ]);
  });

  it("UsePoints for a payment that already debited another amount is refused and moves nothing", async () => {
    const user = await newUser();
    await charge(user, 1_000n);
    const paymentId = randomUUID();
    await pointsInternal.usePoints({ userId: user.userId, amount: 300n, paymentId }, internal);
    await refused(pointsInternal.usePoints({ userId: user.userId, amount: 301n, paymentId }, internal), Code.FailedPrecondition, Reason.IDEMPOTENCY_KEY_REUSED);
    expect(await balance(user)).toBe(700n);
    expect(await ledger(user.userId)).toHaveLength(2);
  });

  it("UsePoints of more than the balance is FailedPrecondition INSUFFICIENT_POINTS and writes nothing", async () => {
    const user = await newUser();
    await refused(
      pointsInternal.usePoints({ userId: user.userId, amount: 1n, paymentId: randomUUID() }, internal),
      Code.FailedPrecondition,
      Reason.INSUFFICIENT_POINTS,
    );
    await charge(user, 500n);
    await refused(
      pointsInternal.usePoints({ userId: user.userId, amount: 501n, paymentId: randomUUID() }, internal),
      Code.FailedPrecondition,
      Reason.INSUFFICIENT_POINTS,
    );
    // Exactly the balance is enough.
    expect((await pointsInternal.usePoints({ userId: user.userId, amount: 500n, paymentId: randomUUID() }, internal)).balance).toBe(0n);
    expect((await ledger(user.userId)).map((row) => [row.kind, row.amount])).toEqual([
      ["CHARGE", 500],
      ["USE", -500],
    ]);
    expect(await storedBalance(user.userId)).toBe(0);
  });

  it("RefundPoints credits back exactly the debit as a positive REFUND entry, once: again returns the same entry", async () => {
    const user = await newUser();
    await charge(user, 1_000n);
    const paymentId = randomUUID();
    await pointsInternal.usePoints({ userId: user.userId, amount: 600n, paymentId }, internal);
    const refunded = await pointsInternal.refundPoints({ userId: user.userId, paymentId }, internal);
    expect(refunded.balance).toBe(1_000n);
    expect(refunded.transaction).toMatchObject({ kind: PointTransactionKind.REFUND, amount: 600n, balanceAfter: 1_000n, paymentId });

    const again = await pointsInternal.refundPoints({ userId: user.userId, paymentId }, internal);
    expect(again).toEqual(refunded);
    expect(await balance(user)).toBe(1_000n);
    expect((await ledger(user.userId)).map((row) => [row.kind, row.amount, row.payment_id])).toEqual([
      ["CHARGE", 1_000, null],
      ["USE", -600, paymentId],
      ["REFUND", 600, paymentId],
    ]);
  });

  it("RefundPoints of a payment that debited nothing writes no entry and leaves transaction unset", async () => {
    const user = await newUser();
    await charge(user, 800n);
    const refunded = await pointsInternal.refundPoints({ userId: user.userId, paymentId: randomUUID() }, internal);
    expect(refunded.transaction).toBeUndefined();
    expect(refunded.balance).toBe(800n);
    expect(await ledger(user.userId)).toHaveLength(1);
  });

  it("refuses malformed input naming the field", async () => {
    const user = await newUser();
    const paymentId = randomUUID();
    await invalid(pointsInternal.usePoints({ userId: user.userId, amount: 0n, paymentId }, internal), "amount");
    await invalid(pointsInternal.usePoints({ userId: user.userId, amount: -5n, paymentId }, internal), "amount");
    await invalid(pointsInternal.usePoints({ userId: "nope", amount: 5n, paymentId }, internal), "user_id");
    await invalid(pointsInternal.usePoints({ userId: user.userId, amount: 5n, paymentId: "" }, internal), "payment_id");
    await invalid(pointsInternal.refundPoints({ userId: user.userId, paymentId: "x" }, internal), "payment_id");
  });

  it("50 concurrent UsePoints for one payment whose debit takes the whole balance: one debit, and every caller gets it", async () => {
    const user = await newUser();
    await charge(user, 600n);
    const paymentId = randomUUID();
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => pointsInternal.usePoints({ userId: user.userId, amount: 600n, paymentId }, internal)),
    );
    // Ledger first: exactly one debit, whatever the callers were told.
    expect((await ledger(user.userId)).filter((row) => row.kind === "USE")).toHaveLength(1);
    expect(await balance(user)).toBe(0n);
    // Every retry is the same request for the same payment: it must get the first debit, not INSUFFICIENT_POINTS.
    expect(tally(results)).toEqual({ ok: 50 });
    const responses = results.map((result) => (result as PromiseFulfilledResult<UsePointsResponse>).value);
    for (const response of responses) expect(response).toEqual(responses[0]);
  });

  it("50 concurrent UsePoints for one payment that the balance covers many times over: one debit, and every caller gets it", async () => {
    const user = await newUser();
    await charge(user, 100_000n);
    const paymentId = randomUUID();
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => pointsInternal.usePoints({ userId: user.userId, amount: 700n, paymentId }, internal)),
    );
    // The later retries could each have debited too: only the payment's unique entry stops them, undoing all they did.
    expect((await ledger(user.userId)).filter((row) => row.kind === "USE")).toHaveLength(1);
    expect(await balance(user)).toBe(99_300n);
    expect(await storedBalance(user.userId)).toBe(99_300);
    expect(tally(results)).toEqual({ ok: 50 });
    const responses = results.map((result) => (result as PromiseFulfilledResult<UsePointsResponse>).value);
    for (const response of responses) expect(response).toEqual(responses[0]);
    expect(responses[0]!.transaction).toMatchObject({ amount: -700n, balanceAfter: 99_300n, paymentId });
  });

  it("concurrent charges, debits and refunds on one account never overdraw: refusals are INSUFFICIENT_POINTS, and the entries chain in created_at order", async () => {
    const user = await newUser();
    await charge(user, 1_000n);
    const payments = Array.from({ length: 60 }, () => randomUUID());
    const uses = payments.map((paymentId) => pointsInternal.usePoints({ userId: user.userId, amount: 100n, paymentId }, internal));
    const charges = Array.from({ length: 20 }, () => charge(user, 10n));
    // Refunds of payments whose debit may or may not be there yet: each credits exactly what it finds, or nothing.
    const refunds = payments.slice(0, 20).map((paymentId) => pointsInternal.refundPoints({ userId: user.userId, paymentId }, internal));
    const [used, charged, refunded] = await Promise.all([Promise.allSettled(uses), Promise.allSettled(charges), Promise.allSettled(refunds)]);
    expect(tally(charged)).toEqual({ ok: 20 });
    expect(tally(refunded)).toEqual({ ok: 20 });
    const { ok = 0, ...refusals } = tally(used);
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(Object.keys(refusals).filter((name) => name !== "FailedPrecondition/INSUFFICIENT_POINTS")).toEqual([]);

    const rows = await ledger(user.userId);
    expect(rows.filter((row) => row.kind === "USE")).toHaveLength(ok);
    const sum = rows.reduce((total, row) => total + row.amount, 0);
    expect(await storedBalance(user.userId)).toBe(sum);
    expect(BigInt(sum)).toBe(await balance(user));
    // Every refund credited its own payment's debit, once.
    for (const row of rows.filter((r) => r.kind === "REFUND")) {
      expect(rows.filter((r) => r.payment_id === row.payment_id).map((r) => r.amount).sort((a, b) => a - b)).toEqual([-100, 100]);
    }
    // No lost update: the entries chain. And an entry is stamped once it holds the account, so in created_at order.
    const { rows: stamped } = await db.query<{ created_at: Date; amount: number; balance_after: number }>(
      `select created_at, amount::float8 as amount, balance_after::float8 as balance_after from point.ledger_entry where user_id = $1`,
      [user.userId],
    );
    expect(chainsInTimeOrder(stamped)).toBe(true);
  });

  it("RefundPoints credits the debit back even above the balance limit: the limit holds charges only", async () => {
    // Not one of `users`: the closing check holds every balance of this file to the limit.
    const { userId, token } = await tokens.issueUserToken({});
    const user = { userId, token, auth: bearer(token) };
    await Promise.all(Array.from({ length: 100 }, () => charge(user, maxCharge)));
    const paymentId = randomUUID();
    await pointsInternal.usePoints({ userId, amount: 500n, paymentId }, internal);
    await charge(user, 500n);
    await refused(charge(user, 1n), Code.FailedPrecondition, Reason.BALANCE_LIMIT_EXCEEDED);

    const refunded = await pointsInternal.refundPoints({ userId, paymentId }, internal);
    expect(refunded.balance).toBe(maxBalance + 500n);
    expect(refunded.transaction).toMatchObject({ kind: PointTransactionKind.REFUND, amount: 500n, balanceAfter: maxBalance + 500n });
    expect(await storedBalance(userId)).toBe(Number(maxBalance) + 500);
    expect((await ledger(userId)).reduce((total, row) => total + row.amount, 0)).toBe(Number(maxBalance) + 500);
  });

  it("50 concurrent RefundPoints for one payment credit it back once", async () => {
    const user = await newUser();
    await charge(user, 900n);
    const paymentId = randomUUID();
    await pointsInternal.usePoints({ userId: user.userId, amount: 900n, paymentId }, internal);
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => pointsInternal.refundPoints({ userId: user.userId, paymentId }, internal)),
    );
    expect(tally(results)).toEqual({ ok: 50 });
    const ids = new Set(results.map((result) => (result as PromiseFulfilledResult<{ transaction?: { id: string } }>).value.transaction?.id));
    expect(ids.size).toBe(1);
    expect(await balance(user)).toBe(900n);
    expect((await ledger(user.userId)).map((row) => row.kind)).toEqual(["CHARGE", "USE", "REFUND"]);
  });
});

// ---------------------------------------------------------------- the invariant

describe("the balance is the sum of the ledger", () => {
  it("for every user of this file, in the database: account balance == sum(ledger), never below 0 nor above the limit", async () => {
    expect(users.length).toBeGreaterThan(20);
    const { rows } = await db.query<{ user_id: string; balance: number | null; sum: number | null; entries: number }>(
      `select u.user_id, a.balance::float8 as balance, coalesce(sum(l.amount), 0)::float8 as sum, count(l.id)::int as entries
         from unnest($1::uuid[]) as u(user_id)
         left join point.account a on a.user_id = u.user_id
         left join point.ledger_entry l on l.user_id = u.user_id
        group by u.user_id, a.balance`,
      [users],
    );
    const mismatched = rows.filter((row) => (row.balance ?? 0) !== row.sum || (row.entries > 0 && row.balance === null));
    expect(mismatched).toEqual([]);
    expect(rows.every((row) => (row.balance ?? 0) >= 0 && (row.balance ?? 0) <= Number(maxBalance))).toBe(true);
    // And the newest entry of each user carries the balance.
    const { rows: last } = await db.query<{ user_id: string; balance: number; balance_after: number }>(
      `select a.user_id, a.balance::float8 as balance, l.balance_after::float8 as balance_after
         from point.account a
         join lateral (select balance_after from point.ledger_entry where user_id = a.user_id order by balance_after desc limit 1) l on true
        where a.user_id = any($1::uuid[]) and not exists (select 1 from point.ledger_entry r where r.user_id = a.user_id and r.kind <> 'CHARGE')`,
      [users],
    );
    expect(last.filter((row) => row.balance !== row.balance_after)).toEqual([]);
  });
});
