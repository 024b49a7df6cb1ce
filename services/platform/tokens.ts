import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, SignJWT, type JWTVerifyGetKey } from "jose";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { DependencyDown, NotAuthenticated, Reason } from "./errors.js";

/**
 * Whose token a caller holds: ours for an anonymous user (IssueUserToken
 * without a token), ours for an account (IssueUserToken given the identity
 * provider's token), or the identity provider's own.
 */
export type TokenKind = "anonymous" | "account" | "provider";

export interface UserToken {
  token: string;
  userId: string;
  expiresAt: Date;
  kind: TokenKind;
}

/** Where accounts come from (config.ts AccountConfig): an identity provider's JWKS, and whether anonymous users are allowed. */
export interface AccountOptions {
  jwksUrl?: string | undefined;
  issuer?: string | undefined;
  audience?: string | undefined;
  requireAccounts?: boolean;
  /** How soon after a JWKS fetch a token with an unknown `kid` makes it fetch again (jose's cooldown; 30 s). */
  refetchAfterMs?: number;
}

const issuer = "boxoffice";
const audience = "boxoffice:user";
/** What the identity provider may sign with: asymmetric only, so no HS256 token can pass for one of its (alg confusion). */
const providerAlgorithms = ["RS256", "ES256"];
const longestToken = 8192;

interface Claims {
  userId: string;
  exp: number;
  kind: TokenKind;
}

/**
 * Our user id for an account: a UUID (version 8, RFC 9562) derived from the
 * provider's issuer and subject, so that every instance of every service maps
 * a sign-in to the same user with nothing to look up, and the ids of two
 * providers never meet.
 */
export function accountUserId(providerIssuer: string, subject: string): string {
  const bytes = createHash("sha256").update(`boxoffice account\0${providerIssuer}\0${subject}`).digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x80;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Signs and verifies user tokens. Our own are HS256 JWTs carrying the user id
 * and expiry; every service verifies them locally with the shared key and none
 * calls the token service. That check is node:crypto's HMAC, synchronous: every
 * gated call verifies a token, and jose's WebCrypto path (a job off the main
 * thread and back) cost ten times as much (46 µs against 4.6 µs a token on the
 * bench machine). With an identity provider configured, its RS256/ES256 tokens
 * are verified with jose against its JWKS (fetched on first use, cached, fetched
 * again for an unknown key at most once per cooldown); a verified token of
 * either kind is remembered, so a fan's repeated token costs a lookup.
 */
export class UserTokens {
  readonly #key: Uint8Array;
  readonly #verified = new Map<string, Claims>();
  readonly #provider: Provider | undefined;
  readonly requiresAccounts: boolean;

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
    private readonly now: () => Date = () => new Date(),
    accounts: AccountOptions = {},
  ) {
    this.#key = new TextEncoder().encode(secret);
    this.#provider = accounts.jwksUrl ? new Provider(accounts, now) : undefined;
    this.requiresAccounts = accounts.requireAccounts ?? false;
  }

  /** Our token for the user; for an account it says so, and ends no later than `notAfter` (the provider's sign-in). */
  async sign(userId: string, options: { account?: boolean; notAfter?: Date } = {}): Promise<UserToken> {
    const issuedAt = Math.floor(this.now().getTime() / 1000);
    const notAfter = options.notAfter ? Math.floor(options.notAfter.getTime() / 1000) : Infinity;
    const expiresAt = Math.min(issuedAt + this.ttlSeconds, notAfter);
    const token = await new SignJWT(options.account ? { acct: true } : {})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(userId)
      .setIssuer(issuer)
      .setAudience(audience)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt)
      .sign(this.#key);
    return { token, userId, expiresAt: new Date(expiresAt * 1000), kind: options.account ? "account" : "anonymous" };
  }

  /**
   * The token's user, or NotAuthenticated saying whether it is expired or
   * invalid (or, where accounts are required, anonymous); DependencyDown when
   * the provider's keys cannot be fetched to decide.
   */
  async verify(token: string): Promise<UserToken> {
    let claims = this.#verified.get(token);
    if (!claims) {
      const alg = token.length <= longestToken ? algorithmOf(token) : undefined;
      const found = alg === "HS256" ? this.#claims(token) : this.#provider && alg && providerAlgorithms.includes(alg) ? await this.#provider.claims(token) : undefined;
      if (!found) throw new NotAuthenticated(Reason.TOKEN_INVALID, "user token is not valid");
      claims = this.#remember(token, found);
    }
    if (claims.exp * 1000 <= this.now().getTime()) {
      throw new NotAuthenticated(
        Reason.TOKEN_EXPIRED,
        claims.kind === "anonymous" ? "user token has expired; get a fresh one with IssueUserToken" : "the account's sign-in has expired; sign in again with the identity provider",
      );
    }
    if (this.requiresAccounts && claims.kind === "anonymous") {
      throw new NotAuthenticated(Reason.TOKEN_INVALID, "this deployment requires an account: sign in with the identity provider and send its token");
    }
    return { token, userId: claims.userId, expiresAt: new Date(claims.exp * 1000), kind: claims.kind };
  }

  /** A fan sends the same token with every call: its checked claims are kept (bounded, oldest out; expiry is still checked each time). */
  #remember(token: string, claims: Claims): Claims {
    if (this.#verified.size >= rememberedTokens) this.#verified.delete(this.#verified.keys().next().value!);
    this.#verified.set(token, claims);
    return claims;
  }

  /** The claims of a well-formed HS256 JWT signed with our key, issued by us for users; else undefined. */
  #claims(token: string): Claims | undefined {
    const parts = token.split(".");
    if (parts.length !== 3 || parts.some((part) => !base64url.test(part))) return undefined;
    const [header, payload, signature] = parts as [string, string, string];
    const expected = createHmac("sha256", this.#key).update(`${header}.${payload}`).digest();
    const given = Buffer.from(signature, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    const head = json(header);
    const claims = json(payload);
    if (head?.alg !== "HS256" || head.crit !== undefined || !claims) return undefined;
    const { sub, exp, iss, aud, acct } = claims;
    const forUsers = aud === audience || (Array.isArray(aud) && aud.includes(audience));
    if (iss !== issuer || !forUsers || typeof sub !== "string" || sub === "" || typeof exp !== "number") return undefined;
    return { userId: sub, exp, kind: acct === true ? "account" : "anonymous" };
  }
}

/**
 * The identity provider's tokens, checked with jose: signature by a key of
 * its JWKS (RS256 or ES256 only), issuer, audience, expiry and not-before.
 * While its JWKS cannot be fetched, the keys fetched last still verify tokens
 * (retrying the fetch every cooldown); with none fetched yet, the answer is
 * DependencyDown, not a refusal of the fan.
 */
class Provider {
  readonly #remote: ReturnType<typeof createRemoteJWKSet>;
  readonly #keys: JWTVerifyGetKey;
  readonly #issuer: string;
  readonly #audience: string;
  readonly #cooldownMs: number;
  /** Until when the JWKS is known unreachable: the keys fetched last are used without asking. */
  #unreachableUntil = 0;

  constructor(
    options: AccountOptions,
    private readonly now: () => Date,
  ) {
    this.#issuer = options.issuer!;
    this.#audience = options.audience!;
    this.#cooldownMs = options.refetchAfterMs ?? 30_000;
    this.#remote = createRemoteJWKSet(new URL(options.jwksUrl!), { timeoutDuration: 2_000, cooldownDuration: this.#cooldownMs });
    // A key the last keys do not have could be one the provider has rotated to: undecided, not refused.
    const fromStale: JWTVerifyGetKey = async (header, token) => {
      const stale = this.#remote.jwks();
      if (!stale) throw new KeysUnreachable();
      try {
        return await createLocalJWKSet(stale)(header, token);
      } catch (error) {
        throw (error as { code?: unknown }).code === "ERR_JWKS_NO_MATCHING_KEY" ? new KeysUnreachable() : error;
      }
    };
    this.#keys = async (header, token) => {
      if (Date.now() < this.#unreachableUntil) return fromStale(header, token);
      try {
        return await this.#remote(header, token);
      } catch (error) {
        if (isVerdict(error)) throw error;
        this.#unreachableUntil = Date.now() + this.#cooldownMs;
        return fromStale(header, token);
      }
    };
  }

  async claims(token: string): Promise<Claims | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.#keys, {
        issuer: this.#issuer,
        audience: this.#audience,
        algorithms: providerAlgorithms,
        requiredClaims: ["sub", "exp"],
        currentDate: this.now(),
        clockTolerance: 5,
      });
      const { sub, exp } = payload;
      if (typeof sub !== "string" || sub === "" || sub.length > 255 || typeof exp !== "number") return undefined;
      return { userId: accountUserId(this.#issuer, sub), exp, kind: "provider" };
    } catch (error) {
      if ((error as { code?: unknown }).code === "ERR_JWT_EXPIRED") {
        throw new NotAuthenticated(Reason.TOKEN_EXPIRED, "the identity provider's token has expired; sign in again");
      }
      if (error instanceof KeysUnreachable) throw new DependencyDown("the identity provider's signing keys (USER_TOKEN_JWKS_URL) cannot be fetched; retry later");
      return undefined;
    }
  }
}

class KeysUnreachable extends Error {}

/** jose's verdicts on a token itself, as the key lookup raises them; anything else there (a timeout, no answer, not a JWKS) is the fetch failing. */
const tokenVerdicts = new Set([
  "ERR_JWS_INVALID",
  "ERR_JWT_INVALID",
  "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
  "ERR_JWT_CLAIM_VALIDATION_FAILED",
  "ERR_JWT_EXPIRED",
  "ERR_JOSE_ALG_NOT_ALLOWED",
  "ERR_JOSE_NOT_SUPPORTED",
  "ERR_JWKS_NO_MATCHING_KEY",
  "ERR_JWKS_MULTIPLE_MATCHING_KEYS",
]);
function isVerdict(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && tokenVerdicts.has(code);
}

function json(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The `alg` a JWT's header names, read without trusting it: it only picks which check runs. */
function algorithmOf(token: string): string | undefined {
  const dot = token.indexOf(".");
  if (dot <= 0 || !base64url.test(token.slice(0, dot))) return undefined;
  const alg = json(token.slice(0, dot))?.alg;
  return typeof alg === "string" ? alg : undefined;
}

const base64url = /^[A-Za-z0-9_-]+$/;
/** How many checked tokens a process keeps (about 300 bytes each). */
const rememberedTokens = 20_000;
