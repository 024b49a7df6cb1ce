import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span, type TextMapGetter, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, SimpleSpanProcessor, TracerProvider, type SpanExporter } from "@opentelemetry/sdk-trace";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { untilEnd } from "./call-end.js";
import { logger } from "./log.js";

/**
 * OpenTelemetry tracing (W3C Trace Context). Set up once per process (main.ts: `setupTracing`), before the suite:
 *
 * - always: `traceparent` is carried over every call between services, in process and over h2c. A call that
 *   arrives with one passes it on to the calls it makes, so logs (accessLog's traceId) join up across processes
 *   even with no exporter. A call without one costs one header read.
 * - with an exporter (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, OTEL_SDK_DISABLED
 *   not true): spans for every RPC served (SERVER, `<package.Service>/<Method>`), every call to another service
 *   (CLIENT), every PostgreSQL query and every Redis command, sent over OTLP/HTTP (JSON) in batches.
 *
 * The interceptors read the module's state, so suites started before or without a setup (tests) pass calls on
 * untouched; a second setup in one process is a no-op.
 */

const tracerName = "boxoffice";
let tracer: Tracer | undefined;
let provider: TracerProvider | undefined;
/** Set once the propagator and the context manager are registered (setupTracing). */
let propagating = false;

export interface TracingOptions {
  /** The services this process serves (the `boxoffice.services` resource attribute). */
  services: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** An exporter to use instead of OTLP, sent each span as it ends (tests: InMemorySpanExporter). */
  exporter?: SpanExporter;
}

/** Whether the OTEL_* settings switch the OTLP exporter on. */
export function otlpConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? "").trim().toLowerCase() === "true") return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim());
}

/**
 * Registers the W3C propagator and the async context manager and, when an exporter is configured (or given),
 * a tracer provider. Idempotent: the first call in a process decides. Returns whether spans are recorded.
 */
export function setupTracing(options: TracingOptions): boolean {
  if (propagating) return tracer !== undefined;
  propagating = true;
  const env = options.env ?? process.env;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  let processor;
  if (options.exporter) processor = new SimpleSpanProcessor({ exporter: options.exporter });
  else if (otlpConfigured(env)) {
    const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL;
    if (protocol && protocol !== "http/json") logger("tracing").warn(`OTEL_EXPORTER_OTLP_PROTOCOL ${protocol} is not supported: traces are sent as http/json`);
    const number = (name: string) => {
      const value = Number(env[name]);
      return env[name] && Number.isFinite(value) && value >= 0 ? value : undefined;
    };
    processor = new BatchSpanProcessor({
      exporter: new OTLPTraceExporter(),
      scheduledDelayMillis: number("OTEL_BSP_SCHEDULE_DELAY"),
      exportTimeoutMillis: number("OTEL_BSP_EXPORT_TIMEOUT"),
      maxQueueSize: number("OTEL_BSP_MAX_QUEUE_SIZE"),
      maxExportBatchSize: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    });
  } else return false;
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (envDetector) override the defaults.
  const resource = resourceFromAttributes({ "service.name": "boxoffice", "boxoffice.services": options.services.join(",") }).merge(
    detectResources({ detectors: [envDetector] }),
  );
  provider = new TracerProvider({ resource, spanProcessors: [processor] });
  trace.setGlobalTracerProvider(provider);
  tracer = provider.getTracer(tracerName);
  return true;
}

/** Sends the spans not yet exported and stops the provider (at shutdown). */
export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown().catch(() => {});
}

/** Runs `start` outside any trace: for work that a call starts but that outlives it and serves others (shared timers). */
export function outsideTrace<T>(start: () => T): T {
  return propagating ? context.with(ROOT_CONTEXT, start) : start();
}

/** Whether spans are recorded in this process. */
export const tracingOn = (): boolean => tracer !== undefined;

const headerGetter: TextMapGetter<Headers> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => {
    const keys: string[] = [];
    carrier.forEach((_, key) => keys.push(key));
    return keys;
  },
};
const objectGetter: TextMapGetter<Record<string, string | string[] | undefined>> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};

/** Codes that are the server's failure (span status ERROR on the server side, as OpenTelemetry's gRPC conventions say). */
const serverFaults = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

function endCall(span: Span, error: unknown, server: boolean): void {
  const code = error === undefined ? 0 : ConnectError.from(error).code;
  span.setAttribute("rpc.grpc.status_code", code);
  if (code !== 0 && (!server || serverFaults.has(code))) span.setStatus({ code: SpanStatusCode.ERROR, message: ConnectError.from(error).rawMessage });
  span.end();
}

function callSpan(kind: SpanKind, service: string, method: string, parent: Context): Span {
  return tracer!.startSpan(
    `${service}/${method}`,
    { kind, attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method } },
    parent,
  );
}

/**
 * The server's interceptor, outermost: continues the caller's trace (`traceparent`), with a SERVER span around the
 * call when spans are recorded (a stream's until it ends), and runs the call in its context.
 */
export const tracingServer: Interceptor = (next) => (req) => {
  if (!propagating) return next(req);
  if (!tracer) {
    // Not recording: only carry the caller's traceparent on to the calls this one makes.
    if (req.header.get("traceparent") === null) return next(req);
    return context.with(propagation.extract(ROOT_CONTEXT, req.header, headerGetter), () => next(req));
  }
  const span = callSpan(SpanKind.SERVER, req.service.typeName, req.method.name, propagation.extract(ROOT_CONTEXT, req.header, headerGetter));
  return context.with(trace.setSpan(context.active(), span), () => untilEnd(next(req), (error) => endCall(span, error, true)));
};

/** The client's interceptor for calls between services: a CLIENT span, and `traceparent` on the call (the callee's parent). */
export const tracingClient: Interceptor = (next) => (req) => {
  if (!propagating) return next(req);
  if (!tracer) {
    propagation.inject(context.active(), req.header, headerSetter);
    return next(req);
  }
  const span = callSpan(SpanKind.CLIENT, req.service.typeName, req.method.name, context.active());
  propagation.inject(trace.setSpan(context.active(), span), req.header, headerSetter);
  return untilEnd(next(req), (error) => endCall(span, error, false));
};

const headerSetter = { set: (carrier: Headers, key: string, value: string) => carrier.set(key, value) };

/** A span for one call to a store (PostgreSQL query, Redis command), or undefined when spans are not recorded. */
export function storeSpan(system: "postgresql" | "redis", operation: string): StoreSpan | undefined {
  if (!tracer) return undefined;
  const active = context.active();
  // A store call outside any traced call (background work, probes) is not worth a trace of its own.
  if (trace.getSpan(active) === undefined) return undefined;
  const span = tracer.startSpan(
    `${system} ${operation}`,
    { kind: SpanKind.CLIENT, attributes: { "db.system": system, "db.system.name": system, "db.operation": operation, "db.operation.name": operation } },
    active,
  );
  return {
    end(error?: unknown) {
      if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      span.end();
    },
  };
}

export interface StoreSpan {
  end(error?: unknown): void;
}

/**
 * For the raw gRPC streams (raw-streams.ts), which no interceptor sees: the SERVER span of one call, from the h2
 * headers, and the context to run it in; undefined when there is nothing to carry.
 */
export function rawServerSpan(service: string, method: string, headers: Record<string, string | string[] | undefined>): { context: Context; end(error: unknown): void } | undefined {
  if (!propagating) return undefined;
  if (!tracer) {
    if (headers.traceparent === undefined) return undefined;
    return { context: propagation.extract(ROOT_CONTEXT, headers, objectGetter), end: () => {} };
  }
  const span = callSpan(SpanKind.SERVER, service, method, propagation.extract(ROOT_CONTEXT, headers, objectGetter));
  return { context: trace.setSpan(ROOT_CONTEXT, span), end: (error) => endCall(span, error, true) };
}
