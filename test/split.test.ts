import type { DescService } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService, ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { reasonOf, Reason } from "../services/platform/errors.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { dropKeys } from "./redis-keys.js";
import { freePorts, startServerProcess, stopService, type ServerProcess } from "./server-process.js";
import { bearer, failure, gated, operator, testSecrets, withQueueToken } from "./support.js";

/**
 * The suite split into one OS process per service (`SERVICES=<name>`, as
 * `npm run start:<name>` runs it), plus a second concert instance (which serves
 * the seats and the holds on them, ReservationService), on a
 * fresh PostgreSQL database and real Redis. Every call between services goes
 * over gRPC (h2c) to `<SERVICE>_URL`; this file talks to each process directly.
 */

const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:split:${randomUUID()}:`;
const databaseName = `boxoffice_split_${process.pid}_${Date.now().toString(36)}`;

/** The processes: one per service, "concertB" a second concert instance, "orphan" a coordinator with no CONCERT_URL. */
const roles = ["token", "queue", "concert", "concertB", "point", "payment", "coordinator", "orphan"] as const;
type Role = (typeof roles)[number];
const serviceOf = (role: Role) => (role === "concertB" ? "concert" : role === "orphan" ? "coordinator" : role);

const processes: Partial<Record<Role, ServerProcess>> = {};
const urls = {} as Record<Role, string>;
/** What each process printed after it started listening, shown when it does not exit cleanly. */
const output: Partial<Record<Role, string>> = {};
let closing = false;


beforeAll(async () => {
  const databaseUrl = await createDatabase(databaseName);
  const ports = await freePorts(roles.length);
  roles.forEach((role, i) => (urls[role] = `http://127.0.0.1:${ports[i]}`));
  // Every process knows where the one instance of each other service is; every caller reaches concert instance A.
  const serviceUrls: Record<string, string> = {
    TOKEN_URL: urls.token,
    QUEUE_URL: urls.queue,
    CONCERT_URL: urls.concert,
    POINT_URL: urls.point,
    PAYMENT_URL: urls.payment,
    COORDINATOR_URL: urls.coordinator,
  };
  const common = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisPrefix,
    ...testSecrets,
    HOST: "127.0.0.1",
    SEED_DEMO: "false",
    DATABASE_POOL_SIZE: "3",
    QUEUE_TICK_MS: "50",
    WATCH_REFRESH_MS: "200",
    SHUTDOWN_GRACE_MS: "2000",
  };
  const started = await Promise.allSettled(
    roles.map(async (role) => {
      const service = serviceOf(role);
      const env: NodeJS.ProcessEnv = {
        ...common,
        ...serviceUrls,
        SERVICES: service,
        PORT: urls[role].split(":").at(-1),
        DATA_DIR: mkdtempSync(join(tmpdir(), `boxoffice-split-${role}-`)),
      };
      delete env[`${service.toUpperCase()}_URL`];
      if (role === "orphan") {
        delete env.CONCERT_URL;
        env.DATABASE_POOL_SIZE = "1";
      }
      const server = await startServerProcess(env);
      // Started after a timed-out beforeAll gave up: stop it rather than leave it running.
      if (closing) return void (await stopService(server));
      processes[role] = server;
      output[role] = "";
      const keep = (chunk: Buffer) => (output[role] += chunk.toString());
      server.process.stdout!.on("data", keep);
      server.process.stderr!.on("data", keep);
      expect(server.url).toBe(urls[role]);
    }),
  );
  const failed = started.flatMap((result, i) => (result.status === "rejected" ? [`${roles[i]}: ${String(result.reason)}`] : []));
  if (failed.length > 0) throw new Error(`processes failed to start:\n${failed.join("\n")}`);
  // Eight processes boot at once (tsx compiles each): on a 2-CPU machine that alone takes about 25 s.
}, 90_000);


afterAll(async () => {
  closing = true;
  const codes = await Promise.all(roles.map(async (role) => [role, processes[role] ? await stopService(processes[role]) : "not started"] as const));
  await dropKeys(redisUrl, redisPrefix);
  await dropDatabase(databaseName);
  const unclean = codes.filter(([, code]) => code !== 0).map(([role, code]) => `${role} exited with ${code}:\n${output[role] ?? ""}`);
  expect(Object.fromEntries(codes), unclean.join("\n")).toEqual(Object.fromEntries(roles.map((role) => [role, 0])));
}, 30_000);

// ---------------------------------------------------------------- helpers

const transports = new Map<Role, Transport>();

/** A client aimed at one process over gRPC (h2c); one connection per process. */
function on<T extends DescService>(role: Role, service: T): Client<T> {
  let transport = transports.get(role);
  if (!transport) transports.set(role, (transport = createGrpcTransport({ baseUrl: urls[role] })));
  return createClient(service, transport);
}

const inDays = (days: number) => timestampFromDate(new Date(Date.now() + days * 24 * 3600 * 1000));

async function createConcert(seatCounts: number[], price = 100n) {
  const created = await on("concert", ConcertAdminService).createConcert(
    {
      title: `Split test ${randomUUID().slice(0, 8)}`,
      venue: "Split Hall",
      schedules: seatCounts.map((seatCount, i) => ({ startsAt: inDays(10 + i), seatCount, price })),
    },
    operator,
  );
  return { concertId: created.concert!.id, scheduleIds: created.schedules.map((s) => s.id) };
}

/** A new user (token process) entered in the concert's room (queue process) and polled until ADMITTED. */
async function admittedFan(concertId: string) {
  const user = await on("token", TokenService).issueUserToken({});
  const { queueToken } = await on("queue", QueueService).enterQueue({ concertId }, bearer(user.token));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { status } = await on("queue", QueueService).getQueueStatus({}, withQueueToken(queueToken));
    if (status!.state === QueueState.ADMITTED) break;
    if (Date.now() > deadline) throw new Error(`fan still ${QueueState[status!.state]} after 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { userId: user.userId, token: user.token, queueToken, headers: gated(user.token, queueToken) };
}

function outcome(error: unknown): string {
  const connectError = ConnectError.from(error);
  return `${Code[connectError.code]}/${Reason[reasonOf(connectError) ?? Reason.UNSPECIFIED]}`;
}

async function seatStates(fanHeaders: { headers: Record<string, string> }, scheduleId: string): Promise<Record<number, string>> {
  const { seats } = await on("concert", ConcertService).listSeats({ scheduleId }, fanHeaders);
  return Object.fromEntries(seats.map((seat) => [seat.number, SeatState[seat.state]]));
}

// ---------------------------------------------------------------- tests

describe("the suite as separate processes", () => {
  it("each process serves only its own service, and says so in health", async () => {
    const publicService = {
      token: TokenService,
      queue: QueueService,
      concert: ConcertService,
      point: PointService,
      payment: PaymentService,
      coordinator: CoordinatorService,
    };
    for (const role of roles) {
      const { status } = await on(role, Health).check({ service: publicService[serviceOf(role)].typeName });
      expect(status, role).toBe(HealthCheckResponse_ServingStatus.SERVING);
      const other = role === "token" ? QueueService : TokenService;
      expect((await failure(on(role, Health).check({ service: other.typeName }))).code, role).toBe(Code.NotFound);
    }
    const error = await failure(on("queue", TokenService).issueUserToken({}));
    expect(error.code).toBe(Code.Unimplemented);
    // The holds are served beside the seats.
    for (const role of ["concert", "concertB"] as const) {
      const { status } = await on(role, Health).check({ service: ReservationService.typeName });
      expect(status, role).toBe(HealthCheckResponse_ServingStatus.SERVING);
    }
  });

  it("runs the whole booking flow across the processes", async () => {
    const { concertId, scheduleIds } = await createConcert([10], 150n);
    const scheduleId = scheduleIds[0]!;

    // Token process; IssueQueueToken enters the room in the queue process.
    const user = await on("token", TokenService).issueUserToken({});
    const { queueToken } = await on("token", TokenService).issueQueueToken({ concertId }, bearer(user.token));
    expect(queueToken).not.toBe("");

    // The coordinator watches the room in the queue process until the fan is admitted.
    const watchAbort = new AbortController();
    let admitted = false;
    for await (const message of on("coordinator", CoordinatorService).watchQueueStatus(
      {},
      { ...withQueueToken(queueToken), signal: watchAbort.signal, timeoutMs: 15_000 },
    )) {
      if (message.status!.state === QueueState.ADMITTED) {
        admitted = true;
        break;
      }
      expect(message.status!.state).toBe(QueueState.WAITING);
    }
    watchAbort.abort();
    expect(admitted).toBe(true);
    const fan = gated(user.token, queueToken);

    // ListSeats is gated: the concert process checks admission with the queue process.
    const { schedules } = await on("concert", ConcertService).listSchedules({ concertId });
    expect(schedules.map((s) => [s.id, s.availableSeats, s.totalSeats])).toEqual([[scheduleId, 10, 10]]);
    const { seats } = await on("concert", ConcertService).listSeats({ scheduleId }, fan);
    expect(seats).toHaveLength(10);
    expect(seats.every((seat) => seat.state === SeatState.AVAILABLE && seat.price === 150n)).toBe(true);

    // The coordinator holds in concert instance A (ReservationInternalService), one call.
    const { reservation } = await on("coordinator", CoordinatorService).reserveSeats({ scheduleId, seatNumbers: [4, 2] }, fan);
    expect(reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [2, 4], amount: 300n, userId: user.userId, concertId, scheduleId });
    expect(await seatStates(fan, scheduleId)).toMatchObject({ 2: "HELD", 4: "HELD", 3: "AVAILABLE" });

    const charged = await on("point", PointService).chargePoints({ amount: 1_000n, idempotencyKey: `charge-${randomUUID()}` }, bearer(user.token));
    expect(charged.balance).toBe(1_000n);

    // Checkout: coordinator → payment (PayForUser) → concert A (GetUserReservation, ConfirmReservation), point (UsePoints), queue (CompleteSession).
    const checkout = await on("coordinator", CoordinatorService).checkout({ reservationId: reservation!.id, idempotencyKey: `pay-${randomUUID()}` }, fan);
    expect(checkout.payment).toMatchObject({ state: PaymentState.SUCCEEDED, amount: 300n, reservationId: reservation!.id, userId: user.userId });
    expect(checkout.reservation).toMatchObject({ id: reservation!.id, state: ReservationState.CONFIRMED, paymentId: checkout.payment!.id });

    // Every process tells the same story.
    const { payment } = await on("payment", PaymentService).getPayment({ paymentId: checkout.payment!.id }, bearer(user.token));
    expect(payment!.state).toBe(PaymentState.SUCCEEDED);
    expect((await on("point", PointService).getBalance({}, bearer(user.token))).balance).toBe(700n);
    for (const role of ["concert", "concertB"] as const) {
      const { reservation: read } = await on(role, ReservationService).getReservation({ reservationId: reservation!.id }, bearer(user.token));
      expect(read!.state, role).toBe(ReservationState.CONFIRMED);
    }
    const { status } = await on("queue", QueueService).getQueueStatus({}, withQueueToken(queueToken));
    expect(status!.state).toBe(QueueState.COMPLETED);
    // The paid session is over, so the fan's token no longer opens the gate.
    expect(outcome(await failure(on("concert", ConcertService).listSeats({ scheduleId }, fan)))).toBe("FailedPrecondition/QUEUE_TOKEN_EXPIRED");

    // Another admitted fan sees the seats SOLD in the concert process.
    const observer = await admittedFan(concertId);
    expect(await seatStates(observer.headers, scheduleId)).toMatchObject({ 2: "SOLD", 4: "SOLD", 3: "AVAILABLE" });
    const after = await on("concert", ConcertService).listSchedules({ concertId });
    expect(after.schedules[0]!.availableSeats).toBe(8);
  });
});

describe("two concert instances, holds beside the seats", () => {
  it("of 50 fans racing for one seat through instances A and B, exactly one wins", async () => {
    const { concertId, scheduleIds } = await createConcert([5]);
    const scheduleId = scheduleIds[0]!;
    const fans = await Promise.all(Array.from({ length: 50 }, () => admittedFan(concertId)));
    const instanceOf = (i: number) => (i % 2 === 0 ? "concert" : "concertB");
    const clients = { concert: on("concert", ReservationService), concertB: on("concertB", ReservationService) };
    const results = await Promise.allSettled(fans.map((fan, i) => clients[instanceOf(i)].holdSeats({ scheduleId, seatNumbers: [3] }, fan.headers)));

    const tally: Record<string, number> = {};
    for (const result of results) {
      const key = result.status === "fulfilled" ? "ok" : outcome(result.reason);
      tally[key] = (tally[key] ?? 0) + 1;
    }
    expect(tally).toEqual({ ok: 1, "FailedPrecondition/SEAT_UNAVAILABLE": 49 });
    const winnerIndex = results.findIndex((result) => result.status === "fulfilled");
    const winner = fans[winnerIndex]!;
    const won = (results[winnerIndex] as PromiseFulfilledResult<Awaited<ReturnType<(typeof clients)["concert"]["holdSeats"]>>>).value.reservation!;
    expect(won).toMatchObject({ state: ReservationState.HELD, seatNumbers: [3], userId: winner.userId });

    // Both instances read the winner's hold, and the seat HELD.
    for (const role of ["concert", "concertB"] as const) {
      const { reservation } = await on(role, ReservationService).getReservation({ reservationId: won.id }, bearer(winner.token));
      expect(reservation!.state, role).toBe(ReservationState.HELD);
    }
    expect(await seatStates(winner.headers, scheduleId)).toEqual({ 1: "AVAILABLE", 2: "AVAILABLE", 3: "HELD", 4: "AVAILABLE", 5: "AVAILABLE" });
    // The losers hold nothing, on either instance.
    for (const [i, fan] of fans.entries()) {
      if (i === winnerIndex) continue;
      const { reservations } = await on(instanceOf(i + 1), ReservationService).listReservations({}, bearer(fan.token));
      expect(reservations).toEqual([]);
    }
  });

  it("a hold made on instance B is read and released on instance A", async () => {
    const { concertId, scheduleIds } = await createConcert([4]);
    const scheduleId = scheduleIds[0]!;
    const fan = await admittedFan(concertId);
    const { reservation } = await on("concertB", ReservationService).holdSeats({ scheduleId, seatNumbers: [1, 2] }, fan.headers);
    expect(reservation!.state).toBe(ReservationState.HELD);

    const { reservation: read } = await on("concert", ReservationService).getReservation({ reservationId: reservation!.id }, bearer(fan.token));
    expect(read).toMatchObject({ id: reservation!.id, state: ReservationState.HELD, seatNumbers: [1, 2] });
    // The one-hold-per-date rule holds across instances too.
    expect(outcome(await failure(on("concert", ReservationService).holdSeats({ scheduleId, seatNumbers: [3] }, fan.headers)))).toBe(
      "FailedPrecondition/HOLD_LIMIT_REACHED",
    );

    const { reservation: released } = await on("concert", ReservationService).releaseHold({ reservationId: reservation!.id }, bearer(fan.token));
    expect(released!.state).toBe(ReservationState.RELEASED);
    const { reservation: seenOnB } = await on("concertB", ReservationService).getReservation({ reservationId: reservation!.id }, bearer(fan.token));
    expect(seenOnB!.state).toBe(ReservationState.RELEASED);
    expect(await seatStates(fan.headers, scheduleId)).toEqual({ 1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE", 4: "AVAILABLE" });

    // Free again, the seats can be held on the other instance.
    const again = await on("concertB", ReservationService).holdSeats({ scheduleId, seatNumbers: [2] }, fan.headers);
    expect(again.reservation!.state).toBe(ReservationState.HELD);
  });
});

describe("a coordinator process started without CONCERT_URL", () => {
  it("fails calls that need the holds with Unavailable, and keeps serving", async () => {
    const { concertId, scheduleIds } = await createConcert([3]);
    const fan = await admittedFan(concertId);
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await failure(on("orphan", CoordinatorService).reserveSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1] }, fan.headers));
      expect(outcome(error), error.rawMessage).toBe("Unavailable/DEPENDENCY_UNAVAILABLE");
    }
    // Calls that need only the queue still work: the watch stream reads the fan ADMITTED.
    for await (const message of on("orphan", CoordinatorService).watchQueueStatus({}, { ...withQueueToken(fan.queueToken), timeoutMs: 10_000 })) {
      expect(message.status!.state).toBe(QueueState.ADMITTED);
      break;
    }
    const { status } = await on("orphan", Health).check({});
    expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(processes.orphan!.process.exitCode).toBeNull();
    // Nothing was held.
    expect(await seatStates(fan.headers, scheduleIds[0]!)).toEqual({ 1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE" });
  });
});
