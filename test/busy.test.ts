import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { Reason, reasonOf } from "../services/platform/errors.js";
import { HealthStatus } from "../services/platform/health.js";
import { startHost, type Host } from "../services/platform/host.js";

/**
 * MAX_CALLS_IN_FLIGHT (host.ts): with as many unary calls in progress as the
 * host takes, the next is answered Unavailable with reason SERVER_BUSY at once,
 * without running, on the raw gRPC path and on Connect alike; once calls end,
 * calls are served again. Gated RPCs (admitted fans buying) and streams do not count.
 */

let release: () => void = () => {};
let started = 0;
const impl = {
  // Gated in the contract (ACCESS_GATED): admitted fans' calls are not counted against the limit.
  async listSeats() {
    return { seats: [] };
  },
  async listConcerts(_req: unknown, ctx: HandlerContext) {
    started++;
    await new Promise<void>((resolve) => {
      const previous = release;
      release = () => (previous(), resolve());
      ctx.signal.addEventListener("abort", () => resolve());
    });
    return { concerts: [] };
  },
};

let host: Host;
beforeAll(async () => {
  host = await startHost({
    host: "127.0.0.1",
    port: 0,
    routes: (router) => router.service(ConcertService, impl),
    health: new HealthStatus(),
    shutdownGraceMs: 500,
    maxCallsInFlight: 3,
  });
});
afterAll(() => host?.close());

const outcome = (call: Promise<unknown>) =>
  call.then(
    () => "served",
    (error: unknown) => {
      const e = ConnectError.from(error);
      return `${Code[e.code]} ${Reason[reasonOf(e) ?? 0]}`;
    },
  );

describe("a host with as many calls in progress as it takes answers the next one busy", () => {
  for (const [name, transport] of [
    ["gRPC over h2c (the raw path)", () => createGrpcTransport({ baseUrl: host.url })],
    ["Connect JSON over HTTP/1.1", () => createConnectTransport({ baseUrl: host.url, httpVersion: "1.1" })],
  ] as const) {
    it(name, async () => {
      const client = createClient(ConcertService, transport());
      started = 0;
      const held = Array.from({ length: 3 }, () => outcome(client.listConcerts({})));
      while (started < 3) await new Promise((resolve) => setTimeout(resolve, 5));
      // Three in progress: the next five are turned away without running.
      const turnedAway = await Promise.all(Array.from({ length: 5 }, () => outcome(client.listConcerts({}))));
      expect(turnedAway).toEqual(Array(5).fill("Unavailable SERVER_BUSY"));
      expect(started).toBe(3);
      // An admitted fan's gated call is served meanwhile.
      expect(await outcome(client.listSeats({ scheduleId: "s" }))).toBe("served");
      release();
      expect(await Promise.all(held)).toEqual(["served", "served", "served"]);
      // Their slots are free again.
      const again = outcome(client.listConcerts({}));
      while (started < 4) await new Promise((resolve) => setTimeout(resolve, 5));
      release();
      expect(await again).toBe("served");
    });
  }
});
