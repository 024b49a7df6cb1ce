import type { DescMethod, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Client,
  type ConnectRouter,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { TransactionContext } from "@mikro-orm/postgresql";
import { internalCredentialHeader } from "./access.js";
import type { ServiceName } from "./config.js";
import { DependencyDown, domainErrorOf, Reason, reasonOf } from "./errors.js";
import { createInProcessTransport, type MountedService } from "./in-process.js";

/** The service that serves a descriptor, by default the one its package names: boxoffice.queue.v1.X → queue. */
export function ownerOf(service: DescService, owners?: ReadonlyMap<string, string>): string {
  return owners?.get(service.typeName) ?? service.typeName.split(".")[1] ?? "";
}

/** Thrown (a bug, never a caller's fault) when a call to another service is made with a database transaction open. */
export class TransactionHeldAcrossCall extends Error {}

/**
 * No database transaction may stay open while another service is called: the
 * callee could wait on the caller's locks (on the embedded database, on its one
 * connection) and the caller's connection would be held for the whole call.
 * Every client between services refuses such a call, so the rule is checked on
 * every call, not by review. (MikroORM keeps the open transaction of the
 * current async context in its TransactionContext.)
 */
const noOpenTransaction: Interceptor = (next) => (req) => {
  const open = TransactionContext.currentTransactionContext()?.em;
  if (open?.isInTransaction()) {
    throw new TransactionHeldAcrossCall(`${req.method.parent.typeName}/${req.method.name} called inside an open transaction of ${open.name}`);
  }
  return next(req);
};

export interface ClientOptions {
  /** Outermost, on every call (the process's client metrics). */
  interceptors?: Interceptor[];
  internalCredential: string;
  /** The routes served by this process; called once, on the first in-process streaming call. */
  localRoutes: () => (router: ConnectRouter) => void;
  /** A service this process serves, as mounted, for in-process unary calls; without it, every call goes through the routes. */
  localService?: (method: DescMethod) => MountedService | undefined;
  localServices: ReadonlySet<string>;
  /** Where the other services listen. */
  urls: Partial<Record<ServiceName, string>>;
  /** Which service serves a descriptor, by type name, where it is not the one its package names. */
  owners?: ReadonlyMap<string, ServiceName>;
  timeoutMs?: number;
}

/**
 * How one service reaches another: in-process when both run here, over gRPC
 * (h2c) when the other runs elsewhere. Every call carries the internal
 * credential and a deadline, and goes through the callee's own interceptors.
 */
export class ServiceClients {
  readonly #transports = new Map<string, Transport>();

  constructor(private readonly options: ClientOptions) {}

  for<T extends DescService>(service: T): Client<T> {
    return createClient(service, this.#transport(ownerOf(service, this.options.owners)));
  }

  #transport(owner: string): Transport {
    const key = this.options.localServices.has(owner) ? "(local)" : owner;
    let transport = this.#transports.get(key);
    if (!transport) {
      transport = this.#create(owner);
      this.#transports.set(key, transport);
    }
    return transport;
  }

  #create(owner: string): Transport {
    const credential: Interceptor = (next) => (req) => {
      req.header.set(internalCredentialHeader, this.options.internalCredential);
      return next(req);
    };
    const outermost = this.options.interceptors ?? [];
    const common = { interceptors: [...outermost, noOpenTransaction, retryIdempotent, credential], defaultTimeoutMs: this.options.timeoutMs ?? 5_000 };
    if (this.options.localServices.has(owner)) {
      // Built on the first call: clients are made while the services, and so the routes, are still being set up.
      let routed: Transport | undefined;
      const router = () => (routed ??= createRouterTransport(this.options.localRoutes(), { transport: common }));
      const { localService } = this.options;
      if (!localService) return { unary: (...args) => router().unary(...args), stream: (...args) => router().stream(...args) };
      return createInProcessTransport({ lookup: localService, interceptors: common.interceptors, defaultTimeoutMs: common.defaultTimeoutMs, fallback: router });
    }
    const url = this.options.urls[owner as ServiceName];
    const network = { ...common, interceptors: [...outermost, noOpenTransaction, retryIdempotent, transportFailures(owner), credential] };
    return url ? createGrpcTransport({ baseUrl: url, ...network }) : unreachable(owner);
  }
}

const retryDelaysMs = [50, 200];

/**
 * Retries a unary call that answered Unavailable, when the contract marks it
 * safe to repeat (`option idempotency_level`), twice with a short backoff
 * within the call's deadline. Anything else is tried once.
 */
const retryIdempotent: Interceptor = (next) => async (req) => {
  const safe = req.method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT || req.method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;
  if (!safe || req.stream) return next(req);
  for (let attempt = 0; ; attempt++) {
    try {
      return await next(req);
    } catch (error) {
      const delay = retryDelaysMs[attempt];
      if (delay === undefined || !(error instanceof ConnectError) || error.code !== Code.Unavailable || req.signal.aborted) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
};

/**
 * A call to another process that failed on the way, not by the callee's
 * answer (a reset, a refused or lost connection, the stream cancelled under
 * it, no answer within the deadline), is Unavailable, whatever code the
 * transport chose (Aborted for ECONNRESET, Canceled for an RST_STREAM):
 * retryable, and retried for the idempotent RPCs (retryIdempotent, outside
 * this). What the callee answered (read off the wire) passes as it is, as
 * does the caller's own cancel.
 */
function transportFailures(owner: string): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (error) {
      if (error instanceof ConnectError && (error.isWireError || error.code === Code.Unavailable)) throw error;
      if (req.signal.aborted && !(error instanceof ConnectError && error.code === Code.DeadlineExceeded)) throw error;
      throw new ConnectError(`the ${owner} service is unreachable; retry later`, Code.Unavailable, undefined, undefined, error);
    }
  };
}

function unreachable(owner: string): Transport {
  const fail = () => Promise.reject(new ConnectError(`the ${owner} service is not configured (set ${owner.toUpperCase()}_URL)`, Code.Unavailable));
  return { unary: fail, stream: fail };
}

/**
 * Runs a call to another service, for the adapters between a domain class and
 * its neighbours: when the other service cannot be reached, a DependencyDown;
 * when it refuses, the same domain error it raised (kind, reason, metadata), so
 * domain code never inspects a ConnectError.
 */
export async function callDependency<R>(name: string, call: () => Promise<R>): Promise<R> {
  try {
    return await call();
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    if ([Code.Unavailable, Code.Unimplemented, Code.DeadlineExceeded, Code.Canceled, Code.Aborted].includes(error.code)) {
      // The service answered that what it depends on is down, naming it: that is what the caller should hear.
      if (reasonOf(error) === Reason.DEPENDENCY_UNAVAILABLE) throw new DependencyDown(error.rawMessage);
      throw new DependencyDown(`the ${name} service is unavailable; retry later`);
    }
    throw domainErrorOf(error) ?? error;
  }
}
