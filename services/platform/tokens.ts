import { errors, jwtVerify, SignJWT } from "jose";
import { NotAuthenticated, Reason } from "./errors.js";

export interface UserToken {
  token: string;
  userId: string;
  expiresAt: Date;
}

const issuer = "boxoffice";
const audience = "boxoffice:user";

/** How many verified tokens a process remembers (about 300 bytes each). */
const rememberedTokens = 20_000;

/**
 * Signs and verifies user tokens (HS256 JWTs carrying the user id and expiry).
 * Every service verifies locally with the shared key; none calls the token service.
 * A fan sends the same token with every call, so a token once verified is
 * remembered until it expires: the signature check (WebCrypto, off the main
 * thread and back) was the costliest step of a cheap read.
 */
export class UserTokens {
  readonly #key: Uint8Array;
  readonly #verified = new Map<string, UserToken>();

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.#key = new TextEncoder().encode(secret);
  }

  async sign(userId: string): Promise<UserToken> {
    const issuedAt = Math.floor(this.now().getTime() / 1000);
    const expiresAt = issuedAt + this.ttlSeconds;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(userId)
      .setIssuer(issuer)
      .setAudience(audience)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt)
      .sign(this.#key);
    return { token, userId, expiresAt: new Date(expiresAt * 1000) };
  }

  /** The token's user, or NotAuthenticated saying whether it is expired or invalid. */
  async verify(token: string): Promise<UserToken> {
    const known = this.#verified.get(token);
    if (known) {
      if (known.expiresAt > this.now()) return known;
      this.#verified.delete(token);
    }
    const verified = await this.#verify(token);
    // Oldest first out: a Map iterates in insertion order.
    if (this.#verified.size >= rememberedTokens) this.#verified.delete(this.#verified.keys().next().value!);
    this.#verified.set(token, verified);
    return verified;
  }

  async #verify(token: string): Promise<UserToken> {
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        algorithms: ["HS256"],
        issuer,
        audience,
        currentDate: this.now(),
        requiredClaims: ["sub", "exp"],
      });
      return { token, userId: payload.sub!, expiresAt: new Date(payload.exp! * 1000) };
    } catch (error) {
      if (error instanceof errors.JWTExpired) {
        throw new NotAuthenticated(Reason.TOKEN_EXPIRED, "user token has expired; get a fresh one with IssueUserToken");
      }
      throw new NotAuthenticated(Reason.TOKEN_INVALID, "user token is not valid");
    }
  }
}
