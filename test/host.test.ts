import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import type { Suite } from "../services/platform/suite.js";
import { HealthStatus } from "../services/platform/health.js";
import { shutdownError, startHost } from "../services/platform/host.js";
import { client, failure, startTestSuite, type Protocol } from "./support.js";

let suite: Suite;
beforeAll(async () => {
  suite = await startTestSuite();
});
afterAll(() => suite?.close());

describe("one port for every caller", () => {
  it.each<Protocol>(["grpc", "connect", "grpc-web"])("serves %s", async (protocol) => {
    const issued = await client(suite, TokenService, protocol).issueUserToken({});
    expect(issued.userId).toBeTruthy();
    const { concerts } = await client(suite, ConcertService, protocol).listConcerts({});
    expect(Array.isArray(concerts)).toBe(true);
  });

  /** A Connect unary call as curl or a browser's fetch makes it: JSON over HTTP/1.1. */
  const postJson = (path: string, body: string) =>
    fetch(`${suite.host.url}/${path}`, { method: "POST", headers: { "content-type": "application/json" }, body });

  it("answers a plain HTTP/1.1 JSON POST, as a browser or curl sends it", async () => {
    const response = await postJson("boxoffice.token.v1.TokenService/IssueUserToken", "{}");
    expect(response.status).toBe(200);
    const body = (await response.json()) as { userId: string; token: string };
    expect(body.userId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("answers malformed JSON with invalid_argument, not a crash", async () => {
    const response = await postJson("boxoffice.concert.v1.ConcertService/ListSchedules", '{"concertId": 42, "nope": [');
    expect(response.status).toBe(400);
    expect(((await response.json()) as { code: string }).code).toBe("invalid_argument");
  });

  it("refuses a request body over 1 MiB with resource_exhausted", async () => {
    const response = await postJson("boxoffice.concert.v1.ConcertAdminService/CreateConcert", JSON.stringify({ title: "x".repeat(2 * 1024 * 1024) }));
    expect(((await response.json()) as { code: string }).code).toBe("resource_exhausted");
  });

  it("survives a connection that sends garbage, and keeps serving", async () => {
    const socket = net.connect(suite.host.port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write(Buffer.from([0x50, 0x52, 0x49, 0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a]));
    socket.write("\x16\x03\x01garbage that is neither HTTP/1.1 nor HTTP/2\r\n\r\n");
    const replies: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => replies.push(chunk));
    await new Promise((resolve) => socket.once("close", resolve).once("error", resolve));
    expect(Buffer.concat(replies).toString()).toMatch(/^HTTP\/1\.1 400/);
    const { status } = await client(suite, Health).check({});
    expect(status).toBe(Serving.SERVING);
  });
});

describe("health", () => {
  it("reports SERVING for the server and for each service it serves", async () => {
    const health = client(suite, Health);
    expect((await health.check({})).status).toBe(Serving.SERVING);
    expect((await health.check({ service: ConcertService.typeName })).status).toBe(Serving.SERVING);
    const unknown = await failure(health.check({ service: "no.such.Service" }));
    expect(unknown.code).toBe(Code.NotFound);
  });
});

/** A host whose Health.Watch sends SERVING and then waits for its call to end; `ended` sees the call's signal then. */
function hostWithEndlessWatch(ended: (signal: AbortSignal) => void = () => {}) {
  return startHost({
    host: "127.0.0.1",
    port: 0,
    health: new HealthStatus(),
    shutdownGraceMs: 10_000,
    routes: (router) =>
      router.service(Health, {
        check: () => ({ status: Serving.SERVING }),
        async *watch(_req, ctx) {
          yield { status: Serving.SERVING };
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
          ended(ctx.signal);
        },
      }),
  });
}

describe("graceful shutdown", () => {
  it("ends a stream that would otherwise run forever, well before the grace period, and closes idle connections", async () => {
    const host = await hostWithEndlessWatch();
    const idle = net.connect(host.port, "127.0.0.1");
    await new Promise((resolve) => idle.once("connect", resolve));
    const idleClosed = new Promise((resolve) => idle.once("close", resolve));
    idle.resume();
    const transport = createGrpcTransport({ baseUrl: host.url });
    let received = 0;
    const ended = (async () => {
      for await (const _ of createClient(Health, transport).watch({})) received++;
    })().catch(() => undefined);
    await expect.poll(() => received).toBe(1);
    const started = Date.now();
    await host.close();
    await ended;
    await idleClosed;
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("ends open streams, reports NOT_SERVING, and stops accepting connections", async () => {
    const doomed = await startTestSuite();
    const watch = client(doomed, Health).watch({});
    const seen: Serving[] = [];
    const ended = (async () => {
      for await (const { status } of watch) seen.push(status);
    })().then(
      () => "OK",
      (error: unknown) => Code[ConnectError.from(error).code],
    );
    await expect.poll(() => seen.length).toBe(1);
    const started = Date.now();
    await doomed.close();
    // NOT_SERVING, then Unavailable (as gRPC servers end a health watch at shutdown): the client watches elsewhere.
    expect(await ended).toBe("Unavailable");
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(seen).toEqual([Serving.SERVING, Serving.NOT_SERVING]);
    const refused = await failure(client(doomed, Health).check({}));
    expect(refused.code).toBe(Code.Unavailable);
  });

  const transports: Record<Protocol, (baseUrl: string) => Transport> = {
    grpc: (baseUrl) => createGrpcTransport({ baseUrl }),
    connect: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    "grpc-web": (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  };

  it.each<Protocol>(["grpc", "connect", "grpc-web"])("ends a stream open at shutdown with Unavailable over %s, so that its client reconnects", async (protocol) => {
    let cancels = 0;
    const host = await hostWithEndlessWatch((signal) => {
      const shutdown = shutdownError(signal);
      if (shutdown) throw shutdown;
      cancels++;
    });
    const health = createClient(Health, transports[protocol](host.url));

    // A caller's own cancel is no shutdown: the handler sees no shutdown error.
    const cancelled = new AbortController();
    let seen = 0;
    const cancelledEnd = (async () => {
      for await (const _ of health.watch({}, { signal: cancelled.signal })) if (++seen === 1) cancelled.abort();
    })().catch((error: unknown) => ConnectError.from(error).code);
    expect(await cancelledEnd).toBe(Code.Canceled);
    await expect.poll(() => cancels).toBe(1);

    let received = 0;
    const ended = (async () => {
      for await (const _ of health.watch({})) received++;
      return "ended cleanly";
    })().catch((error: unknown) => ConnectError.from(error));
    await expect.poll(() => received).toBe(1);
    const started = Date.now();
    await host.close();
    const end = await ended;
    expect(end).toBeInstanceOf(ConnectError);
    expect((end as ConnectError).code).toBe(Code.Unavailable);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(cancels).toBe(1);
  });
});
