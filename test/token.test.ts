import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConcertAdminService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { reasonOf, Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { UserTokens } from "../services/platform/tokens.js";
import { bearer, client, failure, newUser, operator, startTestSuite, testSecrets } from "./support.js";

let suite: Suite;
beforeAll(async () => {
  suite = await startTestSuite();
});
afterAll(() => suite?.close());

describe("IssueUserToken", () => {
  it("creates a new user with a signed token that expires in the future", async () => {
    const issued = await newUser(suite);
    expect(issued.userId).toMatch(/^[0-9a-f-]{36}$/);
    expect(issued.token.split(".")).toHaveLength(3);
    expect(Number(issued.expiresAt!.seconds) * 1000).toBeGreaterThan(Date.now());
    const other = await newUser(suite);
    expect(other.userId).not.toBe(issued.userId);
  });

  it("refreshes a valid token for the same user", async () => {
    const first = await newUser(suite);
    const tokens = client(suite, TokenService, "connect");
    const refreshed = await tokens.issueUserToken({}, bearer(first.token));
    expect(refreshed.userId).toBe(first.userId);
    const again = await tokens.issueUserToken({}, bearer(refreshed.token));
    expect(again.userId).toBe(first.userId);
  });

  it("rejects forged, expired, malformed and unknown-user tokens with Unauthenticated", async () => {
    const user = await newUser(suite);
    const forged = await new UserTokens("some-other-secret", 3600).sign(user.userId);
    const expired = await new UserTokens(testSecrets.TOKEN_SECRET, 60, () => new Date(Date.now() - 3600_000)).sign(user.userId);
    const ghost = await new UserTokens(testSecrets.TOKEN_SECRET, 3600).sign(randomUUID());
    const [head, , signature] = user.token.split(".");
    const tampered = `${head}.${Buffer.from(JSON.stringify({ sub: randomUUID(), exp: 4102444800 })).toString("base64url")}.${signature}`;
    const cases: [string, Reason, Record<string, string>][] = [
      ["forged", Reason.TOKEN_INVALID, { authorization: `Bearer ${forged.token}` }],
      ["tampered", Reason.TOKEN_INVALID, { authorization: `Bearer ${tampered}` }],
      ["expired", Reason.TOKEN_EXPIRED, { authorization: `Bearer ${expired.token}` }],
      ["garbage", Reason.TOKEN_INVALID, { authorization: "Bearer not-a-token" }],
      ["wrong scheme", Reason.TOKEN_INVALID, { authorization: `Basic ${user.token}` }],
      ["unknown user", Reason.USER_NOT_FOUND, { authorization: `Bearer ${ghost.token}` }],
    ];
    for (const [name, reason, headers] of cases) {
      const error = await failure(client(suite, TokenService).issueUserToken({}, { headers }));
      expect(error.code, name).toBe(Code.Unauthenticated);
      expect(reasonOf(error), name).toBe(reason);
      expect(error.rawMessage, name).not.toMatch(/stack|at .*\.ts/);
    }
  });
});

describe("UserTokens.verify", () => {
  it("accepts a token until its expiry and refuses a forged, re-signed or reshaped one", async () => {
    let now = Date.now();
    const tokens = new UserTokens(testSecrets.TOKEN_SECRET, 60, () => new Date(now));
    const { token, userId } = await tokens.sign(randomUUID());
    expect((await tokens.verify(token)).userId).toBe(userId);
    expect((await tokens.verify(token)).userId).toBe(userId);
    now += 61_000;
    await expect(tokens.verify(token)).rejects.toMatchObject({ reason: Reason.TOKEN_EXPIRED });
    const fresh = await tokens.sign(randomUUID());
    const [header, payload, signature] = fresh.token.split(".") as [string, string, string];
    const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>;
    const otherKey = await new UserTokens(`${testSecrets.TOKEN_SECRET}x`, 60, () => new Date(now)).sign(fresh.userId);
    for (const bad of [
      `${header}.${payload}.${signature.slice(0, -4)}AAAA`,
      otherKey.token,
      `${header}.${encode({ ...claims, sub: randomUUID() })}.${signature}`,
      `${encode({ alg: "none", typ: "JWT" })}.${payload}.`,
      `${header}.${payload}`,
      `${header}.${payload}.${signature}.x`,
      `${header}.${payload}.${signature}=`,
      "",
    ]) {
      await expect(tokens.verify(bad), bad).rejects.toMatchObject({ reason: Reason.TOKEN_INVALID });
    }
    expect((await tokens.verify(fresh.token)).userId).toBe(fresh.userId);
  });
});

describe("IssueQueueToken", () => {
  it("needs a user token", async () => {
    const error = await failure(client(suite, TokenService).issueQueueToken({ concertId: randomUUID() }));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(reasonOf(error)).toBe(Reason.TOKEN_MISSING);
  });

  it("names the malformed field", async () => {
    const user = await newUser(suite);
    const error = await failure(client(suite, TokenService).issueQueueToken({ concertId: "nope" }, bearer(user.token)));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("concert_id");
    expect(reasonOf(error)).toBe(Reason.INVALID_ARGUMENT);
  });

  it("enters the concert's waiting room and returns the queue token; asking again returns the same token", async () => {
    const user = await newUser(suite);
    const { concert } = await client(suite, ConcertAdminService).createConcert(
      { title: "Queue token test", schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 86_400_000)), price: 1000n }] },
      operator,
    );
    const tokens = client(suite, TokenService);
    const first = await tokens.issueQueueToken({ concertId: concert!.id }, bearer(user.token));
    expect(first.queueToken).toMatch(/^q1\./);
    expect(first.status?.concertId).toBe(concert!.id);
    expect([QueueState.WAITING, QueueState.ADMITTED]).toContain(first.status?.state);
    const again = await tokens.issueQueueToken({ concertId: concert!.id }, bearer(user.token));
    expect(again.queueToken).toBe(first.queueToken);
  });

  it("is NotFound for a concert that does not exist", async () => {
    const user = await newUser(suite);
    const error = await failure(client(suite, TokenService).issueQueueToken({ concertId: randomUUID() }, bearer(user.token)));
    expect(error.code).toBe(Code.NotFound);
    expect(reasonOf(error)).toBe(Reason.CONCERT_NOT_FOUND);
  });

  it("answers Unavailable when the configured queue address refuses connections", async () => {
    const split = await startTestSuite({ SERVICES: "token", QUEUE_URL: "http://127.0.0.1:1" });
    try {
      const user = await client(split, TokenService).issueUserToken({});
      const error = await failure(client(split, TokenService).issueQueueToken({ concertId: randomUUID() }, bearer(user.token)));
      expect(error.code).toBe(Code.Unavailable);
      expect(reasonOf(error)).toBe(Reason.DEPENDENCY_UNAVAILABLE);
    } finally {
      await split.close();
    }
  });
});
