import { Code } from "@connectrpc/connect";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { createHmac, KeyObject, randomUUID, sign } from "node:crypto";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { loadConfig } from "../services/platform/config.js";
import { reasonOf, Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { accountUserId, UserTokens } from "../services/platform/tokens.js";
import { bearer, client, concertOnSale, failure, startTestSuite, testSecrets } from "./support.js";

const issuer = "https://idp.example.test/";
const audience = "boxoffice-tickets";

/** An identity provider's key endpoint, served by the test: whatever keys it is given, counting the fetches. */
async function jwksEndpoint() {
  const keys: JWK[] = [];
  let fetches = 0;
  let down = false;
  const server = http.createServer((_req, res) => {
    fetches++;
    if (down) {
      res.statusCode = 503;
      res.end();
      return;
    }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`,
    keys,
    fetches: () => fetches,
    setDown: (value: boolean) => (down = value),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

interface SigningKey {
  alg: "RS256" | "ES256";
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(alg: "RS256" | "ES256", kid = `${alg}-${randomUUID().slice(0, 8)}`): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, kid, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

/** A token as the provider would sign it; `claims` and `header` override its defaults. */
async function providerToken(key: SigningKey, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: "fan-42", iss: issuer, aud: audience, iat: now, exp: now + 600, ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT", ...header })
    .sign(key.privateKey);
}

const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
/** A JWT signed with HMAC-SHA256 over `secret`, whatever the header says. */
function hmacToken(header: object, claims: object, secret: string | Buffer) {
  const body = `${encode(header)}.${encode(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** An RS256 JWT signed as given, past jose's own checks on what it signs. */
function rs256Raw(header: object, claims: object, key: SigningKey) {
  const body = `${encode(header)}.${encode(claims)}`;
  return `${body}.${sign("sha256", Buffer.from(body), KeyObject.from(key.privateKey)).toString("base64url")}`;
}

let jwks: Awaited<ReturnType<typeof jwksEndpoint>>;
let rsa: SigningKey;
let ec: SigningKey;
let suite: Suite;
beforeAll(async () => {
  jwks = await jwksEndpoint();
  [rsa, ec] = await Promise.all([signingKey("RS256"), signingKey("ES256")]);
  jwks.keys.push(rsa.jwk, ec.jwk);
  suite = await startTestSuite({
    USER_TOKEN_JWKS_URL: jwks.url,
    USER_TOKEN_ISSUER: issuer,
    USER_TOKEN_AUDIENCE: audience,
    RATE_LIMIT_CHARGE_PER_USER: "4",
  });
});
afterAll(async () => {
  await suite?.close();
  await jwks?.close();
});

describe("user tokens from an identity provider (JWKS)", () => {
  it("keeps our own tokens on the fast path: a suite that only sees them never fetches the JWKS", async () => {
    const user = await client(suite, TokenService).issueUserToken({});
    await client(suite, PointService).getBalance({}, bearer(user.token));
    expect(jwks.fetches()).toBe(0);
  });

  it("accepts RS256 and ES256 tokens of one account as one user, on any RPC, with our user id derived from issuer and subject", async () => {
    const sub = `fan-${randomUUID()}`;
    const userId = accountUserId(issuer, sub);
    expect(userId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const points = client(suite, PointService);
    await points.chargePoints({ amount: 100n, idempotencyKey: randomUUID() }, bearer(await providerToken(rsa, { sub })));
    await points.chargePoints({ amount: 50n, idempotencyKey: randomUUID() }, bearer(await providerToken(ec, { sub })));
    expect((await points.getBalance({}, bearer(await providerToken(ec, { sub })))).balance).toBe(150n);
    // Another subject is another user; the same subject at another provider would be too.
    expect((await points.getBalance({}, bearer(await providerToken(rsa, { sub: `${sub}x` })))).balance).toBe(0n);
    expect(accountUserId("https://other.example/", sub)).not.toBe(userId);
    // The queue sees the same user (IssueQueueToken carries the provider's token on to EnterQueue).
    const { concertId } = await concertOnSale(suite, [{ seatCount: 5, price: 100n }]);
    const first = await client(suite, TokenService).issueQueueToken({ concertId }, bearer(await providerToken(rsa, { sub })));
    const again = await client(suite, QueueService).enterQueue({ concertId }, bearer(await providerToken(ec, { sub })));
    expect(again.queueToken).toBe(first.queueToken);
    expect(jwks.fetches()).toBe(1);
  });

  it("counts an account's calls on one budget whichever key signed its tokens", async () => {
    const sub = `fan-${randomUUID()}`;
    const points = client(suite, PointService);
    for (const key of [rsa, ec, rsa, ec]) await points.chargePoints({ amount: 1n, idempotencyKey: randomUUID() }, bearer(await providerToken(key, { sub })));
    const refused = await failure(points.chargePoints({ amount: 1n, idempotencyKey: randomUUID() }, bearer(await providerToken(ec, { sub }))));
    expect([refused.code, reasonOf(refused)]).toEqual([Code.ResourceExhausted, Reason.RATE_LIMITED]);
  });

  it("IssueUserToken exchanges the provider's token for ours, for the same user and no longer than the sign-in", async () => {
    const sub = `fan-${randomUUID()}`;
    const exp = Math.floor(Date.now() / 1000) + 300;
    const tokens = client(suite, TokenService);
    const ours = await tokens.issueUserToken({}, bearer(await providerToken(ec, { sub, exp })));
    expect(ours.userId).toBe(accountUserId(issuer, sub));
    expect(Number(ours.expiresAt!.seconds)).toBe(exp);
    expect(JSON.parse(Buffer.from(ours.token.split(".")[0]!, "base64url").toString())).toMatchObject({ alg: "HS256" });
    await client(suite, PointService).chargePoints({ amount: 7n, idempotencyKey: randomUUID() }, bearer(ours.token));
    expect((await client(suite, PointService).getBalance({}, bearer(await providerToken(rsa, { sub })))).balance).toBe(7n);
    // Renewing our token keeps the sign-in's end; signing in again (twice, at once) finds the same user.
    const renewed = await tokens.issueUserToken({}, bearer(ours.token));
    expect([renewed.userId, Number(renewed.expiresAt!.seconds)]).toEqual([ours.userId, exp]);
    const twice = await Promise.all([rsa, ec].map(async (key) => tokens.issueUserToken({}, bearer(await providerToken(key, { sub })))));
    expect(twice.map((t) => t.userId)).toEqual([ours.userId, ours.userId]);
  });

  it("refuses forged, reshaped and misdirected tokens with Unauthenticated, and the expired with TOKEN_EXPIRED", async () => {
    const now = Math.floor(Date.now() / 1000);
    const stranger = await signingKey("RS256", rsa.kid); // the provider's kid, another key
    const unknown = await signingKey("ES256");
    const pem = await exportSPKI(rsa.publicKey);
    const claims = { sub: "fan-1", iss: issuer, aud: audience, exp: now + 600 };
    const [head, payload] = (await providerToken(rsa)).split(".") as [string, string];
    const cases: [string, string, Reason][] = [
      ["unknown kid", await providerToken(unknown), Reason.TOKEN_INVALID],
      ["another key under the provider's kid", await providerToken(stranger), Reason.TOKEN_INVALID],
      ["wrong issuer", await providerToken(rsa, { iss: "https://evil.example/" }), Reason.TOKEN_INVALID],
      ["wrong audience", await providerToken(rsa, { aud: "some-other-app" }), Reason.TOKEN_INVALID],
      ["no audience", await providerToken(rsa, { aud: undefined }), Reason.TOKEN_INVALID],
      ["expired", await providerToken(ec, { exp: now - 60 }), Reason.TOKEN_EXPIRED],
      ["not yet valid", await providerToken(ec, { nbf: now + 600 }), Reason.TOKEN_INVALID],
      ["no subject", await providerToken(rsa, { sub: undefined }), Reason.TOKEN_INVALID],
      ["no expiry", await providerToken(rsa, { exp: undefined }), Reason.TOKEN_INVALID],
      ["a subject too long", await providerToken(rsa, { sub: "x".repeat(300) }), Reason.TOKEN_INVALID],
      ["ES256 header over the RSA key's kid", await providerToken(ec, {}, { kid: rsa.kid }), Reason.TOKEN_INVALID],
      ["RS384, not allowed", await new SignJWT(claims).setProtectedHeader({ alg: "RS384", kid: rsa.kid }).sign((await generateKeyPair("RS384")).privateKey), Reason.TOKEN_INVALID],
      ["alg none", `${encode({ alg: "none", typ: "JWT" })}.${encode(claims)}.`, Reason.TOKEN_INVALID],
      ["alg none, the signature kept", `${encode({ alg: "none", kid: rsa.kid })}.${payload}.${(await providerToken(rsa)).split(".")[2]}`, Reason.TOKEN_INVALID],
      ["HS256 keyed with the public key (PEM)", hmacToken({ alg: "HS256", kid: rsa.kid }, claims, pem), Reason.TOKEN_INVALID],
      ["HS256 keyed with the public key (JWK)", hmacToken({ alg: "HS256", kid: rsa.kid }, claims, JSON.stringify(rsa.jwk)), Reason.TOKEN_INVALID],
      ["HS256 keyed with the modulus", hmacToken({ alg: "HS256" }, claims, Buffer.from(rsa.jwk.n!, "base64url")), Reason.TOKEN_INVALID],
      ["payload swapped under a valid signature", `${head}.${encode({ ...claims, sub: "fan-2" })}.${(await providerToken(rsa)).split(".")[2]}`, Reason.TOKEN_INVALID],
      ["an embedded key (jwk header)", await providerToken(unknown, {}, { kid: undefined, jwk: unknown.jwk }), Reason.TOKEN_INVALID],
      ["a critical header it does not know", rs256Raw({ alg: "RS256", kid: rsa.kid, crit: ["x-bound"], "x-bound": 1 }, claims, rsa), Reason.TOKEN_INVALID],
    ];
    const before = jwks.fetches();
    for (const [name, token, reason] of cases) {
      const error = await failure(client(suite, PointService).getBalance({}, bearer(token)));
      expect([Code[error.code], Reason[reasonOf(error)!]], name).toEqual([Code[Code.Unauthenticated], Reason[reason]]);
      expect(error.rawMessage, name).not.toMatch(/jose|JWS|JWK|stack|ERR_/);
    }
    // Unknown kids do not make the service fetch the keys again and again (once per cooldown at most).
    expect(jwks.fetches() - before).toBeLessThanOrEqual(1);
  });

  it("answers Unavailable, not Unauthenticated, when the provider's keys cannot be fetched; our own tokens go on", async () => {
    const dead = await startTestSuite({ USER_TOKEN_JWKS_URL: "http://127.0.0.1:1/jwks", USER_TOKEN_ISSUER: issuer, USER_TOKEN_AUDIENCE: audience });
    try {
      const error = await failure(client(dead, PointService).getBalance({}, bearer(await providerToken(rsa))));
      expect([error.code, reasonOf(error)]).toEqual([Code.Unavailable, Reason.DEPENDENCY_UNAVAILABLE]);
      expect(error.rawMessage).toContain("USER_TOKEN_JWKS_URL");
      const user = await client(dead, TokenService).issueUserToken({});
      expect((await client(dead, PointService).getBalance({}, bearer(user.token))).balance).toBe(0n);
    } finally {
      await dead.close();
    }
  });
});

describe("UserTokens with a provider", () => {
  it("follows a key rotation, and keeps verifying with the keys it has while the JWKS is down", async () => {
    const endpoint = await jwksEndpoint();
    try {
      const first = await signingKey("ES256");
      endpoint.keys.push(first.jwk);
      const tokens = new UserTokens(testSecrets.TOKEN_SECRET, 3600, undefined, { jwksUrl: endpoint.url, issuer, audience, refetchAfterMs: 0 });
      expect((await tokens.verify(await providerToken(first))).kind).toBe("provider");
      const next = await signingKey("RS256");
      endpoint.keys.push(next.jwk);
      expect((await tokens.verify(await providerToken(next, { sub: "rotated" }))).userId).toBe(accountUserId(issuer, "rotated"));
      endpoint.setDown(true);
      // A token never seen, by a key already known: verified with the keys fetched last.
      expect((await tokens.verify(await providerToken(first, { sub: "while-down" }))).userId).toBe(accountUserId(issuer, "while-down"));
      // A key it has not seen: undecided, not refused.
      const unseen = await signingKey("ES256");
      await expect(tokens.verify(await providerToken(unseen))).rejects.toMatchObject({ reason: Reason.DEPENDENCY_UNAVAILABLE });
      // Forged with a known key's kid: still refused.
      const forger = await signingKey("ES256", first.kid);
      await expect(tokens.verify(await providerToken(forger))).rejects.toMatchObject({ reason: Reason.TOKEN_INVALID });
    } finally {
      await endpoint.close();
    }
  });
});

describe("accounts required", () => {
  let required: Suite;
  beforeAll(async () => {
    required = await startTestSuite({ USER_TOKEN_JWKS_URL: jwks.url, USER_TOKEN_ISSUER: issuer, USER_TOKEN_AUDIENCE: audience, REQUIRE_ACCOUNTS: "true" });
  });
  afterAll(() => required?.close());

  it("makes no anonymous users and refuses their tokens; the provider's tokens, and ours exchanged for them, pass", async () => {
    const tokens = client(required, TokenService);
    const none = await failure(tokens.issueUserToken({}));
    expect([none.code, reasonOf(none)]).toEqual([Code.Unauthenticated, Reason.TOKEN_MISSING]);
    expect(none.rawMessage).toMatch(/requires an account/);
    const anonymous = await new UserTokens(testSecrets.TOKEN_SECRET, 3600).sign(randomUUID());
    for (const call of [() => tokens.issueUserToken({}, bearer(anonymous.token)), () => client(required, PointService).getBalance({}, bearer(anonymous.token))]) {
      const error = await failure(call());
      expect([error.code, reasonOf(error)]).toEqual([Code.Unauthenticated, Reason.TOKEN_INVALID]);
      expect(error.rawMessage).toMatch(/requires an account/);
    }
    const sub = `fan-${randomUUID()}`;
    const ours = await tokens.issueUserToken({}, bearer(await providerToken(rsa, { sub })));
    expect(ours.userId).toBe(accountUserId(issuer, sub));
    expect((await client(required, PointService).getBalance({}, bearer(ours.token))).balance).toBe(0n);
    expect((await client(required, PointService).getBalance({}, bearer(await providerToken(ec, { sub })))).balance).toBe(0n);
  });
});

describe("account settings", () => {
  const base = { DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-jwks-config-")), ...testSecrets };
  it("needs an issuer and an audience with a JWKS, https away from localhost, and a JWKS to require accounts", () => {
    expect(loadConfig(base).accounts).toEqual({ jwksUrl: undefined, issuer: undefined, audience: undefined, requireAccounts: false });
    const full = { ...base, USER_TOKEN_JWKS_URL: "https://idp.example/jwks", USER_TOKEN_ISSUER: issuer, USER_TOKEN_AUDIENCE: audience };
    expect(loadConfig({ ...full, REQUIRE_ACCOUNTS: "true" }).accounts).toEqual({ jwksUrl: "https://idp.example/jwks", issuer, audience, requireAccounts: true });
    expect(() => loadConfig({ ...full, USER_TOKEN_ISSUER: "" })).toThrow(/USER_TOKEN_ISSUER and USER_TOKEN_AUDIENCE/);
    expect(() => loadConfig({ ...full, USER_TOKEN_AUDIENCE: "" })).toThrow(/USER_TOKEN_AUDIENCE/);
    expect(() => loadConfig({ ...full, USER_TOKEN_JWKS_URL: "http://idp.example/jwks" })).toThrow(/USER_TOKEN_JWKS_URL must be https/);
    expect(() => loadConfig({ ...full, USER_TOKEN_JWKS_URL: "not a url" })).toThrow(/USER_TOKEN_JWKS_URL must be a URL/);
    expect(() => loadConfig({ ...base, USER_TOKEN_ISSUER: issuer })).toThrow(/set USER_TOKEN_JWKS_URL too/);
    expect(() => loadConfig({ ...base, REQUIRE_ACCOUNTS: "true" })).toThrow(/REQUIRE_ACCOUNTS=true needs USER_TOKEN_JWKS_URL/);
  });
});
