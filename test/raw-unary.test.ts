import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertService, ListConcertsRequestSchema } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { errorMapper, NotFound, Reason, reasonOf } from "../services/platform/errors.js";
import { HealthStatus } from "../services/platform/health.js";
import { startHost, type Host } from "../services/platform/host.js";
import { peerAddressKey } from "../services/platform/peer.js";
import { envelope, h2, type H2Answer } from "./h2.js";

/**
 * Pins what the raw unary path (services/platform/raw-streams.ts rawUnary)
 * relies on in Connect's internals and must keep equal to it: the same calls,
 * well-formed and malformed, sent to a host serving unary gRPC on the raw path
 * and to one serving them through Connect, must get the same answers and look
 * the same to the handler and its interceptors. A Connect upgrade that changes
 * what Connect answers, or how it runs interceptors, fails here.
 */

interface Seen {
  url: string;
  protocol: string;
  header: string | null;
  peer: string | undefined;
  seenBy: string[];
  signalAbortedAtEnd?: boolean;
}
const seen: Seen[] = [];

const impl = {
  async listConcerts(_req: unknown, ctx: HandlerContext) {
    seen.push({
      url: ctx.url,
      protocol: ctx.protocolName,
      header: ctx.requestHeader.get("x-fan"),
      peer: ctx.values.get(peerAddressKey),
      seenBy: ctx.requestHeader.get("x-seen-by")?.split(",") ?? [],
    });
    ctx.responseHeader.set("x-answered-by", "concert");
    ctx.responseTrailer.set("x-trailer", "after");
    return { concerts: [{ id: "c1", title: "Title", venue: "Venue" }] };
  },
  async listSchedules(req: { concertId: string }) {
    if (req.concertId === "bug") throw new TypeError("a bug, not the caller's fault");
    throw new NotFound(Reason.CONCERT_NOT_FOUND, "no concert with id x");
  },
  async listSeats(req: { scheduleId: string }, ctx: HandlerContext) {
    if (req.scheduleId === "slow") {
      // Answers 300 ms on, unless its signal aborted meanwhile (as the server's shutdown aborts it).
      await new Promise((resolve) => setTimeout(resolve, 300));
      seen.push({ url: "", protocol: "", header: null, peer: undefined, seenBy: [], signalAbortedAtEnd: ctx.signal.aborted });
      return { seats: [] };
    }
    // Never answers; ends only when the call's signal does.
    await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
    seen.push({ url: "", protocol: "", header: null, peer: undefined, seenBy: [], signalAbortedAtEnd: ctx.signal.aborted });
    return { seats: [] };
  },
};

/** Interceptors in the order the suite mounts them: each leaves a mark the handler sees, outermost first. */
const mark =
  (name: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("x-seen-by", [req.header.get("x-seen-by"), name].filter(Boolean).join(","));
    return next(req);
  };
const withRequestId: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    res.header.set("x-request-id", "r1");
    return res;
  } catch (error) {
    if (error instanceof ConnectError) error.metadata.set("x-request-id", "r1");
    throw error;
  }
};

let raw: Host;
let connect: Host;
beforeAll(async () => {
  const start = (rawUnary: boolean) =>
    startHost({
      host: "127.0.0.1",
      port: 0,
      routes: (router) => router.service(ConcertService, impl, { interceptors: [mark("outer"), withRequestId, errorMapper, mark("inner")] }),
      health: new HealthStatus(),
      shutdownGraceMs: 1_000,
      rawUnary,
    });
  [raw, connect] = await Promise.all([start(true), start(false)]);
});
afterAll(async () => {
  await Promise.all([raw?.close(), connect?.close()]);
});

const hosts = () => [raw, connect] as const;

async function outcomeOf(work: Promise<unknown>) {
  try {
    await work;
    return "resolved";
  } catch (error) {
    const connectError = ConnectError.from(error);
    return { code: Code[connectError.code], message: connectError.rawMessage, reason: reasonOf(connectError), requestId: connectError.metadata.get("x-request-id") };
  }
}

/** The status of an answer, wherever it came (trailers, or the headers of a trailers-only answer). */
function statusOf(answer: H2Answer) {
  const fields = answer.trailers["grpc-status"] !== undefined ? answer.trailers : answer.headers;
  return { code: Number(fields["grpc-status"]), message: decodeURIComponent(String(fields["grpc-message"] ?? "")) };
}

const listConcerts = "/boxoffice.concert.v1.ConcertService/ListConcerts";

describe("the raw unary path answers as Connect does", () => {
  it("the same message, response headers and trailers; the handler sees the same URL, protocol, headers, peer and interceptors", async () => {
    seen.length = 0;
    const answers = [];
    for (const host of hosts()) {
      let header: Headers | undefined;
      let trailer: Headers | undefined;
      const response = await createClient(ConcertService, createGrpcTransport({ baseUrl: host.url })).listConcerts(
        {},
        { headers: { "x-fan": "f1" }, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
      );
      answers.push({
        concerts: response.concerts.map((c) => ({ id: c.id, title: c.title, venue: c.venue })),
        answeredBy: header?.get("x-answered-by"),
        requestId: header?.get("x-request-id"),
        contentType: header?.get("content-type"),
        trailer: trailer?.get("x-trailer"),
      });
    }
    expect(answers[0]).toEqual({
      concerts: [{ id: "c1", title: "Title", venue: "Venue" }],
      answeredBy: "concert",
      requestId: "r1",
      contentType: "application/grpc+proto",
      trailer: "after",
    });
    expect(answers[1]).toEqual(answers[0]);
    const [onRaw, onConnect] = seen;
    // The URL names the host called, the rest is the same.
    expect(onRaw!.url).toBe(onConnect!.url.replace(`:${connect.port}/`, `:${raw.port}/`));
    expect({ ...onRaw, url: "" }).toEqual({ ...onConnect, url: "" });
    expect(onRaw).toMatchObject({ protocol: "grpc", header: "f1", peer: "127.0.0.1", seenBy: ["outer", "inner"] });
  });

  it("a domain error, a bug and a malformed body get the same code, message, reason and metadata", async () => {
    const outcomes = [];
    for (const host of hosts()) {
      const client = createClient(ConcertService, createGrpcTransport({ baseUrl: host.url }));
      outcomes.push([await outcomeOf(client.listSchedules({ concertId: "x" })), await outcomeOf(client.listSchedules({ concertId: "bug" }))]);
    }
    expect(outcomes[0]).toEqual([
      { code: "NotFound", message: "no concert with id x", reason: Reason.CONCERT_NOT_FOUND, requestId: "r1" },
      // The error mapper turns what is no ConnectError into Internal without its text.
      { code: "Internal", message: expect.any(String), reason: undefined, requestId: "r1" },
    ]);
    expect(outcomes[1]).toEqual(outcomes[0]);

    const bodies = [
      Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]), // not protobuf
      Buffer.alloc(0), // no message
      Buffer.concat([envelope(toBinary(ListConcertsRequestSchema, create(ListConcertsRequestSchema))), envelope(new Uint8Array())]), // two
      Buffer.from([1, 0, 0, 0, 1, 0]), // compressed, with no encoding named
      Buffer.from([0, 0, 0, 0, 9, 1]), // cut short
    ];
    for (const body of bodies) {
      const [onRaw, onConnect] = await Promise.all(hosts().map(async (host) => statusOf(await h2(host.url, listConcerts, { "content-type": "application/grpc" }, body))));
      expect(onRaw, body.toString("hex")).toEqual(onConnect);
      expect(onRaw!.code, body.toString("hex")).not.toBe(Code.Internal);
    }
    // A malformed timeout, and an :authority that is no host[:port].
    for (const headers of [{ "grpc-timeout": "soon" }, { ":authority": "a:b:c" }]) {
      const [onRaw, onConnect] = await Promise.all(
        hosts().map(async (host) => statusOf(await h2(host.url, listConcerts, { "content-type": "application/grpc", ...headers }, envelope(new Uint8Array())))),
      );
      expect(onRaw, JSON.stringify(headers)).toEqual(onConnect);
      expect(onRaw!.code).toBe(Code.InvalidArgument);
    }
  });

  it("the deadline ends a call whose handler never answers as DeadlineExceeded and aborts the handler's signal; a cancel as Canceled", async () => {
    seen.length = 0;
    const timedOut = [];
    for (const host of hosts()) timedOut.push(await outcomeOf(createClient(ConcertService, createGrpcTransport({ baseUrl: host.url })).listSeats({}, { timeoutMs: 200 })));
    expect(timedOut.map((o) => (typeof o === "string" ? o : o.code))).toEqual(["DeadlineExceeded", "DeadlineExceeded"]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(seen.map((s) => s.signalAbortedAtEnd)).toEqual([true, true]);

    const cancelled = [];
    for (const host of hosts()) {
      const controller = new AbortController();
      const call = outcomeOf(createClient(ConcertService, createGrpcTransport({ baseUrl: host.url })).listSeats({}, { signal: controller.signal, timeoutMs: 10_000 }));
      setTimeout(() => controller.abort(), 50);
      cancelled.push(await call);
    }
    expect(cancelled.map((o) => (typeof o === "string" ? o : o.code))).toEqual(["Canceled", "Canceled"]);
  });

  it("the raw path is the one taken: it answers an error before any message trailers-only, where Connect sends headers, then trailers", async () => {
    const [onRaw, onConnect] = await Promise.all(
      hosts().map((host) => h2(host.url, "/boxoffice.concert.v1.ConcertService/ListSchedules", { "content-type": "application/grpc" }, envelope(new Uint8Array()))),
    );
    expect([onRaw!.headers["grpc-status"], onRaw!.trailers["grpc-status"]]).toEqual(["5", undefined]);
    expect([onConnect!.headers["grpc-status"], onConnect!.trailers["grpc-status"]]).toEqual([undefined, "5"]);
    const [ok, okConnect] = await Promise.all(
      hosts().map((host) => h2(host.url, listConcerts, { "content-type": "application/grpc" }, envelope(toBinary(ListConcertsRequestSchema, create(ListConcertsRequestSchema))))),
    );
    expect(ok!.body.equals(okConnect!.body)).toBe(true);
  });

  it("a call in progress when the server shuts down is answered within the grace period, its signal aborted with the shutdown, on both paths", async () => {
    const start = (rawUnary: boolean) =>
      startHost({
        host: "127.0.0.1",
        port: 0,
        routes: (router) => router.service(ConcertService, impl, { interceptors: [errorMapper] }),
        health: new HealthStatus(),
        shutdownGraceMs: 2_000,
        rawUnary,
      });
    seen.length = 0;
    const outcomes = await Promise.all(
      [true, false].map(async (rawUnary) => {
        const doomed = await start(rawUnary);
        const call = outcomeOf(createClient(ConcertService, createGrpcTransport({ baseUrl: doomed.url })).listSeats({ scheduleId: "slow" }));
        await new Promise((resolve) => setTimeout(resolve, 100));
        await doomed.close();
        return call;
      }),
    );
    expect(outcomes).toEqual(["resolved", "resolved"]);
    expect(seen.map((s) => s.signalAbortedAtEnd)).toEqual([true, true]);
  });
});
