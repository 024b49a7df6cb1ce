import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { HealthCheckResponse_ServingStatus as Status, Health } from "../../gen/grpc/health/v1/health_pb.js";

/** The serving status of this process and of each service it serves. */
export class HealthStatus {
  #serving = true;
  readonly #services = new Set<string>();
  readonly #changed = new EventTarget();

  add(service: DescService): void {
    this.#services.add(service.typeName);
  }

  shutDown(): void {
    this.#serving = false;
    this.#changed.dispatchEvent(new Event("change"));
  }

  status(service: string): Status {
    if (service !== "" && !this.#services.has(service) && service !== Health.typeName) return Status.SERVICE_UNKNOWN;
    return this.#serving ? Status.SERVING : Status.NOT_SERVING;
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
}

/** grpc.health.v1.Health, answering from a HealthStatus. */
export class HealthService implements ServiceImpl<typeof Health> {
  constructor(private readonly health: HealthStatus) {}

  check(req: { service: string }) {
    const status = this.health.status(req.service);
    if (status === Status.SERVICE_UNKNOWN) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
    return { status };
  }

  async *watch(req: { service: string }, ctx: HandlerContext) {
    let last: Status | undefined;
    while (!ctx.signal.aborted) {
      const status = this.health.status(req.service);
      if (status !== last) yield { status };
      last = status;
      if (status === Status.NOT_SERVING) return;
      await this.health.nextChange(ctx.signal);
    }
  }
}

export function healthRoutes(router: ConnectRouter, health: HealthStatus): void {
  router.service(Health, new HealthService(health));
}
