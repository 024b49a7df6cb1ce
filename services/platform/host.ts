import { Code, ConnectError, createConnectRouter, createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { answer, boundDeadline, limitBodyTime, precheck, requestGate, type RpcPaths } from "./edge.js";
import { HealthStatus } from "./health.js";
import { peerAddressKey } from "./peer.js";
import { answerRaw, isRawGrpcRequest, methodPath, rawUnary, specifiedGrpcMessage, type RawStream, type RawStreamHandler } from "./raw-streams.js";
import { isGated } from "./access.js";
import { serverBusy } from "./errors.js";
import { logger } from "./log.js";
import { unaryTarget, type UnaryTarget } from "./in-process.js";

export interface HostOptions {
  host: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  /** Extra plain-HTTP handler for paths that are no RPC (for example a web page). */
  fallback?: http.RequestListener;
  health: HealthStatus;
  shutdownGraceMs: number;
  /** Server streams served over gRPC (h2c) on the Http2Stream itself, before Connect (see raw-streams.ts). */
  rawStreams?: RawStream[];
  /** Most connections open at once from one network address (0 or unset: no limit). */
  maxConnectionsPerAddress?: number;
  /**
   * Unary RPCs over gRPC h2c served on the Http2Stream (raw-streams.ts rawUnary), with their interceptors but
   * without Connect's pipeline; the default. Off, Connect serves them (tests compare the two).
   */
  rawUnary?: boolean;
  /**
   * Most unary calls in progress at once (0: no limit); a call beyond is answered Unavailable (SERVER_BUSY) at
   * once, before anything of it runs. Streams, which stay open, are not counted.
   */
  maxCallsInFlight?: number;
  /** The connection timeouts, where they are not the defaults below (tests). */
  timeouts?: Partial<ConnectionTimeouts>;
}

export interface ConnectionTimeouts {
  /** A new connection must say which protocol it speaks (the HTTP/2 preface, or an HTTP/1.1 request's headers) within this. */
  firstBytesMs: number;
  /** A connection with no call open this long is closed, whatever it sends (pings, a header a byte at a time). */
  idleMs: number;
}

export interface Host {
  /** host:port actually bound (the port is chosen by the system when 0 was asked for). */
  address: string;
  port: number;
  url: string;
  /** Stops accepting, ends streams, lets in-flight calls finish, then closes every connection. */
  close(): Promise<void>;
}

const hostLog = logger("host");
const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const defaultTimeouts: ConnectionTimeouts = { firstBytesMs: 10_000, idleMs: 60_000 };
const maxRequestBytes = 1024 * 1024;

/** Connect's responses with `grpc-message` in the form the gRPC spec gives (see specifiedGrpcMessage). */
function specifiedGrpcMessages(res: http2.Http2ServerResponse) {
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (trailers) => {
    const message = trailers["grpc-message"];
    if (typeof message === "string") trailers["grpc-message"] = specifiedGrpcMessage(message);
    addTrailers(trailers);
  };
}

/** The errors shutdowns aborted calls with, to tell them from a caller's own cancel. */
const shutdownErrors = new WeakSet<object>();

/**
 * The error a call should end with when the server's shutdown, not its caller,
 * aborted `signal`: Unavailable, so that clients take the end of a stream as a
 * reason to reconnect (here after a restart, or to another instance), not as
 * the stream's last word. Undefined while the signal has not aborted, and for
 * a caller's cancel or deadline.
 */
export function shutdownError(signal: AbortSignal): ConnectError | undefined {
  const reason: unknown = signal.reason;
  return signal.aborted && reason instanceof ConnectError && shutdownErrors.has(reason) ? reason : undefined;
}

/**
 * The signal that ends every call when the server shuts down. Connect links
 * each call's context to it, adding a listener when the call starts and
 * removing it when the call ends; the context's signal then aborts with this
 * signal's reason (a ConnectError, Unavailable). Connect itself ends no call
 * on it: a stream's handler sees its signal abort and ends the stream, with
 * the reason (see shutdownError) or quietly. Node's AbortSignal takes time
 * linear in its listeners for each add and remove, so with 20,000 watch
 * streams open every new call paid for all of them (most of the server's CPU
 * in the flash-sale benchmark). This look-alike keeps its listeners in a Set.
 * Connect uses only `aborted`, `reason`, `addEventListener` and
 * `removeEventListener`.
 */
class ShutdownSignal {
  aborted = false;
  reason: unknown = undefined;
  readonly #listeners = new Set<(this: ShutdownSignal) => void>();

  addEventListener(type: string, listener: (this: ShutdownSignal) => void) {
    if (type === "abort") this.#listeners.add(listener);
  }

  removeEventListener(type: string, listener: (this: ShutdownSignal) => void) {
    if (type === "abort") this.#listeners.delete(listener);
  }

  abort() {
    if (this.aborted) return;
    const reason = new ConnectError("the server is shutting down; try again", Code.Unavailable);
    shutdownErrors.add(reason);
    this.aborted = true;
    this.reason = reason;
    for (const listener of [...this.#listeners]) listener.call(this);
    this.#listeners.clear();
  }
}

/**
 * Serves RPCs on one port to both kinds of caller: gRPC over HTTP/2 cleartext
 * (h2c, prior knowledge) and Connect / gRPC-Web over HTTP/1.1 from browsers.
 * A new connection is told apart by its first bytes: HTTP/2 starts with the
 * connection preface, HTTP/1.1 with a request line.
 */
export async function startHost(options: HostOptions): Promise<Host> {
  const { firstBytesMs, idleMs } = { ...defaultTimeouts, ...options.timeouts };
  const shutdown = new ShutdownSignal();
  const handler = connectNodeAdapter({
    routes: options.routes,
    shutdownSignal: shutdown as unknown as AbortSignal,
    // Every boxoffice request is small; refuse large bodies before buffering them.
    readMaxBytes: maxRequestBytes,
    fallback: options.fallback as never,
    contextValues: (req) => createContextValues().set(peerAddressKey, req.socket?.remoteAddress),
    requestGate,
  });
  const paths = rpcPaths(options.routes);
  const calls = callsInFlight(options.maxCallsInFlight ?? 0);
  /** Every request, before Connect: the edge's checks for RPC paths (edge.ts); anything else goes to the fallback. */
  const serve = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    const path = (req.url ?? "").split("?", 1)[0]!;
    if (paths.all.has(path)) {
      const capped = paths.capped.has(path);
      const refused = precheck(req, path, paths) ?? (capped && !calls.take() ? serverBusy() : undefined);
      if (refused) return answer(req, res, refused);
      if (capped) res.once("close", calls.done);
      const deadlineMs = boundDeadline(req.headers);
      if (!paths.streamingRequests.has(path)) limitBodyTime(req, res, deadlineMs);
    }
    try {
      handler(req as http.IncomingMessage, res as http.ServerResponse);
    } catch (error) {
      // Connect builds the request's URL from its Host (HTTP/1.1) or :authority (HTTP/2) before anything else,
      // and throws, outside any promise, for one that is no authority ("a b", "[::1", none at all over HTTP/1.0).
      if (res.headersSent) return void res.destroy();
      answer(req, res, new ConnectError(`the request's ${req.httpVersionMajor === 2 ? ":authority" : "Host"} is not a host[:port]`, Code.InvalidArgument));
    }
  };

  // Headers must arrive within firstBytesMs (checked every second); a body within the call's deadline (edge.ts).
  const h1 = http.createServer({ keepAliveTimeout: 5_000, requestTimeout: 0, headersTimeout: firstBytesMs, connectionsCheckingInterval: Math.min(1_000, firstBytesMs) }, serve);
  // Node checks headersTimeout only on connections it tracks, and starts tracking when the server emits "listening";
  // this one never listens (the listener below hands it its connections), so it is told it does.
  h1.emit("listening");
  // An HTTP/1.1 connection silent this long is closed (streams send heartbeats well within it).
  h1.setTimeout(idleMs);
  const h2 = http2.createServer({}, (req, res) => {
    specifiedGrpcMessages(res);
    serve(req, res);
  });
  const raw = new Map<string, RawStreamHandler>((options.rawStreams ?? []).map((stream) => [methodPath(stream.method), stream.handler]));
  if (options.rawUnary ?? true) {
    const peer = (stream: http2.ServerHttp2Stream) => createContextValues().set(peerAddressKey, stream.session?.socket?.remoteAddress);
    for (const target of unaryTargets(options.routes)) {
      const unary = rawUnary(target, peer);
      if (!paths.capped.has(methodPath(target.method))) {
        raw.set(methodPath(target.method), unary);
        continue;
      }
      raw.set(methodPath(target.method), (stream, headers, host) => {
        if (!calls.take()) return answerRaw(stream, serverBusy());
        stream.once("close", calls.done);
        unary(stream, headers, host);
      });
    }
  }
  const rawContext = { shutdown: shutdown as unknown as AbortSignal, readMaxBytes: maxRequestBytes };
  if (raw.size > 0) {
    // The compat layer listens for "stream" itself and makes a request and a response of every one; a raw
    // stream must be taken before it does, so it is taken where the event is emitted. Every other stream
    // (other paths, Connect or gRPC-Web over h2, compressed requests) goes on to Connect.
    const emit = h2.emit.bind(h2) as (event: string | symbol, ...args: unknown[]) => boolean;
    h2.emit = ((event: string | symbol, ...args: unknown[]) => {
      if (event === "stream") {
        const [stream, headers] = args as [http2.ServerHttp2Stream, http2.IncomingHttpHeaders];
        const take = raw.get(headers[":path"] ?? "");
        if (take && isRawGrpcRequest(headers)) {
          take(stream, headers, rawContext);
          return true;
        }
      }
      return emit(event, ...args);
    }) as typeof h2.emit;
  }
  let closing = false;

  const sniffing = new Set<net.Socket>();
  const sockets = new Set<net.Socket>();
  /** Calls in flight per HTTP/1.1 connection, so shutdown can close the idle ones at once. */
  const h1Calls = new Map<net.Socket, number>();
  const sessions = new Set<http2.ServerHttp2Session>();

  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    h1Calls.set(socket, (h1Calls.get(socket) ?? 0) + 1);
    if (closing) res.setHeader("connection", "close");
    res.once("close", () => {
      const left = (h1Calls.get(socket) ?? 1) - 1;
      h1Calls.set(socket, left);
      if (closing && left === 0) socket.destroySoon();
    });
  });
  h2.on("session", (session) => {
    sessions.add(session);
    closeWhenIdle(session, firstBytesMs, idleMs);
    session.once("close", () => sessions.delete(session));
  });

  /** Connections open per client address, for maxConnectionsPerAddress. */
  const perAddress = new Map<string, number>();
  const listener = net.createServer((socket) => {
    const address = socket.remoteAddress ?? "";
    const open = (perAddress.get(address) ?? 0) + 1;
    if (options.maxConnectionsPerAddress && open > options.maxConnectionsPerAddress) {
      socket.destroy();
      return;
    }
    perAddress.set(address, open);
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      sniffing.delete(socket);
      h1Calls.delete(socket);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
    });
    socket.on("error", () => socket.destroy());
    hand(socket);
  });

  function hand(socket: net.Socket) {
    let seen = Buffer.alloc(0);
    sniffing.add(socket);
    // From its first byte, however slowly the rest comes: a client dribbling the preface is cut off.
    const cutOff = setTimeout(() => socket.destroy(), firstBytesMs);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, http2Preface.length);
      const looksLikeHttp2 = seen.subarray(0, n).equals(http2Preface.subarray(0, n));
      if (looksLikeHttp2 && seen.length < http2Preface.length) return;
      socket.off("data", onData);
      sniffing.delete(socket);
      clearTimeout(cutOff);
      socket.pause();
      socket.unshift(seen);
      if (!looksLikeHttp2) h1Calls.set(socket, 0);
      (looksLikeHttp2 ? h2 : h1).emit("connection", socket);
      process.nextTick(() => socket.resume());
    };
    socket.on("data", onData);
    socket.once("close", () => clearTimeout(cutOff));
  }

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port, options.host, () => resolve());
  });
  const bound = listener.address() as net.AddressInfo;
  const shownHost = options.host === "0.0.0.0" || options.host === "::" ? "127.0.0.1" : options.host;

  let closed: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing = true;
    const stopped = new Promise<void>((resolve) => listener.close(() => resolve()));
    options.health.shutDown();
    // Let health watchers send NOT_SERVING before their streams are ended.
    await new Promise((resolve) => setTimeout(resolve, 50));
    shutdown.abort();
    for (const socket of sniffing) socket.destroy();
    for (const [socket, calls] of h1Calls) if (calls === 0) socket.destroy();
    for (const session of sessions) session.close();
    const drained = new Promise<void>((resolve) => {
      const check = () => (sockets.size === 0 ? resolve() : setTimeout(check, 25));
      check();
    });
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, options.shutdownGraceMs)));
    await Promise.race([drained, grace]);
    clearTimeout(timer);
    for (const socket of sockets) socket.destroy();
    h1.close(); // stops its connection checks
    await stopped;
  }

  return {
    address: `${shownHost}:${bound.port}`,
    port: bound.port,
    url: `http://${shownHost}:${bound.port}`,
    close: () => (closed ??= close()),
  };
}

/** The unary calls in progress, against their limit (0: none); a warning at most every 10 s while calls are turned away. */
function callsInFlight(limit: number) {
  let open = 0;
  let turnedAway = 0;
  let warnedAt = 0;
  return {
    take(): boolean {
      if (limit > 0 && open >= limit) {
        turnedAway++;
        if (Date.now() - warnedAt > 10_000) {
          warnedAt = Date.now();
          hostLog.warn(`${limit} calls in progress (MAX_CALLS_IN_FLIGHT): ${turnedAway} calls answered busy (Unavailable, SERVER_BUSY) so far`);
        }
        return false;
      }
      open++;
      return true;
    },
    done: () => void open--,
  };
}

/** Every unary method the routes serve, with its handler and the interceptors it is mounted with. */
function unaryTargets(routes: (router: ConnectRouter) => void): UnaryTarget[] {
  const router = createConnectRouter();
  const targets: UnaryTarget[] = [];
  const service = router.service.bind(router);
  router.service = (desc, impl, options) => {
    for (const method of desc.methods) {
      const target = unaryTarget(method, impl as Record<string, unknown>, options?.interceptors ?? []);
      if (target) targets.push(target);
    }
    return service(desc, impl, options);
  };
  routes(router);
  return targets;
}

/** The paths of every RPC the routes serve, and those Connect serves on GET too (its NO_SIDE_EFFECTS methods). */
function rpcPaths(routes: (router: ConnectRouter) => void): RpcPaths {
  const router = createConnectRouter();
  routes(router);
  const paths = (which: (handler: (typeof router.handlers)[number]) => boolean) => new Set(router.handlers.filter(which).map((handler) => handler.requestPath));
  return {
    all: paths(() => true),
    get: paths((handler) => handler.allowedMethods.includes("GET")),
    capped: paths((handler) => handler.method.methodKind === "unary" && !isGated(handler.method)),
    streamingRequests: paths((handler) => handler.method.methodKind === "client_streaming" || handler.method.methodKind === "bidi_streaming"),
  };
}

/**
 * Closes an HTTP/2 connection that has had no stream open for `idleMs`, or
 * opened none in its first `firstBytesMs`: what it sends meanwhile (pings,
 * settings, a stream's headers a byte at a time) does not keep it.
 */
function closeWhenIdle(session: http2.ServerHttp2Session, firstBytesMs: number, idleMs: number) {
  let open = 0;
  let timer: NodeJS.Timeout | undefined = setTimeout(() => session.destroy(), firstBytesMs);
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open++;
    clearTimeout(timer);
    timer = undefined;
    stream.once("close", () => {
      if (--open === 0 && !session.destroyed) timer = setTimeout(() => session.close(), idleMs);
    });
  });
  session.once("close", () => clearTimeout(timer));
}
