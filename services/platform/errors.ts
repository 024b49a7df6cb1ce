import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { ErrorDetailSchema, Reason } from "../../gen/boxoffice/common/v1/error_pb.js";
import { logger } from "./log.js";

export { Reason };

/**
 * The errors domain code throws. Each kind stands for one Connect code; the
 * reason tells clients precisely what happened.
 */
export abstract class DomainError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
    readonly metadata: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A request field is missing or malformed. */
export class InvalidInput extends DomainError {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(Reason.INVALID_ARGUMENT, `${field}: ${problem}`);
  }
}
/** The caller is not authenticated (no, bad or expired token). */
export class NotAuthenticated extends DomainError {}
/** The caller is known but may not do this. */
export class Forbidden extends DomainError {}
/** The thing asked for does not exist (or is not the caller's to see). */
export class NotFound extends DomainError {}
/** The thing to create exists already. */
export class AlreadyExists extends DomainError {}
/** A business rule refuses the request as things stand (seat taken, not admitted...). */
export class Refused extends DomainError {}
/** A limit was reached; retry later. */
export class Exhausted extends DomainError {}
/** A dependency cannot be reached; retry later. */
export class DependencyDown extends DomainError {
  constructor(message: string) {
    super(Reason.DEPENDENCY_UNAVAILABLE, message);
  }
}

const codeOf = new Map<Function, Code>([
  [InvalidInput, Code.InvalidArgument],
  [NotAuthenticated, Code.Unauthenticated],
  [Forbidden, Code.PermissionDenied],
  [NotFound, Code.NotFound],
  [AlreadyExists, Code.AlreadyExists],
  [Refused, Code.FailedPrecondition],
  [Exhausted, Code.ResourceExhausted],
  [DependencyDown, Code.Unavailable],
]);

/**
 * What a call is answered when the server has as many calls in progress as it
 * takes (host.ts, MAX_CALLS_IN_FLIGHT): Unavailable, SERVER_BUSY, before any of
 * it ran, so that a client may safely ask again after a short wait.
 */
export function serverBusy(): ConnectError {
  return new ConnectError("the server is busy; retry in a moment", Code.Unavailable, undefined, [
    { desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { reason: Reason.SERVER_BUSY }) },
  ]);
}

/** Turns a domain error into the ConnectError a caller receives, with the reason detail. */
export function toConnectError(error: DomainError): ConnectError {
  const field = error instanceof InvalidInput ? error.field : "";
  return new ConnectError(error.message, codeOf.get(error.constructor) ?? Code.Internal, undefined, [
    { desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { reason: error.reason, field, metadata: error.metadata }) },
  ]);
}

/** The domain error another service raised, rebuilt from its Connect code and detail; undefined for failures that carry none. */
export function domainErrorOf(error: ConnectError): DomainError | undefined {
  const detail = error.findDetails(ErrorDetailSchema)[0];
  if (!detail) return undefined;
  if (error.code === Code.InvalidArgument) return new InvalidInput(detail.field, error.rawMessage.replace(`${detail.field}: `, ""));
  const kind = [...codeOf].find(([, code]) => code === error.code)?.[0] as (new (reason: Reason, message: string, metadata: Record<string, string>) => DomainError) | undefined;
  if (!kind || (kind as unknown) === DependencyDown) return undefined;
  return new kind(detail.reason, error.rawMessage, { ...detail.metadata });
}

/** Reads the reason detail off a ConnectError, for clients and tests. */
export function reasonOf(error: unknown): Reason | undefined {
  return error instanceof ConnectError ? error.findDetails(ErrorDetailSchema)[0]?.reason : undefined;
}

/**
 * The one place that tells a store or dependency failure from a bug: what a
 * lost or refused connection to PostgreSQL, Redis or another service looks
 * like, through the wrappers of the drivers (MikroORM keeps the driver's
 * error as `cause`). PostgreSQL's codes: admin shutdown or a session
 * terminated (57P01-57P03), too many connections (53300), a deadlock or lock
 * wait it gave up on (40P01, 55P03), connection failures (08xxx). A session
 * cut in flight has no SQLSTATE: pg says "Connection terminated
 * unexpectedly"; a client of a lost pool is "not queryable"; ioredis says
 * "Connection is closed.".
 */
const unavailableCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTCONN", "EHOSTUNREACH", "57P01", "57P02", "57P03", "53300", "40P01", "55P03"]);
const lostConnection = /connection terminated|not queryable|connection is closed|connection error|socket hang up|timeout exceeded when trying to connect|the database system is (?:starting up|shutting down)/i;

/** Whether `error` (or what it wraps) is a lost, refused or overloaded connection to a store: worth a retry, not a bug. */
export function isUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, sqlState } = e as { code?: unknown; sqlState?: unknown };
    if (typeof code === "string" && (unavailableCodes.has(code) || code.startsWith("08"))) return true;
    if (typeof sqlState === "string" && (unavailableCodes.has(sqlState) || sqlState.startsWith("08"))) return true;
    if (lostConnection.test(e.message)) return true;
  }
  return false;
}

/** What a caller receives for anything a handler threw; the raw streams (raw-streams.ts) use it too. */
export function mapError(error: unknown, procedure: string): ConnectError {
  if (error instanceof DomainError) return toConnectError(error);
  if (error instanceof ConnectError) return error;
  if (isUnavailable(error)) return toConnectError(new DependencyDown("a backing store is unreachable; retry later"));
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code.startsWith("22")) {
    // PostgreSQL "data exception": a value the request carried cannot be stored as given.
    return new ConnectError("a request value is out of range or malformed", Code.InvalidArgument);
  }
  // A bug: log it whole here, and tell the caller nothing about the internals.
  logger("rpc").error({ err: error, procedure }, `unexpected error in ${procedure}`);
  return new ConnectError("internal error", Code.Internal);
}

/**
 * Caller-supplied text put in a message, cut short and stripped of control
 * characters: an error quoting what it was sent must not carry the sender's
 * megabyte (nor a header's worth) back.
 */
export function quoted(text: string, max = 100): string {
  const clean = text.replace(/[\u0000-\u001f\u007f]/g, "?");
  return JSON.stringify(clean.length > max ? `${clean.slice(0, max)}…` : clean);
}

async function* mapStreamErrors<T>(messages: AsyncIterable<T>, procedure: string): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw mapError(error, procedure);
  }
}

/** The one place where anything a handler throws becomes a Connect error. */
export const errorMapper: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (res.stream) return { ...res, message: mapStreamErrors(res.message, req.url) };
    return res;
  } catch (error) {
    throw mapError(error, req.method.name);
  }
};
