import { ConnectError, Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { createHash, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modules } from "../services/modules.js";
import type { RawStreamSpec } from "../services/platform/raw-streams.js";
import { startSuite, type ServiceDeps, type Suite } from "../services/platform/suite.js";
import { failureOf, GrpcJs, protoFiles, serviceDefinitions, StreamReader, errorDetailTypeUrl, type GrpcFailure, type Headers, type Message } from "./grpc-js.js";
import { testConfig, testSecrets } from "./support.js";

/**
 * Issue 6: a backend team in another stack can call every public RPC with a
 * standard gRPC client. Every call under test goes through @grpc/grpc-js over
 * h2c, with the contract loaded at run time from proto/ by @grpc/proto-loader
 * (no generated code), against the whole suite on a real server (port 0, real
 * PostgreSQL). Errors are read as such a client reads them: the gRPC status,
 * and the boxoffice.common.v1.ErrorDetail inside the google.rpc.Status of the
 * grpc-status-details-bin trailer.
 *
 * proto-loader options: lowerCamelCase field names, int64 as decimal strings,
 * enums as their names, defaults filled in.
 */

const TOKEN = "boxoffice.token.v1.TokenService";
const QUEUE = "boxoffice.queue.v1.QueueService";
const QUEUE_ADMIN = "boxoffice.queue.v1.QueueAdminService";
const QUEUE_INTERNAL = "boxoffice.queue.v1.QueueInternalService";
const CONCERT = "boxoffice.concert.v1.ConcertService";
const CONCERT_ADMIN = "boxoffice.concert.v1.ConcertAdminService";
const CONCERT_INTERNAL = "boxoffice.concert.v1.ConcertInternalService";
const RESERVATION = "boxoffice.reservation.v1.ReservationService";
const RESERVATION_INTERNAL = "boxoffice.reservation.v1.ReservationInternalService";
const POINT = "boxoffice.point.v1.PointService";
const POINT_INTERNAL = "boxoffice.point.v1.PointInternalService";
const PAYMENT = "boxoffice.payment.v1.PaymentService";
const PAYMENT_INTERNAL = "boxoffice.payment.v1.PaymentInternalService";
const PAYMENT_ADMIN = "boxoffice.payment.v1.PaymentAdminService";
const COORDINATOR = "boxoffice.coordinator.v1.CoordinatorService";
const TICKET = "boxoffice.ticket.v1.TicketService";
const TICKET_SCANNER = "boxoffice.ticket.v1.TicketScannerService";
const HEALTH = "grpc.health.v1.Health";

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What the server saw of each WatchQueueStatus call (gRPC callers' watches are served on the raw path, see raw-streams.ts). */
interface ServerWatch {
  queueToken: string;
  grpcTimeout: string | null;
  /** The Connect code the handler's signal was aborted with, if it was. */
  aborted?: string;
  /** The response stream's iterator has finished (returned, thrown or been closed). */
  finished: boolean;
}
const serverWatches: ServerWatch[] = [];
/** The coordinator's raw watch, observed where it runs: the suite's interceptors do not run on the raw path. */
function observed(impl: RawStreamSpec["impl"]): RawStreamSpec["impl"] {
  return (req, ctx) => {
    const seen: ServerWatch = { queueToken: ctx.requestHeader.get("x-queue-token") ?? "", grpcTimeout: ctx.requestHeader.get("grpc-timeout"), finished: false };
    serverWatches.push(seen);
    ctx.signal.addEventListener("abort", () => (seen.aborted = Code[ConnectError.from(ctx.signal.reason).code]), { once: true });
    const messages = impl(req, ctx);
    return (async function* () {
      try {
        yield* messages;
      } finally {
        seen.finished = true;
      }
    })();
  };
}
const observedModules = modules.map((module) =>
  module.name !== "coordinator"
    ? module
    : {
        ...module,
        create: async (deps: ServiceDeps) => {
          const running = await module.create(deps);
          const rawStreams = running.rawStreams?.map((spec) => (spec.method.name === "WatchQueueStatus" ? { ...spec, impl: observed(spec.impl) } : spec));
          expect(rawStreams?.map((spec) => spec.method.name)).toEqual(["WatchQueueStatus"]);
          return { ...running, rawStreams };
        },
      },
);

let suite: Suite;
let g: GrpcJs;

beforeAll(async () => {
  // startTestSuite(), plus an observer of the watch streams on the server side (on the raw path, where grpc-js lands).
  suite = await startSuite(testConfig(), observedModules);
  g = new GrpcJs(new URL(suite.host.url).host); // "127.0.0.1:PORT"
});
afterAll(async () => {
  g?.close();
  await suite?.close();
});

// ---------------------------------------------------------------- helpers

const bearer = (token: string): Headers => ({ authorization: `Bearer ${token}` });
const operator = bearer(testSecrets.OPERATOR_KEY);
const queueTokenHeader = (queueToken: string): Headers => ({ "x-queue-token": queueToken });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A google.protobuf.Timestamp as proto-loader carries it (seconds as a string), `days` from now. */
const inDays = (days: number) => ({ seconds: String(Math.floor(Date.now() / 1000) + days * 86_400), nanos: 0 });
const timestampMs = (ts: { seconds: string; nanos: number }) => Number(ts.seconds) * 1000 + ts.nanos / 1e6;

/** Expects a failure with this status and ErrorDetail reason (and field, for invalid input), as a grpc-js client sees it. */
async function expectFailure(call: Promise<unknown>, code: string, reason: string, field?: string): Promise<GrpcFailure> {
  const failure = await failureOf(call);
  expect({ code: failure.code, reason: failure.reason }, failure.message).toEqual({ code, reason });
  // The detail travels as a google.rpc.Status whose code agrees with grpc-status. (Its message is compared
  // with grpc-message as grpc-js reads it in a test of its own: see "grpc-message" below.)
  expect(failure.statusDetails?.code).toBe(grpc.status[code as keyof typeof grpc.status]);
  expect(failure.statusDetails!.typeUrls).toContain(errorDetailTypeUrl);
  if (field !== undefined) {
    expect(failure.field).toBe(field);
    expect(failure.statusDetails!.message).toContain(field);
  }
  expect(failure.statusDetails!.message).not.toMatch(/\bat .*\.(ts|js):\d+/);
  return failure;
}

async function newUser(): Promise<{ userId: string; token: string }> {
  const { userId, token } = await g.unary(TOKEN, "IssueUserToken");
  return { userId, token };
}

/** A concert with one date per spec, created by an operator. */
async function createConcert(specs: { seatCount: number; price: number }[] = [{ seatCount: 10, price: 100 }]) {
  const created = await g.unary(
    CONCERT_ADMIN,
    "CreateConcert",
    {
      title: `gRPC interop ${randomUUID().slice(0, 8)}`,
      venue: "Interop Hall",
      schedules: specs.map((spec, i) => ({ startsAt: inDays(20 + i), seatCount: spec.seatCount, price: String(spec.price) })),
    },
    operator,
  );
  return { concert: created.concert, schedules: created.schedules as Message[], concertId: created.concert.id as string, scheduleId: created.schedules[0].id as string };
}

const queueStatus = async (queueToken: string): Promise<Message> => (await g.unary(QUEUE, "GetQueueStatus", {}, queueTokenHeader(queueToken))).status;

async function waitForState(queueToken: string, state: string, timeoutMs = 10_000): Promise<Message> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await queueStatus(queueToken);
    if (status.state === state) return status;
    if (Date.now() > deadline) throw new Error(`queue token still ${status.state} after ${timeoutMs} ms, expected ${state}`);
    await sleep(20);
  }
}

interface Fan {
  userId: string;
  token: string;
  queueToken: string;
  /** The user token and the queue token: what a gated call needs. */
  headers: Headers;
}

/** A new user in the concert's waiting room (not waiting for admission). */
async function enteredFan(concertId: string): Promise<Fan & { entered: Message }> {
  const user = await newUser();
  const { queueToken, status } = await g.unary(QUEUE, "EnterQueue", { concertId }, bearer(user.token));
  return { ...user, queueToken, entered: status, headers: { ...bearer(user.token), ...queueTokenHeader(queueToken) } };
}

/** A new user, admitted to the concert. */
async function admittedFan(concertId: string): Promise<Fan> {
  const fan = await enteredFan(concertId);
  await waitForState(fan.queueToken, "QUEUE_STATE_ADMITTED");
  return fan;
}

async function charge(fan: { token: string }, amount: number) {
  return g.unary(POINT, "ChargePoints", { amount: String(amount), idempotencyKey: randomUUID() }, bearer(fan.token));
}

async function seatStates(fan: Fan, scheduleId: string): Promise<Record<number, string>> {
  const { seats } = await g.unary(CONCERT, "ListSeats", { scheduleId }, fan.headers);
  return Object.fromEntries((seats as Message[]).map((seat) => [seat.number, seat.state]));
}

const pause = (concertId: string) => g.unary(QUEUE_ADMIN, "PauseAdmission", { concertId }, operator);
const resume = (concertId: string) => g.unary(QUEUE_ADMIN, "ResumeAdmission", { concertId }, operator);

/** Opens WatchQueueStatus through grpc-js and reads it in the background. */
const watch = (queueToken: string, options: grpc.CallOptions = {}) =>
  new StreamReader(g.serverStream(COORDINATOR, "WatchQueueStatus", {}, queueTokenHeader(queueToken), options));

const brief = (status: Message) => (status.state === "QUEUE_STATE_WAITING" ? `WAITING ${status.position}` : String(status.state).replace("QUEUE_STATE_", ""));

// ---------------------------------------------------------------- the contract

/** The public services: every service of proto/ but the …InternalService ones, and reflection (test/reflection.test.ts calls it with buf curl). */
const publicServices = () => [...serviceDefinitions()].filter(([name]) => !name.endsWith("InternalService") && !name.startsWith("grpc.reflection."));

describe("the contract in proto/ loads into a standard gRPC stack", () => {
  it("proto-loader loads every .proto (with the well-known types and the access option) and finds every service", () => {
    expect(protoFiles).toContain("boxoffice/common/v1/access.proto");
    expect(protoFiles).toContain("grpc/health/v1/health.proto");
    expect(protoFiles).toContain("grpc/reflection/v1/reflection.proto");
    expect([...serviceDefinitions().keys()].sort()).toEqual(
      [
        TOKEN,
        QUEUE,
        QUEUE_ADMIN,
        QUEUE_INTERNAL,
        CONCERT,
        CONCERT_ADMIN,
        CONCERT_INTERNAL,
        RESERVATION,
        RESERVATION_INTERNAL,
        POINT,
        POINT_INTERNAL,
        PAYMENT,
        PAYMENT_INTERNAL,
        PAYMENT_ADMIN,
        COORDINATOR,
        TICKET,
        TICKET_SCANNER,
        HEALTH,
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ].sort(),
    );
    // The custom method option survives loading: every boxoffice RPC declares who may call it.
    for (const [service, methods] of serviceDefinitions()) {
      if (!service.startsWith("boxoffice.")) continue;
      for (const [name, method] of Object.entries(methods)) {
        const access = (method.options as Record<string, unknown>)["(boxoffice.common.v1.access)"];
        expect(access, `${service}/${name}`).toMatch(/^ACCESS_(ANYONE|USER|GATED|GATED_IDEMPOTENT|QUEUE_TOKEN|INTERNAL|OPERATOR|SCANNER)$/);
        expect(access === "ACCESS_INTERNAL", `${service}/${name}: internal RPCs live in …InternalService only`).toBe(service.endsWith("InternalService"));
      }
    }
    expect(serviceDefinitions().get(COORDINATOR)!.WatchQueueStatus!.responseStream).toBe(true);
  });
});

// ---------------------------------------------------------------- health

describe("grpc.health.v1.Health", () => {
  it("Check answers SERVING for the server and for a served service, NOT_FOUND for an unknown one; Watch streams SERVING", async () => {
    expect(await g.unary(HEALTH, "Check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await g.unary(HEALTH, "Check", { service: PAYMENT })).toEqual({ status: "SERVING" });
    const unknown = await failureOf(g.unary(HEALTH, "Check", { service: "no.such.v1.Service" }));
    expect(unknown.code).toBe("NOT_FOUND");

    const stream = new StreamReader(g.serverStream(HEALTH, "Watch", { service: "" }));
    await stream.until("the first health message", () => stream.messages.length > 0);
    expect(stream.messages[0]).toEqual({ status: "SERVING" });
    stream.call.cancel();
    await stream.ends();
    expect(stream.error?.code).toBe("CANCELLED");
  });
});

// ---------------------------------------------------------------- token

describe("TokenService", () => {
  it("IssueUserToken creates a user without a token, refreshes with one, and refuses a bad one with UNAUTHENTICATED TOKEN_INVALID", async () => {
    const first = await g.unary(TOKEN, "IssueUserToken");
    expect(first.userId).toMatch(uuid);
    expect(first.token).toEqual(expect.any(String));
    expect(timestampMs(first.expiresAt)).toBeGreaterThan(Date.now());

    const fresh = await g.unary(TOKEN, "IssueUserToken", {}, bearer(first.token));
    expect(fresh.userId).toBe(first.userId);

    await expectFailure(g.unary(TOKEN, "IssueUserToken", {}, bearer("not-a-token")), "UNAUTHENTICATED", "REASON_TOKEN_INVALID");
  });

  it("IssueQueueToken returns a queue token and the waiting info; UNAUTHENTICATED TOKEN_MISSING without a user token; INVALID_ARGUMENT naming concert_id", async () => {
    const { concertId } = await createConcert();
    await pause(concertId);
    const user = await newUser();
    const issued = await g.unary(TOKEN, "IssueQueueToken", { concertId }, bearer(user.token));
    expect(issued.queueToken).toEqual(expect.any(String));
    expect(issued.status).toMatchObject({ state: "QUEUE_STATE_WAITING", position: "1", peopleAhead: "0", concertId });

    await expectFailure(g.unary(TOKEN, "IssueQueueToken", { concertId }), "UNAUTHENTICATED", "REASON_TOKEN_MISSING");
    await expectFailure(g.unary(TOKEN, "IssueQueueToken", { concertId: "not-a-uuid" }, bearer(user.token)), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "concert_id");
  });
});

// ---------------------------------------------------------------- queue

describe("QueueService", () => {
  it("EnterQueue, GetQueueStatus and LeaveQueue: positions, people ahead, leaving closes the line up", async () => {
    const { concertId } = await createConcert();
    await pause(concertId);
    const [a, b] = [await enteredFan(concertId), await enteredFan(concertId)];
    expect([brief(a.entered), brief(b.entered)]).toEqual(["WAITING 1", "WAITING 2"]);
    // Entering again is idempotent: same token, same place.
    const again = await g.unary(QUEUE, "EnterQueue", { concertId }, bearer(b.token));
    expect(again.queueToken).toBe(b.queueToken);

    expect(await queueStatus(b.queueToken)).toMatchObject({ state: "QUEUE_STATE_WAITING", position: "2", peopleAhead: "1", concertId });
    const left = await g.unary(QUEUE, "LeaveQueue", {}, queueTokenHeader(a.queueToken));
    expect(left.status.state).toBe("QUEUE_STATE_LEFT");
    expect(brief(await queueStatus(b.queueToken))).toBe("WAITING 1");

    // Admitted: admitted_until is set, position 0.
    await resume(concertId);
    const admitted = await waitForState(b.queueToken, "QUEUE_STATE_ADMITTED");
    expect(admitted.position).toBe("0");
    expect(timestampMs(admitted.admittedUntil)).toBeGreaterThan(Date.now());
  });

  it("GetSaleFairness (anyone): the commitment before the sale, then the seed it hashes to; unknown and malformed concerts refused", async () => {
    const { concert } = await g.unary(
      CONCERT_ADMIN,
      "CreateConcert",
      { title: `gRPC fairness ${randomUUID().slice(0, 8)}`, schedules: [{ startsAt: inDays(20), seatCount: 2, price: "10" }], saleOpensAt: inDays(2) },
      operator,
    );
    const before = await g.unary(QUEUE, "GetSaleFairness", { concertId: concert.id });
    expect(before).toMatchObject({ state: "DRAW_STATE_COMMITTED", seedCommitment: concert.seedCommitment, seed: "", entryIds: [] });
    expect(before.method).toContain("HMAC-SHA256");
    // A concert on sale at once: its room opened without a pre-queue when the first fan came, so the draw had nobody (the seed is shown).
    const { concertId } = await createConcert();
    await enteredFan(concertId);
    const opened = await g.unary(QUEUE, "GetSaleFairness", { concertId });
    expect(opened).toMatchObject({ state: "DRAW_STATE_DRAWN", entryIds: [] });
    expect(createHash("sha256").update(Buffer.from(opened.seed as string, "hex")).digest("hex")).toBe(opened.seedCommitment);
    await expectFailure(g.unary(QUEUE, "GetSaleFairness", { concertId: "nope" }), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "concert_id");
    await expectFailure(g.unary(QUEUE, "GetSaleFairness", { concertId: randomUUID() }), "NOT_FOUND", "REASON_CONCERT_NOT_FOUND");
  });

  it("refuses: no user token, malformed and unknown concert ids, missing and forged queue tokens", async () => {
    const user = await newUser();
    await expectFailure(g.unary(QUEUE, "EnterQueue", { concertId: randomUUID() }), "UNAUTHENTICATED", "REASON_TOKEN_MISSING");
    for (const concertId of ["", "nope", "'; drop table concert.seat; --"]) {
      await expectFailure(g.unary(QUEUE, "EnterQueue", { concertId }, bearer(user.token)), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "concert_id");
    }
    await expectFailure(g.unary(QUEUE, "EnterQueue", { concertId: randomUUID() }, bearer(user.token)), "NOT_FOUND", "REASON_CONCERT_NOT_FOUND");
    await expectFailure(g.unary(QUEUE, "GetQueueStatus", {}), "UNAUTHENTICATED", "REASON_QUEUE_TOKEN_MISSING");
    await expectFailure(g.unary(QUEUE, "LeaveQueue", {}), "UNAUTHENTICATED", "REASON_QUEUE_TOKEN_MISSING");
    await expectFailure(g.unary(QUEUE, "GetQueueStatus", {}, queueTokenHeader("q1.forged")), "UNAUTHENTICATED", "REASON_QUEUE_TOKEN_INVALID");
  });
});

describe("QueueAdminService", () => {
  it("with the operator key: SetAdmissionPolicy, PauseAdmission, ResumeAdmission and GetQueueStats", async () => {
    const { concertId } = await createConcert();
    const set = await g.unary(
      QUEUE_ADMIN,
      "SetAdmissionPolicy",
      { concertId, policy: { maxActive: 7, ratePerMinute: 120, sessionTtl: { seconds: "300", nanos: 0 } } },
      operator,
    );
    expect(set.policy).toMatchObject({ maxActive: 7, ratePerMinute: 120, sessionTtl: { seconds: "300", nanos: 0 } });

    await g.unary(QUEUE_ADMIN, "PauseAdmission", { concertId }, operator);
    await enteredFan(concertId);
    const paused = await g.unary(QUEUE_ADMIN, "GetQueueStats", { concertId }, operator);
    expect(paused).toMatchObject({ waiting: "1", admitted: "0", paused: true, soldOut: false, policy: { maxActive: 7, ratePerMinute: 120 } });

    await g.unary(QUEUE_ADMIN, "ResumeAdmission", { concertId }, operator);
    expect((await g.unary(QUEUE_ADMIN, "GetQueueStats", { concertId }, operator)).paused).toBe(false);

    await expectFailure(
      g.unary(QUEUE_ADMIN, "SetAdmissionPolicy", { concertId, policy: { maxActive: -1 } }, operator),
      "INVALID_ARGUMENT",
      "REASON_INVALID_ARGUMENT",
      "policy.max_active",
    );
  });

  it("without the operator key (none, or a user token) every RPC is PERMISSION_DENIED OPERATOR_ONLY", async () => {
    const concertId = randomUUID();
    const user = await newUser();
    const calls: [string, Message][] = [
      ["GetQueueStats", { concertId }],
      ["PauseAdmission", { concertId }],
      ["ResumeAdmission", { concertId }],
      ["SetAdmissionPolicy", { concertId, policy: { maxActive: 1 } }],
    ];
    for (const [method, request] of calls) {
      for (const headers of [{}, bearer(user.token), bearer("test-operator-key-but-wrong")]) {
        await expectFailure(g.unary(QUEUE_ADMIN, method, request, headers), "PERMISSION_DENIED", "REASON_OPERATOR_ONLY");
      }
    }
  });
});

describe("the operator console's reads", () => {
  it("ListQueueStats, ConcertAdminService.ListSeatCounts and PaymentAdminService.ListPaymentCounts, with the operator key only", async () => {
    const { concertId } = await createConcert([{ seatCount: 2, price: 10 }]);
    await g.unary(QUEUE_ADMIN, "PauseAdmission", { concertId }, operator);
    await enteredFan(concertId);
    const { stats } = await g.unary(QUEUE_ADMIN, "ListQueueStats", { concertIds: [concertId] }, operator);
    expect(stats).toEqual([expect.objectContaining({ concertId, waiting: "1", admitted: "0", paused: true, waitAtBack: null })]);
    await g.unary(QUEUE_ADMIN, "ResumeAdmission", { concertId }, operator);

    const { concerts } = await g.unary(CONCERT_ADMIN, "ListSeatCounts", {}, operator);
    expect(concerts).toContainEqual({ concertId, total: 2, available: 2, held: 0, sold: 0 });
    const payments = await g.unary(PAYMENT_ADMIN, "ListPaymentCounts", {}, operator);
    expect(Array.isArray(payments.concerts)).toBe(true);

    for (const [service, method, request] of [
      [QUEUE_ADMIN, "ListQueueStats", { concertIds: [concertId] }],
      [CONCERT_ADMIN, "ListSeatCounts", {}],
      [PAYMENT_ADMIN, "ListPaymentCounts", {}],
    ] as const) {
      await expectFailure(g.unary(service, method, request), "PERMISSION_DENIED", "REASON_OPERATOR_ONLY");
    }
  });
});

// ---------------------------------------------------------------- concerts

describe("ConcertService and ConcertAdminService", () => {
  it("CreateConcert (operator), ListConcerts and ListSchedules (anyone)", async () => {
    const { concert, schedules, concertId } = await createConcert([
      { seatCount: 5, price: 1_000 },
      { seatCount: 3, price: 2_000 },
    ]);
    expect(concert).toMatchObject({ id: expect.stringMatching(uuid), venue: "Interop Hall" });
    expect(schedules.map((s) => [s.totalSeats, s.availableSeats, s.concertId])).toEqual([
      [5, 5, concertId],
      [3, 3, concertId],
    ]);

    const { concerts } = await g.unary(CONCERT, "ListConcerts");
    expect(concerts).toContainEqual(concert);
    const listed = await g.unary(CONCERT, "ListSchedules", { concertId });
    expect(listed.schedules.map((s: Message) => [s.id, s.availableSeats, s.startsAt.seconds])).toEqual(
      schedules.map((s) => [s.id, s.availableSeats, s.startsAt.seconds]),
    );
  });

  it("refuses CreateConcert without the operator key, and malformed input naming the field", async () => {
    const request = { title: "Nope", schedules: [{ startsAt: inDays(3), seatCount: 1, price: "1" }] };
    await expectFailure(g.unary(CONCERT_ADMIN, "CreateConcert", request), "PERMISSION_DENIED", "REASON_OPERATOR_ONLY");
    await expectFailure(g.unary(CONCERT_ADMIN, "CreateConcert", { ...request, title: "" }, operator), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "title");
    await expectFailure(g.unary(CONCERT, "ListSchedules", { concertId: "42" }), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "concert_id");
    await expectFailure(g.unary(CONCERT, "ListSchedules", { concertId: randomUUID() }), "NOT_FOUND", "REASON_CONCERT_NOT_FOUND");
  });

  it("a concert's life (operator): a draft updated, published, unlisted, relisted and cancelled; ListAllConcerts shows it in any phase", async () => {
    const { concert } = await g.unary(
      CONCERT_ADMIN,
      "CreateConcert",
      { title: `gRPC draft ${randomUUID().slice(0, 8)}`, schedules: [{ startsAt: inDays(20), seatCount: 2, price: "10" }], saleOpensAt: inDays(2), draft: true },
      operator,
    );
    const concertId = concert.id as string;
    expect(concert).toMatchObject({ phase: "CONCERT_PHASE_DRAFT", seatLimit: 4, minPrice: "10", maxPrice: "10", listed: true });
    const updated = await g.unary(CONCERT_ADMIN, "UpdateConcert", { concertId, title: "Renamed", seatLimit: 2, saleOpensAt: inDays(3) }, operator);
    expect(updated.concert).toMatchObject({ title: "Renamed", seatLimit: 2, saleOpensAt: inDays(3) });
    expect((await g.unary(CONCERT_ADMIN, "PublishConcert", { concertId }, operator)).concert.phase).toBe("CONCERT_PHASE_SCHEDULED");
    expect((await g.unary(CONCERT_ADMIN, "UnlistConcert", { concertId }, operator)).concert.listed).toBe(false);
    expect((await g.unary(CONCERT_ADMIN, "RelistConcert", { concertId }, operator)).concert.listed).toBe(true);
    expect((await g.unary(CONCERT_ADMIN, "CancelConcert", { concertId, reason: "Postponed" }, operator)).concert.phase).toBe("CONCERT_PHASE_CANCELLED");
    const { concerts } = await g.unary(CONCERT_ADMIN, "ListAllConcerts", {}, operator);
    expect(concerts.find((c: Message) => c.id === concertId)).toMatchObject({ title: "Renamed", phase: "CONCERT_PHASE_CANCELLED" });
    await expectFailure(g.unary(CONCERT_ADMIN, "UpdateConcert", { concertId, title: "x" }, operator), "FAILED_PRECONDITION", "REASON_CONCERT_CANCELLED");
    await expectFailure(g.unary(CONCERT_ADMIN, "ListAllConcerts", {}), "PERMISSION_DENIED", "REASON_OPERATOR_ONLY");
  });

  it("ListSeats is gated: an admitted fan sees the seats; no user token, no queue token, or a waiting one are refused", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 4, price: 700 }]);
    const fan = await admittedFan(concertId);
    const { seats } = await g.unary(CONCERT, "ListSeats", { scheduleId }, fan.headers);
    expect(seats).toEqual(
      [1, 2, 3, 4].map((number) => ({ number, price: "700", state: "SEAT_STATE_AVAILABLE", section: "", row: "", label: String(number), tier: "", place: number, rowPosition: 1 })),
    );

    await expectFailure(g.unary(CONCERT, "ListSeats", { scheduleId }), "UNAUTHENTICATED", "REASON_TOKEN_MISSING");
    await expectFailure(g.unary(CONCERT, "ListSeats", { scheduleId }, bearer(fan.token)), "PERMISSION_DENIED", "REASON_QUEUE_TOKEN_MISSING");

    await pause(concertId);
    const waiting = await enteredFan(concertId);
    expect(waiting.entered.state).toBe("QUEUE_STATE_WAITING");
    await expectFailure(g.unary(CONCERT, "ListSeats", { scheduleId }, waiting.headers), "FAILED_PRECONDITION", "REASON_NOT_ADMITTED");
    await expectFailure(g.unary(CONCERT, "ListSeats", { scheduleId: "x" }, fan.headers), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "schedule_id");
    await resume(concertId);
  });
});

// ---------------------------------------------------------------- reservations

describe("ReservationService", () => {
  it("HoldSeats, GetReservation, ListReservations, ReleaseHold; a taken seat is FAILED_PRECONDITION SEAT_UNAVAILABLE; unknown ids NOT_FOUND", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 6, price: 250 }]);
    const [fan, rival] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);

    const { reservation } = await g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [3, 2] }, fan.headers);
    expect(reservation).toMatchObject({
      id: expect.stringMatching(uuid),
      state: "RESERVATION_STATE_HELD",
      seatNumbers: [2, 3],
      amount: "500",
      scheduleId,
      concertId,
      userId: fan.userId,
      paymentId: "",
    });
    expect(timestampMs(reservation.expiresAt)).toBeGreaterThan(Date.now());
    expect(await seatStates(fan, scheduleId)).toMatchObject({ 2: "SEAT_STATE_HELD", 3: "SEAT_STATE_HELD", 1: "SEAT_STATE_AVAILABLE" });

    const taken = await expectFailure(
      g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [3, 4] }, rival.headers),
      "FAILED_PRECONDITION",
      "REASON_SEAT_UNAVAILABLE",
    );
    expect(taken.metadata).toMatchObject({ seats: "3" });
    await expectFailure(g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [] }, rival.headers), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "seat_numbers");

    expect((await g.unary(RESERVATION, "GetReservation", { reservationId: reservation.id }, bearer(fan.token))).reservation).toEqual(reservation);
    const listed = await g.unary(RESERVATION, "ListReservations", { pageSize: 10 }, bearer(fan.token));
    expect(listed).toEqual({ reservations: [reservation], nextPageToken: "" });

    // Someone else's reservation is as absent as one that does not exist.
    await expectFailure(g.unary(RESERVATION, "GetReservation", { reservationId: reservation.id }, bearer(rival.token)), "NOT_FOUND", "REASON_RESERVATION_NOT_FOUND");
    await expectFailure(g.unary(RESERVATION, "GetReservation", { reservationId: randomUUID() }, bearer(fan.token)), "NOT_FOUND", "REASON_RESERVATION_NOT_FOUND");
    await expectFailure(g.unary(RESERVATION, "ReleaseHold", { reservationId: randomUUID() }, bearer(fan.token)), "NOT_FOUND", "REASON_RESERVATION_NOT_FOUND");
    await expectFailure(g.unary(RESERVATION, "ListReservations", {}), "UNAUTHENTICATED", "REASON_TOKEN_MISSING");

    const released = await g.unary(RESERVATION, "ReleaseHold", { reservationId: reservation.id }, bearer(fan.token));
    expect(released.reservation).toMatchObject({ id: reservation.id, state: "RESERVATION_STATE_RELEASED" });
    // The seats are free again: the rival gets them.
    const rivalHold = await g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [3, 4] }, rival.headers);
    expect(rivalHold.reservation.state).toBe("RESERVATION_STATE_HELD");
  });

  it("HoldBestAvailable holds adjacent seats of a date without a plan (tier \"\"); no block left is SEAT_UNAVAILABLE; a bad count INVALID_ARGUMENT", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 6, price: 250 }]);
    const [fan, rival] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    const { reservation } = await g.unary(RESERVATION, "HoldBestAvailable", { scheduleId, tier: "", count: 2 }, fan.headers);
    // Six seats in one row: two from its end.
    expect(reservation).toMatchObject({ state: "RESERVATION_STATE_HELD", seatNumbers: [1, 2], amount: "500", scheduleId, concertId, userId: fan.userId });
    // Left: 3-6; three of them would leave a single seat.
    const none = await expectFailure(g.unary(RESERVATION, "HoldBestAvailable", { scheduleId, tier: "", count: 3 }, rival.headers), "FAILED_PRECONDITION", "REASON_SEAT_UNAVAILABLE");
    expect(none.message).toContain("adjacent");
    await expectFailure(g.unary(RESERVATION, "HoldBestAvailable", { scheduleId, tier: "", count: 5 }, rival.headers), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "count");
    // A seat plan whose row names a tier it does not define is refused, naming the field.
    const plan = { sections: [{ name: "Floor", rows: [{ label: "A", tier: "Gold", seats: ["1", "2"] }] }], tiers: [{ name: "Silver", price: "10" }] };
    await expectFailure(
      g.unary(CONCERT_ADMIN, "CreateConcert", { title: "Bad plan", schedules: [{ startsAt: inDays(9), plan }] }, operator),
      "INVALID_ARGUMENT",
      "REASON_INVALID_ARGUMENT",
      "schedules[0].plan.sections[0].rows[0].tier",
    );
  });
});

// ---------------------------------------------------------------- points

describe("PointService", () => {
  it("ChargePoints (idempotent per key), GetBalance, ListPointTransactions; refusals with reasons", async () => {
    const user = await newUser();
    expect(await g.unary(POINT, "GetBalance", {}, bearer(user.token))).toEqual({ balance: "0" });

    const key = randomUUID();
    const charged = await g.unary(POINT, "ChargePoints", { amount: "1500", idempotencyKey: key }, bearer(user.token));
    expect(charged).toMatchObject({ balance: "1500", transaction: { kind: "POINT_TRANSACTION_KIND_CHARGE", amount: "1500", balanceAfter: "1500", idempotencyKey: key } });
    const retried = await g.unary(POINT, "ChargePoints", { amount: "1500", idempotencyKey: key }, bearer(user.token));
    expect(retried).toEqual(charged);
    await charge(user, 500);
    expect(await g.unary(POINT, "GetBalance", {}, bearer(user.token))).toEqual({ balance: "2000" });

    const page = await g.unary(POINT, "ListPointTransactions", { pageSize: 1 }, bearer(user.token));
    expect(page.transactions.map((t: Message) => [t.kind, t.amount, t.balanceAfter])).toEqual([["POINT_TRANSACTION_KIND_CHARGE", "500", "2000"]]);
    expect(page.nextPageToken).not.toBe("");
    const next = await g.unary(POINT, "ListPointTransactions", { pageSize: 1, pageToken: page.nextPageToken }, bearer(user.token));
    expect(next.transactions.map((t: Message) => t.id)).toEqual([charged.transaction.id]);

    await expectFailure(
      g.unary(POINT, "ChargePoints", { amount: "1", idempotencyKey: key }, bearer(user.token)),
      "FAILED_PRECONDITION",
      "REASON_IDEMPOTENCY_KEY_REUSED",
    );
    await expectFailure(g.unary(POINT, "ChargePoints", { amount: "0", idempotencyKey: randomUUID() }, bearer(user.token)), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "amount");
    await expectFailure(g.unary(POINT, "GetBalance", {}), "UNAUTHENTICATED", "REASON_TOKEN_MISSING");
    await expectFailure(
      g.unary(POINT, "ListPointTransactions", { pageToken: "not-a-page-token" }, bearer(user.token)),
      "INVALID_ARGUMENT",
      "REASON_INVALID_ARGUMENT",
      "page_token",
    );
  });
});

// ---------------------------------------------------------------- payments

describe("PaymentService", () => {
  it("Pay, GetPayment, ListPayments: a paid hold is SUCCEEDED and its seats SOLD; insufficient points is a FAILED payment, not an error", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 6, price: 400 }]);
    const [rich, poor] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    await charge(rich, 1_000);
    await charge(poor, 100);

    const { reservation } = await g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [1, 2] }, rich.headers);
    const key = randomUUID();
    const { payment } = await g.unary(PAYMENT, "Pay", { reservationId: reservation.id, idempotencyKey: key }, rich.headers);
    expect(payment).toMatchObject({
      id: expect.stringMatching(uuid),
      state: "PAYMENT_STATE_SUCCEEDED",
      failureReason: "REASON_UNSPECIFIED",
      amount: "800",
      reservationId: reservation.id,
      userId: rich.userId,
    });
    expect(await g.unary(POINT, "GetBalance", {}, bearer(rich.token))).toEqual({ balance: "200" });
    expect((await g.unary(PAYMENT, "GetPayment", { paymentId: payment.id }, bearer(rich.token))).payment).toEqual(payment);
    expect(await g.unary(PAYMENT, "ListPayments", {}, bearer(rich.token))).toEqual({ payments: [payment], nextPageToken: "" });
    const confirmed = (await g.unary(RESERVATION, "GetReservation", { reservationId: reservation.id }, bearer(rich.token))).reservation;
    expect(confirmed).toMatchObject({ state: "RESERVATION_STATE_CONFIRMED", paymentId: payment.id });
    expect(await seatStates(poor, scheduleId)).toMatchObject({ 1: "SEAT_STATE_SOLD", 2: "SEAT_STATE_SOLD" });
    // Paying ended the queue session.
    expect((await queueStatus(rich.queueToken)).state).toBe("QUEUE_STATE_COMPLETED");

    const hold = (await g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [5] }, poor.headers)).reservation;
    const refused = (await g.unary(PAYMENT, "Pay", { reservationId: hold.id, idempotencyKey: randomUUID() }, poor.headers)).payment;
    expect(refused).toMatchObject({ state: "PAYMENT_STATE_FAILED", failureReason: "REASON_INSUFFICIENT_POINTS", amount: "400" });
    expect(refused.failureMessage).not.toBe("");
    expect(await g.unary(POINT, "GetBalance", {}, bearer(poor.token))).toEqual({ balance: "100" });

    await expectFailure(g.unary(PAYMENT, "GetPayment", { paymentId: payment.id }, bearer(poor.token)), "NOT_FOUND", "REASON_PAYMENT_NOT_FOUND");
    await expectFailure(g.unary(PAYMENT, "GetPayment", { paymentId: "nope" }, bearer(poor.token)), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "payment_id");
    await expectFailure(g.unary(PAYMENT, "Pay", { reservationId: hold.id, idempotencyKey: randomUUID() }, bearer(poor.token)), "PERMISSION_DENIED", "REASON_QUEUE_TOKEN_MISSING");
    await expectFailure(g.unary(PAYMENT, "Pay", { reservationId: hold.id, idempotencyKey: "" }, poor.headers), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "idempotency_key");
    // The paid session is over: its queue token no longer opens gated RPCs.
    await expectFailure(
      g.unary(PAYMENT, "Pay", { reservationId: reservation.id, idempotencyKey: randomUUID() }, rich.headers),
      "FAILED_PRECONDITION",
      "REASON_QUEUE_TOKEN_EXPIRED",
    );
  });
});

// ---------------------------------------------------------------- tickets

describe("TicketService and TicketScannerService", () => {
  it("ListTickets lists a paid booking's tickets; ScanTicket admits once, then ALREADY_USED; FORGED is a result; only the scanner key opens it", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 4, price: 50 }]);
    const fan = await admittedFan(concertId);
    await charge(fan, 100);
    const { reservation } = await g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers: [2] }, fan.headers);
    await g.unary(PAYMENT, "Pay", { reservationId: reservation.id, idempotencyKey: randomUUID() }, fan.headers);

    const { tickets, nextPageToken } = await g.unary(TICKET, "ListTickets", { pageSize: 10 }, bearer(fan.token));
    expect(nextPageToken).toBe("");
    expect(tickets).toEqual([
      expect.objectContaining({ reservationId: reservation.id, concertId, scheduleId, seatNumber: 2, price: "50", state: "TICKET_STATE_VALID", venue: "Interop Hall", gate: "", usedAt: null }),
    ]);
    expect(tickets[0].code).toMatch(/^t1\.[A-Za-z0-9_-]+$/);
    expect(tickets[0].orderNumber).toMatch(/^BX-[0-9A-Z]{4}-[0-9A-Z]{4}$/);

    const scanner = bearer(testSecrets.SCANNER_KEY);
    const scan = { code: tickets[0].code, scheduleId, gate: "Gate 1" };
    const admitted = await g.unary(TICKET_SCANNER, "ScanTicket", scan, scanner);
    expect(admitted).toMatchObject({ result: "SCAN_RESULT_ADMITTED", orderNumber: tickets[0].orderNumber, seatNumber: 2, scheduleId, usedGate: "Gate 1" });
    const again = await g.unary(TICKET_SCANNER, "ScanTicket", { ...scan, gate: "Gate 2" }, scanner);
    expect(again).toMatchObject({ result: "SCAN_RESULT_ALREADY_USED", usedGate: "Gate 1", usedAt: admitted.usedAt });
    expect((await g.unary(TICKET_SCANNER, "ScanTicket", { ...scan, code: "t1.nope" }, scanner)).result).toBe("SCAN_RESULT_FORGED");
    expect((await g.unary(TICKET, "ListTickets", {}, bearer(fan.token))).tickets[0]).toMatchObject({ state: "TICKET_STATE_USED", gate: "Gate 1", usedAt: admitted.usedAt });

    await expectFailure(g.unary(TICKET_SCANNER, "ScanTicket", { ...scan, scheduleId: "x" }, scanner), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "schedule_id");
    for (const headers of [{}, bearer(fan.token), operator]) {
      await expectFailure(g.unary(TICKET_SCANNER, "ScanTicket", scan, headers), "PERMISSION_DENIED", "REASON_SCANNER_ONLY");
    }
    await expectFailure(g.unary(TICKET, "ListTickets", {}), "UNAUTHENTICATED", "REASON_TOKEN_MISSING");
  });
});

// ---------------------------------------------------------------- cancellations

describe("cancellations", () => {
  it("CancelReservation cancels a paid booking and refunds it (REFUNDED, one REFUND); CancelSchedule cancels a date's bookings with the reason", async () => {
    const { concertId, schedules } = await createConcert([
      { seatCount: 4, price: 70 },
      { seatCount: 4, price: 80 },
    ]);
    // A new fan per booking: paying ends the queue session.
    const book = async (scheduleId: string, seatNumbers: number[]) => {
      const fan = await admittedFan(concertId);
      await charge(fan, 500);
      const { reservation } = await g.unary(RESERVATION, "HoldSeats", { scheduleId, seatNumbers }, fan.headers);
      const { payment } = await g.unary(PAYMENT, "Pay", { reservationId: reservation.id, idempotencyKey: randomUUID() }, fan.headers);
      return { fan, reservation, payment };
    };
    const first = await book(schedules[0]!.id as string, [1]);
    let fan = first.fan;
    const { reservation } = await g.unary(RESERVATION, "CancelReservation", { reservationId: first.reservation.id }, bearer(fan.token));
    expect(reservation).toMatchObject({ state: "RESERVATION_STATE_CANCELLED", cancelReason: "cancelled at your request", paymentId: first.payment.id });
    expect(reservation.refundedAt).not.toBeNull();
    expect((await g.unary(PAYMENT, "GetPayment", { paymentId: first.payment.id }, bearer(fan.token))).payment.state).toBe("PAYMENT_STATE_REFUNDED");
    expect(await g.unary(POINT, "GetBalance", {}, bearer(fan.token))).toEqual({ balance: "500" });
    await expectFailure(g.unary(RESERVATION, "CancelReservation", { reservationId: "x" }, bearer(fan.token)), "INVALID_ARGUMENT", "REASON_INVALID_ARGUMENT", "reservation_id");

    const second = await book(schedules[1]!.id as string, [2]);
    fan = second.fan;
    const cancelled = await g.unary(CONCERT_ADMIN, "CancelSchedule", { scheduleId: schedules[1]!.id, reason: "Fog" }, operator);
    expect(cancelled).toMatchObject({ cancelledBookings: 1, schedule: { id: schedules[1]!.id, cancelled: true, cancelReason: "Fog" } });
    const after = (await g.unary(RESERVATION, "GetReservation", { reservationId: second.reservation.id }, bearer(fan.token))).reservation;
    expect(after).toMatchObject({ state: "RESERVATION_STATE_CANCELLED", cancelReason: "Fog" });
    await expectFailure(g.unary(CONCERT_ADMIN, "CancelSchedule", { scheduleId: schedules[0]!.id }, bearer(fan.token)), "PERMISSION_DENIED", "REASON_OPERATOR_ONLY");
  });
});

// ---------------------------------------------------------------- coordinator

describe("CoordinatorService", () => {
  it("WatchQueueStatus streams the place (position updates), then ADMITTED, then ends cleanly", async () => {
    const { concertId } = await createConcert();
    await pause(concertId);
    const ahead = await enteredFan(concertId);
    await enteredFan(concertId);
    const fan = await enteredFan(concertId);

    const stream = watch(fan.queueToken);
    await stream.until("the first message", () => stream.messages.length > 0);
    expect(stream.messages[0]).toMatchObject({ heartbeat: false, status: { state: "QUEUE_STATE_WAITING", position: "3", peopleAhead: "2", concertId } });

    await g.unary(QUEUE, "LeaveQueue", {}, queueTokenHeader(ahead.queueToken));
    await stream.until("position 2", () => stream.messages.some((m) => m.status.position === "2"));

    await resume(concertId);
    await stream.ends();
    expect(stream.error).toBeUndefined();
    expect(stream.status?.code).toBe(grpc.status.OK);
    expect(stream.endedCleanly).toBe(true);

    const changes = stream.messages.filter((m) => !m.heartbeat).map((m) => brief(m.status));
    expect(changes.slice(0, 2)).toEqual(["WAITING 3", "WAITING 2"]);
    expect(changes.at(-1)).toBe("ADMITTED");
    expect(changes.filter((c) => c === "ADMITTED")).toHaveLength(1);
    expect(timestampMs(stream.messages.at(-1)!.status.admittedUntil)).toBeGreaterThan(Date.now());
  });

  it("WatchQueueStatus without a queue token fails UNAUTHENTICATED QUEUE_TOKEN_MISSING; with a forged one UNAUTHENTICATED QUEUE_TOKEN_INVALID", async () => {
    const missing = new StreamReader(g.serverStream(COORDINATOR, "WatchQueueStatus", {}));
    await missing.ends();
    expect(missing.messages).toEqual([]);
    expect(missing.error).toMatchObject({ code: "UNAUTHENTICATED", reason: "REASON_QUEUE_TOKEN_MISSING" });

    const forged = watch("q1.forged");
    await forged.ends();
    expect(forged.messages).toEqual([]);
    expect(forged.error).toMatchObject({ code: "UNAUTHENTICATED", reason: "REASON_QUEUE_TOKEN_INVALID" });
  });

  it("ReserveSeats then Checkout: HELD, then SUCCEEDED with the reservation CONFIRMED; refusals with reasons", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 5, price: 300 }]);
    const [fan, rival] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    await charge(fan, 1_000);

    const { reservation } = await g.unary(COORDINATOR, "ReserveSeats", { scheduleId, seatNumbers: [4] }, fan.headers);
    expect(reservation).toMatchObject({ state: "RESERVATION_STATE_HELD", seatNumbers: [4], amount: "300", userId: fan.userId });

    await expectFailure(g.unary(COORDINATOR, "ReserveSeats", { scheduleId, seatNumbers: [4] }, rival.headers), "FAILED_PRECONDITION", "REASON_SEAT_UNAVAILABLE");
    await expectFailure(g.unary(COORDINATOR, "ReserveSeats", { scheduleId, seatNumbers: [99] }, rival.headers), "NOT_FOUND", "REASON_SEAT_NOT_FOUND");
    await expectFailure(g.unary(COORDINATOR, "ReserveSeats", { scheduleId, seatNumbers: [1] }, bearer(rival.token)), "PERMISSION_DENIED", "REASON_QUEUE_TOKEN_MISSING");
    await expectFailure(
      g.unary(COORDINATOR, "Checkout", { reservationId: reservation.id, idempotencyKey: randomUUID() }, rival.headers),
      "NOT_FOUND",
      "REASON_RESERVATION_NOT_FOUND",
    );

    const checkout = await g.unary(COORDINATOR, "Checkout", { reservationId: reservation.id, idempotencyKey: randomUUID() }, fan.headers);
    expect(checkout.payment).toMatchObject({ state: "PAYMENT_STATE_SUCCEEDED", amount: "300", reservationId: reservation.id });
    expect(checkout.reservation).toMatchObject({ id: reservation.id, state: "RESERVATION_STATE_CONFIRMED", paymentId: checkout.payment.id });
  });

  it("BookSeats: with points, CONFIRMED in one call; without enough, the payment FAILED INSUFFICIENT_POINTS and the hold stays for Checkout", async () => {
    const { concertId, scheduleId } = await createConcert([{ seatCount: 5, price: 600 }]);
    const [fan, short] = await Promise.all([admittedFan(concertId), admittedFan(concertId)]);
    await charge(fan, 1_200);

    const booked = await g.unary(COORDINATOR, "BookSeats", { scheduleId, seatNumbers: [1, 2], idempotencyKey: randomUUID() }, fan.headers);
    expect(booked.payment).toMatchObject({ state: "PAYMENT_STATE_SUCCEEDED", amount: "1200" });
    expect(booked.reservation).toMatchObject({ state: "RESERVATION_STATE_CONFIRMED", seatNumbers: [1, 2], paymentId: booked.payment.id });

    const failed = await g.unary(COORDINATOR, "BookSeats", { scheduleId, seatNumbers: [3], idempotencyKey: randomUUID() }, short.headers);
    expect(failed.payment).toMatchObject({ state: "PAYMENT_STATE_FAILED", failureReason: "REASON_INSUFFICIENT_POINTS" });
    expect(failed.reservation).toMatchObject({ state: "RESERVATION_STATE_HELD", seatNumbers: [3] });

    await expectFailure(
      g.unary(COORDINATOR, "BookSeats", { scheduleId, seatNumbers: [1], idempotencyKey: randomUUID() }, short.headers),
      "FAILED_PRECONDITION",
      "REASON_SEAT_UNAVAILABLE",
    );
    await expectFailure(
      g.unary(COORDINATOR, "BookSeats", { scheduleId, seatNumbers: [4], idempotencyKey: "" }, short.headers),
      "INVALID_ARGUMENT",
      "REASON_INVALID_ARGUMENT",
      "idempotency_key",
    );

    // Top up and check out the hold that stayed.
    await charge(short, 600);
    const paid = await g.unary(COORDINATOR, "Checkout", { reservationId: failed.reservation.id, idempotencyKey: randomUUID() }, short.headers);
    expect(paid.payment.state).toBe("PAYMENT_STATE_SUCCEEDED");
    expect(paid.reservation.state).toBe("RESERVATION_STATE_CONFIRMED");
  });
});

// ---------------------------------------------------------------- deadlines and cancellation

describe("deadlines and cancellation from a grpc-js client", () => {
  it("a WatchQueueStatus with a 300 ms deadline ends DEADLINE_EXCEEDED while waiting, and the server ends its stream", async () => {
    const { concertId } = await createConcert();
    await pause(concertId);
    const fan = await enteredFan(concertId);

    const started = Date.now();
    const stream = watch(fan.queueToken, { deadline: Date.now() + 300 });
    await stream.ends(5_000);
    const elapsed = Date.now() - started;
    expect(stream.messages.map((m) => brief(m.status))[0]).toBe("WAITING 1");
    expect(stream.error?.code).toBe("DEADLINE_EXCEEDED");
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(2_000);

    // The deadline reached the server as grpc-timeout, and the server's handler stopped.
    const seen = serverWatches.find((w) => w.queueToken === fan.queueToken)!;
    expect(seen.grpcTimeout).toMatch(/^\d+[HMSmun]$/);
    await expect.poll(() => seen.finished, { timeout: 2_000 }).toBe(true);
    // Client and server deadlines fall due together: the server's own grpc-timeout (DeadlineExceeded) or the
    // client's RST_STREAM (Canceled) ends the handler, whichever comes first.
    expect(["DeadlineExceeded", "Canceled"]).toContain(seen.aborted);

    // The place is still there: the deadline ended the call, not the place.
    expect(brief(await queueStatus(fan.queueToken))).toBe("WAITING 1");
    await resume(concertId);
  });

  it("call.cancel() ends a WatchQueueStatus with CANCELLED locally; the server stops that stream and keeps serving others", async () => {
    const { concertId } = await createConcert();
    await pause(concertId);
    const fan = await enteredFan(concertId);

    const cancelled = watch(fan.queueToken);
    await cancelled.until("the first message", () => cancelled.messages.length > 0);
    cancelled.call.cancel();
    await cancelled.ends();
    expect(cancelled.error?.code).toBe("CANCELLED");
    const seen = serverWatches.filter((w) => w.queueToken === fan.queueToken);
    expect(seen).toHaveLength(1);
    await expect.poll(() => seen[0]!.finished, { timeout: 2_000 }).toBe(true);
    expect(seen[0]!.aborted).toBeDefined();

    // Same channel, same token: unary calls and a new watch are served, and the new watch sees the admission.
    expect(brief(await queueStatus(fan.queueToken))).toBe("WAITING 1");
    const again = watch(fan.queueToken);
    await again.until("the first message", () => again.messages.length > 0);
    await resume(concertId);
    await again.ends();
    expect(again.error).toBeUndefined();
    expect(brief(again.messages.at(-1)!.status)).toBe("ADMITTED");
    expect((await g.unary(HEALTH, "Check", {})).status).toBe("SERVING");
  });
});

// ---------------------------------------------------------------- internal services

describe("internal services", () => {
  it("answer PERMISSION_DENIED INTERNAL_ONLY to a caller without the internal credential (none, a user token, the operator key, a wrong one)", async () => {
    const user = await newUser();
    const calls: [string, string, Message][] = [
      [QUEUE_INTERNAL, "CheckAdmission", { queueToken: "q1.x" }],
      [RESERVATION_INTERNAL, "HoldSeatsForUser", { userId: user.userId, concertId: randomUUID(), scheduleId: randomUUID(), seatNumbers: [1] }],
      [PAYMENT_INTERNAL, "PayForUser", { userId: user.userId, concertId: randomUUID(), reservationId: randomUUID(), idempotencyKey: "k" }],
      [RESERVATION_INTERNAL, "ConfirmReservation", { reservationId: randomUUID(), paymentId: randomUUID(), userId: user.userId }],
      [POINT_INTERNAL, "UsePoints", { userId: user.userId, amount: "1", paymentId: randomUUID() }],
    ];
    for (const [service, method, request] of calls) {
      for (const headers of [{}, bearer(user.token), operator, { "x-internal-credential": "wrong" }]) {
        await expectFailure(g.unary(service, method, request, headers), "PERMISSION_DENIED", "REASON_INTERNAL_ONLY");
      }
    }
  });
});

// ---------------------------------------------------------------- status messages

describe("grpc-message", () => {
  // Fails today: the server (Connect, @connectrpc/connect protocol-grpc/trailer-status.js) percent-encodes
  // grpc-message with encodeURIComponent, and grpc-js (subchannel-call.js) decodes it with decodeURI, which
  // leaves the escapes of reserved characters (%3A ":", %3B ";", %2C ",", %2F "/", %3F "?", %23 "#", …) as they
  // are. So a grpc-js caller reads "amount%3A must be…". Reason, field and the Status detail are unaffected.
  it("reads in grpc-js as the plain message, the same as the message of the google.rpc.Status detail", async () => {
    const user = await newUser();
    const failure = await expectFailure(
      g.unary(POINT, "ChargePoints", { amount: "0", idempotencyKey: randomUUID() }, bearer(user.token)),
      "INVALID_ARGUMENT",
      "REASON_INVALID_ARGUMENT",
      "amount",
    );
    expect(failure.statusDetails!.message).toBe("amount: must be between 1 and 10000000");
    expect(failure.message).toBe(failure.statusDetails!.message);
  });
});

// ---------------------------------------------------------------- coverage

describe("coverage", () => {
  it("every public RPC in proto/ was called through grpc-js above, and served at least once (OK, or for a stream, messages)", () => {
    const missing: string[] = [];
    for (const [, methods] of publicServices()) {
      for (const method of Object.values(methods)) {
        const tally = g.tally.get(method.path);
        if (!tally || (tally.ok === 0 && tally.received === 0)) missing.push(method.path);
      }
    }
    expect(missing).toEqual([]);
    // WatchQueueStatus also ended OK (after ADMITTED), not only by cancellation or deadline.
    expect(g.tally.get(`/${COORDINATOR}/WatchQueueStatus`)?.ok).toBeGreaterThan(0);
  });
});
