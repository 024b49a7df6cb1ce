import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import { ConcertAdminService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService, PointTransactionKind } from "../gen/boxoffice/point/v1/point_pb.js";
import { ReservationService } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TicketScannerService, TicketService } from "../gen/boxoffice/ticket/v1/ticket_pb.js";
import { QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { loadConfig, type Config } from "../services/platform/config.js";
import { startEmbeddedPostgres } from "../services/platform/embedded-postgres.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { modules } from "../services/modules.js";

export const testSecrets = {
  TOKEN_SECRET: "test-token-secret-that-is-long-enough",
  INTERNAL_CREDENTIAL: "test-internal-credential",
  OPERATOR_KEY: "test-operator-key",
  SCANNER_KEY: "test-scanner-key",
};

/**
 * Rate limits every suite runs with unless a test sets its own: counted (the
 * limiter runs on every test's calls) but far above what a test's crowd of fans
 * from 127.0.0.1 asks (test/rate-limit.test.ts tests the limits themselves).
 */
export const roomyLimits = Object.fromEntries(
  ["ACCOUNT", "QUEUE", "CHARGE", "HOLD"].flatMap((rule) => [`RATE_LIMIT_${rule}_PER_ADDRESS`, `RATE_LIMIT_${rule}_PER_USER`].map((name) => [name, "1000000"])),
);

/**
 * The two databases domain classes are tested on: the test PostgreSQL and a
 * fresh embedded PGlite (with one connection, as the suite runs it).
 */
export const bothDatabases = [
  { name: "PostgreSQL", poolSize: 5, open: async () => ({ url: inject("databaseUrl"), stop: async () => {} }) },
  {
    name: "embedded PGlite",
    poolSize: 1,
    open: async (): Promise<{ url: string; stop: () => Promise<void> }> => {
      const dir = mkdtempSync(join(tmpdir(), "boxoffice-pglite-"));
      const embedded = await startEmbeddedPostgres(dir);
      return { url: embedded.url, stop: async () => (await embedded.stop(), rmSync(dir, { recursive: true, force: true })) };
    },
  },
];

/** The configuration a test suite runs with: real PostgreSQL, port 0, fixed secrets. */
export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: inject("databaseUrl"),
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-test-")),
    SEED_DEMO: "false",
    SHUTDOWN_GRACE_MS: "2000",
    QUEUE_TICK_MS: "20",
    WATCH_REFRESH_MS: "100",
    // Its own rooms (and Redis keys): suites of other test files share the database. Suites meant to share a waiting room pass one.
    REDIS_KEY_PREFIX: `test:${randomUUID()}:`,
    // Test files run side by side on one PostgreSQL (max_connections 100): pools of 10 for each of five services,
    // in several suites and processes at once, ran it out of connections ("too many clients").
    DATABASE_POOL_SIZE: "4",
    ...testSecrets,
    ...roomyLimits,
    ...env,
  });
}

/** Starts the whole suite on a real server (port 0) against the test database. */
export function startTestSuite(env: Record<string, string> = {}): Promise<Suite> {
  return startSuite(testConfig(env), modules);
}

export type Protocol = "grpc" | "connect" | "grpc-web";

/** Transports made per suite and protocol: a test's clients share them, as a real caller's would. */
const transports = new WeakMap<Suite, Map<Protocol, Transport>>();

/**
 * A transport of the given protocol to a running suite: gRPC over h2c (one
 * connection per suite, as a backend caller keeps), Connect and gRPC-Web over
 * HTTP/1.1. Tests that make hundreds of fans would otherwise open a connection
 * per client, past MAX_CONNECTIONS_PER_ADDRESS.
 */
export function transport(suite: Suite, protocol: Protocol = "grpc"): Transport {
  let made = transports.get(suite);
  if (!made) transports.set(suite, (made = new Map()));
  let shared = made.get(protocol);
  if (!shared) made.set(protocol, (shared = newTransport(suite, protocol)));
  return shared;
}

function newTransport(suite: Suite, protocol: Protocol): Transport {
  const baseUrl = suite.host.url;
  if (protocol === "grpc") return createGrpcTransport({ baseUrl });
  if (protocol === "grpc-web") return createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
  return createConnectTransport({ baseUrl, httpVersion: "1.1" });
}

export function client<T extends DescService>(suite: Suite, service: T, protocol: Protocol = "grpc"): Client<T> {
  return createClient(service, transport(suite, protocol));
}

export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
export const operator = bearer(testSecrets.OPERATOR_KEY);
export const scanner = bearer(testSecrets.SCANNER_KEY);
/** Headers of a gated call: the user token and the queue token. */
export const gated = (token: string, queueToken: string) => ({ headers: { authorization: `Bearer ${token}`, "x-queue-token": queueToken } });
export const withQueueToken = (queueToken: string) => ({ headers: { "x-queue-token": queueToken } });

/** Polls GetQueueStatus until the token reaches `state` (the admission worker runs every 20 ms in tests). */
export async function waitForState(suite: Suite, queueToken: string, state: QueueState, timeoutMs = 10_000) {
  const queue = client(suite, QueueService);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status } = await queue.getQueueStatus({}, withQueueToken(queueToken));
    if (status!.state === state) return status!;
    if (Date.now() > deadline) throw new Error(`queue token still ${QueueState[status!.state]} after ${timeoutMs} ms, expected ${QueueState[state]}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A new user, admitted to the concert's waiting room: what a gated call needs. */
export async function admittedFan(suite: Suite, concertId: string) {
  const user = await newUser(suite);
  const { queueToken } = await client(suite, QueueService).enterQueue({ concertId }, bearer(user.token));
  await waitForState(suite, queueToken, QueueState.ADMITTED);
  return { userId: user.userId, token: user.token, queueToken, headers: gated(user.token, queueToken) };
}

export const inDays = (days: number) => timestampFromDate(new Date(Date.now() + days * 24 * 3600 * 1000));

/**
 * A concert put on sale with one date per spec; its id and the date ids in the
 * order given (later specs start later, so ListSchedules keeps that order).
 * `seatLimit`: most seats one fan may hold and buy over its dates (4 unless given).
 */
export async function concertOnSale(suite: Suite, specs: { seatCount: number; price: bigint }[], { seatLimit = 0 } = {}) {
  const created = await client(suite, ConcertAdminService).createConcert(
    {
      title: `Test concert ${randomUUID().slice(0, 8)}`,
      venue: "Test Hall",
      schedules: specs.map((spec, i) => ({ startsAt: inDays(10 + i), seatCount: spec.seatCount, price: spec.price })),
      seatLimit,
    },
    operator,
  );
  return { concertId: created.concert!.id, scheduleIds: created.schedules.map((s) => s.id) };
}

/** A new user and its token. */
export async function newUser(suite: Suite) {
  return client(suite, TokenService).issueUserToken({});
}

/** Resolves to the error a call fails with; fails the test when the call succeeds. */
export async function failure(call: Promise<unknown>): Promise<import("@connectrpc/connect").ConnectError> {
  const { ConnectError } = await import("@connectrpc/connect");
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/**
 * The environment a server process runs with in tests: the inherited one without anything that would point it
 * at another database, Redis or split deployment, an embedded store under `dataDir`, fast background loops,
 * and `overrides` on top (DATABASE_URL for real PostgreSQL).
 */
export function serverEnv(dataDir: string, overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ["DATABASE_URL", "REDIS_URL", "REDIS_KEY_PREFIX", "SERVICES"]) delete env[name];
  for (const name of Object.keys(env)) if (/^(TOKEN|QUEUE|CONCERT|RESERVATION|POINT|PAYMENT|COORDINATOR)_URL$/.test(name)) delete env[name];
  return {
    ...env,
    DATA_DIR: dataDir,
    SEED_DEMO: "false",
    HOST: "127.0.0.1",
    PORT: "0",
    ...testSecrets,
    HOLD_SWEEP_MS: "200",
    QUEUE_TICK_MS: "20",
    QUEUE_MAX_ACTIVE: "1000",
    SHUTDOWN_GRACE_MS: "2000",
    ...overrides,
  };
}

/** One client per public service of a suite or a server process, sharing the transport. */
export function apiOf(transport: Transport) {
  const make = <T extends DescService>(service: T): Client<T> => createClient(service, transport);
  return {
    tokens: make(TokenService),
    queue: make(QueueService),
    concerts: make(ConcertService),
    admin: make(ConcertAdminService),
    reservations: make(ReservationService),
    coordinator: make(CoordinatorService),
    points: make(PointService),
    payments: make(PaymentService),
    tickets: make(TicketService),
    scanner: make(TicketScannerService),
  };
}
export type Api = ReturnType<typeof apiOf>;

/** A fan's whole ledger (every page, `pageSize` at a time), newest first. */
export async function ledgerOf(api: Pick<Api, "points">, auth: { headers: Record<string, string> }, pageSize = 100) {
  const rows: { kind: string; amount: bigint; paymentId: string }[] = [];
  let pageToken = "";
  do {
    const page = await api.points.listPointTransactions({ pageSize, pageToken }, auth);
    rows.push(...page.transactions.map((t) => ({ kind: PointTransactionKind[t.kind], amount: t.amount, paymentId: t.paymentId })));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return rows;
}
