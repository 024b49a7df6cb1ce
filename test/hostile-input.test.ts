import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IssueQueueTokenRequestSchema } from "../gen/boxoffice/token/v1/token_pb.js";
import { HealthStatus } from "../services/platform/health.js";
import { startHost, type Host } from "../services/platform/host.js";
import type { Suite } from "../services/platform/suite.js";
import { envelope, h2, type H2Answer } from "./h2.js";
import { concertOnSale, newUser, startTestSuite } from "./support.js";

/**
 * What a caller controls before any handler runs, sent broken on purpose over
 * raw HTTP/2 and HTTP/1.1 sockets (Connect's own clients cannot send most of
 * it): every answer has a code a client can act on, never Internal, and
 * nothing a caller sends holds a connection, a stream or a timer unbounded.
 * The first group also pins what Connect does with such input (edge.ts
 * rewrites Connect's own errors): an upgrade of Connect that changes it
 * fails here.
 */

let suite: Suite;
beforeAll(async () => {
  suite = await startTestSuite();
});
afterAll(() => suite?.close());

/** The gRPC status of an answer: in the trailers, or in the headers of a trailers-only answer. */
function grpcStatus(answer: H2Answer | { headers: http.IncomingHttpHeaders; body: Buffer }): { code: number; message: string } {
  const fields = "trailers" in answer && answer.trailers["grpc-status"] !== undefined ? answer.trailers : answer.headers;
  if (fields["grpc-status"] !== undefined) return { code: Number(fields["grpc-status"]), message: decodeURIComponent(String(fields["grpc-message"] ?? "")) };
  // gRPC-Web: the trailers are the last frame of the body.
  const body = answer.body;
  for (let at = 0; at + 5 <= body.length; ) {
    const length = body.readUInt32BE(at + 1);
    if (body[at]! & 0x80) {
      const text = body.subarray(at + 5, at + 5 + length).toString();
      const code = /grpc-status: *(\d+)/.exec(text)?.[1];
      const message = /grpc-message: *(.*)/.exec(text)?.[1]?.trim() ?? "";
      return { code: Number(code), message: decodeURIComponent(message) };
    }
    at += 5 + length;
  }
  throw new Error("no gRPC status in the answer");
}

interface H1Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function h1(url: string, method: string, path: string, headers: http.OutgoingHttpHeaders, body?: Uint8Array): Promise<H1Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}


const listConcerts = "/boxoffice.concert.v1.ConcertService/ListConcerts";
const watch = "/boxoffice.coordinator.v1.CoordinatorService/WatchQueueStatus";
const issueQueueToken = "/boxoffice.token.v1.TokenService/IssueQueueToken";

/**
 * Protobuf that does not parse: the ways the issue's 2,667 Internal answers
 * were broken. (Invalid UTF-8 in a string field, and an over-long varint,
 * are read by protobuf-es 2.17 without an error, so they reach the handler
 * as a well-formed message and are answered as one.)
 */
const malformed: [string, number[]][] = [
  ["premature EOF", [0x08]],
  ["illegal tag 0", [0x00, 0x01]],
  ["an end-group tag with no group open (wire type 4)", [0x0c]],
  ["a length past the end", [0x0a, 0x7f, 0x41]],
  ["a group that never ends (wire type 3)", [0x0b, 0x08, 0x01]],
];

describe("input that does not decode is InvalidArgument on every protocol", () => {
  it.each(malformed)("%s", async (_, bytes) => {
    const message = Buffer.from(bytes);
    // IssueQueueTokenRequest's field 1 is a string (concert_id): the UTF-8 case is about that field.
    const type = "boxoffice.token.v1.IssueQueueTokenRequest";
    const grpc = grpcStatus(await h2(suite.host.url, issueQueueToken, { "content-type": "application/grpc" }, envelope(message)));
    const grpcWeb = grpcStatus(await h1(suite.host.url, "POST", issueQueueToken, { "content-type": "application/grpc-web+proto" }, envelope(message)));
    const connect = await h1(suite.host.url, "POST", issueQueueToken, { "content-type": "application/proto" }, message);
    const stream = grpcStatus(await h2(suite.host.url, watch, { "content-type": "application/grpc", "x-queue-token": "t" }, envelope(message)));
    for (const answer of [grpc, grpcWeb, stream]) {
      expect(answer.code).toBe(Code.InvalidArgument);
      expect(answer.message).toMatch(/^request: is not a valid boxoffice\.\w+\.v1\.\w+Request in protobuf binary \(.+\)$/);
    }
    expect(grpc.message).toContain(type);
    expect(connect.status).toBe(400);
    const error = JSON.parse(connect.body.toString()) as { code: string; message: string };
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toBe(grpc.message);
  });

  it("a compressed flag without an encoding, a body that does not inflate, a unary call with no message or two", async () => {
    const valid = toBinary(IssueQueueTokenRequestSchema, create(IssueQueueTokenRequestSchema, { concertId: "x" }));
    const compressedFlag = grpcStatus(await h1(suite.host.url, "POST", listConcerts, { "content-type": "application/grpc-web+proto" }, envelope(Buffer.from([0x08, 0x01]), 1)));
    expect(compressedFlag).toEqual({ code: Code.InvalidArgument, message: expect.stringContaining("marked compressed, but the request names no encoding") });

    const truncatedGzip = gzipSync(Buffer.from(valid)).subarray(0, 8);
    const inflate = await h1(suite.host.url, "POST", issueQueueToken, { "content-type": "application/proto", "content-encoding": "gzip" }, truncatedGzip);
    expect([inflate.status, JSON.parse(inflate.body.toString()).code]).toEqual([400, "invalid_argument"]);

    const none = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc" }, Buffer.alloc(0)));
    expect(none).toEqual({ code: Code.InvalidArgument, message: "request: has no request message; a unary call takes exactly one" });
    const two = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc" }, Buffer.concat([envelope(Buffer.alloc(0)), envelope(Buffer.alloc(0))])));
    expect(two.code).toBe(Code.InvalidArgument);
  });

  it("a Connect GET whose message is not base64 is InvalidArgument; GET of an RPC that changes things, or an unknown codec, is Unimplemented", async () => {
    const get = await h1(suite.host.url, "GET", `${listConcerts}?encoding=proto&base64=1&message=!!!`, {});
    expect(get.status).toBe(400);
    expect(JSON.parse(get.body.toString())).toMatchObject({ code: "invalid_argument", message: "message: is not base64 (query parameter message, with base64=1)" });
    // A valid GET still works, and a message that is base64 but not protobuf is the parse error.
    expect((await h1(suite.host.url, "GET", `${listConcerts}?encoding=proto&base64=1&message=`, {})).status).toBe(200);
    const notProto = await h1(suite.host.url, "GET", `${listConcerts}?encoding=proto&base64=1&message=CA`, {});
    expect(JSON.parse(notProto.body.toString()).code).toBe("invalid_argument");

    const getWrite = await h1(suite.host.url, "GET", `${issueQueueToken}?encoding=json&message={}`, {});
    expect(JSON.parse(getWrite.body.toString())).toMatchObject({ code: "unimplemented", message: "boxoffice.token.v1.TokenService/IssueQueueToken must be called with POST" });
    const xml = await h1(suite.host.url, "POST", listConcerts, { "content-type": "application/xml" }, Buffer.from("<x/>"));
    expect([xml.status, JSON.parse(xml.body.toString()).code]).toEqual([415, "unimplemented"]);
    const grpcXml = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc+xml" }, envelope(Buffer.alloc(0))));
    expect(grpcXml.code).toBe(Code.Unimplemented);
    const bidiOverH1 = await h1(suite.host.url, "POST", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", { "content-type": "application/connect+json" }, Buffer.alloc(0));
    expect([bidiOverH1.status, JSON.parse(bidiOverH1.body.toString()).code]).toEqual([501, "unimplemented"]);
    const unknownCompression = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc", "grpc-encoding": "zstd" }, envelope(Buffer.alloc(0), 1)));
    expect(unknownCompression.code).toBe(Code.Unimplemented);
  });

  it("a body over 1 MiB is ResourceExhausted", async () => {
    const big = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc" }, envelope(Buffer.alloc(1024 * 1024 + 1))));
    expect(big.code).toBe(Code.ResourceExhausted);
  });
});

describe("what a caller puts in a message or a timer is bounded", () => {
  it("a deadline beyond a timer's reach is no deadline: a call to another service still works, and no timer overflows", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on("warning", onWarning);
    try {
      const { concertId } = await concertOnSale(suite, [{ seatCount: 5, price: 1000n }]);
      const user = await newUser(suite);
      // IssueQueueToken calls the queue service's EnterQueue with the call's signal.
      const request = envelope(toBinary(IssueQueueTokenRequestSchema, create(IssueQueueTokenRequestSchema, { concertId })));
      for (const timeout of ["99999999H", "2147484S"]) {
        const answer = await h2(suite.host.url, issueQueueToken, { "content-type": "application/grpc", "grpc-timeout": timeout, authorization: `Bearer ${user.token}` }, request);
        expect(grpcStatus(answer)).toEqual({ code: 0, message: "" });
      }
      const connect = await h1(
        suite.host.url,
        "POST",
        issueQueueToken,
        { "content-type": "application/json", "connect-timeout-ms": "9999999999", authorization: `Bearer ${user.token}` },
        Buffer.from(JSON.stringify({ concertId })),
      );
      expect(connect.status).toBe(200);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).not.toContain("TimeoutOverflowWarning");
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("Health/Check quotes an unknown service's name cut short, however long it was", async () => {
    const name = "x".repeat(100_000);
    const request = Buffer.concat([Buffer.from([0x0a, 0xa0, 0x8d, 0x06]), Buffer.from(name)]);
    const grpc = grpcStatus(await h2(suite.host.url, "/grpc.health.v1.Health/Check", { "content-type": "application/grpc" }, envelope(request)));
    expect(grpc.code).toBe(Code.NotFound);
    expect(grpc.message.length).toBeLessThan(200);
    expect(grpc.message).toMatch(/^unknown service "x+…"$/);
    const connect = await h1(suite.host.url, "POST", "/grpc.health.v1.Health/Check", { "content-type": "application/json" }, Buffer.from(JSON.stringify({ service: `a\nb${name}` })));
    expect(connect.body.length).toBeLessThan(400);
    expect(JSON.parse(connect.body.toString()).message).toMatch(/^unknown service "a\?bx+…"$/);
  });

  it("a unary request whose body never ends is ended at its deadline, over HTTP/2 and HTTP/1.1", async () => {
    const started = Date.now();
    const session = http2.connect(suite.host.url);
    session.on("error", () => {});
    const stream = session.request({ ":method": "POST", ":path": listConcerts, "content-type": "application/grpc", te: "trailers", "grpc-timeout": "300m" });
    stream.on("error", () => {});
    stream.write(Buffer.from([0, 0, 0, 0, 10, 0x08])); // half an envelope, and the stream left open
    const code = await new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
    expect(code).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(2_000);
    session.close();

    const socket = net.connect(suite.host.port, "127.0.0.1");
    const h1Started = Date.now();
    let reply = "";
    socket.on("data", (chunk: Buffer) => (reply += chunk.toString()));
    socket.write(`POST ${listConcerts} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnect-timeout-ms: 300\r\ncontent-length: 100\r\n\r\n{`);
    await new Promise((resolve) => socket.once("close", resolve));
    expect(Date.now() - h1Started).toBeLessThan(2_000);
    // Answered before the connection is closed: the only way to end one request on HTTP/1.1.
    expect(reply).toMatch(/^HTTP\/1.1 \d{3}/);
    expect(JSON.parse(reply.slice(reply.indexOf("\r\n\r\n") + 4)).code).toBe("deadline_exceeded");
  });
});

describe("connections a client holds are bounded", () => {
  let host: Host;
  const timeouts = { firstBytesMs: 600, idleMs: 800 };
  beforeAll(async () => {
    host = await startHost({
      host: "127.0.0.1",
      port: 0,
      health: new HealthStatus(),
      shutdownGraceMs: 100,
      routes: () => {},
      fallback: (_req, res) => res.end("ok"),
      maxConnectionsPerAddress: 4,
      timeouts,
    });
  });
  afterAll(() => host?.close());

  /** Resolves to how long the server took to close a connection that does `act`. */
  async function closedAfter(act: (socket: net.Socket) => void): Promise<number> {
    const socket = net.connect(host.port, "127.0.0.1");
    socket.on("error", () => {});
    await new Promise((resolve) => socket.once("connect", resolve));
    const started = Date.now();
    act(socket);
    await new Promise((resolve) => socket.once("close", resolve));
    return Date.now() - started;
  }

  /** Writes `text` a byte every 50 ms until the socket closes. */
  const dribble = (text: string) => (socket: net.Socket) => {
    let at = 0;
    const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write(text[at++ % text.length]!)), 50);
    socket.once("close", () => clearInterval(timer));
  };

  it("HTTP/1.1 headers sent a byte at a time are cut off", async () => {
    const took = await closedAfter(dribble(`GET / HTTP/1.1\r\nhost: x\r\n${"x-pad: ".repeat(1000)}`));
    expect(took).toBeGreaterThan(timeouts.firstBytesMs - 100);
    expect(took).toBeLessThan(timeouts.firstBytesMs + 1_500);
  });

  it("the HTTP/2 preface sent a byte at a time is cut off", async () => {
    const took = await closedAfter(dribble("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    expect(took).toBeLessThan(timeouts.firstBytesMs + 500);
  });

  it("an HTTP/2 connection that opens no stream, or keeps none open while it pings, is closed", async () => {
    const silent = http2.connect(host.url);
    silent.on("error", () => {});
    const started = Date.now();
    await new Promise((resolve) => silent.once("close", resolve));
    expect(Date.now() - started).toBeLessThan(timeouts.firstBytesMs + 500);

    const pinging = http2.connect(host.url);
    pinging.on("error", () => {});
    const answered = await new Promise<number>((resolve) => {
      const req = pinging.request({ ":path": "/" });
      req.on("response", (headers) => resolve(Number(headers[":status"])));
      req.resume();
    });
    expect(answered).toBe(200);
    const ping = setInterval(() => !pinging.destroyed && pinging.ping(() => {}), 100);
    const idleFrom = Date.now();
    await new Promise((resolve) => pinging.once("close", resolve));
    clearInterval(ping);
    expect(Date.now() - idleFrom).toBeGreaterThan(timeouts.idleMs - 100);
    expect(Date.now() - idleFrom).toBeLessThan(timeouts.idleMs + 1_000);
  });

  it("one address holds at most maxConnectionsPerAddress connections; the ones it has keep working", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const get = () =>
      new Promise<number>((resolve, reject) => {
        http.get(`${host.url}/`, { agent }, (res) => (res.resume(), resolve(res.statusCode!))).on("error", reject);
      });
    expect(await Promise.all([get(), get(), get(), get()])).toEqual([200, 200, 200, 200]);
    const extra = await closedAfter(() => {});
    expect(extra).toBeLessThan(200);
    expect(await get()).toBe(200);
    agent.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Once they are closed, the address may connect again.
    const fresh = net.connect(host.port, "127.0.0.1");
    await new Promise((resolve) => fresh.once("connect", resolve));
    fresh.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    const reply = await new Promise<string>((resolve) => fresh.once("data", (chunk) => resolve(chunk.toString())));
    expect(reply).toMatch(/^HTTP\/1.1 200/);
    fresh.destroy();
  });
});

describe("what the fuzz test found", () => {
  it("a Host or :authority that is no authority is InvalidArgument, and the server lives on", async () => {
    for (const host of ["a b", "[::1", "a:b:c", "localhost:99999"]) {
      const socket = net.connect(suite.host.port, "127.0.0.1");
      let reply = "";
      socket.on("data", (chunk: Buffer) => (reply += chunk.toString()));
      socket.write(`POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
      await new Promise((resolve) => socket.once("close", resolve));
      expect(reply, host).toMatch(/^HTTP\/1.1 400/);
      expect(JSON.parse(reply.slice(reply.indexOf("\r\n\r\n") + 4)).code).toBe("invalid_argument");
    }
    const noHost = net.connect(suite.host.port, "127.0.0.1");
    let reply = "";
    noHost.on("data", (chunk: Buffer) => (reply += chunk.toString()));
    noHost.write(`POST /grpc.health.v1.Health/Check HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`);
    await new Promise((resolve) => noHost.once("close", resolve));
    expect(reply).toMatch(/^HTTP\/1.[01] 400/);
    const h2Bad = await h2(suite.host.url, "/grpc.health.v1.Health/Check", { "content-type": "application/grpc", ":authority": "a:b:c" }, envelope(Buffer.alloc(0)));
    expect(grpcStatus(h2Bad).code).toBe(Code.InvalidArgument);
    // Still serving.
    expect(grpcStatus(await h2(suite.host.url, "/grpc.health.v1.Health/Check", { "content-type": "application/grpc" }, envelope(Buffer.alloc(0)))).code).toBe(0);
  });

  it("a message quoting a lone surrogate, or a huge header, is sent well-formed and cut short", async () => {
    // One astral character's first half, as JSON.parse quotes it in its error.
    const surrogate = Buffer.concat([Buffer.from([0, 0, 0, 0, 4]), Buffer.from([0xf0, 0xaa, 0x87, 0x89])]);
    const answer = grpcStatus(await h1(suite.host.url, "POST", listConcerts, { "content-type": "application/grpc-web+json", "grpc-timeout": "2S" }, surrogate));
    expect(answer.code).toBe(Code.InvalidArgument);
    const encoding = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc", "grpc-encoding": "x".repeat(3000) }, envelope(Buffer.alloc(0), 1)));
    expect(encoding.code).toBe(Code.Unimplemented);
    expect(encoding.message.length).toBeLessThanOrEqual(301);
    const timeout = grpcStatus(await h2(suite.host.url, listConcerts, { "content-type": "application/grpc", "grpc-timeout": `${"9".repeat(2000)}S` }, envelope(Buffer.alloc(0))));
    expect([timeout.code, timeout.message.length <= 301]).toEqual([Code.InvalidArgument, true]);
  });

  it("the raw WatchQueueStatus path answers a body over 1 MiB ResourceExhausted, not a reset", async () => {
    const big = await h2(suite.host.url, watch, { "content-type": "application/grpc", "x-queue-token": "t" }, envelope(Buffer.alloc(1024 * 1024 + 16)));
    expect(grpcStatus(big).code).toBe(Code.ResourceExhausted);
  });
});
