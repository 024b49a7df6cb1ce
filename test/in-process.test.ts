import { Code, ConnectError, createClient, createRouterTransport, type HandlerContext, type Interceptor, type Transport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { errorMapper, NotFound, Reason, reasonOf } from "../services/platform/errors.js";
import { createInProcessTransport, type MountedService } from "../services/platform/in-process.js";

/**
 * Pins what the in-process transport (services/platform/in-process.ts) relies
 * on in Connect's internals: the same call through it and through Connect's
 * router transport (which encodes) must look the same to the caller and to the
 * callee. A Connect upgrade that changes any of this fails here.
 */

const seen: { header: string | null; signalAbortedAtEnd?: boolean }[] = [];

const impl = {
  async listConcerts(_req: unknown, ctx: HandlerContext) {
    seen.push({ header: ctx.requestHeader.get("x-internal-credential") });
    ctx.responseHeader.set("x-answered-by", "concert");
    return { concerts: [{ id: "c1", title: "Title", venue: "Venue" }] };
  },
  async listSchedules() {
    throw new NotFound(Reason.CONCERT_NOT_FOUND, "no concert with id x");
  },
  async listSeats(_req: unknown, ctx: HandlerContext) {
    // Never answers; ends only when the call's signal does.
    await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
    seen.push({ header: null, signalAbortedAtEnd: ctx.signal.aborted });
    return { seats: [] };
  },
};

const calleeInterceptors: Interceptor[] = [errorMapper];
const credential: Interceptor = (next) => (req) => {
  req.header.set("x-internal-credential", "secret");
  return next(req);
};

function transports(): { routed: Transport; inProcess: Transport } {
  const routes = (router: Parameters<Parameters<typeof createRouterTransport>[0]>[0]) =>
    router.service(ConcertService, impl, { interceptors: calleeInterceptors });
  const routed = createRouterTransport(routes, { transport: { interceptors: [credential], defaultTimeoutMs: 300 } });
  const mounted: MountedService = { service: ConcertService, impl, interceptors: calleeInterceptors };
  const inProcess = createInProcessTransport({
    lookup: (method) => (method.parent.typeName === ConcertService.typeName ? mounted : undefined),
    interceptors: [credential],
    defaultTimeoutMs: 300,
    fallback: () => routed,
  });
  return { routed, inProcess };
}

async function outcomeOf(work: Promise<unknown>) {
  try {
    await work;
    return "resolved";
  } catch (error) {
    const connectError = ConnectError.from(error);
    return { code: Code[connectError.code], message: connectError.rawMessage, reason: reasonOf(connectError) };
  }
}

describe("in-process calls behave as Connect's router transport does", () => {
  it("the same answer and response headers; the caller's interceptors run and the callee sees their headers", async () => {
    const answers = [];
    seen.length = 0;
    for (const transport of Object.values(transports())) {
      const client = createClient(ConcertService, transport);
      let header: Headers | undefined;
      const response = await client.listConcerts({}, { onHeader: (h) => (header = h) });
      answers.push({ concerts: response.concerts.map((c) => ({ id: c.id, title: c.title, venue: c.venue })), answeredBy: header?.get("x-answered-by") });
    }
    expect(answers[0]).toEqual({ concerts: [{ id: "c1", title: "Title", venue: "Venue" }], answeredBy: "concert" });
    expect(answers[1]).toEqual(answers[0]);
    expect(seen.map((s) => s.header)).toEqual(["secret", "secret"]);
  });

  it("a domain error comes back as the same Connect error, with its reason", async () => {
    const outcomes = [];
    for (const transport of Object.values(transports())) outcomes.push(await outcomeOf(createClient(ConcertService, transport).listSchedules({ concertId: "x" })));
    expect(outcomes[0]).toEqual({ code: "NotFound", message: "no concert with id x", reason: Reason.CONCERT_NOT_FOUND });
    expect(outcomes[1]).toEqual(outcomes[0]);
  });

  it("the deadline ends a call whose handler never answers, as DeadlineExceeded, and aborts the handler's signal; so does the caller's own signal, as Canceled", async () => {
    const { inProcess, routed } = transports();
    seen.length = 0;
    const timedOut = [await outcomeOf(createClient(ConcertService, routed).listSeats({})), await outcomeOf(createClient(ConcertService, inProcess).listSeats({}))];
    expect(timedOut.map((o) => (typeof o === "string" ? o : o.code))).toEqual(["DeadlineExceeded", "DeadlineExceeded"]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(seen.map((s) => s.signalAbortedAtEnd)).toEqual([true, true]);

    const cancelled = [];
    for (const transport of [routed, inProcess]) {
      const controller = new AbortController();
      const call = outcomeOf(createClient(ConcertService, transport).listSeats({}, { signal: controller.signal, timeoutMs: 10_000 }));
      setTimeout(() => controller.abort(), 20);
      cancelled.push(await call);
    }
    expect(cancelled.map((o) => (typeof o === "string" ? o : o.code))).toEqual(["Canceled", "Canceled"]);
  });
});
