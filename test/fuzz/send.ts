// Raw HTTP clients for the fuzz test: Node's own http and http2 (h2c, prior
// knowledge), and a plain socket for what those refuse to send. They send the
// bytes as given and record what came back, including how the exchange ended
// (reset, closed, silent), so that the status can be read as each protocol's
// client reads it (see status.ts). One connection per request: what one broken
// request does to its connection never lands on another.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

export type HttpVersion = "1.1" | "2";

/** How a response's body is framed, to tell a stream's first message from its end. */
export type Framing = "grpc" | "grpc-web" | "connect-stream" | "none";

export interface Exchange {
  http: HttpVersion;
  method: string;
  /** Path and query. */
  path: string;
  headers: Record<string, string | string[]>;
  body: Uint8Array;
  /** Leave the request body open (no END_STREAM / final chunk): a caller that never finishes. */
  stall?: boolean;
  /** Cancel (RST_STREAM / close) right after sending, without waiting for an answer. */
  abandon?: boolean;
  /** For server streams: stop after the first message (a stream that sends is alive; it may go on for long). */
  firstMessageIsEnough?: Framing;
  /** The client gives up after this long: a hang. */
  capMs: number;
}

export interface Reply {
  status?: number;
  headers: Record<string, string>;
  trailers: Record<string, string>;
  body: Buffer;
  /** The HEADERS frame that carried the status ended the stream (gRPC trailers-only). */
  headersEndedStream?: boolean;
  /** RST_STREAM code the server sent before the exchange was complete. */
  reset?: number;
  /** The connection or stream failed before an answer was complete. */
  error?: string;
  timedOut: boolean;
  /** We cancelled after the first message of a stream (firstMessageIsEnough). */
  streamAlive: boolean;
  elapsedMs: number;
  /** Our own client refused the request as given (an invalid header for Node): nothing was sent. */
  refused?: string;
}

const maxBody = 4 * 1024 * 1024;

function flatHeaders(h: http.IncomingHttpHeaders | http2.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(h)) if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : String(value);
  return out;
}

/** Whether the body holds a complete message envelope that is not the end of the stream. */
function hasMessage(body: Buffer, framing: Framing): boolean {
  let at = 0;
  while (body.length >= at + 5) {
    const flags = body[at]!;
    const length = body.readUInt32BE(at + 1);
    if (body.length < at + 5 + length) return false;
    const end = framing === "grpc-web" ? (flags & 0x80) !== 0 : framing === "connect-stream" ? (flags & 0x02) !== 0 : false;
    if (!end) return true;
    at += 5 + length;
  }
  return false;
}

export async function send(exchange: Exchange, port: number): Promise<Reply> {
  return exchange.http === "2" ? sendH2(exchange, port) : sendH1(exchange, port);
}

function sendH1(exchange: Exchange, port: number): Promise<Reply> {
  const started = performance.now();
  const reply: Reply = { headers: {}, trailers: {}, body: Buffer.alloc(0), timedOut: false, streamAlive: false, elapsedMs: 0 };
  return new Promise<Reply>((resolve) => {
    let request: http.ClientRequest;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reply.body = Buffer.concat(chunks);
      reply.elapsedMs = performance.now() - started;
      request?.destroy();
      resolve(reply);
    };
    const timer = setTimeout(() => {
      reply.timedOut = true;
      done();
    }, exchange.capMs);
    try {
      const headers = { ...exchange.headers };
      // Node frames a body by chunks only for methods that usually have one (not GET, HEAD, DELETE, OPTIONS): say its length.
      const framed = Object.keys(headers).some((name) => ["content-length", "transfer-encoding"].includes(name.toLowerCase()));
      if (!framed && !exchange.stall && !exchange.abandon && exchange.body.length > 0) headers["content-length"] = String(exchange.body.length);
      const setHost = !Object.keys(headers).some((name) => name.toLowerCase() === "host");
      request = http.request({ host: "127.0.0.1", port, method: exchange.method, path: exchange.path, headers, agent: false, setHost });
    } catch (error) {
      reply.refused = String((error as Error).message);
      done();
      return;
    }
    request.on("error", (error) => {
      reply.error ??= (error as NodeJS.ErrnoException).code ?? error.message;
      done();
    });
    request.on("response", (response) => {
      reply.status = response.statusCode;
      reply.headers = flatHeaders(response.headers);
      response.on("data", (chunk: Buffer) => {
        if (size < maxBody) chunks.push(chunk);
        size += chunk.length;
        if (exchange.firstMessageIsEnough && exchange.firstMessageIsEnough !== "none" && hasMessage(Buffer.concat(chunks), exchange.firstMessageIsEnough)) {
          reply.streamAlive = true;
          done();
        }
      });
      response.on("end", () => {
        reply.trailers = flatHeaders(response.trailers as http.IncomingHttpHeaders);
        done();
      });
      response.on("error", (error) => {
        reply.error ??= (error as NodeJS.ErrnoException).code ?? error.message;
        done();
      });
      response.on("close", () => {
        if (!response.complete) reply.error ??= "connection closed before the response ended";
        done();
      });
    });
    request.on("close", () => {
      if (reply.status === undefined && !settled) {
        reply.error ??= "connection closed without a response";
        done();
      }
    });
    if (exchange.body.length > 0) request.write(exchange.body);
    if (exchange.abandon) {
      setTimeout(() => {
        request.destroy();
        reply.error = "abandoned";
        done();
      }, 5);
    } else if (!exchange.stall) request.end();
    else request.flushHeaders();
  });
}

function sendH2(exchange: Exchange, port: number): Promise<Reply> {
  const started = performance.now();
  const reply: Reply = { headers: {}, trailers: {}, body: Buffer.alloc(0), timedOut: false, streamAlive: false, elapsedMs: 0 };
  return new Promise<Reply>((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", (error) => {
      reply.error ??= `session: ${(error as NodeJS.ErrnoException).code ?? error.message}`;
      done();
    });
    session.on("goaway", (code) => {
      if (code !== 0) reply.error ??= `GOAWAY ${code}`;
    });
    let stream: http2.ClientHttp2Stream | undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    let responded = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reply.body = Buffer.concat(chunks);
      reply.elapsedMs = performance.now() - started;
      if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      session.destroy();
      resolve(reply);
    };
    const timer = setTimeout(() => {
      reply.timedOut = true;
      done();
    }, exchange.capMs);
    try {
      const headers: http2.OutgoingHttpHeaders = { ":method": exchange.method, ":path": exchange.path, ...exchange.headers };
      stream = session.request(headers, { endStream: exchange.body.length === 0 && !exchange.stall && !exchange.abandon });
    } catch (error) {
      reply.refused = String((error as Error).message);
      done();
      return;
    }
    stream.on("response", (headers, flags) => {
      responded = true;
      reply.status = Number(headers[":status"]);
      const { ":status": _, ...rest } = headers;
      reply.headers = flatHeaders(rest);
      reply.headersEndedStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on("trailers", (trailers) => (reply.trailers = flatHeaders(trailers)));
    stream.on("data", (chunk: Buffer) => {
      if (size < maxBody) chunks.push(chunk);
      size += chunk.length;
      if (exchange.firstMessageIsEnough && exchange.firstMessageIsEnough !== "none" && hasMessage(Buffer.concat(chunks), exchange.firstMessageIsEnough)) {
        reply.streamAlive = true;
        done();
      }
    });
    // The server's half has ended (after the trailers, or a trailers-only response): the call is over for a client,
    // even while our half is still sending (a server that answers before it has read the body need not read the rest).
    stream.on("end", () => done());
    stream.on("error", (error) => {
      reply.error ??= (error as NodeJS.ErrnoException).code ?? error.message;
    });
    stream.on("close", () => {
      const code = stream!.rstCode;
      // The server may reset our half of a stream it has answered (NO_ERROR): that is no failure.
      if (code !== undefined && code !== http2.constants.NGHTTP2_NO_ERROR) reply.reset = code;
      if (!responded) reply.error ??= "stream closed without a response";
      done();
    });
    if (exchange.body.length > 0 || exchange.stall) {
      if (exchange.body.length > 0) stream.write(exchange.body);
      if (exchange.abandon) {
        setTimeout(() => {
          stream!.close(http2.constants.NGHTTP2_CANCEL);
          reply.error = "abandoned";
          done();
        }, 5);
      } else if (!exchange.stall) stream.end();
    } else if (exchange.abandon) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reply.error = "abandoned";
      done();
    }
  });
}

/**
 * Writes `text` as it is on a fresh TCP connection (HTTP/1.x that Node's
 * client will not send: no Host, an HTTP/1.0 request line, broken framing) and
 * collects what comes back until the server closes, or `capMs`.
 */
export function sendRawH1(request: Uint8Array, port: number, capMs: number): Promise<Reply> {
  const started = performance.now();
  return new Promise<Reply>((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let settled = false;
    let error: string | undefined;
    let timedOut = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseRawResponse(Buffer.concat(chunks)), timedOut, error, streamAlive: false, elapsedMs: performance.now() - started });
    };
    const timer = setTimeout(() => {
      timedOut = Buffer.concat(chunks).length === 0;
      done();
    }, capMs);
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      // One response is all we asked for: stop when it is complete.
      const parsed = parseRawResponse(Buffer.concat(chunks));
      if (parsed.complete) done();
    });
    socket.on("error", (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
      done();
    });
    socket.on("close", () => {
      if (chunks.length === 0) error ??= "connection closed without a response";
      done();
    });
    socket.write(request);
  });
}

/** An HTTP/1.x response as far as it came: status, headers, body (content-length or chunked). */
function parseRawResponse(bytes: Buffer): Pick<Reply, "status" | "headers" | "trailers" | "body"> & { complete: boolean } {
  const end = bytes.indexOf("\r\n\r\n");
  if (end < 0) return { headers: {}, trailers: {}, body: Buffer.alloc(0), complete: false };
  const lines = bytes.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let rest = bytes.subarray(end + 4);
  let complete = false;
  if (headers["transfer-encoding"]?.includes("chunked")) {
    const body: Buffer[] = [];
    for (;;) {
      const lineEnd = rest.indexOf("\r\n");
      if (lineEnd < 0) break;
      const length = parseInt(rest.subarray(0, lineEnd).toString("latin1"), 16);
      if (Number.isNaN(length)) break;
      if (length === 0) {
        complete = true;
        break;
      }
      if (rest.length < lineEnd + 2 + length + 2) break;
      body.push(rest.subarray(lineEnd + 2, lineEnd + 2 + length));
      rest = rest.subarray(lineEnd + 2 + length + 2);
    }
    return { status: Number.isNaN(status) ? undefined : status, headers, trailers: {}, body: Buffer.concat(body), complete };
  }
  const length = headers["content-length"] === undefined ? undefined : Number(headers["content-length"]);
  if (length !== undefined) {
    complete = rest.length >= length;
    rest = rest.subarray(0, length);
  }
  return { status: Number.isNaN(status) ? undefined : status, headers, trailers: {}, body: rest, complete };
}
