import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { randomUUID } from "node:crypto";
import { PointInternalService, PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueAdminService, QueueInternalService, QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import { modules } from "../services/modules.js";
import { healthEndpoints, HealthStatus, type StoreProbe } from "../services/platform/health.js";
import { startSuite, type ServiceModule, type Suite } from "../services/platform/suite.js";
import { CuttableProxy, databaseBehindProxy } from "./cuttable-proxy.js";
import { startRedis, type RedisProcess } from "./redis-cluster.js";
import { client, testConfig } from "./support.js";

/** The module with these probes added to what it creates. */
function withProbes(module: ServiceModule, probes: StoreProbe[]): ServiceModule {
  return { ...module, create: async (deps) => ({ ...(await module.create(deps)), probes }) };
}

const moduleNamed = (name: string) => modules.find((module) => module.name === name)!;

async function readyz(suite: Suite) {
  const response = await fetch(`${suite.host.url}/readyz`);
  return { status: response.status, body: (await response.json()) as { down?: { store: string; services: string[] }[] } };
}

/** Every status a Watch stream sends, until `stop` aborts. */
function watchStatuses(suite: Suite, service: string, stop: AbortSignal) {
  const seen: Serving[] = [];
  const ended = (async () => {
    for await (const { status } of client(suite, Health).watch({ service }, { signal: stop })) seen.push(status);
  })().catch(() => undefined);
  return { seen, ended };
}

describe("PostgreSQL cut off", () => {
  let proxy: CuttableProxy;
  let suite: Suite;
  beforeAll(async () => {
    let databaseUrl: string;
    ({ proxy, databaseUrl } = await databaseBehindProxy(inject("databaseUrl")));
    // The default probe interval (1000 ms): what a deployment runs with.
    suite = await startSuite(testConfig({ DATABASE_URL: databaseUrl, SERVICES: "point" }), modules);
  });
  afterAll(async () => {
    await proxy?.open().catch(() => undefined);
    await suite?.close();
    await proxy?.cut();
  });

  it("turns the point services NOT_SERVING within 2.5 s, /readyz 503 naming PostgreSQL, /healthz still 200; back to SERVING when it returns", async () => {
    const health = client(suite, Health);
    expect((await health.check({ service: PointService.typeName })).status).toBe(Serving.SERVING);
    expect((await readyz(suite)).status).toBe(200);

    await proxy.cut();
    const cutAt = Date.now();
    await expect.poll(async () => (await health.check({ service: PointService.typeName })).status, { timeout: 2_500, interval: 50 }).toBe(Serving.NOT_SERVING);
    const noticedMs = Date.now() - cutAt;
    expect(noticedMs).toBeLessThan(2_500);
    expect((await health.check({})).status).toBe(Serving.NOT_SERVING);
    expect((await health.check({ service: PointInternalService.typeName })).status).toBe(Serving.NOT_SERVING);
    const notReady = await readyz(suite);
    expect(notReady.status).toBe(503);
    expect(notReady.body.down).toEqual([{ store: "PostgreSQL", services: expect.arrayContaining([PointService.typeName, PointInternalService.typeName]) }]);
    expect((await fetch(`${suite.host.url}/healthz`)).status).toBe(200);

    await proxy.open();
    await expect.poll(async () => (await health.check({ service: PointService.typeName })).status, { timeout: 3_000, interval: 50 }).toBe(Serving.SERVING);
    expect((await health.check({})).status).toBe(Serving.SERVING);
    expect((await readyz(suite)).status).toBe(200);
    console.log(`PostgreSQL cut noticed by health after ${noticedMs} ms`);
  });
});

describe("the waiting room's Redis down", () => {
  const queueServices = [QueueService.typeName, QueueInternalService.typeName, QueueAdminService.typeName];
  let redis: RedisProcess;
  let suite: Suite;
  beforeAll(async () => {
    redis = await startRedis();
    suite = await startSuite(testConfig({ SERVICES: "queue", REDIS_URL: redis.url, REDIS_KEY_PREFIX: `test:health:${randomUUID()}:`, HEALTH_PROBE_MS: "200" }), modules);
  });
  afterAll(async () => {
    await suite?.close();
    await redis?.kill();
  });

  const queueStatus = async () => (await client(suite, Health).check({ service: QueueService.typeName })).status;

  it("killed: the queue's services are NOT_SERVING and /readyz names Redis; started again: SERVING", async () => {
    expect(await queueStatus()).toBe(Serving.SERVING);
    await redis.kill();
    await expect.poll(queueStatus, { timeout: 2_500, interval: 50 }).toBe(Serving.NOT_SERVING);
    const notReady = await readyz(suite);
    expect(notReady.status).toBe(503);
    expect(notReady.body.down).toEqual([{ store: "Redis (waiting room)", services: queueServices }]);
    expect((await fetch(`${suite.host.url}/healthz`)).status).toBe(200);

    await redis.start();
    await expect.poll(queueStatus, { timeout: 3_000, interval: 50 }).toBe(Serving.SERVING);
    expect((await readyz(suite)).status).toBe(200);
  });

  it("frozen (nothing answers on an open connection): NOT_SERVING after the cut-off; resumed: SERVING", async () => {
    expect(await queueStatus()).toBe(Serving.SERVING);
    redis.pause();
    try {
      await expect.poll(queueStatus, { timeout: 2_500, interval: 50 }).toBe(Serving.NOT_SERVING);
    } finally {
      redis.resume();
    }
    await expect.poll(queueStatus, { timeout: 3_000, interval: 50 }).toBe(Serving.SERVING);
  });
});

describe("a service's own probes", () => {
  let failing = false;
  /** While set, checks never answer until released, ignoring their signal as a stuck driver would. */
  let hanging: { started: number; signal?: AbortSignal; release?: () => void } | undefined;
  const flaky: StoreProbe = {
    store: "Test store",
    check: async (signal) => {
      if (hanging) {
        const hung = hanging;
        hung.started++;
        hung.signal = signal;
        await new Promise<void>((resolve) => (hung.release = resolve));
        return;
      }
      if (failing) throw new Error("test store refuses");
    },
  };
  let suite: Suite;
  beforeAll(async () => {
    suite = await startSuite(testConfig({ SERVICES: "token,point", HEALTH_PROBE_MS: "100" }), [withProbes(moduleNamed("token"), [flaky]), moduleNamed("point")]);
  });
  afterAll(() => suite?.close());

  it("a failing probe turns only its module's services and the whole process NOT_SERVING, and a Watch stream hears it go and come back", async () => {
    const health = client(suite, Health);
    const stop = new AbortController();
    const watch = watchStatuses(suite, TokenService.typeName, stop.signal);
    const whole = watchStatuses(suite, "", stop.signal);
    await expect.poll(() => watch.seen).toEqual([Serving.SERVING]);

    failing = true;
    await expect.poll(() => watch.seen, { timeout: 1_000, interval: 10 }).toEqual([Serving.SERVING, Serving.NOT_SERVING]);
    expect((await health.check({ service: TokenService.typeName })).status).toBe(Serving.NOT_SERVING);
    expect((await health.check({})).status).toBe(Serving.NOT_SERVING);
    expect((await health.check({ service: PointService.typeName })).status).toBe(Serving.SERVING);
    const notReady = await readyz(suite);
    expect(notReady.status).toBe(503);
    expect(notReady.body.down).toEqual([{ store: "Test store", services: [TokenService.typeName] }]);

    failing = false;
    await expect.poll(() => watch.seen, { timeout: 1_000, interval: 10 }).toEqual([Serving.SERVING, Serving.NOT_SERVING, Serving.SERVING]);
    expect(whole.seen).toEqual([Serving.SERVING, Serving.NOT_SERVING, Serving.SERVING]);
    expect((await readyz(suite)).status).toBe(200);
    stop.abort();
    await Promise.all([watch.ended, whole.ended]);
  });

  it("a check that never answers counts as down after its 1 s cut-off (its signal aborted), and up again once it answers", async () => {
    const health = client(suite, Health);
    const stuck: NonNullable<typeof hanging> = { started: 0 };
    hanging = stuck;
    const started = Date.now();
    await expect.poll(async () => (await health.check({ service: TokenService.typeName })).status, { timeout: 2_500, interval: 20 }).toBe(Serving.NOT_SERVING);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(stuck.signal?.aborted).toBe(true);
    // Several rounds (every 100 ms) later the stuck check is still the only one: it is not started again beside itself.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(stuck.started).toBe(1);
    hanging = undefined;
    expect((await health.check({ service: TokenService.typeName })).status).toBe(Serving.NOT_SERVING);
    stuck.release!();
    await expect.poll(async () => (await health.check({ service: TokenService.typeName })).status, { timeout: 1_000, interval: 20 }).toBe(Serving.SERVING);
  });

  describe("/healthz and /readyz", () => {
    it("answer over HTTP/1.1", async () => {
      const healthz = await fetch(`${suite.host.url}/healthz`);
      expect(healthz.status).toBe(200);
      expect(await healthz.json()).toEqual({ status: "serving" });
      const ready = await readyz(suite);
      expect(ready).toEqual({ status: 200, body: { status: "ready" } });
      expect((await fetch(`${suite.host.url}/no-such-page`)).status).toBe(404);
    });

    it("answer over h2c", async () => {
      const session = http2.connect(suite.host.url);
      const get = (path: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const stream = session.request({ ":method": "GET", ":path": path });
          let status = 0;
          let body = "";
          stream.on("response", (headers) => (status = Number(headers[":status"])));
          stream.setEncoding("utf8");
          stream.on("data", (chunk: string) => (body += chunk));
          stream.on("end", () => resolve({ status, body }));
          stream.on("error", reject);
        });
      try {
        expect(await get("/healthz")).toEqual({ status: 200, body: '{"status":"serving"}\n' });
        expect(await get("/readyz")).toEqual({ status: 200, body: '{"status":"ready"}\n' });
        failing = true;
        await expect.poll(async () => (await get("/readyz")).status, { timeout: 1_000, interval: 20 }).toBe(503);
        expect(JSON.parse((await get("/readyz")).body)).toEqual({ status: "stores down", down: [{ store: "Test store", services: [TokenService.typeName] }] });
        expect((await get("/healthz")).status).toBe(200);
      } finally {
        failing = false;
        session.close();
      }
      await expect.poll(async () => (await readyz(suite)).status, { timeout: 1_000, interval: 20 }).toBe(200);
    });

    it("both answer 503 once the process shuts down", async () => {
      const health = new HealthStatus();
      const server = http.createServer(healthEndpoints(health));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
      const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      try {
        expect((await fetch(`${url}/healthz`)).status).toBe(200);
        health.shutDown();
        expect((await fetch(`${url}/healthz`)).status).toBe(503);
        expect((await fetch(`${url}/readyz`)).status).toBe(503);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });
});
