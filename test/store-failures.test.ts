import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { isUnavailable, reasonOf, Reason } from "../services/platform/errors.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { modules } from "../services/modules.js";
import { databaseBehindProxy, type CuttableProxy } from "./cuttable-proxy.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { bearer, testConfig } from "./support.js";

/**
 * Store and dependency failures made to happen for real, and what callers see
 * of them: Unavailable (retryable) and nothing else, with nothing lost or
 * counted twice when they retry.
 */

describe("PostgreSQL sessions cut while charges are in flight", () => {
  const databaseName = `boxoffice_cuts_${process.pid}_${Date.now().toString(36)}`;
  let suite: Suite;
  let proxy: CuttableProxy;

  beforeAll(async () => {
    const { proxy: opened, databaseUrl } = await databaseBehindProxy(await createDatabase(databaseName));
    proxy = opened;
    suite = await startSuite(testConfig({ DATABASE_URL: databaseUrl, DATABASE_POOL_SIZE: "4" }), modules);
  });
  afterAll(async () => {
    await suite?.close();
    await proxy?.cut();
    await dropDatabase(databaseName);
  });

  it("answers only OK or Unavailable, and after retries with the same keys every balance equals its ledger and its charges", async () => {
    const points = createClient(PointService, createGrpcTransport({ baseUrl: suite.host.url }));
    const tokens = createClient(TokenService, createGrpcTransport({ baseUrl: suite.host.url }));
    const users = await Promise.all(Array.from({ length: 6 }, () => tokens.issueUserToken({})));
    const charges = users.flatMap((user) => Array.from({ length: 40 }, (_, i) => ({ user, key: randomUUID(), amount: BigInt(1 + ((i * 7) % 13)) })));

    const codes = new Map<string, number>();
    const failed: typeof charges = [];
    let cutting = true;
    let cutsSoFar = 0;
    // Every connection between the suite and PostgreSQL broken every 150 ms, queries and commits in flight with them.
    const cutter = (async () => {
      while (cutting) {
        await new Promise((resolve) => setTimeout(resolve, 150));
        await proxy.cut();
        await proxy.open();
        cutsSoFar++;
      }
      return cutsSoFar;
    })();
    let next = 0;
    await Promise.all(
      Array.from({ length: 12 }, async () => {
        // The charges, and more while fewer than six cuts have landed: a fast machine is done with 240 in under half a second.
        while (next < charges.length || cutsSoFar < 6) {
          if (next >= charges.length) charges.push({ user: users[charges.length % users.length]!, key: randomUUID(), amount: BigInt(1 + (charges.length % 13)) });
          const charge = charges[next++]!;
          try {
            await points.chargePoints({ amount: charge.amount, idempotencyKey: charge.key }, bearer(charge.user.token));
            codes.set("OK", (codes.get("OK") ?? 0) + 1);
          } catch (error) {
            const code = Code[ConnectError.from(error).code]!;
            codes.set(code, (codes.get(code) ?? 0) + 1);
            if (ConnectError.from(error).code === Code.Unavailable) expect(reasonOf(error)).toBe(Reason.DEPENDENCY_UNAVAILABLE);
            failed.push(charge);
          }
        }
      }),
    );
    cutting = false;
    const cuts = await cutter;

    expect([...codes.keys()].sort(), `answers: ${JSON.stringify(Object.fromEntries(codes))}`).toEqual(expect.arrayContaining(["OK"]));
    expect([...codes.keys()].filter((code) => code !== "OK" && code !== "Unavailable"), JSON.stringify(Object.fromEntries(codes))).toEqual([]);
    // The cuts did land on calls in flight (else this test proves nothing).
    expect(cuts).toBeGreaterThan(3);
    expect(codes.get("Unavailable") ?? 0).toBeGreaterThan(0);

    // A client retries what failed, with the same key, as the contract says it may.
    for (const charge of failed) {
      for (let attempt = 0; ; attempt++) {
        try {
          await points.chargePoints({ amount: charge.amount, idempotencyKey: charge.key }, bearer(charge.user.token));
          break;
        } catch (error) {
          if (ConnectError.from(error).code !== Code.Unavailable || attempt > 20) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }
    for (const user of users) {
      const charged = charges.filter((charge) => charge.user === user).reduce((sum, charge) => sum + charge.amount, 0n);
      const { balance } = await points.getBalance({}, bearer(user.token));
      let ledger = 0n;
      let entries = 0;
      let pageToken = "";
      do {
        const page = await points.listPointTransactions({ pageSize: 100, pageToken }, bearer(user.token));
        for (const entry of page.transactions) ledger += entry.amount;
        entries += page.transactions.length;
        pageToken = page.nextPageToken;
      } while (pageToken);
      expect({ balance, ledger, entries }).toEqual({ balance: charged, ledger: charged, entries: charges.filter((charge) => charge.user === user).length });
    }
  }, 120_000);
});

/** A dependency in its own process: a gRPC server that takes every call and never answers, until it is killed. */
async function startHungDependency(): Promise<{ url: string; kill: () => Promise<void> }> {
  const script = `
    const http2 = require("node:http2");
    const server = http2.createServer();
    server.on("stream", () => {}); // takes the call, never answers
    server.listen(0, "127.0.0.1", () => console.log("port " + server.address().port));
  `;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<string>((resolve) => child.stdout!.on("data", (chunk: Buffer) => resolve(/port (\d+)/.exec(chunk.toString())![1]!)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { url: `http://127.0.0.1:${port}`, kill: () => (child.kill("SIGKILL"), exited) };
}

describe("a dependency that dies in the middle of a call", () => {
  it("is Unavailable to the fan, not Aborted or Canceled", async () => {
    const dependency = await startHungDependency();
    // The token service alone, its queue service (which IssueQueueToken calls) in the process about to die.
    const suite = await startSuite(testConfig({ SERVICES: "token", QUEUE_URL: dependency.url }), modules);
    try {
      const tokens = createClient(TokenService, createGrpcTransport({ baseUrl: suite.host.url }));
      const user = await tokens.issueUserToken({});
      const call = tokens.issueQueueToken({ concertId: randomUUID() }, bearer(user.token)).then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      );
      await new Promise((resolve) => setTimeout(resolve, 300)); // the call is now waiting on the dependency
      await dependency.kill();
      const error = await call;
      expect(error?.code, error?.message).toBe(Code.Unavailable);
      expect(reasonOf(error)).toBe(Reason.DEPENDENCY_UNAVAILABLE);
      expect(error?.rawMessage).toBe("the queue service is unavailable; retry later");
    } finally {
      await suite.close();
    }
  });
});

describe("isUnavailable", () => {
  it("knows a lost connection through the drivers' wrappers, and nothing else", () => {
    const wrapped = (inner: Error) => Object.assign(new Error("query failed"), { cause: inner });
    expect(isUnavailable(new Error("Connection terminated unexpectedly"))).toBe(true);
    expect(isUnavailable(wrapped(new Error("Connection terminated unexpectedly")))).toBe(true);
    expect(isUnavailable(Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }))).toBe(true);
    expect(isUnavailable(Object.assign(new Error("x"), { sqlState: "08006" }))).toBe(true);
    expect(isUnavailable(new Error("Connection is closed."))).toBe(true);
    expect(isUnavailable(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }))).toBe(true);
    expect(isUnavailable(new Error("Cannot read properties of undefined"))).toBe(false);
    expect(isUnavailable(Object.assign(new Error("duplicate key"), { code: "23505" }))).toBe(false);
  });
});
