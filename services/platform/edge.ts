import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { codeToHttpStatus, errorToJsonBytes, contentTypeRegExp as connectContentType } from "@connectrpc/connect/protocol-connect";
import { contentTypeRegExp as grpcContentType, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { contentTypeRegExp as grpcWebContentType } from "@connectrpc/connect/protocol-grpc-web";
import type http from "node:http";
import type http2 from "node:http2";
import { InvalidInput, toConnectError } from "./errors.js";

/**
 * The server's edge: what a caller controls before any handler of ours runs,
 * checked once here for every service and protocol (gRPC, gRPC-Web, Connect
 * binary and JSON, Connect GET).
 *
 * - A request Connect cannot serve as sent (a codec it does not speak, a
 *   method the RPC does not take, a GET query that is not base64) is answered
 *   here, in the shape of the protocol asked for, with a code instead of a bare
 *   HTTP status that clients read as Unknown.
 * - A deadline too far away for a timer is no deadline (see boundDeadline).
 * - A request body that has not arrived by the call's deadline (or within
 *   bodyTimeoutMs) ends the call.
 * - What Connect itself fails with before any handler runs, for input it
 *   cannot read (a malformed protobuf body, a compressed flag without an
 *   encoding, a compressed body that does not inflate, a unary call with no
 *   message or two), is the caller's fault: InvalidArgument naming what could
 *   not be read, never Internal. Connect answers those Internal (see
 *   readErrors); `requestGate` puts them right in the one place Connect lets
 *   a server see them, the call's `abort`.
 *   test/hostile-input.test.ts pins that behaviour of Connect, so an upgrade
 *   that changes it fails there.
 */

/** Longest deadline kept: Node's timers hold at most 2^31−1 ms (24.8 days); a deadline beyond is none. */
export const maxDeadlineMs = 2 ** 31 - 1;
/** Longest a request body may take to arrive, whatever the deadline (every boxoffice request is small). */
export const bodyTimeoutMs = 10_000;

const grpcTimeoutUnits: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * The call's deadline in ms from its headers, as Connect will read it; a
 * deadline beyond maxDeadlineMs is removed from the headers (no deadline,
 * as the caller effectively asked), so that it never reaches a timer, where
 * Node would fire it at once. Undefined when there is none (or it is
 * malformed: Connect answers that InvalidArgument itself).
 */
export function boundDeadline(headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders): number | undefined {
  const grpc = headers["grpc-timeout"];
  if (typeof grpc === "string") {
    const match = /^(\d{1,8})([HMSmun])$/.exec(grpc);
    if (!match) return undefined;
    const ms = Number(match[1]) * grpcTimeoutUnits[match[2]!]!;
    if (ms <= maxDeadlineMs) return ms;
    delete headers["grpc-timeout"];
    return undefined;
  }
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{1,10}$/.test(connect)) {
    const ms = Number(connect);
    if (ms <= maxDeadlineMs) return ms;
    delete headers["connect-timeout-ms"];
  }
  return undefined;
}

type Protocol = "grpc" | "grpc-web" | "connect";

function protocolOf(contentType: string | undefined): Protocol {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/**
 * The RPC paths served, which of them take GET (Connect's NO_SIDE_EFFECTS
 * methods), for `precheck`, and which stream their requests (client and
 * bidi streams: their bodies last as long as the call, and limitBodyTime
 * leaves them be).
 */
export interface RpcPaths {
  all: ReadonlySet<string>;
  get: ReadonlySet<string>;
  streamingRequests: ReadonlySet<string>;
  /**
   * Unary RPCs counted against the host's limit of calls in progress: all but the gated ones, whose callers
   * are the fans admitted to a sale (bounded by max_active), so that a crowd still entering does not turn
   * away the fans who are buying.
   */
  capped: ReadonlySet<string>;
}

/**
 * What Connect would answer with a bodiless HTTP status (405, 415) or an
 * Internal error, answered here instead with a code, before Connect sees the
 * request; undefined for a request Connect should serve. Only for RPC paths.
 */
export function precheck(req: http.IncomingMessage | http2.Http2ServerRequest, path: string, paths: RpcPaths): ConnectError | undefined {
  if (req.method === "GET") {
    if (!paths.get.has(path)) return new ConnectError(`${path.slice(1)} must be called with POST`, Code.Unimplemented);
    const query = new URLSearchParams((req.url ?? "").split("?")[1] ?? "");
    if (query.get("base64") === "1") {
      try {
        base64Decode(query.get("message") ?? "");
      } catch {
        return toConnectError(new InvalidInput("message", "is not base64 (query parameter message, with base64=1)"));
      }
    }
    return undefined;
  }
  if (req.httpVersionMajor === 1 && paths.streamingRequests.has(path)) {
    // Connect answers a bare 505: a client or bidi stream needs both directions open at once.
    return new ConnectError(`${path.slice(1)} streams requests and answers together: call it with gRPC (or Connect) over HTTP/2`, Code.Unimplemented);
  }
  if (req.method !== "POST") return new ConnectError(`RPCs are called with POST (or GET for reads), not ${String(req.method).slice(0, 16)}`, Code.Unimplemented);
  const contentType = req.headers["content-type"] ?? "";
  if (!connectContentType.test(contentType) && !grpcContentType.test(contentType) && !grpcWebContentType.test(contentType)) {
    return unsupportedMediaType(
      `content type "${contentType.slice(0, 64)}" is not served; use application/grpc(+proto|+json), application/grpc-web(+proto|+json), application/proto, application/json or application/connect+(proto|json)`,
    );
  }
  return undefined;
}

/** The errors for a content type not served: Unimplemented, answered 415 over the Connect protocol, as its spec says. */
const mediaTypeErrors = new WeakSet<ConnectError>();
function unsupportedMediaType(message: string): ConnectError {
  const error = new ConnectError(message, Code.Unimplemented);
  mediaTypeErrors.add(error);
  return error;
}

/** Answers a call with `error`, in the shape of the protocol its content type asks for. */
export function answer(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, error: ConnectError): void {
  const protocol = protocolOf(req.headers["content-type"]);
  if (protocol === "connect") {
    const body = errorToJsonBytes(error, {});
    (res as http.ServerResponse).writeHead(mediaTypeErrors.has(error) ? 415 : codeToHttpStatus(error.code), {
      "content-type": "application/json",
      "content-length": String(body.byteLength),
    });
    res.end(body);
    return;
  }
  // gRPC and gRPC-Web: a trailers-only response, the status in the headers.
  const status = new Headers();
  setTrailerStatus(status, error);
  const headers: Record<string, string> = { "content-type": protocol === "grpc" ? "application/grpc" : "application/grpc-web+proto" };
  status.forEach((value, name) => (headers[name] = value));
  (res as http.ServerResponse).writeHead(200, headers);
  res.end();
}

/**
 * Ends the call when its request body has not arrived by `deadlineMs` (or
 * bodyTimeoutMs): a caller sending its body slowly, or never ending it, holds
 * a stream and a pending handler until then, not until the connection's idle
 * timeout. Over HTTP/2 the stream is reset (the caller's own deadline has
 * passed, or the body is stalled). Over HTTP/1.1 the connection is the only
 * thing to end: DeadlineExceeded is answered first, then it is closed.
 */
export function limitBodyTime(
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
  deadlineMs: number | undefined,
): void {
  if (req.readableEnded || req.complete) return;
  const timer = setTimeout(() => {
    if (req.complete) return;
    const stream = (req as http2.Http2ServerRequest).stream as http2.ServerHttp2Stream | undefined;
    if (stream) return void stream.close(0x8 /* NGHTTP2_CANCEL */);
    if (res.headersSent) return void req.socket.destroy();
    res.once("finish", () => req.socket.destroy());
    answer(req, res, new ConnectError("the request body did not arrive within the call's deadline", Code.DeadlineExceeded));
  }, Math.min(deadlineMs ?? bodyTimeoutMs, bodyTimeoutMs));
  const done = () => clearTimeout(timer);
  req.once("end", done);
  req.once("close", done);
}

/**
 * The request gate of every call (Connect runs it before it reads the body):
 * wraps the call's `abort`, which Connect calls with the error before it
 * reads the error's code to answer, so that an error Connect made of input
 * it could not read is answered as the caller's fault (see readErrors).
 */
export function requestGate(handlerContext: HandlerContext): void {
  // The context Connect hands its gate is the call's controller, with the `abort` its handlers call.
  const context = handlerContext as HandlerContext & { abort(reason?: unknown): void };
  const abort = context.abort.bind(context);
  const input = context.method.input.typeName;
  context.abort = (reason?: unknown) => {
    if (reason instanceof ConnectError) sayable(readError(reason, input));
    abort(reason);
  };
}

/** Longest error message a caller is sent; Connect's own messages quote what it was sent (a header, a JSON value). */
export const maxMessageChars = 300;

/**
 * Makes, in place, an error's message fit to send: cut to maxMessageChars,
 * and well-formed UTF-16 (a lone surrogate that a JSON parser quoted from the
 * input makes the percent-encoding of `grpc-message` throw, and the call then
 * never answers). Every call's error passes here (the gate's `abort`), the
 * raw streams' too.
 */
export function sayable(error: ConnectError): ConnectError {
  const raw = error.rawMessage;
  let fit = raw.length > maxMessageChars ? `${raw.slice(0, maxMessageChars)}…` : raw;
  fit = fit.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
  if (fit === raw) return error;
  const fixed = new ConnectError(fit, error.code);
  return Object.assign(error, { rawMessage: fixed.rawMessage, message: fixed.message });
}

/**
 * What Connect says of input it could not read, by the start of its message,
 * and what the caller is told instead (InvalidArgument, without the input).
 */
const readErrors: [prefix: string, problem: (input: string, detail: string) => string][] = [
  ["parse binary: ", (input, detail) => `is not a valid ${input} in protobuf binary (${detail})`],
  ["received compressed envelope, but do not know how to decompress", () => "has a message marked compressed, but the request names no encoding (grpc-encoding)"],
  ["decompression failed", () => "does not decompress with the encoding it names"],
  ["protocol error: missing input message", () => "has no request message; a unary call takes exactly one"],
  ["protocol error: received extra input message", () => "has more than one request message; this call takes exactly one"],
];

/**
 * Turns, in place, an error Connect raised about unreadable input into
 * InvalidArgument (the raw streams raise theirs in Connect's words and pass
 * them here too); any other error is returned as it is.
 */
export function readError(error: ConnectError, input: string): ConnectError {
  if (error.code !== Code.Internal && error.code !== Code.Unimplemented) return error;
  const raw = error.rawMessage;
  const known = readErrors.find(([prefix]) => raw.startsWith(prefix));
  if (!known) return error;
  const fixed = toConnectError(new InvalidInput("request", known[1](input, raw.slice(known[0].length, known[0].length + 80))));
  return Object.assign(error, { code: fixed.code, rawMessage: fixed.rawMessage, message: fixed.message, details: fixed.details });
}
