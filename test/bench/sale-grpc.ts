/**
 * The flash-sale crowd's two calls at scale, EnterQueue and WatchQueueStatus,
 * as gRPC over `node:http2` without Connect's client pipeline: the same bytes
 * on the wire, a fraction of the load driver's CPU and memory per call. With
 * 100,000 fans one driver process makes 100,000 EnterQueue calls in seconds
 * and holds up to 100,000 watch streams; through Connect's client each call
 * sent its body a turn after its headers, and a busy driver let that gap pass
 * the server's 10 s body limit (the stream is then reset, CANCEL). Here the
 * headers and the body go out in one write.
 */
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import http2 from "node:http2";

type Method<I extends DescMessage, O extends DescMessage> = DescMethodUnary<I, O> | DescMethodServerStreaming<I, O>;

/** RST_STREAM codes as gRPC reads them (the gRPC over HTTP/2 spec, "Errors"). */
function resetError(rstCode: number): ConnectError {
  const code =
    rstCode === http2.constants.NGHTTP2_REFUSED_STREAM
      ? Code.Unavailable
      : rstCode === http2.constants.NGHTTP2_CANCEL
        ? Code.Canceled
        : rstCode === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM
          ? Code.ResourceExhausted
          : Code.Internal;
  return new ConnectError(`http/2 stream closed with error code ${rstCode} before a gRPC status`, code);
}

/** Calls over a fixed number of HTTP/2 connections, each call on the next one; a connection that ends is opened again on next use. */
export class GrpcChannel {
  readonly #sessions: (http2.ClientHttp2Session | undefined)[];
  #next = 0;

  constructor(
    private readonly url: string,
    connections: number,
  ) {
    this.#sessions = Array.from({ length: connections }, () => undefined);
  }

  /** A call not answered within `timeoutMs` is reset and fails DeadlineExceeded (the server is told the deadline too). */
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
    headers: Record<string, string>,
    timeoutMs: number,
  ): Promise<MessageShape<O>> {
    let output: MessageShape<O> | undefined;
    const deadline = { "grpc-timeout": `${timeoutMs}m`, ...headers };
    return this.#call(method, input, deadline, (message) => (output = message), timeoutMs, false).then(() => {
      if (output === undefined) throw new ConnectError("the call ended without a response message", Code.Internal);
      return output;
    });
  }

  /**
   * Resolves when the server ends the stream with OK, each message handed to
   * `onMessage` as it comes; a stream silent for `silenceMs` (its server
   * stopped sending even heartbeats) is reset and fails Unavailable.
   */
  serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    input: MessageInitShape<I>,
    headers: Record<string, string>,
    onMessage: (message: MessageShape<O>) => void,
    silenceMs: number,
  ): Promise<void> {
    return this.#call(method, input, headers, onMessage, silenceMs, true);
  }

  close() {
    for (const session of this.#sessions) session?.close();
  }

  #session(): http2.ClientHttp2Session {
    const i = this.#next++ % this.#sessions.length;
    const open = this.#sessions[i];
    if (open && !open.closed && !open.destroyed) return open;
    const session = http2.connect(this.url);
    // A connection's failure fails its calls (each stream closes with it); the next call opens a new one.
    session.on("error", () => {});
    session.once("close", () => {
      if (this.#sessions[i] === session) this.#sessions[i] = undefined;
    });
    return (this.#sessions[i] = session);
  }

  #call<I extends DescMessage, O extends DescMessage>(
    method: Method<I, O>,
    input: MessageInitShape<I>,
    headers: Record<string, string>,
    onMessage: (message: MessageShape<O>) => void,
    limitMs: number,
    /** Whether the limit is on silence (restarted by every message) rather than on the whole call. */
    silence: boolean,
  ): Promise<void> {
    const body = toBinary(method.input, create(method.input, input));
    const frame = Buffer.allocUnsafe(5 + body.length);
    frame[0] = 0;
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    return new Promise<void>((resolve, reject) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.#session().request({
          ":method": "POST",
          ":path": `/${method.parent.typeName}/${method.name}`,
          "content-type": "application/grpc",
          te: "trailers",
          ...headers,
        });
      } catch (error) {
        return reject(new ConnectError(`could not open a stream: ${String(error)}`, Code.Unavailable));
      }
      stream.end(frame);
      let status: { code: number; message: string } | undefined;
      let failure: ConnectError | undefined;
      const expire = () => {
        failure ??= silence
          ? new ConnectError(`the stream was silent for ${limitMs} ms`, Code.Unavailable)
          : new ConnectError(`no answer within ${limitMs} ms`, Code.DeadlineExceeded);
        stream.close(http2.constants.NGHTTP2_CANCEL);
      };
      const timer = setTimeout(expire, limitMs);
      const readStatus = (h: http2.IncomingHttpHeaders) => {
        const code = h["grpc-status"];
        if (code !== undefined) status = { code: Number(code), message: decodeURIComponent(String(h["grpc-message"] ?? "")) };
      };
      stream.on("response", (h) => {
        readStatus(h); // a trailers-only answer carries its status here
        const httpStatus = Number(h[":status"]);
        if (status === undefined && httpStatus !== 200) {
          failure = new ConnectError(`HTTP ${httpStatus}`, httpStatus === 503 ? Code.Unavailable : Code.Unknown);
        }
      });
      stream.on("trailers", readStatus);
      let pending: Buffer | undefined;
      stream.on("data", (chunk: Buffer) => {
        if (silence) timer.refresh();
        pending = pending ? Buffer.concat([pending, chunk]) : chunk;
        while (pending.length >= 5) {
          const length = pending.readUInt32BE(1);
          if (pending.length < 5 + length) break;
          try {
            onMessage(fromBinary(method.output, pending.subarray(5, 5 + length)));
          } catch (error) {
            failure ??= ConnectError.from(error);
          }
          pending = pending.subarray(5 + length);
        }
      });
      stream.on("error", () => {}); // "close" follows, with the reset code
      stream.once("close", () => {
        clearTimeout(timer);
        if (failure) reject(failure);
        else if (status === undefined) reject(resetError(stream.rstCode ?? http2.constants.NGHTTP2_INTERNAL_ERROR));
        else if (status.code !== 0) reject(new ConnectError(status.message, status.code as Code));
        else resolve();
      });
    });
  }
}
