import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { describe, expect, inject, it } from "vitest";
import { ConcertInternalService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { ReservationInternalService } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { concertModule } from "../services/concert/index.js";
import { ServiceClients, TransactionHeldAcrossCall } from "../services/platform/clients.js";
import { openDatabase } from "../services/platform/database.js";
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
