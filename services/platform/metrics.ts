import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type http from "node:http";
import client from "prom-client";
import { untilEnd } from "./call-end.js";
import { logger, why } from "./log.js";
import { storeSpan } from "./tracing.js";

/**
 * Prometheus metrics of one process (`GET /metrics`, prom-client): calls and
 * their latency per service, method and code on both sides of every call
 * (the server's interceptor, and the client's between services), Node's own
 * (event-loop lag, heap, GC), and what services add with `gauge` (per
 * concert: the line, admissions, sold out; holds and payments by state;
 * pool use). A metric that needs a store is read when Prometheus scrapes, not
 * kept up to date on the hot path.
 */
export class Metrics {
  readonly registry = new client.Registry();
  readonly #serverCalls: client.Counter<"service" | "method" | "code">;
  readonly #serverSeconds: client.Histogram<"service" | "method" | "code">;
  readonly #clientCalls: client.Counter<"service" | "method" | "code">;
  readonly #clientSeconds: client.Histogram<"service" | "method" | "code">;
  readonly storeSeconds: client.Histogram<"store" | "operation">;

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: "boxoffice_" });
    const buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    const labelNames = ["service", "method", "code"] as const;
    this.#serverCalls = new client.Counter({ name: "boxoffice_rpc_server_calls_total", help: "RPCs served, by service, method and code", labelNames, registers: [this.registry] });
    this.#serverSeconds = new client.Histogram({ name: "boxoffice_rpc_server_seconds", help: "Time to serve an RPC (for a stream: until it ends)", labelNames, buckets, registers: [this.registry] });
    this.#clientCalls = new client.Counter({ name: "boxoffice_rpc_client_calls_total", help: "Calls made to other services, by service, method and code", labelNames, registers: [this.registry] });
    this.#clientSeconds = new client.Histogram({ name: "boxoffice_rpc_client_seconds", help: "Time of calls made to other services", labelNames, buckets, registers: [this.registry] });
    this.storeSeconds = new client.Histogram({
      name: "boxoffice_store_seconds",
      help: "Time of PostgreSQL queries and Redis commands, by store and operation",
      labelNames: ["store", "operation"],
      buckets,
      registers: [this.registry],
    });
  }

  #scrapes = 0;

  /** Which scrape is being collected: gauges that read one store for several metrics read it once per scrape. */
  get scrape(): number {
    return this.#scrapes;
  }

  /** Every metric, read now, in Prometheus' text format. */
  collect(): Promise<string> {
    this.#scrapes++;
    return this.registry.metrics();
  }

  /** The server's interceptor, outermost: sees the code the caller sees. */
  get server(): Interceptor {
    return observe((service, method, error, started) => this.served(service, method, error, started));
  }

  /** The client's interceptor for calls between services. */
  get client(): Interceptor {
    return observe((service, method, error, started) => record(this.#clientCalls, this.#clientSeconds, service, method, error, started));
  }

  /** One call served (`started`: process.hrtime.bigint() when it began); also for the raw streams, which no interceptor sees. */
  served(service: string, method: string, error: unknown, started: bigint): void {
    record(this.#serverCalls, this.#serverSeconds, service, method, error, started);
  }

  /** A gauge whose values are read by `collect` at each scrape (set them with `gauge.set(labels, value)`; stale ones are reset first). */
  gauge<L extends string>(name: string, help: string, labelNames: readonly L[], collect: (gauge: client.Gauge<L>) => Promise<void> | void): void {
    new client.Gauge<L>({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        this.reset();
        await collect(this);
      },
    });
  }
}

type Record = (service: string, method: string, error: unknown, started: bigint) => void;

function record(calls: client.Counter<"service" | "method" | "code">, seconds: client.Histogram<"service" | "method" | "code">, service: string, method: string, error: unknown, started: bigint) {
  const labels = { service, method, code: error === undefined ? "ok" : codeName(error) };
  calls.inc(labels);
  seconds.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
}

/** Counts and times every call through it, streams until they end. */
function observe(done: Record): Interceptor {
  return (next) => (req) => {
    const started = process.hrtime.bigint();
    return untilEnd(next(req), (error) => done(req.service.typeName, req.method.name, error, started));
  };
}

const codeNames = new Map<Code, string>(Object.entries(Code).flatMap(([name, value]) => (typeof value === "number" ? [[value, name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase()] as const] : [])));

function codeName(error: unknown): string {
  return codeNames.get(ConnectError.from(error).code) ?? "unknown";
}

/**
 * `GET /metrics` in Prometheus' text format, in front of `next`. It tells how
 * a sale goes (line lengths, sales), so it asks for the operator credential
 * (`authorization: Bearer <OPERATOR_KEY>`, as Prometheus' `authorization`
 * setting sends it) unless METRICS_PUBLIC=true.
 */
export function metricsEndpoint(metrics: Metrics, allowed: (authorization: string | undefined) => boolean, next?: http.RequestListener): http.RequestListener {
  return (req, res) => {
    if ((req.url ?? "").split("?")[0] !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
      if (next) return next(req, res);
      res.writeHead(404);
      res.end();
      return;
    }
    if (!allowed(req.headers.authorization)) {
      res.writeHead(401, { "content-type": "text/plain", "www-authenticate": 'Bearer realm="boxoffice metrics"' });
      res.end("metrics need the operator credential: authorization: Bearer <OPERATOR_KEY> (or set METRICS_PUBLIC=true)\n");
      return;
    }
    metrics.collect().then(
      (text) => {
        res.writeHead(200, { "content-type": metrics.registry.contentType, "cache-control": "no-store" });
        res.end(text);
      },
      (error: unknown) => {
        logger("metrics").error({ err: error }, `metrics could not be collected: ${why(error)}`);
        res.writeHead(500, { "content-type": "text/plain" });
        res.end("metrics could not be collected\n");
      },
    );
  };
}

/** The part of a `pg` pool metrics read: its counts, and the clients it connects. */
interface PoolLike {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
  on(event: "connect", listener: (client: { query: (...args: unknown[]) => unknown }) => void): unknown;
}

/**
 * A service's PostgreSQL pool in the metrics: connections open, idle and
 * callers waiting for one, and the time of every query its clients make (by
 * its first word: select, insert, update, begin, commit...), timed around
 * the driver's own `query`.
 */
export function observePool(metrics: Metrics, service: string, pool: PoolLike): void {
  const timed = new WeakSet<object>();
  const time = (client: { query: (...args: unknown[]) => unknown }) => {
    if (timed.has(client)) return;
    timed.add(client);
    const query = client.query.bind(client);
    client.query = (...args: unknown[]) => {
      const started = process.hrtime.bigint();
      const answer = query(...args);
      if (answer instanceof Promise) {
        const text = typeof args[0] === "string" ? args[0] : ((args[0] as { text?: string } | undefined)?.text ?? "");
        const operation = /^\s*(\w+)/.exec(text)?.[1]?.toLowerCase() ?? "query";
        const span = storeSpan("postgresql", operation);
        const done = (error?: unknown) => {
          metrics.storeSeconds.observe({ store: "postgresql", operation }, Number(process.hrtime.bigint() - started) / 1e9);
          span?.end(error);
        };
        answer.then(() => done(), done);
      }
      return answer;
    };
  };
  pool.on("connect", time);
  // The connections opened before (the migrations at start, on the same pool) are idle in it, and used first.
  for (const client of (pool as { _clients?: { query: (...args: unknown[]) => unknown }[] })._clients ?? []) time(client);
  let pools = poolsOf.get(metrics);
  if (!pools) {
    poolsOf.set(metrics, (pools = new Map()));
    const known = pools;
    metrics.gauge("boxoffice_db_pool_connections", "PostgreSQL connections of each service's pool, by state", ["service", "state"], (gauge) => {
      for (const [name, one] of known) {
        gauge.set({ service: name, state: "open" }, one.totalCount);
        gauge.set({ service: name, state: "idle" }, one.idleCount);
        gauge.set({ service: name, state: "waiting" }, one.waitingCount);
      }
    });
  }
  pools.set(service, pool);
}

const poolsOf = new WeakMap<Metrics, Map<string, PoolLike>>();

/** A gauge of rows counted by state with one query at each scrape (holds, seats, payments). */
export function rowsByState(metrics: Metrics, name: string, help: string, count: () => Promise<{ state: string; n: number }[]>): void {
  metrics.gauge(name, help, ["state"], async (gauge) => {
    for (const { state, n } of await count().catch(() => [])) gauge.set({ state }, Number(n));
  });
}
