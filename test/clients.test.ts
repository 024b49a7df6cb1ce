import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import net from "node:net";
import { describe, expect, inject, it } from "vitest";
import { ConcertInternalService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { ReservationInternalService } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { concertModule } from "../services/concert/index.js";
import { ServiceClients, TransactionHeldAcrossCall } from "../services/platform/clients.js";
import { openDatabase } from "../services/platform/database.js";
import { HealthStatus } from "../services/platform/health.js";
import { startHost } from "../services/platform/host.js";
import { failure } from "./support.js";

/** Clients to an in-process concert service whose handlers fail Unavailable the first `failures` times. */
function flakyConcert(failures: number) {
  const calls = { listConcerts: 0, holdSeats: 0, getConcertSupply: 0 };
  const flaky = (name: keyof typeof calls) => {
    calls[name]++;
    if (calls[name] <= failures) throw new ConnectError("down for a moment", Code.Unavailable);
  };
  const routes = (router: ConnectRouter) => {
    router.service(ConcertService, {
      listConcerts: () => (flaky("listConcerts"), { concerts: [] }),
    });
    router.service(ReservationInternalService, {
      holdSeatsForUser: () => (flaky("holdSeats"), {}),
    });
    router.service(ConcertInternalService, {
      getConcertSupply: (req) => {
        flaky("getConcertSupply");
        if (req.concertId === "refuse") throw new ConnectError("no such concert", Code.NotFound);
        return { total: 1 };
      },
    });
  };
  const clients = new ServiceClients({
    internalCredential: "x",
    localRoutes: () => routes,
    localServices: new Set(["concert"]),
    urls: {},
    owners: new Map([[ReservationInternalService.typeName, "concert"]]),
  });
  return { calls, clients };
}

describe("calls between services", () => {
  it("retry Unavailable twice for RPCs the contract marks idempotent, then succeed", async () => {
    const { calls, clients } = flakyConcert(2);
    await clients.for(ConcertService).listConcerts({});
    expect(calls.listConcerts).toBe(3);
  });

  it("give up after the retries and report Unavailable", async () => {
    const { calls, clients } = flakyConcert(5);
    const error = await failure(clients.for(ConcertService).listConcerts({}));
    expect(error.code).toBe(Code.Unavailable);
    expect(calls.listConcerts).toBe(3);
  });

  it("never repeat a call that is not idempotent (HoldSeatsForUser)", async () => {
    const { calls, clients } = flakyConcert(1);
    const error = await failure(clients.for(ReservationInternalService).holdSeatsForUser({}));
    expect(error.code).toBe(Code.Unavailable);
    expect(calls.holdSeats).toBe(1);
  });

  it("never repeat a refusal, even of an idempotent call", async () => {
    const { calls, clients } = flakyConcert(0);
    const error = await failure(clients.for(ConcertInternalService).getConcertSupply({ concertId: "refuse" }));
    expect(error.code).toBe(Code.NotFound);
    expect(calls.getConcertSupply).toBe(1);
  });
});

/**
 * A concert service over the network, behind a proxy that breaks each of its
 * first `resets` connections right after it has passed the request on: the
 * callee ran the call, the caller never hears back (a process dying mid-call).
 */
async function concertBehindResets(resets: number) {
  const calls = { listConcerts: 0, holdSeats: 0 };
  const slowly = async <T>(value: T) => (await new Promise((resolve) => setTimeout(resolve, 100)), value);
  const host = await startHost({
    host: "127.0.0.1",
    port: 0,
    health: new HealthStatus(),
    shutdownGraceMs: 100,
    routes: (router) => {
      router.service(ConcertService, { listConcerts: () => (calls.listConcerts++, slowly({ concerts: [] })) });
      router.service(ReservationInternalService, { holdSeatsForUser: () => (calls.holdSeats++, slowly({})) });
    },
  });
  let broken = 0;
  const proxy = net.createServer((socket) => {
    const upstream = net.connect(host.port, "127.0.0.1");
    const breakIt = broken++ < resets;
    socket.on("error", () => upstream.destroy());
    upstream.on("error", () => socket.destroy());
    // The call is made on a fresh connection at once: its request is in the first chunks, its answer 100 ms later.
    if (breakIt) socket.once("data", () => setTimeout(() => (socket.resetAndDestroy(), upstream.destroy()), 50));
    socket.pipe(upstream);
    upstream.pipe(socket);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const clients = new ServiceClients({
    internalCredential: "x",
    localRoutes: () => () => {},
    localServices: new Set(),
    urls: { concert: `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}` },
    owners: new Map([[ReservationInternalService.typeName, "concert"]]),
  });
  const close = async () => {
    proxy.close();
    await host.close();
  };
  return { calls, clients, close };
}

describe("a call to another process that is cut in the middle", () => {
  it("is Unavailable, and retried when the contract marks it idempotent", async () => {
    const concert = await concertBehindResets(2);
    try {
      await expect(concert.clients.for(ConcertService).listConcerts({})).resolves.toMatchObject({ concerts: [] });
      expect(concert.calls.listConcerts).toBe(3);
    } finally {
      await concert.close();
    }
  });

  it("is Unavailable, and not repeated, when it is not idempotent", async () => {
    const concert = await concertBehindResets(1);
    try {
      const error = await failure(concert.clients.for(ReservationInternalService).holdSeatsForUser({}));
      expect([Code[error.code], error.rawMessage]).toEqual(["Unavailable", "the concert service is unreachable; retry later"]);
      expect(concert.calls.holdSeats).toBe(1);
    } finally {
      await concert.close();
    }
  });
});

describe("no transaction is held open while another service is called", () => {
  it("a call made inside an open transaction is refused before it leaves, and the same call outside one goes through", async () => {
    const { clients } = flakyConcert(0);
    const orm = await openDatabase(concertModule.database!, { url: inject("databaseUrl"), poolSize: 2 });
    try {
      const inside = await orm.em.fork().transactional(async (tx) => {
        await tx.getConnection().execute("select 1", [], "all", tx.getTransactionContext());
        return clients.for(ConcertService).listConcerts({}).then(
          () => "went through",
          (error: unknown) => error,
        );
      });
      expect(inside).toBeInstanceOf(TransactionHeldAcrossCall);
      expect(String(inside)).toContain("boxoffice.concert.v1.ConcertService/ListConcerts called inside an open transaction");
      // After the transaction (and in the same async context), calls go through.
      await expect(clients.for(ConcertService).listConcerts({})).resolves.toMatchObject({ concerts: [] });
    } finally {
      await orm.close();
    }
  });
});
