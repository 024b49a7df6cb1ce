// The raw gRPC path of server streams (services/platform/raw-streams.ts): the
// coordinator's WatchQueueStatus served on the Http2Stream itself for gRPC
// callers. It must be indistinguishable from Connect's: the same wire output
// for the same call, the same access rule and error details, and the same
// deadline, cancel and shutdown behaviour, plus back-pressure.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueInternalService, QueueService, QueueState, QueueStatusSchema } from "../gen/boxoffice/queue/v1/queue_pb.js";
import type { Booking } from "../services/coordinator/booking.js";
import { CoordinatorHandlers } from "../services/coordinator/coordinator-service.js";
import { QueueWatch } from "../services/coordinator/queue-watch.js";
import { accessCheck, accessInterceptor } from "../services/platform/access.js";
import { errorMapper, mapError, NotAuthenticated, Reason, reasonOf } from "../services/platform/errors.js";
import { HealthStatus } from "../services/platform/health.js";
import { startHost, type Host } from "../services/platform/host.js";
import { rawServerStream } from "../services/platform/raw-streams.js";
import { UserTokens } from "../services/platform/tokens.js";
import { withQueueToken } from "./support.js";

const path = `/${CoordinatorService.typeName}/WatchQueueStatus`;
/** Queue tokens the fake queue knows; any other is forged. */
const bigToken = "token-big";
let position = 5n;
/** Where the fake queue says a fan waits; for bigToken with a 60 KB concert id, so that a few messages fill any window. */
const statusOf = (token: string) =>
  create(QueueStatusSchema, { state: QueueState.WAITING, position: token === bigToken ? position++ : 2n, peopleAhead: 1n, concertId: token === bigToken ? "c".repeat(60_000) : "concert-1" });

const queue = createRouterTransport(
  ({ service }) => {
    service(QueueService, {
      getQueueStatus: (_req, ctx) => {
        const token = ctx.requestHeader.get("x-queue-token")!;
        if (!token.startsWith("token-")) throw new NotAuthenticated(Reason.QUEUE_TOKEN_INVALID, "the queue token is not valid: forged, or for another concert");
        return { status: statusOf(token) };
      },
    });
    service(QueueInternalService, { getQueueStatuses: (req) => ({ statuses: req.queueTokens.map(statusOf) }) });
  },
  { router: { interceptors: [errorMapper] } },
);

interface Server {
  host: Host;
  queueWatch: QueueWatch;
  /** Calls the raw path took. */
  rawCalls: number;
  /** Messages the raw path's handler produced (pulled from the watch). */
  rawMessages: number;
}

/** The coordinator's watch behind a real host, on Connect only, or with the raw path as the suite mounts it. */
async function coordinatorHost(raw: boolean, refreshMs = 50): Promise<Server> {
  const queueWatch = new QueueWatch(createClient(QueueService, queue), createClient(QueueInternalService, queue), { refreshMs, heartbeatMs: 200 });
  const handlers = new CoordinatorHandlers(queueWatch, {} as Booking);
  const check = accessCheck({ tokens: new UserTokens("s".repeat(40), 60), internalCredential: "inside", operatorKey: "ops", scannerKey: "door" });
  const server: Server = { host: undefined as unknown as Host, queueWatch, rawCalls: 0, rawMessages: 0 };
  const rawStream = rawServerStream(
    CoordinatorService.method.watchQueueStatus,
    (req, ctx) => {
      server.rawCalls++;
      const messages = handlers.watchQueueStatus(req, ctx);
      return (async function* () {
        for await (const message of messages) {
          server.rawMessages++;
          yield message;
        }
      })();
    },
    { checkAccess: check, mapError },
  );
  server.host = await startHost({
    host: "127.0.0.1",
    port: 0,
    health: new HealthStatus(),
    shutdownGraceMs: 10_000,
    routes: (router) => router.service(CoordinatorService, handlers, { interceptors: [errorMapper, accessInterceptor(check)] }),
    rawStreams: raw ? [rawStream] : [],
  });
  return server;
}

interface Wire {
  headers: Record<string, unknown>;
  data: Buffer[];
  trailers: Record<string, unknown>;
  reset?: number;
}

/** One call as the bytes on the wire show it, through Node's own h2 client; `firstOnly` cancels after the first message. */
async function wire(url: string, headers: http2.OutgoingHttpHeaders, body: Buffer, firstOnly = false): Promise<Wire> {
  const session = http2.connect(url);
  try {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    const out: Wire = { headers: {}, data: [], trailers: {} };
    req.on("response", (h) => (out.headers = { ...h }));
    req.on("trailers", (t) => (out.trailers = { ...t }));
    await new Promise<void>((resolve, reject) => {
      req.on("data", (chunk: Buffer) => {
        out.data.push(chunk);
        if (firstOnly) req.close(http2.constants.NGHTTP2_CANCEL);
      });
      req.on("close", () => resolve());
      req.on("error", reject);
      req.end(body);
    });
    return out;
  } finally {
    session.close();
  }
}

/** The empty request message, enveloped. */
const emptyRequest = Buffer.from([0, 0, 0, 0, 0]);
/**
 * The parts of a response that make up the call for a client: status, codec, the message bytes, the status.
 * Before any message, Connect sends headers and then trailers, the raw path a trailers-only response (one
 * HEADERS frame, as gRPC servers do): both are the same call to a client, so the status fields are compared
 * wherever they came.
 */
const visible = (w: Wire) => {
  const { date: _date, ...headers } = w.headers;
  const status = Object.fromEntries(Object.entries({ ...headers, ...w.trailers }).filter(([name]) => name.startsWith("grpc-")));
  const others = Object.fromEntries(Object.entries(headers).filter(([name]) => !name.startsWith("grpc-")));
  return { headers: others, data: Buffer.concat(w.data).toString("hex"), status };
};

describe("the raw gRPC path of WatchQueueStatus", () => {
  let rawServer: Server;
  let connectServer: Server;
  beforeAll(async () => {
    [rawServer, connectServer] = await Promise.all([coordinatorHost(true), coordinatorHost(false)]);
  });
  afterAll(async () => {
    for (const server of [rawServer, connectServer]) {
      await server?.host.close();
      server?.queueWatch.close();
    }
  });

  it("answers on the wire exactly as Connect does: a message, a trailers-only error with its detail, a forged token", async () => {
    const calls: [http2.OutgoingHttpHeaders, Buffer, boolean][] = [
      [{ "x-queue-token": "token-1" }, emptyRequest, true],
      [{}, emptyRequest, false],
      [{ "x-queue-token": "forged" }, emptyRequest, false],
      [{ "x-queue-token": "token-1", "content-type": "application/grpc+proto" }, emptyRequest, true],
    ];
    for (const [headers, body, firstOnly] of calls) {
      const before = rawServer.rawCalls;
      const [raw, connect] = [await wire(rawServer.host.url, headers, body, firstOnly), await wire(connectServer.host.url, headers, body, firstOnly)];
      expect(rawServer.rawCalls - before, JSON.stringify(headers)).toBe(headers["x-queue-token"] ? 1 : 0); // without a token the handler never runs
      expect(visible(raw), JSON.stringify(headers)).toEqual(visible(connect));
    }
    // The error is trailers-only, and says what is missing, the reason in grpc-status-details-bin.
    const missing = await wire(rawServer.host.url, {}, emptyRequest);
    expect(missing.headers).toMatchObject({ ":status": 200, "content-type": "application/grpc+proto", "grpc-status": String(Code.Unauthenticated) });
    expect(missing.headers["grpc-message"]).toBe("this RPC needs a queue token (x-queue-token)");
    expect(missing.headers["grpc-status-details-bin"]).toEqual(expect.any(String));
    expect(missing.data).toEqual([]);
    await expect.poll(() => rawServer.queueWatch.size).toBe(0);
  });

  it("refuses a malformed request body with INVALID_ARGUMENT", async () => {
    const truncated = Buffer.from([0, 0, 0, 0, 5, 1, 2]);
    const raw = await wire(rawServer.host.url, { "x-queue-token": "token-1" }, truncated);
    expect(visible(raw).status).toMatchObject({ "grpc-status": String(Code.InvalidArgument) });
    expect(visible(raw)).toEqual(visible(await wire(connectServer.host.url, { "x-queue-token": "token-1" }, truncated)));
    // A message that does not parse: the caller's error on both paths, in the edge's words (edge.ts readError).
    const garbage = await wire(rawServer.host.url, { "x-queue-token": "token-1" }, Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]));
    expect(visible(garbage).status).toMatchObject({
      "grpc-status": String(Code.InvalidArgument),
      "grpc-message": "request: is not a valid boxoffice.coordinator.v1.WatchQueueStatusRequest in protobuf binary (premature EOF)",
    });
    expect(visible(garbage)).toEqual(visible(await wire(connectServer.host.url, { "x-queue-token": "token-1" }, Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]))));
    expect(rawServer.queueWatch.size).toBe(0);
  });

  it("leaves other codecs and HTTP/1.1 to Connect", async () => {
    const before = rawServer.rawCalls;
    const json = await wire(rawServer.host.url, { "x-queue-token": "token-1", "content-type": "application/grpc+json" }, Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]), true);
    expect(json.headers["content-type"]).toBe("application/grpc+json");
    const browser = createClient(CoordinatorService, createConnectTransport({ baseUrl: rawServer.host.url, httpVersion: "1.1" }));
    const abort = new AbortController();
    for await (const message of browser.watchQueueStatus({}, { ...withQueueToken("token-1"), signal: abort.signal })) {
      expect(message.status?.position).toBe(2n);
      break;
    }
    abort.abort();
    expect(rawServer.rawCalls).toBe(before);
    await expect.poll(() => rawServer.queueWatch.size).toBe(0);
  });

  const grpc = () => createClient(CoordinatorService, createGrpcTransport({ baseUrl: rawServer.host.url }));
  async function failure(stream: AsyncIterable<unknown>): Promise<ConnectError> {
    try {
      for await (const _ of stream) void _;
    } catch (error) {
      return ConnectError.from(error);
    }
    throw new Error("the stream ended without an error");
  }

  it("a missing or forged queue token is Unauthenticated with the reason, through a gRPC client", async () => {
    const missing = await failure(grpc().watchQueueStatus({}));
    expect([missing.code, reasonOf(missing)]).toEqual([Code.Unauthenticated, Reason.QUEUE_TOKEN_MISSING]);
    const forged = await failure(grpc().watchQueueStatus({}, withQueueToken("forged")));
    expect([forged.code, reasonOf(forged), forged.rawMessage]).toEqual([Code.Unauthenticated, Reason.QUEUE_TOKEN_INVALID, "the queue token is not valid: forged, or for another concert"]);
  });

  it("keeps the caller's deadline: the server ends the call with DEADLINE_EXCEEDED itself and lets go of the watch", async () => {
    // Node's h2 client does not enforce grpc-timeout: whatever ends the call is the server.
    const started = Date.now();
    const ended = await wire(rawServer.host.url, { "x-queue-token": "token-1", "grpc-timeout": "300m" }, emptyRequest);
    expect(Date.now() - started).toBeGreaterThanOrEqual(280);
    expect(ended.data.length).toBeGreaterThan(0);
    expect(ended.trailers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    await expect.poll(() => rawServer.queueWatch.size).toBe(0);
    // A malformed grpc-timeout is refused, a huge one is no deadline.
    expect((await wire(rawServer.host.url, { "x-queue-token": "token-1", "grpc-timeout": "soon" }, emptyRequest)).headers["grpc-status"]).toBe(String(Code.InvalidArgument));
    const far = await wire(rawServer.host.url, { "x-queue-token": "token-1", "grpc-timeout": "99999999H" }, emptyRequest, true);
    expect(far.data.length).toBeGreaterThan(0);
    // And through a gRPC client.
    const late = await failure(grpc().watchQueueStatus({}, { ...withQueueToken("token-1"), timeoutMs: 200 }));
    expect(late.code).toBe(Code.DeadlineExceeded);
    await expect.poll(() => rawServer.queueWatch.size).toBe(0);
  });

  it("a caller's cancel releases the server's watcher", async () => {
    const abort = new AbortController();
    const stream = grpc().watchQueueStatus({}, { ...withQueueToken("token-1"), signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    expect((await it.next()).value.status.position).toBe(2n);
    expect(rawServer.queueWatch.size).toBe(1);
    abort.abort();
    await expect(it.next()).rejects.toMatchObject({ code: Code.Canceled });
    await expect.poll(() => rawServer.queueWatch.size).toBe(0);
  });

  it("a caller that does not read holds the handler: the watch is not pulled while the stream's buffers are full", async () => {
    const server = await coordinatorHost(true, 10);
    try {
      const session = http2.connect(server.host.url);
      const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", "x-queue-token": bigToken });
      req.end(emptyRequest);
      req.pause(); // read nothing: the h2 window (64 KiB) and the server's write buffer fill up
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      // 100 refreshes, each a changed 60 KB status; without back-pressure each would be written.
      const held = server.rawMessages;
      expect(held).toBeGreaterThan(0);
      expect(held).toBeLessThan(6);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(server.rawMessages).toBe(held);
      expect(server.queueWatch.size).toBe(1);
      // Reading again lets it go on, with the newest status, not a backlog.
      req.resume();
      await expect.poll(() => server.rawMessages, { timeout: 5_000 }).toBeGreaterThan(held + 3);
      req.close(http2.constants.NGHTTP2_CANCEL);
      await expect.poll(() => server.queueWatch.size).toBe(0);
      session.close();
    } finally {
      await server.host.close();
      server.queueWatch.close();
    }
  });

  it("the server's shutdown ends an open raw stream with Unavailable and waits for it", async () => {
    const server = await coordinatorHost(true);
    const seen: bigint[] = [];
    const ended = (async () => {
      const client = createClient(CoordinatorService, createGrpcTransport({ baseUrl: server.host.url }));
      for await (const { status } of client.watchQueueStatus({}, withQueueToken("token-1"))) seen.push(status!.position);
    })().then(
      () => "clean",
      (error: unknown) => ConnectError.from(error).code,
    );
    await expect.poll(() => seen.length).toBe(1);
    expect(server.rawCalls).toBe(1);
    const started = Date.now();
    await server.host.close();
    expect(await ended).toBe(Code.Unavailable);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(server.queueWatch.size).toBe(0);
    server.queueWatch.close();
  });
});
