import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ConcertInternalService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { ReservationInternalService } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { ServiceClients } from "../services/platform/clients.js";
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
