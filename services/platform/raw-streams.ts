import { create, fromBinary, toBinary, type DescMethod, type DescMethodServerStreaming, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import http2 from "node:http2";
import { once } from "node:events";
import { bodyTimeoutMs, maxDeadlineMs, readError, sayable } from "./edge.js";
import { context } from "@opentelemetry/api";
import { rawServerSpan } from "./tracing.js";
import { invokeUnary, type UnaryTarget } from "./in-process.js";

/**
 * A server-streaming RPC served over gRPC (h2c) straight on Node's
 * Http2Stream: no compat request/response objects, no Connect pipeline of
 * async generators. With 10,000 WatchQueueStatus streams open an open stream
 * took 34 KiB of heap on Connect, under 7 KiB here, most of it the Http2Stream
 * and the watch itself. What the pipeline does for such a call is done here
 * in a few objects per stream, with the rules taken from where Connect takes
 * them:
 * the access check of the contract (access.ts), the error mapping
 * (errors.ts), Connect's trailer encoding (setTrailerStatus) and its
 * grpc-timeout parser. Browsers (Connect, gRPC-Web over HTTP/1.1) and every
 * other RPC stay on Connect. The suite's extra interceptors do not run here.
 */

/** What a raw handler sees of its call: the part of HandlerContext a streaming handler needs. */
export type RawContext = Pick<HandlerContext, "requestHeader" | "signal" | "values">;

/**
 * Unary RPCs over gRPC (h2c), likewise straight on the Http2Stream, but with
 * everything Connect's handler runs: the service's interceptors (tracing,
 * metrics, the access log, the error mapping, rate limits, access, the
 * EntityManager) and its handler, through the same `invokeUnary` the calls
 * within one process use (in-process.ts). What the raw path leaves out is
 * Connect's pipeline of async generators around one message each way, the
 * compat request and response objects, and the DOMException Connect's
 * argument-less abort makes at every call's end: most of a no-op call's CPU
 * (BENCHMARKS.md, "Reads at the framework's limit"). The request is read as
 * Connect reads it and fails as the edge answers Connect's failures;
 * test/raw-unary.test.ts sends the same calls, malformed ones too, down both
 * paths and requires the same answers, so a Connect upgrade that changes them
 * fails there.
 */
export function rawUnary(target: UnaryTarget, contextValues: (stream: http2.ServerHttp2Stream) => ContextValues): RawStreamHandler {
  const { method } = target;
  const path = `/${method.parent.typeName}/${method.name}`;
  return (stream, headers, host) => {
    stream.on("error", () => {}); // a reset or a lost connection: the close handler has aborted the call
    // The URL as Connect builds it; it refuses an :authority that is no host[:port], and so does the edge (host.ts).
    let url: string;
    try {
      const authority = headers[":authority"] ?? headers.host;
      if (authority === undefined) throw new Error("no authority");
      url = new URL(path, `http://${authority}`).toString();
    } catch {
      return finish(stream, new ConnectError("the request's :authority is not a host[:port]", Code.InvalidArgument));
    }
    const timeout = parseTimeout((headers["grpc-timeout"] as string | undefined) ?? null, Number.MAX_SAFE_INTEGER);
    // A deadline beyond what a timer holds is none, as the edge has it (edge.ts boundDeadline).
    const timeoutMs = timeout.timeoutMs === undefined || timeout.timeoutMs > maxDeadlineMs ? undefined : timeout.timeoutMs;
    const cancel = new AbortController();
    const onClose = () => cancel.abort(callerCancelled);
    stream.once("close", onClose);
    const answer = async () => {
      try {
        if (timeout.error) throw readError(timeout.error, method.input.typeName);
        const body = await readBody(stream, host.readMaxBytes, Math.min(timeoutMs ?? bodyTimeoutMs, bodyTimeoutMs));
        if (body === undefined) return;
        const request = requestMessage(method.input, body, "unary");
        const response = await invokeUnary(
          target,
          { protocolName: "grpc", url, signal: cancel.signal, shutdownSignal: host.shutdown, header: headerOf(headers), contextValues: contextValues(stream), timeoutMs },
          request,
        );
        if (stream.destroyed || stream.closed) return;
        const fields: Record<string, string> = {};
        response.header.forEach((value, key) => (fields[key] = value));
        stream.respond({ ...fields, ...headersOk }, { waitForTrailers: true });
        const trailers: Record<string, string> = { "grpc-status": "0" };
        response.trailer.forEach((value, key) => (trailers[key] = value));
        stream.once("wantTrailers", () => stream.sendTrailers(trailers));
        stream.end(envelope(toBinary(method.output, response.message as never)));
      } catch (error) {
        // As Connect answers: its own errors as they are, anything else Internal.
        if (!stream.destroyed) finish(stream, error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error));
      } finally {
        stream.off("close", onClose);
      }
    };
    void answer().catch(() => stream.destroy());
  };
}

const callerCancelled = new ConnectError("the caller cancelled the call", Code.Canceled);

/** The request's headers as Connect hands them to interceptors: every field but the pseudo-headers. */
function headerOf(headers: http2.IncomingHttpHeaders): Headers {
  const header = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) header.append(name, one);
  }
  return header;
}

/** A server-streaming implementation, written as for Connect (a Connect handler can be passed as it is). */
export type RawStreamImpl<I extends DescMessage, O extends DescMessage> = (request: MessageInitShape<I> & object, ctx: RawContext) => AsyncIterable<MessageInitShape<O>>;

/** The rules a call passes before its handler runs, and what it fails with, shared with the Connect path. */
export interface RawCallRules {
  /** The contract's access check (access.ts accessCheck); sets what it proves in `values`. */
  checkAccess(method: DescMethodServerStreaming, header: Headers, values: ContextValues): Promise<void>;
  /** Anything the handler or the check threw, as the caller should see it (errors.ts mapError). */
  mapError(error: unknown, procedure: string): ConnectError;
  /** Each call once it ends, with its failure (metrics.ts Metrics.served); `started` is process.hrtime.bigint() at its start. */
  served?(service: string, method: string, error: ConnectError | undefined, started: bigint): void;
}

/** What the host gives each raw stream: its shutdown signal (see host.ts ShutdownSignal), its request size limit. */
export interface RawHostContext {
  shutdown: AbortSignal;
  readMaxBytes: number;
}

/** Takes one h2 stream whose path and content type matched. */
export type RawStreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, host: RawHostContext) => void;

export interface RawStream {
  method: DescMethodServerStreaming;
  handler: RawStreamHandler;
}

/** A service's raw implementation of one method, before the suite gives it the call rules. */
export interface RawStreamSpec {
  method: DescMethodServerStreaming;
  impl: RawStreamImpl<DescMessage, DescMessage>;
}

/** Pairs a server-streaming method with its implementation, type-checked against each other. */
export function rawStreamSpec<I extends DescMessage, O extends DescMessage>(method: DescMethodServerStreaming<I, O>, impl: RawStreamImpl<I, O>): RawStreamSpec {
  return { method, impl } as unknown as RawStreamSpec;
}

export const grpcContentTypes = new Set(["application/grpc", "application/grpc+proto"]);

/** The request path a method is served on, as Connect's router builds it. */
export const methodPath = (method: DescMethod) => `/${method.parent.typeName}/${method.name}`;

/**
 * Whether this h2 request is one for the raw path: a gRPC POST with the
 * binary codec and no request compression. Anything else goes to Connect,
 * which answers it as it always has (also with the errors that it gives a
 * request it cannot serve).
 */
export function isRawGrpcRequest(headers: http2.IncomingHttpHeaders): boolean {
  const encoding = headers["grpc-encoding"];
  return headers[":method"] === "POST" && grpcContentTypes.has(headers["content-type"] ?? "") && (encoding === undefined || encoding === "identity");
}

/**
 * gRPC percent-encodes `grpc-message` only outside printable ASCII (and `%`
 * itself); Connect escapes more (encodeURIComponent), and some gRPC clients
 * (grpc-js) then show `%3A` where the message had `:`. The trailer in the
 * form the gRPC spec gives, which every client decodes the same.
 */
export function specifiedGrpcMessage(connectEncoded: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(connectEncoded);
  } catch {
    return connectEncoded;
  }
  let encoded = "";
  for (const byte of Buffer.from(decoded, "utf8")) {
    encoded += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return encoded;
}

const headersOk = { ":status": 200, "content-type": "application/grpc+proto" } as const;

/** The status trailers of an error (or of success), in Connect's encoding but for grpc-message. */
function statusFields(error: ConnectError | undefined): Record<string, string> {
  const fields: Record<string, string> = {};
  setTrailerStatus(new Headers(), error).forEach((value, key) => (fields[key] = key === "grpc-message" ? specifiedGrpcMessage(value) : value));
  return fields;
}

function envelope(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out[0] = 0;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** The one request message of a server stream, read as Connect reads it, failing as the edge answers Connect's failures. */
function requestMessage<I extends DescMessage>(schema: I, body: Buffer, what: string) {
  const protocolError = (message: string, code = Code.InvalidArgument) => readError(new ConnectError(message, code), schema.typeName);
  if (body.length === 0) throw protocolError(`protocol error: missing input message for ${what} method`, Code.Unimplemented);
  if (body.length < 5) throw protocolError("protocol error: incomplete envelope");
  if (body[0] !== 0) throw protocolError("received compressed envelope, but do not know how to decompress", Code.Internal);
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) throw protocolError("protocol error: incomplete envelope");
  if (body.length > 5 + length) throw protocolError(`protocol error: received extra input message for ${what} method`, Code.Unimplemented);
  try {
    return fromBinary(schema, body.subarray(5));
  } catch (error) {
    throw protocolError(`parse binary: ${error instanceof Error ? error.message : String(error)}`, Code.Internal);
  }
}

/**
 * Reads the request body whole (a server stream's request is one small
 * message); undefined if the stream closed first. A body not ended within
 * `withinMs` resets the stream, as the edge does on Connect (edge.ts limitBodyTime).
 */
async function readBody(stream: http2.ServerHttp2Stream, maxBytes: number, withinMs: number): Promise<Buffer | undefined> {
  // Read with listeners, not `for await`: leaving that loop on a body too large would destroy the stream,
  // and the caller would hear a reset instead of ResourceExhausted.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), withinMs);
    const settle = () => {
      clearTimeout(timer);
      stream.off("data", onData).off("end", onEnd).off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) return void chunks.push(chunk);
      settle();
      stream.resume(); // the rest is read and dropped, so the caller can still be answered
      reject(new ConnectError(`message size is larger than configured readMaxBytes ${maxBytes}`, Code.ResourceExhausted));
    };
    const onEnd = () => (settle(), resolve(Buffer.concat(chunks)));
    const onClose = () => (settle(), resolve(undefined));
    stream.on("data", onData).once("end", onEnd).once("close", onClose);
  });
}

/**
 * The abort signal of one call: the caller's reset, its deadline, the
 * server's shutdown (with the host's Unavailable reason, so that
 * shutdownError recognises it). `done` lets go of the timer and listeners.
 */
function callSignal(stream: http2.ServerHttp2Stream, timeoutMs: number | undefined, shutdown: AbortSignal) {
  const controller = new AbortController();
  const abort = (reason: unknown) => {
    if (!controller.signal.aborted) controller.abort(reason);
    done();
  };
  const onShutdown = () => abort(shutdown.reason);
  const onClose = () => abort(callerCancelled);
  const timer = timeoutMs === undefined || timeoutMs > maxDeadlineMs ? undefined : setTimeout(() => abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)), timeoutMs);
  const done = () => {
    clearTimeout(timer);
    shutdown.removeEventListener("abort", onShutdown);
  };
  stream.once("close", onClose);
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener("abort", onShutdown);
  return { signal: controller.signal, done };
}

/** Writes a message, then waits while the stream's buffer is full (a caller that does not read holds the handler). */
async function send(stream: http2.ServerHttp2Stream, bytes: Buffer): Promise<void> {
  if (stream.write(bytes) || stream.destroyed) return;
  await Promise.race([once(stream, "drain"), once(stream, "close")]);
}

/** Answers a call its request has not been read for with this error (trailers-only); its body is read and dropped. */
export function answerRaw(stream: http2.ServerHttp2Stream, error: ConnectError): void {
  stream.on("error", () => {});
  stream.resume();
  finish(stream, error);
}

/** Ends the call with this status: as trailers after messages, as a trailers-only response before any. */
function finish(stream: http2.ServerHttp2Stream, error: ConnectError | undefined) {
  if (stream.destroyed || stream.closed) return;
  const fields = statusFields(error && sayable(error));
  if (!stream.headersSent) {
    stream.respond({ ...headersOk, ...fields }, { endStream: true });
    return;
  }
  stream.once("wantTrailers", () => stream.sendTrailers(fields));
  stream.end();
}

/**
 * The raw handler of a server-streaming method: reads and checks the request,
 * runs the contract's access check, then streams what `impl` yields, with the
 * deadline, the caller's cancel, back-pressure and the host's shutdown.
 */
export function rawServerStream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodServerStreaming<I, O>,
  impl: RawStreamImpl<I, O>,
  rules: RawCallRules,
): RawStream {
  const procedure = methodPath(method);

  /** Everything up to the handler's iterable; the headers and context are not kept once it runs. */
  async function open(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, signal: AbortSignal, readMaxBytes: number, timeoutMs: number | undefined) {
    const requestHeader = headerOf(headers);
    const body = await readBody(stream, readMaxBytes, Math.min(timeoutMs ?? bodyTimeoutMs, bodyTimeoutMs));
    if (body === undefined) return undefined;
    const request = requestMessage(method.input, body, "server_streaming");
    const values = createContextValues();
    await rules.checkAccess(method, requestHeader, values);
    return impl(request as MessageInitShape<I> & object, { requestHeader, signal, values });
  }

  /** Streams what the handler yields and ends the call; holds only what the stream needs while it is open. */
  async function serve(
    stream: http2.ServerHttp2Stream,
    call: ReturnType<typeof callSignal>,
    opened: Promise<AsyncIterable<MessageInitShape<O>> | undefined>,
    ended?: (error: ConnectError | undefined) => void,
  ) {
    const started = process.hrtime.bigint();
    let failure: ConnectError | undefined;
    try {
      const messages = await opened;
      if (messages) {
        for await (const message of messages) {
          if (stream.destroyed) break; // the caller went away: `break` closes the handler's iterator
          if (!stream.headersSent) stream.respond(headersOk, { waitForTrailers: true });
          await send(stream, envelope(toBinary(method.output, create(method.output, message))));
        }
      }
      // The handler ended quietly on its deadline: the caller hears DeadlineExceeded, as gRPC says.
      const reason: unknown = call.signal.reason;
      if (call.signal.aborted && reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) failure = reason;
    } catch (error) {
      // Once the caller has gone, what failed (reading the body of a reset stream, mostly) has nobody to tell.
      if (!stream.destroyed) failure = rules.mapError(error, procedure);
    } finally {
      call.done();
    }
    finish(stream, failure);
    ended?.(failure);
    rules.served?.(method.parent.typeName, method.name, failure, started);
  }

  return {
    method,
    handler: (stream, headers, host) => {
      stream.on("error", () => {}); // a reset or a lost connection: the close handler has aborted the call
      const timeout = parseTimeout((headers["grpc-timeout"] as string | undefined) ?? null, Number.MAX_SAFE_INTEGER);
      const call = callSignal(stream, timeout.timeoutMs, host.shutdown);
      // The caller's trace (traceparent), continued by a SERVER span when spans are recorded (tracing.ts).
      const traced = rawServerSpan(method.parent.typeName, method.name, headers);
      const run = () => {
        const opened = timeout.error ? Promise.reject(timeout.error) : open(stream, headers, call.signal, host.readMaxBytes, timeout.timeoutMs);
        return serve(stream, call, opened, traced?.end);
      };
      void (traced ? context.with(traced.context, run) : run()).catch(() => stream.destroy());
    },
  };
}
