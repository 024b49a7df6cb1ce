import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import type { Suite } from "../services/platform/suite.js";
import { otlpConfigured, setupTracing } from "../services/platform/tracing.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { dropKeys } from "./redis-keys.js";
import { freePorts, startServerProcess, stopService, type ServerProcess } from "./server-process.js";
import { bearer, client, concertOnSale, gated, inDays, operator, startTestSuite, testSecrets, withQueueToken } from "./support.js";

/**
 * OpenTelemetry tracing (services/platform/tracing.ts): in one process with an in-memory exporter, and the
 * suite split into one OS process per service, each exporting over OTLP/HTTP (JSON) to a receiver served
 * here that keeps the spans in memory: one booking's Checkout is one trace across the processes.
 */

const redisUrl = "redis://127.0.0.1:6379";

describe("the OTEL_* settings", () => {
  it("switch the exporter on only with an endpoint, and never with OTEL_SDK_DISABLED=true", () => {
    expect(otlpConfigured({})).toBe(false);
    expect(otlpConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })).toBe(true);
    expect(otlpConfigured({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/v1/traces" })).toBe(true);
    expect(otlpConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SDK_DISABLED: "true" })).toBe(false);
  });
});

describe("tracing in one process (in-memory exporter)", () => {
  const exporter = new InMemorySpanExporter();
  let suite: Suite;

  beforeAll(async () => {
    expect(setupTracing({ services: ["all"], exporter })).toBe(true);
    suite = await startTestSuite({ REDIS_URL: redisUrl });
  });
  afterAll(() => suite?.close());

  it("a call that crosses services in process is one trace, parent to child, with its store spans", async () => {
    const { concertId } = await concertOnSale(suite, [{ seatCount: 3, price: 10n }]);
    const user = await client(suite, TokenService).issueUserToken({});
    exporter.reset();
    const traceId = randomBytes(16).toString("hex");
    const callerSpanId = randomBytes(8).toString("hex");
    const { queueToken } = await client(suite, TokenService).issueQueueToken(
      { concertId },
      { headers: { ...bearer(user.token).headers, traceparent: `00-${traceId}-${callerSpanId}-01` } },
    );
    expect(queueToken).not.toBe("");

    const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === traceId);
    const byName = (name: string, kind: SpanKind) => spans.find((span) => span.name === name && span.kind === kind);
    const tokenServer = byName("boxoffice.token.v1.TokenService/IssueQueueToken", SpanKind.SERVER);
    expect(tokenServer, spans.map((s) => s.name).join(", ")).toBeDefined();
    expect(tokenServer!.parentSpanContext?.spanId).toBe(callerSpanId);
    expect(tokenServer!.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.service": "boxoffice.token.v1.TokenService", "rpc.method": "IssueQueueToken", "rpc.grpc.status_code": 0 });

    const calls = spans.filter((span) => span.kind === SpanKind.CLIENT && span.attributes["rpc.system"] === "grpc");
    expect(calls.length).toBeGreaterThan(0);
    for (const call of calls) {
      // Each in-process call: its CLIENT span under the caller's SERVER span, the callee's SERVER span under it.
      const callee = spans.find((span) => span.kind === SpanKind.SERVER && span.parentSpanContext?.spanId === call.spanContext().spanId);
      expect(callee?.name, call.name).toBe(call.name);
    }
    const enter = calls.find((span) => span.name.startsWith("boxoffice.queue.v1.") && span.name.endsWith("/EnterQueue"));
    expect(enter, calls.map((s) => s.name).join(", ")).toBeDefined();
    expect(enter!.parentSpanContext?.spanId).toBe(tokenServer!.spanContext().spanId);

    // Redis commands of the queue, under the queue's SERVER span.
    const queueServer = spans.find((span) => span.kind === SpanKind.SERVER && span.parentSpanContext?.spanId === enter!.spanContext().spanId)!;
    const redis = spans.filter((span) => span.attributes["db.system"] === "redis");
    expect(redis.length).toBeGreaterThan(0);
    expect(redis.some((span) => span.parentSpanContext?.spanId === queueServer.spanContext().spanId)).toBe(true);
    // Every span but the first is under another of the trace: one tree.
    expectConnected(spans.map(fromSdk), callerSpanId);
  });

  it("a call without traceparent starts a trace of its own; PostgreSQL queries are spans in it", async () => {
    exporter.reset();
    await client(suite, ConcertAdminService).createConcert(
      { title: `Traced ${randomUUID().slice(0, 8)}`, venue: "Hall", schedules: [{ startsAt: inDays(12), seatCount: 2, price: 5n }] },
      operator,
    );
    const spans = exporter.getFinishedSpans();
    const server = spans.find((span) => span.name.endsWith("/CreateConcert") && span.kind === SpanKind.SERVER)!;
    expect(server.parentSpanContext).toBeUndefined();
    const queries = spans.filter((span) => span.spanContext().traceId === server.spanContext().traceId && span.attributes["db.system"] === "postgresql");
    expect(queries.length, spans.map((s) => `${s.name} ${s.spanContext().traceId.slice(0, 6)} ${s.parentSpanContext?.spanId}`).join("\n")).toBeGreaterThan(0);
    // The concert, its dates and its seats are written by one statement (a with … insert).
    expect(queries.map((span) => span.attributes["db.operation"])).toContain("with");
  });
});

// ---------------------------------------------------------------- split mode

/** A span as the processes export it (OTLP JSON), with the services of the process that sent it. */
interface Exported {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  kind: "server" | "client" | "other";
  attributes: Record<string, unknown>;
  process: string;
}

const fromSdk = (span: ReadableSpan): Exported => ({
  traceId: span.spanContext().traceId,
  spanId: span.spanContext().spanId,
  parentSpanId: span.parentSpanContext?.spanId,
  name: span.name,
  kind: span.kind === SpanKind.SERVER ? "server" : span.kind === SpanKind.CLIENT ? "client" : "other",
  attributes: span.attributes,
  process: "this",
});

/** Each span's parent is in the trace, but for the one whose parent is the caller's (`root`). */
function expectConnected(spans: Exported[], root: string) {
  const ids = new Set(spans.map((span) => span.spanId));
  const orphans = spans.filter((span) => span.parentSpanId !== root && (span.parentSpanId === undefined || !ids.has(span.parentSpanId)));
  expect(orphans.map((span) => `${span.process}: ${span.name}`)).toEqual([]);
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
const valueOf = (value: OtlpValue): unknown => value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : (value.boolValue ?? value.doubleValue));
const attributesOf = (list: OtlpAttribute[] | undefined) => Object.fromEntries((list ?? []).map(({ key, value }) => [key, valueOf(value)]));
/** OTLP JSON ids are hex; a receiver that meets base64 (the protobuf JSON mapping) reads that too. */
const idOf = (id: string | undefined) => (!id ? undefined : /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, "base64").toString("hex")) || undefined;

/** The OTLP/HTTP receiver (JSON): every span the processes export, kept in memory. */
function otlpReceiver() {
  const spans: Exported[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (req.url === "/v1/traces" && req.method === "POST" && (req.headers["content-type"] ?? "").includes("json")) {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          resourceSpans?: {
            resource?: { attributes?: OtlpAttribute[] };
            scopeSpans?: { spans?: { traceId: string; spanId: string; parentSpanId?: string; name: string; kind?: number; attributes?: OtlpAttribute[] }[] }[];
          }[];
        };
        for (const { resource, scopeSpans } of body.resourceSpans ?? []) {
          const process = String(attributesOf(resource?.attributes)["boxoffice.services"] ?? "?");
          for (const { spans: list } of scopeSpans ?? []) {
            for (const span of list ?? []) {
              spans.push({
                traceId: idOf(span.traceId)!,
                spanId: idOf(span.spanId)!,
                parentSpanId: idOf(span.parentSpanId),
                name: span.name,
                // OTLP's SpanKind: 2 server, 3 client.
                kind: span.kind === 2 ? "server" : span.kind === 3 ? "client" : "other",
                attributes: attributesOf(span.attributes),
                process,
              });
            }
          }
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
        return;
      }
      res.writeHead(404);
      res.end();
    });
  });
  return { spans, server };
}



describe("tracing in split mode (one process per service, OTLP to an in-memory receiver)", () => {
  const roles = ["token", "queue", "concert", "point", "payment", "coordinator"] as const;
  type Role = (typeof roles)[number];
  const redisPrefix = `test:tracing:${randomUUID()}:`;
  const databaseName = `boxoffice_tracing_${process.pid}_${Date.now().toString(36)}`;
  const processes: Partial<Record<Role, ServerProcess>> = {};
  const urls = {} as Record<Role, string>;
  const output: Partial<Record<Role, string>> = {};
  const receiver = otlpReceiver();
  const transports = new Map<Role, Transport>();
  let closing = false;

  const on = <T extends DescService>(role: Role, service: T): Client<T> => {
    let transport = transports.get(role);
    if (!transport) transports.set(role, (transport = createGrpcTransport({ baseUrl: urls[role] })));
    return createClient(service, transport);
  };

  beforeAll(async () => {
    await new Promise<void>((resolve) => receiver.server.listen(0, "127.0.0.1", resolve));
    const receiverUrl = `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}`;
    const databaseUrl = await createDatabase(databaseName);
    const ports = await freePorts(roles.length);
    roles.forEach((role, i) => (urls[role] = `http://127.0.0.1:${ports[i]}`));
    const serviceUrls = Object.fromEntries(roles.map((role) => [`${role.toUpperCase()}_URL`, urls[role]]));
    const started = await Promise.allSettled(
      roles.map(async (role) => {
        const env: NodeJS.ProcessEnv = {
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
          ...serviceUrls,
          SERVICES: role,
          PORT: urls[role].split(":").at(-1),
          DATA_DIR: mkdtempSync(join(tmpdir(), `boxoffice-tracing-${role}-`)),
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiverUrl}/v1/traces`,
          OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
          OTEL_BSP_SCHEDULE_DELAY: "100",
          OTEL_SERVICE_NAME: `boxoffice-${role}`,
        };
        delete env[`${role.toUpperCase()}_URL`];
        delete env.OTEL_SDK_DISABLED;
        const server = await startServerProcess(env);
        if (closing) return void (await stopService(server));
        processes[role] = server;
        output[role] = "";
        const keep = (chunk: Buffer) => (output[role] += chunk.toString());
        server.process.stdout!.on("data", keep);
        server.process.stderr!.on("data", keep);
      }),
    );
    const failed = started.flatMap((result, i) => (result.status === "rejected" ? [`${roles[i]}: ${String(result.reason)}`] : []));
    if (failed.length > 0) throw new Error(`processes failed to start:\n${failed.join("\n")}`);
  }, 90_000);

  afterAll(async () => {
    closing = true;
    const codes = await Promise.all(roles.map(async (role) => [role, processes[role] ? await stopService(processes[role]) : "not started"] as const));
    receiver.server.close();
    await dropKeys(redisUrl, redisPrefix);
    await dropDatabase(databaseName);
    const unclean = codes.filter(([, code]) => code !== 0).map(([role, code]) => `${role} exited with ${code}:\n${output[role] ?? ""}`);
    expect(Object.fromEntries(codes), unclean.join("\n")).toEqual(Object.fromEntries(roles.map((role) => [role, 0])));
  }, 30_000);

  it("one booking's Checkout is one trace across the processes", async () => {
    const created = await on("concert", ConcertAdminService).createConcert(
      { title: `Tracing ${randomUUID().slice(0, 8)}`, venue: "Trace Hall", schedules: [{ startsAt: inDays(10), seatCount: 5, price: 100n }] },
      operator,
    );
    const concertId = created.concert!.id;
    const scheduleId = created.schedules[0]!.id;

    const user = await on("token", TokenService).issueUserToken({});
    const { queueToken } = await on("token", TokenService).issueQueueToken({ concertId }, bearer(user.token));
    // Watched on the coordinator's raw gRPC path (raw-streams.ts), no interceptors: it continues the caller's trace too.
    const watchTraceId = randomBytes(16).toString("hex");
    const watchCallerSpanId = randomBytes(8).toString("hex");
    const watchAbort = new AbortController();
    let admitted = false;
    for await (const message of on("coordinator", CoordinatorService).watchQueueStatus(
      {},
      { headers: { ...withQueueToken(queueToken).headers, traceparent: `00-${watchTraceId}-${watchCallerSpanId}-01` }, signal: watchAbort.signal, timeoutMs: 15_000 },
    )) {
      if (message.status!.state === QueueState.ADMITTED) {
        admitted = true;
        break;
      }
    }
    watchAbort.abort();
    expect(admitted).toBe(true);
    const fan = gated(user.token, queueToken);
    const { reservation } = await on("coordinator", CoordinatorService).reserveSeats({ scheduleId, seatNumbers: [1, 2] }, fan);
    await on("point", PointService).chargePoints({ amount: 1_000n, idempotencyKey: `charge-${randomUUID()}` }, bearer(user.token));

    const traceId = randomBytes(16).toString("hex");
    const callerSpanId = randomBytes(8).toString("hex");
    const checkout = await on("coordinator", CoordinatorService).checkout(
      { reservationId: reservation!.id, idempotencyKey: `pay-${randomUUID()}` },
      { headers: { ...fan.headers, traceparent: `00-${traceId}-${callerSpanId}-01` } },
    );
    expect(checkout.payment!.state).toBe(PaymentState.SUCCEEDED);

    // The processes export every 100 ms: wait until the payment's part and the coordinator's own span are in.
    const inTrace = () => receiver.spans.filter((span) => span.traceId === traceId);
    const waitUntil = Date.now() + 10_000;
    while (Date.now() < waitUntil) {
      const spans = inTrace();
      if (spans.some((s) => s.parentSpanId === callerSpanId) && spans.some((s) => s.process === "payment" && s.kind === "server")) {
        await new Promise((resolve) => setTimeout(resolve, 400)); // the rest of the batch, from the slower processes
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const spans = inTrace();
    const summary = spans.map((s) => `${s.process} ${s.kind} ${s.name}`).join("\n");

    const root = spans.find((span) => span.parentSpanId === callerSpanId);
    expect(root, summary).toMatchObject({ process: "coordinator", kind: "server", name: "boxoffice.coordinator.v1.CoordinatorService/Checkout" });
    expect(root!.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.method": "Checkout", "rpc.grpc.status_code": 0 });

    const processesInTrace = new Set(spans.map((span) => span.process));
    expect(processesInTrace.size, summary).toBeGreaterThanOrEqual(3);
    for (const role of ["coordinator", "payment", "point", "concert"]) expect([...processesInTrace], summary).toContain(role);

    // The payment's SERVER span is a child of the coordinator's CLIENT span for the same call.
    const paymentServer = spans.find((span) => span.process === "payment" && span.kind === "server");
    expect(paymentServer, summary).toBeDefined();
    const parent = spans.find((span) => span.spanId === paymentServer!.parentSpanId);
    expect(parent, summary).toMatchObject({ process: "coordinator", kind: "client", name: paymentServer!.name });
    // And each call across processes joins the same way.
    for (const call of spans.filter((span) => span.kind === "client" && span.attributes["rpc.system"] === "grpc")) {
      const callee = spans.find((span) => span.kind === "server" && span.parentSpanId === call.spanId);
      expect(callee?.name, `${call.process} → ${call.name}\n${summary}`).toBe(call.name);
      expect(callee!.process).not.toBe(call.process);
    }

    // PostgreSQL queries (and the Redis commands of the queue) are spans of the trace.
    const queries = spans.filter((span) => span.attributes["db.system"] === "postgresql");
    expect(queries.length, summary).toBeGreaterThan(0);
    expect(new Set(queries.map((span) => span.process)).size, summary).toBeGreaterThanOrEqual(2);
    expect(queries.every((span) => typeof span.attributes["db.operation"] === "string")).toBe(true);
    expectConnected(spans, callerSpanId);

    // The watch: the coordinator's SERVER span under the caller's span, ended when the stream was.
    const watch = receiver.spans.find((span) => span.traceId === watchTraceId && span.kind === "server" && span.parentSpanId === watchCallerSpanId);
    expect(watch, receiver.spans.filter((span) => span.traceId === watchTraceId).map((s) => s.name).join(", ")).toMatchObject({
      process: "coordinator",
      name: "boxoffice.coordinator.v1.CoordinatorService/WatchQueueStatus",
      parentSpanId: watchCallerSpanId,
    });
    // The refresh shared by every watch stream is in no one watcher's trace.
    expect(receiver.spans.filter((span) => span.traceId === watchTraceId && span.name.endsWith("/GetQueueStatuses"))).toEqual([]);
  }, 60_000);
});
