import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { createContextKey, type ContextValues, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createHash, timingSafeEqual } from "node:crypto";
import { Access, access } from "../../gen/boxoffice/common/v1/access_pb.js";
import { DependencyDown, Forbidden, NotAuthenticated, Reason } from "./errors.js";
import type { UserToken, UserTokens } from "./tokens.js";

/** The user behind a call's `authorization` header, when there is one. */
export const callerKey = createContextKey<UserToken | undefined>(undefined, { description: "authenticated user" });

/** What an admission check proves about a gated call. */
export interface Admission {
  userId: string;
  concertId: string;
  queueToken: string;
  admittedUntil: Date;
}
export const admissionKey = createContextKey<Admission | undefined>(undefined, { description: "queue admission" });
/** For ACCESS_GATED_IDEMPOTENT RPCs: the admission check, run when the handler does new work. */
export const admissionCheckKey = createContextKey<(() => Promise<Admission>) | undefined>(undefined, { description: "deferred admission check" });

/**
 * Checks queue tokens for gated RPCs. The queue service provides it: directly
 * when it runs in this process, through its internal RPC otherwise. Without
 * one, gated RPCs fail closed.
 */
export interface AdmissionGate {
  /** Proves the token is admitted now for this user; throws a DomainError otherwise. */
  checkAdmitted(queueToken: string, userId: string): Promise<Admission>;
}

export interface AccessOptions {
  tokens: UserTokens;
  internalCredential: string;
  operatorKey: string;
  /** The door scanners' credential (ACCESS_SCANNER), which is not the operator's. */
  scannerKey: string;
  gate?: AdmissionGate;
}

export const internalCredentialHeader = "x-internal-credential";
export const queueTokenHeader = "x-queue-token";

/** The admission a gated handler runs under; the access interceptor has checked it. */
export function admission(ctx: HandlerContext): Admission {
  const admitted = ctx.values.get(admissionKey);
  if (!admitted) throw new Forbidden(Reason.NOT_ADMITTED, "this RPC needs an admitted queue token");
  return admitted;
}

/**
 * The admission of a call, checked now if the access level deferred it
 * (ACCESS_GATED_IDEMPOTENT: a handler calls this before any new work, after
 * answering a replay).
 */
export async function admitted(ctx: HandlerContext): Promise<Admission> {
  const known = ctx.values.get(admissionKey);
  if (known) return known;
  const check = ctx.values.get(admissionCheckKey);
  if (!check) throw new Forbidden(Reason.NOT_ADMITTED, "this RPC needs an admitted queue token");
  return check();
}

/** The user a handler acts for; the access interceptor has made sure there is one. */
export function caller(ctx: HandlerContext): UserToken {
  const user = ctx.values.get(callerKey);
  if (!user) throw new NotAuthenticated(Reason.TOKEN_MISSING, "this RPC needs a user token");
  return user;
}

/** The token of an `authorization: Bearer <token>` header: undefined without the header, "" when it is malformed. */
export function bearer(headers: Headers): string | undefined {
  const value = headers.get("authorization");
  if (value === null) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return match ? match[1] : "";
}

/** Compares digests, so that neither the content nor the length of the secret leaks through timing. */
function sameSecret(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const digest = (value: string) => createHash("sha256").update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Whether the call carries the credential boxoffice services present to each other. */
/** Whether an `authorization` header value carries the operator credential. */
export function isOperator(authorization: string | undefined, operatorKey: string): boolean {
  const headers = new Headers();
  if (authorization !== undefined) headers.set("authorization", authorization);
  return sameSecret(bearer(headers), operatorKey);
}

export function fromService(headers: Headers, internalCredential: string): boolean {
  return sameSecret(headers.get(internalCredentialHeader) ?? undefined, internalCredential);
}

/** Access levels by method: reading the option builds an extension container each time, so once per method. */
const levels = new WeakMap<DescMethod, Access>();
function accessLevel(method: DescMethod): Access {
  let level = levels.get(method);
  if (level === undefined) levels.set(method, (level = getOption(method, access)));
  return level;
}

/**
 * Whether the RPC is gated (ACCESS_GATED, ACCESS_GATED_IDEMPOTENT): only fans admitted from the waiting room
 * get past its access check, so its calls in progress are bounded by the rooms' max_active.
 */
export function isGated(method: DescMethod): boolean {
  const level = accessLevel(method);
  return level === Access.GATED || level === Access.GATED_IDEMPOTENT;
}

/**
 * The access rule of the contract for one call: the level its RPC declares
 * (`option (boxoffice.common.v1.access)`) checked against the call's headers,
 * and what the check proves (the caller, the admission) put in its context
 * values. The one place both the interceptor and the raw streams
 * (raw-streams.ts) enforce access from.
 */
export type AccessCheck = (method: DescMethod, header: Headers, values: ContextValues) => Promise<void>;

export function accessCheck(options: AccessOptions): AccessCheck {
  const { tokens, gate } = options;

  async function user(headers: Headers, required: boolean): Promise<UserToken | undefined> {
    const token = bearer(headers);
    if (token === undefined) {
      if (required) throw new NotAuthenticated(Reason.TOKEN_MISSING, "this RPC needs a user token (authorization: Bearer <token>)");
      return undefined;
    }
    if (token === "") throw new NotAuthenticated(Reason.TOKEN_INVALID, "authorization header must be 'Bearer <token>'");
    return tokens.verify(token);
  }

  async function admit(headers: Headers, userId: string): Promise<Admission> {
    const queueToken = headers.get(queueTokenHeader);
    if (!queueToken) throw new Forbidden(Reason.QUEUE_TOKEN_MISSING, `this RPC needs an admitted queue token (${queueTokenHeader})`);
    if (!gate) throw new DependencyDown("no admission gate: the queue service is not part of this suite");
    return gate.checkAdmitted(queueToken, userId);
  }

  return async (method, header, values) => {
    switch (accessLevel(method)) {
      case Access.ANYONE:
        values.set(callerKey, await user(header, false));
        break;
      case Access.USER:
        values.set(callerKey, await user(header, true));
        break;
      case Access.GATED: {
        const who = (await user(header, true))!;
        values.set(callerKey, who);
        values.set(admissionKey, await admit(header, who.userId));
        break;
      }
      case Access.GATED_IDEMPOTENT: {
        const who = (await user(header, true))!;
        values.set(callerKey, who);
        let checked: Promise<Admission> | undefined;
        values.set(admissionCheckKey, () => (checked ??= admit(header, who.userId)));
        break;
      }
      case Access.QUEUE_TOKEN:
        if (!header.get(queueTokenHeader)) {
          throw new NotAuthenticated(Reason.QUEUE_TOKEN_MISSING, `this RPC needs a queue token (${queueTokenHeader})`);
        }
        break;
      case Access.INTERNAL:
        if (!fromService(header, options.internalCredential)) {
          throw new Forbidden(Reason.INTERNAL_ONLY, "this RPC is for boxoffice services only");
        }
        break;
      case Access.OPERATOR:
        if (!sameSecret(bearer(header), options.operatorKey)) {
          throw new Forbidden(Reason.OPERATOR_ONLY, "this RPC needs the operator credential");
        }
        break;
      case Access.SCANNER:
        if (!sameSecret(bearer(header), options.scannerKey)) {
          throw new Forbidden(Reason.SCANNER_ONLY, "this RPC needs the scanner credential (authorization: Bearer <scanner key>); an operator key or user token is not one");
        }
        break;
      default:
        throw new Forbidden(Reason.UNSPECIFIED, `${method.name} declares no access level`);
    }
  };
}

/** Enforces the contract's access levels on Connect calls (see accessCheck), and puts the caller in the context. */
export function accessInterceptor(options: AccessOptions | AccessCheck): Interceptor {
  const check = typeof options === "function" ? options : accessCheck(options);
  return (next) => async (req) => {
    await check(req.method, req.header, req.contextValues);
    return next(req);
  };
}
