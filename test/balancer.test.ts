import type { DescService } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import dgram from "node:dgram";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueAdminService, QueueInternalService, QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService, ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { dropKeys } from "./redis-keys.js";
import { freePorts, startServerProcess, type ServerProcess } from "./server-process.js";
import { bearer, failure, gated, operator, testSecrets, withQueueToken } from "./support.js";

/**
 * The split topology that .deploy/ describes (compose.yaml, k8s/), run here without a
 * container engine: two instances of each service, each its own OS process on the
 * settings of .deploy/boxoffice.env, behind HAProxy from Debian's package running
 * .deploy/haproxy.cfg as it is shipped. The balancer finds the instances as it does in
 * compose and Kubernetes, in DNS (a name answering every instance's address; here a
 * small DNS server of the test's), routes each HTTP/2 stream by its path, checks
 * /readyz, and carries every call between the services too (<SERVICE>_URL is its
 * internal port). Fans book and watch through it, also while one instance of every
 * service is stopped.
 */

const haproxy = "/usr/sbin/haproxy";
const root = join(import.meta.dirname, "..");
const deploy = join(root, ".deploy");
const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:balancer:${randomUUID()}:`;
const databaseName = `boxoffice_balancer_${process.pid}_${Date.now().toString(36)}`;

const services = ["token", "queue", "concert", "point", "payment", "coordinator"] as const;
type ServiceName = (typeof services)[number];
/** Instance i (1, 2) of a service listens on its own loopback address, all on one port, as containers or pods would on theirs. */
const addressOf = (service: ServiceName, instance: number) => `127.77.${services.indexOf(service) + 1}.${instance}`;

interface Instance {
  service: ServiceName;
  instance: number;
  address: string;
  server: ServerProcess;
  output: string;
}

const instances: Instance[] = [];
let balancer: ChildProcess | undefined;
let balancerLog = "";
let dns: { port: number; close(): Promise<void> } | undefined;
let publicUrl = "";
let internalUrl = "";
let statsUrl = "";
let servicePort = 0;
let closing = false;

/** .deploy/boxoffice.env, as compose's env_file and kustomize's configMapGenerator read it. */
function deployEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(join(deploy, "boxoffice.env"), "utf8").split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const at = trimmed.indexOf("=");
    env[trimmed.slice(0, at)] = trimmed.slice(at + 1);
  }
  return env;
}


/**
 * A DNS server that answers A queries for each name with its addresses (TTL 1 s), as
 * Docker's embedded DNS does for a compose service's replicas and cluster DNS for a
 * headless Service; NOERROR with no answer for other types of a known name, NXDOMAIN
 * for unknown names.
 */
async function startDns(records: Map<string, string[]>): Promise<{ port: number; close(): Promise<void> }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (query, peer) => {
    if (query.length < 12) return;
    let offset = 12;
    const labels: string[] = [];
    while (offset < query.length && query[offset] !== 0) {
      const length = query[offset]!;
      if (length > 63) return;
      labels.push(query.subarray(offset + 1, offset + 1 + length).toString("latin1"));
      offset += 1 + length;
    }
    const questionEnd = offset + 5;
    if (questionEnd > query.length) return;
    const type = query.readUInt16BE(offset + 1);
    const addresses = records.get(labels.join(".").toLowerCase());
    const answers = addresses && type === 1 ? addresses : [];
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2);
    // QR, AA, RD as asked, RA; NXDOMAIN for a name not known.
    header.writeUInt16BE(0x8000 | 0x0400 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | (addresses ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    const records_ = answers.map((address) => {
      const record = Buffer.alloc(16);
      record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      record.writeUInt16BE(1, 2); // A
      record.writeUInt16BE(1, 4); // IN
      record.writeUInt32BE(1, 6); // TTL
      record.writeUInt16BE(4, 10);
      address.split(".").forEach((byte, i) => (record[12 + i] = Number(byte)));
      return record;
    });
    socket.send(Buffer.concat([header, query.subarray(12, questionEnd), ...records_]), peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { port: socket.address().port, close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

/** HAProxy's own view of every server: its CSV stats. */
async function balancerStats(): Promise<
  { backend: string; server: string; address: string; status: string; current: number; total: number; retries: number; redispatches: number }[]
> {
  const csv = await (await fetch(`${statsUrl}/;csv`)).text();
  const [header, ...rows] = csv.trim().split("\n");
  const columns = header!.replace(/^# /, "").split(",");
  const at = (name: string) => columns.indexOf(name);
  return rows
    .map((row) => row.split(","))
    .filter((fields) => (services as readonly string[]).includes(fields[at("pxname")]!) && !["FRONTEND", "BACKEND"].includes(fields[at("svname")]!))
    .map((fields) => ({
      backend: fields[at("pxname")]!,
      server: fields[at("svname")]!,
      address: fields[at("addr")]!,
      status: fields[at("status")]!,
      current: Number(fields[at("scur")]),
      total: Number(fields[at("stot")]),
      retries: Number(fields[at("wretr")] || 0),
      redispatches: Number(fields[at("wredis")] || 0),
    }));
}

/**
 * Waits until HAProxy's checks have every instance of `up` UP and every other instance
 * DOWN (not "UP 1/2", still taking traffic while one more check fails).
 */
async function untilBalancerSees(up: string[], timeoutMs = 30_000): Promise<void> {
  const all = services.flatMap((service) => [1, 2].map((instance) => `${addressOf(service, instance)}:${servicePort}`));
  const wanted = Object.fromEntries(all.map((address) => [address, up.includes(address.replace(/:\d+$/, "")) ? "UP" : "DOWN"]));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const seen = Object.fromEntries((await balancerStats()).filter((s) => all.includes(s.address)).map((s) => [s.address, s.status]));
    if (all.every((address) => seen[address] === wanted[address])) return;
    if (Date.now() > deadline) throw new Error(`HAProxy sees ${JSON.stringify(seen)}, not ${JSON.stringify(wanted)}:\n${balancerLog.slice(-4000)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

beforeAll(async () => {
  if (!existsSync(haproxy)) throw new Error(`${haproxy} is missing: apt-get install haproxy (.ci/run installs it)`);
  const [databaseUrl, ports, dnsServer] = await Promise.all([
    createDatabase(databaseName),
    freePorts(4, "0.0.0.0"),
    startDns(new Map(services.map((service) => [service, [addressOf(service, 1), addressOf(service, 2)]]))),
  ]);
  dns = dnsServer;
  const [publicPort, internalPort, statsPort] = ports;
  servicePort = ports[3]!;
  publicUrl = `http://127.0.0.1:${publicPort}`;
  internalUrl = `http://127.0.0.1:${internalPort}`;
  statsUrl = `http://127.0.0.1:${statsPort}`;

  // The shipped configuration, with this machine's addresses in the settings it reads from the environment.
  balancer = spawn(haproxy, ["-db", "-f", join(deploy, "haproxy.cfg")], {
    env: {
      PATH: process.env.PATH,
      PUBLIC_BIND: `127.0.0.1:${publicPort}`,
      INTERNAL_BIND: `127.0.0.1:${internalPort}`,
      STATS_BIND: `127.0.0.1:${statsPort}`,
      DNS_NAMESERVER: `127.0.0.1:${dns.port}`,
      ...Object.fromEntries(services.map((service) => [`${service.toUpperCase()}_INSTANCES`, `${service}:${servicePort}`])),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const keep = (chunk: Buffer) => (balancerLog += chunk.toString());
  balancer.stdout!.on("data", keep);
  balancer.stderr!.on("data", keep);
  balancer.once("exit", (code, signal) => {
    if (!closing) balancerLog += `\nHAProxy exited with ${code ?? signal}\n`;
  });

  const shared = deployEnv();
  // Where the services reach each other: the balancer's internal port (compose: http://lb:8081).
  for (const service of services) expect(shared[`${service.toUpperCase()}_URL`]).toBe("http://lb:8081");
  const common: NodeJS.ProcessEnv = {
    ...process.env,
    ...shared,
    ...Object.fromEntries(services.map((service) => [`${service.toUpperCase()}_URL`, internalUrl])),
    PORT: String(servicePort),
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisPrefix,
    ...testSecrets,
    // Twelve processes on the test server shared with the other test files.
    DATABASE_POOL_SIZE: "3",
  };
  const started = await Promise.allSettled(
    services.flatMap((service) =>
      [1, 2].map(async (instance) => {
        const address = addressOf(service, instance);
        const server = await startServerProcess({
          ...common,
          SERVICES: service,
          HOST: address,
          DATA_DIR: mkdtempSync(join(tmpdir(), `boxoffice-balancer-${service}-${instance}-`)),
        });
        const started: Instance = { service, instance, address, server, output: "" };
        server.process.stdout!.on("data", (chunk: Buffer) => (started.output += chunk.toString()));
        server.process.stderr!.on("data", (chunk: Buffer) => (started.output += chunk.toString()));
        instances.push(started);
        // Started after a timed-out beforeAll gave up: stop it rather than leave it running.
        if (closing) await server.stop();
      }),
    ),
  );
  const failed = started.flatMap((result) => (result.status === "rejected" ? [String(result.reason)] : []));
  if (failed.length > 0) throw new Error(`processes failed to start:\n${failed.join("\n")}`);
  await untilBalancerSees(instances.map((i) => i.address));
}, 120_000);

afterAll(async () => {
  closing = true;
  const codes = await Promise.all(instances.map(async (i) => [`${i.service}-${i.instance}`, await i.server.stop()] as const));
  if (balancer && balancer.exitCode === null && balancer.signalCode === null) {
    const exited = new Promise((resolve) => balancer!.once("exit", resolve));
    balancer.kill("SIGTERM");
    await exited;
  }
  await dns?.close();
  await dropKeys(redisUrl, redisPrefix);
  await dropDatabase(databaseName);
  const unclean = instances.filter((_, n) => codes[n]![1] !== 0).map((i) => `${i.service}-${i.instance}:\n${i.output}`);
  expect(Object.fromEntries(codes), unclean.join("\n")).toEqual(Object.fromEntries(instances.map((i) => [`${i.service}-${i.instance}`, 0])));
}, 30_000);

// ---------------------------------------------------------------- clients

const transports = new Map<string, Transport>();

/** A fan's or operator's client, through the balancer's public port: gRPC over h2c (one connection), or Connect over HTTP/1.1. */
function lb<T extends DescService>(service: T, protocol: "grpc" | "connect" = "grpc", url = publicUrl): Client<T> {
  const key = `${protocol} ${url}`;
  let transport = transports.get(key);
  if (!transport) {
    transport = protocol === "grpc" ? createGrpcTransport({ baseUrl: url }) : createConnectTransport({ baseUrl: url, httpVersion: "1.1" });
    transports.set(key, transport);
  }
  return createClient(service, transport);
}

/**
 * What a real client does with a call that answers Unavailable: tries it again, the same
 * request (with the same idempotency key), a few times with backoff. `undefined`: no retry
 * at all, so any failure fails the test.
 */
class Retries {
  readonly seen: string[] = [];
  async call<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (error) {
        const connectError = ConnectError.from(error);
        if (connectError.code !== Code.Unavailable || n >= 6) throw error;
        this.seen.push(`${what}: ${connectError.rawMessage}`);
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** n));
      }
    }
  }
}
const once = { call: <T>(_what: string, attempt: () => Promise<T>) => attempt() };
type Caller = Pick<Retries, "call">;

const inDays = (days: number) => timestampFromDate(new Date(Date.now() + days * 24 * 3600 * 1000));

async function createConcert(seatCount: number, price: bigint, caller: Caller = once) {
  const created = await caller.call("CreateConcert", () =>
    lb(ConcertAdminService).createConcert(
      { title: `Balancer test ${randomUUID().slice(0, 8)}`, venue: "Balanced Hall", schedules: [{ startsAt: inDays(10), seatCount, price }] },
      operator,
    ),
  );
  return { concertId: created.concert!.id, scheduleId: created.schedules[0]!.id };
}

/** A new user with a queue token for the concert: IssueQueueToken enters the room through token → balancer → queue. */
async function enteredFan(concertId: string, caller: Caller = once) {
  const user = await caller.call("IssueUserToken", () => lb(TokenService).issueUserToken({}));
  const { queueToken } = await caller.call("IssueQueueToken", () => lb(TokenService).issueQueueToken({ concertId }, bearer(user.token)));
  return { userId: user.userId, token: user.token, queueToken, headers: gated(user.token, queueToken) };
}

/**
 * Watches the fan's place through the balancer until `state`. With `reconnects`, a stream
 * that ends before it, or fails Unavailable (its instance stopped), is opened again, as
 * the booking page does; each time is counted. Without, the first stream must get there.
 */
async function watchUntil(queueToken: string, state: QueueState, reconnects?: { count: number }, onMessage?: (state: QueueState) => void) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      for await (const message of lb(CoordinatorService).watchQueueStatus({}, { ...withQueueToken(queueToken), timeoutMs: Math.max(1, deadline - Date.now()) })) {
        if (message.heartbeat) continue;
        onMessage?.(message.status!.state);
        if (message.status!.state === state) return;
        expect(message.status!.state).toBe(QueueState.WAITING);
      }
      if (!reconnects) throw new Error(`the watch ended before ${QueueState[state]}`);
    } catch (error) {
      if (!reconnects || ConnectError.from(error).code !== Code.Unavailable) throw error;
    }
    if (Date.now() > deadline) throw new Error(`not ${QueueState[state]} within 30 s`);
    reconnects.count++;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// ---------------------------------------------------------------- tests

describe("two instances of each service behind HAProxy (.deploy/haproxy.cfg)", () => {
  it("routes a booking and a watch stream, calls between services included, across every instance", async () => {
    const { concertId, scheduleId } = await createConcert(10, 100n);
    const fan = await enteredFan(concertId);
    await watchUntil(fan.queueToken, QueueState.ADMITTED);

    // ListSeats is gated: the concert instance asks the queue (CheckAdmission) through the balancer.
    const { seats } = await lb(ConcertService).listSeats({ scheduleId }, fan.headers);
    expect(seats.map((seat) => SeatState[seat.state])).toEqual(Array(10).fill("AVAILABLE"));
    const { reservation } = await lb(CoordinatorService).reserveSeats({ scheduleId, seatNumbers: [3, 4] }, fan.headers);
    expect(reservation).toMatchObject({ state: ReservationState.HELD, seatNumbers: [3, 4], amount: 200n });
    // Connect over HTTP/1.1 on the same public port (what browsers speak).
    const charged = await lb(PointService, "connect").chargePoints({ amount: 500n, idempotencyKey: `charge-${randomUUID()}` }, bearer(fan.token));
    expect(charged.balance).toBe(500n);
    // coordinator → payment → point, concert, queue: every hop through the balancer.
    const checkout = await lb(CoordinatorService).checkout({ reservationId: reservation!.id, idempotencyKey: `pay-${randomUUID()}` }, fan.headers);
    expect(checkout.payment).toMatchObject({ state: PaymentState.SUCCEEDED, amount: 200n });
    expect(checkout.reservation!.state).toBe(ReservationState.CONFIRMED);

    // A few reads, each a stream of its own, which the balancer spreads over both instances.
    for (let n = 0; n < 2; n++) {
      expect((await lb(TokenService).issueUserToken({})).token).not.toBe("");
      expect((await lb(PaymentService).getPayment({ paymentId: checkout.payment!.id }, bearer(fan.token))).payment!.state).toBe(PaymentState.SUCCEEDED);
      expect((await lb(PointService).getBalance({}, bearer(fan.token))).balance).toBe(300n);
      expect((await lb(ReservationService, "connect").getReservation({ reservationId: reservation!.id }, bearer(fan.token))).reservation!.state).toBe(
        ReservationState.CONFIRMED,
      );
      expect((await lb(QueueService).getQueueStatus({}, withQueueToken(fan.queueToken))).status!.state).toBe(QueueState.COMPLETED);
    }
    const stats = await balancerStats();
    const idle = stats.filter((s) => s.status === "UP" && s.total === 0).map((s) => s.server);
    expect(idle, "instances that took no request").toEqual([]);
    expect(stats.filter((s) => s.status === "UP")).toHaveLength(12);

    // Internal RPCs are not on the public port, whatever credential a caller has; on the internal port the service decides.
    const outside = await failure(lb(QueueInternalService).checkAdmission({ queueToken: fan.queueToken }, { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } }));
    expect(outside.code).toBe(Code.PermissionDenied);
    expect(outside.rawMessage).toMatch(/HTTP 403/);
    const inside = await failure(lb(QueueInternalService, "grpc", internalUrl).checkAdmission({ queueToken: fan.queueToken }));
    expect(inside.code).toBe(Code.PermissionDenied);
    expect(inside.rawMessage).not.toMatch(/HTTP 403/);
    // Health and metrics are per instance (probes and scrapers go to the instance): no route here.
    expect((await failure(lb(Health).check({}))).code).toBe(Code.Unimplemented);
    expect((await fetch(`${publicUrl}/metrics`)).status).toBe(404);
  });

  it("the image starts each service as npm start does", () => {
    // .deploy/Dockerfile's CMD runs node directly (PID 1, signals reach it), with the flags of package.json's start script.
    const cmd = /^CMD (\[.*\])$/m.exec(readFileSync(join(deploy, "Dockerfile"), "utf8"))?.[1];
    const start = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.start;
    expect((JSON.parse(cmd ?? "[]") as string[]).join(" ")).toBe(start?.replace(/^exec /, ""));
  });

  it("keeps booking and watching while one instance of every service stops", async () => {
    const { concertId, scheduleId } = await createConcert(20, 100n);
    const retries = new Retries();
    // Admission paused, so the fans' watch streams stay open (WAITING) across the stop.
    await lb(QueueAdminService).pauseAdmission({ concertId }, operator);
    const fans = await Promise.all(Array.from({ length: 4 }, () => enteredFan(concertId)));
    const reconnects = { count: 0 };
    const heard: (() => void)[] = [];
    const firstHeard = fans.map(() => new Promise<void>((resolve) => heard.push(resolve)));
    const watches = fans.map((fan, i) => watchUntil(fan.queueToken, QueueState.ADMITTED, reconnects, () => heard[i]!()));
    for (const watch of watches) watch.catch(() => undefined); // awaited below; a failure fails the test there
    await Promise.race([Promise.all(firstHeard), Promise.all(watches)]);

    // The balancer spread the streams (least connections): the coordinator instance about to stop holds some.
    const stopped = instances.filter((i) => i.instance === 1);
    const coordinatorAddress = `${addressOf("coordinator", 1)}:${servicePort}`;
    const streamsOnStopped = (await balancerStats()).find((s) => s.address === coordinatorAddress)!.current;
    expect(streamsOnStopped).toBeGreaterThan(0);

    // SIGTERM to instance 1 of every service at once, and the fans carry on meanwhile.
    const stopStarted = Date.now();
    const exits = Promise.all(stopped.map((i) => i.server.stop()));
    await retries.call("ResumeAdmission", () => lb(QueueAdminService).resumeAdmission({ concertId }, operator));
    const bookings = fans.map(async (fan, i) => {
      await retries.call("ChargePoints", () => lb(PointService).chargePoints({ amount: 100n, idempotencyKey: `charge-${fan.userId}` }, bearer(fan.token)));
      await watches[i];
      const { seats } = await retries.call("ListSeats", () => lb(ConcertService).listSeats({ scheduleId }, fan.headers));
      expect(seats).toHaveLength(20);
      const key = `book-${fan.userId}`;
      return retries.call("BookSeats", () => lb(CoordinatorService).bookSeats({ scheduleId, seatNumbers: [i + 1], idempotencyKey: key }, fan.headers));
    });
    const booked = await Promise.all(bookings);
    for (const [i, { payment, reservation }] of booked.entries()) {
      expect(payment!.state).toBe(PaymentState.SUCCEEDED);
      expect(reservation).toMatchObject({ state: ReservationState.CONFIRMED, seatNumbers: [i + 1] });
    }
    // The streams of the stopped coordinator ended Unavailable, and were opened again through the balancer.
    expect(reconnects.count).toBeGreaterThanOrEqual(streamsOnStopped);
    expect(await exits).toEqual(stopped.map(() => 0));
    await untilBalancerSees(instances.filter((i) => i.instance === 2).map((i) => i.address));
    const counted = await balancerStats();
    const sum = (key: "retries" | "redispatches") => counted.reduce((total, s) => total + s[key], 0);
    console.log(
      `balancer: stop of ${stopped.length} instances took ${Date.now() - stopStarted} ms; ${streamsOnStopped} streams on the stopped coordinator, ` +
        `${reconnects.count} watch reconnects; HAProxy retried ${sum("retries")} connections and redispatched ${sum("redispatches")} requests; ` +
        `${retries.seen.length} client retries${retries.seen.length ? `:\n  ${retries.seen.join("\n  ")}` : ""}`,
    );

    // With one instance of each left, a whole booking and its watch go through with no retry at all.
    const before = new Map((await balancerStats()).map((s) => [s.address, s.total]));
    const fan = await enteredFan(concertId);
    await watchUntil(fan.queueToken, QueueState.ADMITTED);
    const { seats } = await lb(ConcertService).listSeats({ scheduleId }, fan.headers);
    expect(seats.filter((seat) => seat.state === SeatState.SOLD).map((seat) => seat.number)).toEqual([1, 2, 3, 4]);
    const { reservation } = await lb(CoordinatorService).reserveSeats({ scheduleId, seatNumbers: [10] }, fan.headers);
    await lb(PointService).chargePoints({ amount: 100n, idempotencyKey: `charge-${randomUUID()}` }, bearer(fan.token));
    const checkout = await lb(CoordinatorService).checkout({ reservationId: reservation!.id, idempotencyKey: `pay-${randomUUID()}` }, fan.headers);
    expect(checkout.payment!.state).toBe(PaymentState.SUCCEEDED);
    expect(checkout.reservation!.state).toBe(ReservationState.CONFIRMED);
    // Every one of those went to the instances left.
    const after = await balancerStats();
    for (const i of stopped) expect(after.find((s) => s.address === `${i.address}:${servicePort}`)!.total, i.service).toBe(before.get(`${i.address}:${servicePort}`));
  });
});
