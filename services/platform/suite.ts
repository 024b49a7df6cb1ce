import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, Interceptor, ServiceImpl } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import type http from "node:http";
import { accessCheck, accessInterceptor, isOperator, type AdmissionGate } from "./access.js";
import { ServiceClients } from "./clients.js";
import type { Config, ServiceName } from "./config.js";
import { entityManagerInterceptor, openDatabase, type DatabaseSpec } from "./database.js";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded-postgres.js";
import { errorMapper, mapError } from "./errors.js";
import { healthEndpoints, HealthStatus, healthRoutes, type StoreProbe } from "./health.js";
import type { MountedService } from "./in-process.js";
import { Metrics, metricsEndpoint, observePool } from "./metrics.js";
import { startHost, type Host } from "./host.js";
import { rateLimits } from "./rate-limit.js";
import { rawServerStream, type RawStream, type RawStreamSpec } from "./raw-streams.js";
import { reflectionRoutes } from "./reflection.js";
import { UserTokens } from "./tokens.js";
import { accessLog, log, why } from "./log.js";
import { tracingClient, tracingServer } from "./tracing.js";

/** What the platform hands a service when it is brought up. */
export interface ServiceDeps {
  config: Config;
  /** The service's ORM, when it declares a database. */
  orm: MikroORM | undefined;
  tokens: UserTokens;
  clients: ServiceClients;
  /** The process's metrics, for the gauges a service adds (read at each scrape). */
  metrics: Metrics;
}

/** One Connect service implementation, as mounted on the router. */
export interface Implementation {
  service: DescService;
  impl: object;
}

/** Pairs a service descriptor with its implementation, type-checked against each other. */
export function implementation<T extends DescService>(service: T, impl: Partial<ServiceImpl<T>>): Implementation {
  return { service, impl };
}

/** A running service: what it serves, and what runs beside the handlers. */
export interface RunningService {
  implementations: Implementation[];
  /** Work after the server listens (seeding, background workers). */
  start?(): Promise<void>;
  /** Stops background work; called before the database closes. */
  stop?(): Promise<void>;
  /**
   * Server streams that gRPC callers reach on the raw path (raw-streams.ts), with the same access check and
   * error mapping as on Connect, but none of the other interceptors (no request EntityManager, none of
   * SuiteOptions.interceptors). The same methods must be in `implementations` too, for every other caller.
   */
  rawStreams?: RawStreamSpec[];
  /** Set when this service checks queue tokens for gated RPCs. */
  gate?: AdmissionGate;
  /** Checks of the stores it needs besides its database (the suite probes that one itself). */
  probes?: StoreProbe[];
}

/** A service of the suite: its folder's entry point. */
export interface ServiceModule {
  name: ServiceName;
  /** The contract's services this one serves, so that other processes know where to send their calls. */
  serves: DescService[];
  database?: DatabaseSpec;
  create(deps: ServiceDeps): RunningService | Promise<RunningService>;
  /** For the service that checks queue tokens: its gate as reached from processes that do not run it. */
  remoteGate?(clients: ServiceClients): AdmissionGate;
}

export interface Suite {
  host: Host;
  config: Config;
  close(): Promise<void>;
}

export interface SuiteOptions {
  fallback?: http.RequestListener;
  /** Extra interceptors, outermost, for every service (tests and benchmarks); not on raw streams (see RunningService.rawStreams). */
  interceptors?: Interceptor[];
  /** Serve unary gRPC calls on the raw path (host.ts HostOptions.rawUnary; the default), or all through Connect (tests). */
  rawUnary?: boolean;
}

/**
 * Brings up the services this process serves on one address: the embedded
 * database when no DATABASE_URL is given, each service's ORM and migrations,
 * the shared interceptors, health, and in-process or network clients between
 * services.
 */
export async function startSuite(config: Config, modules: ServiceModule[], options: SuiteOptions = {}): Promise<Suite> {
  const closers: (() => Promise<void>)[] = [];
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      for (const closer of [...closers].reverse()) await closer().catch((error: unknown) => log.error({ err: error }, `shutdown: ${why(error)}`));
    })());
  try {
    let embedded: EmbeddedPostgres | undefined;
    const databaseUrl = config.databaseUrl ?? (embedded = await startEmbeddedPostgres(config.dataDir)).url;
    if (embedded) closers.push(embedded.stop);
    const poolSize = embedded ? 1 : config.databasePoolSize;

    const tokens = new UserTokens(config.tokenSecret, config.userTokenTtlSeconds, undefined, config.accounts);
    const limits = rateLimits(config, tokens);
    if (limits) closers.push(() => limits.close());
    const served = modules.filter((module) => config.services.includes(module.name));
    /** Every service this process serves, as the router mounts it (and in-process calls reach it). */
    const mounted = new Map<string, MountedService>();
    let routes: (router: ConnectRouter) => void = () => {
      throw new Error("routes used before the suite was built");
    };
    const owners = new Map(modules.flatMap((module) => module.serves.map((desc) => [desc.typeName, module.name] as const)));
    log.level = config.logLevel;
    const metrics = new Metrics();
    const calls = accessLog({ sample: config.accessLogSample });
    const clients = new ServiceClients({
      interceptors: [tracingClient, metrics.client],
      internalCredential: config.internalCredential,
      owners,
      localRoutes: () => routes,
      localService: (method) => mounted.get(method.parent.typeName),
      localServices: new Set(served.map((module) => module.name)),
      urls: config.serviceUrls,
    });

    const running: { service: RunningService; orm: MikroORM | undefined }[] = [];
    for (const module of served) {
      const orm = module.database ? await openDatabase(module.database, { url: databaseUrl, poolSize, migrate: config.migrateAtStart }) : undefined;
      if (orm) {
        closers.push(() => orm.close());
        observePool(metrics, module.name, await orm.em.getConnection().getNativeClient());
      }
      const service = await module.create({ config, orm, tokens, clients, metrics });
      if (service.stop) closers.push(service.stop);
      running.push({ service, orm });
    }

    const gate =
      running.find(({ service }) => service.gate)?.service.gate ??
      modules.find((module) => module.remoteGate && !served.includes(module))?.remoteGate!(clients);
    const check = accessCheck({ tokens, internalCredential: config.internalCredential, operatorKey: config.operatorKey, scannerKey: config.scannerKey, gate });
    const access = accessInterceptor(check);
    const rawStreams: RawStream[] = running.flatMap(({ service, orm }) => {
      // The raw path has no request EntityManager to give a handler: a service with a database serves on Connect.
      if (orm && service.rawStreams?.length) throw new Error("raw streams are for services without a database");
      return (service.rawStreams ?? []).map(({ method, impl }) => rawServerStream(method, impl, { checkAccess: check, mapError, served: (...call) => metrics.served(...call) }));
    });
    const health = new HealthStatus();
    for (const { service, orm } of running) {
      const interceptors = [tracingServer, metrics.server, calls, ...(options.interceptors ?? []), errorMapper, ...(limits ? [limits.interceptor] : []), access];
      // The embedded database's one session is shared by every connection: no named statements there (database.ts).
      if (orm) interceptors.push(entityManagerInterceptor(orm, { prepare: !embedded }));
      const probes = [...(orm ? [databaseProbe(orm)] : []), ...(service.probes ?? [])];
      for (const { service: desc, impl } of service.implementations) {
        health.add(desc, probes);
        mounted.set(desc.typeName, { service: desc, impl: impl as Record<string, unknown>, interceptors });
      }
    }
    routes = (router) => {
      healthRoutes(router, health);
      reflectionRoutes(router);
      for (const { service, impl, interceptors } of mounted.values()) {
        router.service(service, impl as Partial<ServiceImpl<typeof service>>, { interceptors });
      }
    };

    closers.push(async () => health.shutDown());
    await health.startProbing(config.healthProbeMs);
    const host = await startHost({
      host: config.host,
      port: config.port,
      routes,
      fallback: healthEndpoints(health, metricsEndpoint(metrics, (authorization) => config.metricsPublic || isOperator(authorization, config.operatorKey), options.fallback)),
      health,
      shutdownGraceMs: config.shutdownGraceMs,
      rawStreams,
      maxConnectionsPerAddress: config.maxConnectionsPerAddress,
      maxCallsInFlight: config.maxCallsInFlight,
      rawUnary: options.rawUnary,
    });
    closers.push(host.close);
    for (const { service } of running) await service.start?.();
    return { host, config, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The service's database answers a trivial query through its own pool. */
function databaseProbe(orm: MikroORM): StoreProbe {
  // Not aborted by the health cut-off: an aborted query would hand its connection back only when it ends, and the
  // next round would take another; a check still running is reported down, and not started again beside itself.
  return { store: "PostgreSQL", check: () => orm.em.getConnection().execute("select 1").then(() => undefined) };
}
