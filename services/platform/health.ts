import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type http from "node:http";
import { HealthCheckResponse_ServingStatus as Status, Health } from "../../gen/grpc/health/v1/health_pb.js";
import { Repeating } from "./background.js";
import { quoted } from "./errors.js";
import { logger, why } from "./log.js";

const healthLog = logger("health");

/** A check that one store a service needs answers (PostgreSQL, Redis). */
export interface StoreProbe {
  /** What the store is to an operator, e.g. "PostgreSQL" or "Redis (waiting room)". */
  store: string;
  /** Resolves when the store answers; should give up when `signal` aborts. */
  check(signal: AbortSignal): Promise<void>;
}

/** A store found down, and the services that cannot work without it. */
export interface StoreDown {
  store: string;
  services: string[];
}

/** Longest a check may take before its store counts as down. */
const checkTimeoutMs = 1000;

/**
 * The serving status of this process and of each service it serves: NOT_SERVING
 * once shutting down, and for a service while a store it needs is down.
 */
export class HealthStatus {
  #shuttingDown = false;
  /** Each service served, with the probes of the stores it needs. */
  readonly #services = new Map<string, StoreProbe[]>();
  readonly #down = new Set<StoreProbe>();
  /** Checks still running past their cut-off: not started again until they end, so a hung store holds one connection per probe, not one per round. */
  readonly #stuck = new Set<StoreProbe>();
  /** Failed checks in a row, per probe. */
  readonly #failures = new Map<StoreProbe, number>();
  readonly #changed = new EventTarget();
  #loop: Repeating | undefined;

  add(service: DescService, probes: StoreProbe[] = []): void {
    this.#services.set(service.typeName, probes);
  }

  /** Checks every probe now, then every `everyMs`, until shutdown. */
  async startProbing(everyMs: number): Promise<void> {
    if (this.#loop || this.#shuttingDown) return;
    await this.#checkAll();
    this.#loop = new Repeating("health probes", everyMs, () => this.#checkAll());
    if (!this.#shuttingDown) this.#loop.start();
  }

  shutDown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    void this.#loop?.stop();
    this.#changed.dispatchEvent(new Event("change"));
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  status(service: string): Status {
    const serving = (storesUp: boolean) => (storesUp && !this.#shuttingDown ? Status.SERVING : Status.NOT_SERVING);
    if (service === "" || service === Health.typeName) return serving(this.#down.size === 0);
    const probes = this.#services.get(service);
    if (!probes) return Status.SERVICE_UNKNOWN;
    return serving(!probes.some((probe) => this.#down.has(probe)));
  }

  /** The stores down, by name, each with the services that need it. */
  storesDown(): StoreDown[] {
    const byStore = new Map<string, Set<string>>();
    for (const [service, probes] of this.#services) {
      for (const probe of probes) {
        if (!this.#down.has(probe)) continue;
        if (!byStore.has(probe.store)) byStore.set(probe.store, new Set());
        byStore.get(probe.store)!.add(service);
      }
    }
    return [...byStore].map(([store, services]) => ({ store, services: [...services] }));
  }

  /** Resolves on the next change, or when the call ends. */
  nextChange(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.#changed.removeEventListener("change", done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.#changed.addEventListener("change", done);
      signal.addEventListener("abort", done);
    });
  }

  async #checkAll(): Promise<void> {
    const probes = new Set([...this.#services.values()].flat());
    let changed = false;
    await Promise.all(
      [...probes].map(async (probe) => {
        const failure = await this.#check(probe);
        // Down after two failed checks in a row: one slow answer under load is not an outage.
        const failures = failure === undefined ? 0 : (this.#failures.get(probe) ?? 0) + 1;
        this.#failures.set(probe, failures);
        if (failure !== undefined && failures < 2) return;
        if (this.#shuttingDown || (failure === undefined) !== this.#down.has(probe)) return;
        changed = true;
        if (failure === undefined) {
          this.#down.delete(probe);
          healthLog.info({ store: probe.store }, `${probe.store} answers again`);
        } else {
          this.#down.add(probe);
          healthLog.error({ store: probe.store, error: why(failure) }, `${probe.store} is down: ${why(failure)}`);
        }
      }),
    );
    if (changed) this.#changed.dispatchEvent(new Event("change"));
  }

  /** Undefined when the store answered in time, else why not. */
  async #check(probe: StoreProbe): Promise<unknown> {
    if (this.#stuck.has(probe)) return new Error(`the previous check has not ended`);
    const cutOff = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<Error>((resolve) => {
      timer = setTimeout(() => {
        const reason = new Error(`no answer within ${checkTimeoutMs} ms`);
        cutOff.abort(reason);
        resolve(reason);
      }, checkTimeoutMs);
    });
    const checked = Promise.resolve()
      .then(() => probe.check(cutOff.signal))
      .then(
        () => undefined,
        (error: unknown) => error ?? new Error("check failed"),
      );
    try {
      const failure = await Promise.race([checked, timedOut]);
      if (cutOff.signal.aborted) {
        this.#stuck.add(probe);
        void checked.then(() => this.#stuck.delete(probe));
      }
      return failure;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** grpc.health.v1.Health, answering from a HealthStatus. */
export class HealthService implements ServiceImpl<typeof Health> {
  constructor(private readonly health: HealthStatus) {}

  check(req: { service: string }) {
    const status = this.health.status(req.service);
    if (status === Status.SERVICE_UNKNOWN) throw new ConnectError(`unknown service ${quoted(req.service)}`, Code.NotFound);
    return { status };
  }

  async *watch(req: { service: string }, ctx: HandlerContext) {
    let last: Status | undefined;
    while (!ctx.signal.aborted) {
      const status = this.health.status(req.service);
      if (status !== last) yield { status };
      last = status;
      // After NOT_SERVING, a shutdown ends the watch as gRPC servers do: Unavailable, so the client watches another instance.
      if (this.health.shuttingDown) throw new ConnectError("the server is shutting down; try again", Code.Unavailable);
      await this.health.nextChange(ctx.signal);
    }
  }
}

export function healthRoutes(router: ConnectRouter, health: HealthStatus): void {
  router.service(Health, new HealthService(health));
}

/**
 * Plain HTTP checks for load balancers and Kubernetes, in front of `next` (the
 * handler for other paths that are no RPC): `/healthz` is 200 while the process
 * serves and 503 once it shuts down; `/readyz` is 200 while every store answers,
 * else 503 with the stores down and the services they stop. Over h2c the host
 * hands the same handler HTTP/2 compatibility objects, which answer alike.
 */
export function healthEndpoints(health: HealthStatus, next?: http.RequestListener): http.RequestListener {
  const answer = (res: http.ServerResponse, status: number, body: object) => {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(`${JSON.stringify(body)}\n`);
  };
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if ((path === "/healthz" || path === "/readyz") && (req.method === "GET" || req.method === "HEAD")) {
      if (health.shuttingDown) return answer(res, 503, { status: "shutting down" });
      if (path === "/healthz") return answer(res, 200, { status: "serving" });
      const down = health.storesDown();
      return down.length === 0 ? answer(res, 200, { status: "ready" }) : answer(res, 503, { status: "stores down", down });
    }
    if (next) return next(req, res);
    res.writeHead(404);
    res.end();
  };
}
