import { create, isMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  createMethodImplSpec,
  type ContextValues,
  type Interceptor,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createDeadlineSignal, createLinkedAbortController, getAbortSignalReason, invokeUnaryImplementation } from "@connectrpc/connect/protocol";

/**
 * Calls between services of one process, without encoding.
 *
 * Connect's router transport serializes every in-process call to bytes and
 * parses it back, through the whole HTTP-shaped handler pipeline. Here a unary
 * call runs the caller's interceptors, then the callee's own interceptors and
 * handler on the message itself (Connect's `invokeUnaryImplementation`, as its
 * handlers do), so a call between services in one process costs what its work
 * costs: the callee still checks the internal credential, maps errors and gets
 * its own EntityManager. The caller's deadline and signal reach the handler's
 * `ctx.signal`, and the call rejects when they fire even if the handler does not
 * look. Messages are passed by reference: neither side changes them after the call.
 *
 * This leans on Connect internals exported from `@connectrpc/connect/protocol`
 * (marked private there); `test/in-process.test.ts` pins the behaviour this
 * relies on against the router transport, so an upgrade that changes it fails
 * there. Streaming calls fall back to `fallback` (the router transport).
 */

/** What the router mounts for one service: its implementation and its interceptors (outermost first). */
export interface MountedService {
  service: DescService;
  impl: Record<string, unknown>;
  interceptors: Interceptor[];
}

const finished = new ConnectError("the call has finished", Code.Canceled);

/** A unary method's handler, as Connect's router would run it, and the interceptors mounted around it (outermost first). */
export interface UnaryTarget {
  method: DescMethod;
  spec: ReturnType<typeof createMethodImplSpec>;
  interceptors: Interceptor[];
}

/** The target of `method` in a service's implementation; undefined when the implementation lacks it (Connect answers Unimplemented). */
export function unaryTarget(method: DescMethod, impl: Record<string, unknown>, interceptors: Interceptor[]): UnaryTarget | undefined {
  const fn = impl[method.localName];
  if (method.methodKind !== "unary" || typeof fn !== "function") return undefined;
  return { method, spec: createMethodImplSpec(method as never, (fn as (...args: unknown[]) => unknown).bind(impl) as never), interceptors };
}

/** One call as it reaches the callee. */
export interface UnaryCall {
  protocolName: string;
  url: string;
  /** Aborts on the caller's cancel (and its deadline, where timeoutMs does not carry it). */
  signal: AbortSignal;
  /** The server's shutdown: the handler's signal aborts with it, but the call goes on to its end (the host's grace). */
  shutdownSignal?: AbortSignal;
  header: Headers;
  contextValues: ContextValues;
  /**
   * The caller's deadline: the handler's signal aborts with DeadlineExceeded when it passes, and the call
   * rejects with it then, as it does on the caller's cancel, even if the handler goes on.
   */
  timeoutMs?: number;
}

/**
 * Runs the target's interceptors and handler on `message`, as Connect's
 * handlers do (its `invokeUnaryImplementation`), with a handler context of
 * the call; the response's header and trailer are what the handler and the
 * interceptors set. The context is aborted with a reason when the call ends,
 * as Connect aborts it without one (which makes Node build a DOMException
 * with a stack, every call).
 */
export async function invokeUnary(target: UnaryTarget, call: UnaryCall, message: unknown): Promise<UnaryResponse> {
  const { method } = target;
  const deadline = createDeadlineSignal(call.timeoutMs);
  const request = call.timeoutMs === undefined ? { signal: call.signal, abort: () => {} } : createLinkedAbortController(call.signal, deadline.signal);
  const context = createHandlerContext({
    service: method.parent,
    method,
    protocolName: call.protocolName,
    requestMethod: "POST",
    url: call.url,
    requestSignal: request.signal,
    shutdownSignal: call.shutdownSignal,
    requestHeader: call.header,
    contextValues: call.contextValues,
  });
  try {
    const invoked = invokeUnaryImplementation(target.spec as never, context, message as never, target.interceptors);
    const output = await (call.timeoutMs === undefined ? invoked : Promise.race([invoked, rejectOnAbort(request.signal)]));
    return { stream: false, service: method.parent, method, header: context.responseHeader, trailer: context.responseTrailer, message: output } as UnaryResponse;
  } finally {
    deadline.cleanup();
    context.abort(finished);
    request.abort(finished);
  }
}

/** Rejects when `signal` aborts, with its reason as a ConnectError (Canceled unless it says otherwise). */
function rejectOnAbort(signal: AbortSignal): Promise<never> {
  const aborted = new Promise<never>((_, reject) => {
    const fail = () => reject(ConnectError.from(getAbortSignalReason(signal), Code.Canceled));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
  aborted.catch(() => {});
  return aborted;
}

export function createInProcessTransport(options: {
  lookup: (method: DescMethod) => MountedService | undefined;
  interceptors: Interceptor[];
  defaultTimeoutMs: number;
  fallback: () => Transport;
}): Transport {
  /** Per method, its handler and the callee's interceptors; looked up again until the service is mounted. */
  const targets = new WeakMap<DescMethod, UnaryTarget>();
  const targetOf = (method: DescMethod) => {
    let target = targets.get(method);
    if (target === undefined) {
      const mounted = options.lookup(method);
      target = mounted && unaryTarget(method, mounted.impl, mounted.interceptors);
      if (target) targets.set(method, target);
    }
    return target;
  };

  return {
    async unary(method, signal, timeoutMs, header, input, contextValues) {
      const target = targetOf(method);
      if (!target) throw new ConnectError(`${method.parent.typeName}/${method.name} is not served in this process`, Code.Unimplemented);
      const timeout = timeoutMs === undefined ? options.defaultTimeoutMs : timeoutMs <= 0 ? undefined : timeoutMs;
      const deadline = createDeadlineSignal(timeout);
      const linked = createLinkedAbortController(signal, deadline.signal);
      const callee = (req: UnaryRequest): Promise<UnaryResponse> =>
        // The callee's own context values: what the caller's interceptors put there is not the callee's to see.
        invokeUnary(target, { protocolName: "in-process", url: req.url, signal: req.signal, header: req.header, contextValues: createContextValues() }, req.message);
      let next = callee;
      for (const interceptor of [...options.interceptors].reverse()) next = interceptor(next as never) as typeof callee;
      const request = {
        stream: false as const,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: `in-process:/${method.parent.typeName}/${method.name}`,
        signal: linked.signal,
        header: new Headers(header),
        contextValues: contextValues ?? createContextValues(),
        message: isMessage(input, method.input) ? input : create(method.input, input),
      };
      try {
        return (await Promise.race([next(request as never), rejectOnAbort(linked.signal)])) as never;
      } finally {
        deadline.cleanup();
        linked.abort(finished);
      }
    },
    stream: (...args) => options.fallback().stream(...args),
  };
}
