// Restarts and deploys do not lose waiting fans: a server that shuts down ends
// its WatchQueueStatus streams with Unavailable, and the fan watches again, on
// another instance or on the same one once it is back, with the same queue
// token and the same place in line.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, onTestFinished, vi } from "vitest";
import { ConcertAdminService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueAdminService, QueueInternalService, QueueService, QueueState, QueueStatusSchema, type QueueStatus } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import type { Booking } from "../services/coordinator/booking.js";
import { CoordinatorHandlers } from "../services/coordinator/coordinator-service.js";
import { QueueWatch } from "../services/coordinator/queue-watch.js";
import { errorMapper } from "../services/platform/errors.js";
import { HealthStatus } from "../services/platform/health.js";
import { startHost } from "../services/platform/host.js";
import { reconnectingMessage } from "../services/web/messages.js";
import { dropKeys } from "./redis-keys.js";
import { startServerProcess, type ServerProcess } from "./server-process.js";
import { bearer, gated, inDays, operator, testSecrets, withQueueToken } from "./support.js";
import { watchLogs } from "../services/platform/log.js";

const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:reconnect:${randomUUID()}:`;
const wait = { timeout: 10_000, interval: 50 };

/** How a stream ended: "clean" for a normal end, else the Connect code it failed with. */
async function endOf(stream: Promise<void>): Promise<"clean" | Code> {
  try {
    await stream;
    return "clean";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

// ---------------------------------------------------------------- the coordinator's watch behind a real host

describe("the coordinator's watch at shutdown", () => {
  const waiting = create(QueueStatusSchema, { state: QueueState.WAITING, position: 2n, peopleAhead: 1n, concertId: "concert-1" });
  /** The queue as the watch sees it: one fan, waiting, forever. */
  const queue = createRouterTransport(({ service }) => {
    service(QueueService, { getQueueStatus: () => ({ status: waiting }) });
    service(QueueInternalService, { getQueueStatuses: (req) => ({ statuses: req.queueTokens.map(() => waiting) }) });
  });

  async function coordinatorHost() {
    const queueWatch = new QueueWatch(createClient(QueueService, queue), createClient(QueueInternalService, queue), { refreshMs: 50, heartbeatMs: 200 });
    const handlers = new CoordinatorHandlers(queueWatch, {} as Booking);
    const host = await startHost({
      host: "127.0.0.1",
      port: 0,
      health: new HealthStatus(),
      shutdownGraceMs: 10_000,
      // The production error mapper: it logs what it does not recognise, so log noise shows up here.
      routes: (router) => router.service(CoordinatorService, handlers, { interceptors: [errorMapper] }),
    });
    return { host, queueWatch };
  }

  const transports: Record<"grpc" | "connect", (baseUrl: string) => Transport> = {
    grpc: (baseUrl) => createGrpcTransport({ baseUrl }),
    connect: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  };

  afterEach(() => {
    vi.restoreAllMocks();
  });

  it.each(["grpc", "connect"] as const)("over %s: a caller's cancel ends it quietly, the server's shutdown with Unavailable", async (protocol) => {
    const logged = vi.spyOn(console, "error");
    const errors = watchLogs();
    onTestFinished(errors.stop);
    const { host, queueWatch } = await coordinatorHost();
    const coordinator = createClient(CoordinatorService, transports[protocol](host.url));
    const watch = (signal?: AbortSignal) => {
      const seen: QueueStatus[] = [];
      const stream = (async () => {
        for await (const { status } of coordinator.watchQueueStatus({}, { ...withQueueToken("token-1"), signal })) seen.push(status!);
      })();
      return { seen, ended: endOf(stream) };
    };

    const cancel = new AbortController();
    const cancelled = watch(cancel.signal);
    await expect.poll(() => cancelled.seen.length).toBe(1);
    expect(queueWatch.size).toBe(1);
    cancel.abort();
    expect(await cancelled.ended).toBe(Code.Canceled);
    await expect.poll(() => queueWatch.size).toBe(0); // the server let go of the stream

    const open = watch();
    await expect.poll(() => open.seen.length).toBe(1);
    expect(open.seen[0]!.position).toBe(2n);
    await host.close();
    expect(await open.ended).toBe(Code.Unavailable);
    expect(queueWatch.size).toBe(0);
    expect(logged).not.toHaveBeenCalled();
    expect(errors.entries.filter((entry) => entry.level >= 50)).toEqual([]);
    queueWatch.close();
  });
});

// ---------------------------------------------------------------- real server processes

/** The environment of a whole-suite server process on the test's PostgreSQL database and real Redis. */
function serverEnv(port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ["SERVICES"]) delete env[name];
  for (const name of Object.keys(env)) if (/^(TOKEN|QUEUE|CONCERT|RESERVATION|POINT|PAYMENT|COORDINATOR)_URL$/.test(name)) delete env[name];
  return {
    ...env,
    DATABASE_URL: inject("databaseUrl"),
    DATABASE_POOL_SIZE: "3",
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisPrefix,
    ...testSecrets,
    HOST: "127.0.0.1",
    PORT: String(port),
    DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-reconnect-")),
    SEED_DEMO: "false",
    QUEUE_TICK_MS: "20",
    WATCH_REFRESH_MS: "100",
    SHUTDOWN_GRACE_MS: "2000",
  };
}

/** Every process the tests started, with what it printed (shown when a test fails), stopped in afterAll. */
const started: { server: ServerProcess; log: string[]; exit?: number | string | null }[] = [];

async function startServer(port = 0) {
  const server = await startServerProcess(serverEnv(port));
  const entry: (typeof started)[number] = { server, log: [] };
  const keep = (chunk: Buffer) => entry.log.push(chunk.toString());
  server.process.stdout!.on("data", keep);
  server.process.stderr!.on("data", keep);
  server.process.once("exit", (code, signal) => (entry.exit = code ?? signal));
  started.push(entry);
  return server;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

afterEach((context) => {
  if (context.task.result?.state !== "fail") return;
  for (const entry of started) console.log(`output of server ${entry.server.process.pid} (exit ${entry.exit ?? "running"}):\n${entry.log.join("").slice(-4000)}`);
});

afterAll(async () => {
  const codes: (number | string | null)[] = [];
  for (const entry of started) {
    if (entry.exit !== undefined) continue;
    const killer = setTimeout(() => entry.server.process.kill("SIGKILL"), 15_000);
    codes.push(await entry.server.stop().finally(() => clearTimeout(killer)));
  }
  await dropKeys(redisUrl, redisPrefix);
  expect(codes.every((code) => code === 0), `exit codes after SIGTERM: ${codes.join(", ")}`).toBe(true);
}, 30_000);

/** Clients of one server process over gRPC (h2c). */
function clientsOf(url: string) {
  const transport = createGrpcTransport({ baseUrl: url });
  return {
    tokens: createClient(TokenService, transport),
    queue: createClient(QueueService, transport),
    queueAdmin: createClient(QueueAdminService, transport),
    admin: createClient(ConcertAdminService, transport),
    coordinator: createClient(CoordinatorService, transport),
  };
}

/** A concert on sale whose waiting room admits one fan at a time. */
async function concertAdmittingOne(c: ReturnType<typeof clientsOf>, title: string) {
  const { concert, schedules } = await c.admin.createConcert({ title, venue: "Restart Hall", schedules: [{ startsAt: inDays(30), seatCount: 4, price: 100n }] }, operator);
  await c.queueAdmin.setAdmissionPolicy({ concertId: concert!.id, policy: { maxActive: 1 } }, operator);
  return { concertId: concert!.id, scheduleId: schedules[0]!.id };
}

/** A new fan in the concert's waiting room, once the queue has placed them in `state`. */
async function fanIn(queue: Client<typeof QueueService>, tokens: Client<typeof TokenService>, concertId: string, state: QueueState) {
  const user = await tokens.issueUserToken({});
  const { queueToken } = await queue.enterQueue({ concertId }, bearer(user.token));
  await expect.poll(async () => (await queue.getQueueStatus({}, withQueueToken(queueToken))).status!.state, wait).toBe(state);
  return { ...user, queueToken, headers: gated(user.token, queueToken) };
}

describe("two server processes on PostgreSQL and Redis", () => {
  it("A's shutdown ends the fan's watch with Unavailable; on B the fan keeps the same place and hears ADMITTED", async () => {
    // One after the other: the second finds the migrations applied.
    const a = await startServer();
    const b = await startServer();
    const onA = clientsOf(a.url);
    const onB = clientsOf(b.url);
    const { concertId } = await concertAdmittingOne(onA, `Reconnect ${randomUUID().slice(0, 8)}`);
    const first = await fanIn(onA.queue, onA.tokens, concertId, QueueState.ADMITTED);
    const fan = await fanIn(onA.queue, onA.tokens, concertId, QueueState.WAITING);

    const heardOnA: QueueStatus[] = [];
    const watchOnA = endOf(
      (async () => {
        for await (const { status } of onA.coordinator.watchQueueStatus({}, fan.headers)) heardOnA.push(status!);
      })(),
    );
    await expect.poll(() => heardOnA.length, wait).toBeGreaterThan(0);
    expect(heardOnA[0]).toMatchObject({ state: QueueState.WAITING, position: 1n });

    expect(await a.stop()).toBe(0);
    expect(await watchOnA).toBe(Code.Unavailable);

    const heardOnB: QueueStatus[] = [];
    const watchOnB = endOf(
      (async () => {
        for await (const { status } of onB.coordinator.watchQueueStatus({}, fan.headers)) heardOnB.push(status!);
      })(),
    );
    await expect.poll(() => heardOnB.length, wait).toBeGreaterThan(0);
    expect(heardOnB[0]).toMatchObject({ state: QueueState.WAITING, position: 1n, concertId });

    await onB.queue.leaveQueue({}, withQueueToken(first.queueToken));
    await expect.poll(() => heardOnB.at(-1)!.state, wait).toBe(QueueState.ADMITTED);
    expect(await watchOnB).toBe("clean"); // the stream ends after the final state
    expect(heardOnB.every((status) => status.state === QueueState.ADMITTED || status.position === 1n)).toBe(true);
  }, 60_000);
});

describe("the booking page across a restart", () => {
  const chromiumPath = "/usr/bin/chromium";
  let browser: Browser | undefined;
  afterAll(() => browser?.close());

  it("reconnects by itself when its server stops and starts again on the same port, and shows the admission", async () => {
    expect(existsSync(chromiumPath), `Debian's Chromium is needed at ${chromiumPath} (apt-get install -y chromium)`).toBe(true);
    const port = await freePort();
    const [server, launched] = await Promise.all([
      startServer(port),
      chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] }),
    ]);
    browser = launched;
    const c = clientsOf(server.url);
    const title = `Restart ${randomUUID().slice(0, 8)}`;
    const { concertId, scheduleId } = await concertAdmittingOne(c, title);
    const ahead = await fanIn(c.queue, c.tokens, concertId, QueueState.ADMITTED);

    const page: Page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    page.on("console", (message) => {
      // Chromium logs every refused connection while the server is down; anything else is a bug.
      if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) pageErrors.push(message.text());
    });
    await page.goto(server.url + "/");
    await page.locator("body[data-ready=true]").waitFor({ timeout: 10_000 });
    const byTestId = (id: string) => page.locator(`[data-testid="${id}"]`);
    await page.getByRole("button", { name: `Join the queue for ${title}` }).click();
    await expect.poll(() => byTestId("queue-state").getAttribute("data-state"), wait).toBe("WAITING");
    await expect.poll(() => byTestId("queue-position").textContent(), wait).toBe("#1");
    expect(await byTestId("queue-connection").isVisible()).toBe(false);

    await page.evaluate(() => Object.assign(window, { beforeRestart: true })); // gone if the page were reloaded

    expect(await server.stop()).toBe(0);
    await expect.poll(() => byTestId("queue-connection").textContent(), wait).toBe(reconnectingMessage);
    expect(await byTestId("queue-connection").isVisible()).toBe(true);
    expect(await byTestId("queue-position").textContent()).toBe("#1"); // the last known place stays on screen

    const again = await startServer(port);
    expect(again.url).toBe(server.url);
    // Backoff is capped at 10 s: the page is back within that of the server.
    await expect.poll(() => byTestId("queue-connection").isVisible(), { timeout: 15_000, interval: 100 }).toBe(false);
    expect(await byTestId("queue-position").textContent()).toBe("#1");

    await clientsOf(again.url).queue.leaveQueue({}, withQueueToken(ahead.queueToken));
    await expect.poll(() => byTestId("queue-state").getAttribute("data-state"), wait).toBe("ADMITTED");
    await byTestId(`date-${scheduleId}`).waitFor({ timeout: 10_000 }); // the page moved on to the dates
    expect(await byTestId("message").textContent()).toBe("");
    expect(await page.evaluate(() => "beforeRestart" in window)).toBe(true);
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
