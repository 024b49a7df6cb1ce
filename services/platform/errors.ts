import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { ErrorDetailSchema, Reason } from "../../gen/boxoffice/common/v1/error_pb.js";

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

/** Failures worth retrying: lost connections, a server shutting down or full, a deadlock or lock wait PostgreSQL gave up on. */
const unavailableCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P03", "53300", "40P01", "55P03"]);

/** What a caller receives for anything a handler threw; the raw streams (raw-streams.ts) use it too. */
export function mapError(error: unknown, procedure: string): ConnectError {
  if (error instanceof DomainError) return toConnectError(error);
  if (error instanceof ConnectError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && unavailableCodes.has(code)) {
    return toConnectError(new DependencyDown("a backing store is unreachable; retry later"));
  }
  if (typeof code === "string" && code.startsWith("22")) {
    // PostgreSQL "data exception": a value the request carried cannot be stored as given.
    return new ConnectError("a request value is out of range or malformed", Code.InvalidArgument);
  }
  // A bug: log it whole here, and tell the caller nothing about the internals.
  console.error(`unexpected error in ${procedure}:`, error);
  return new ConnectError("internal error", Code.Internal);
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
