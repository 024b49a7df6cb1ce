import { create, isMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  createMethodImplSpec,
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

export function createInProcessTransport(options: {
  lookup: (method: DescMethod) => MountedService | undefined;
  interceptors: Interceptor[];
  defaultTimeoutMs: number;
  fallback: () => Transport;
}): Transport {
  /** Per method, its handler and the callee's interceptors; looked up again until the service is mounted. */
  const targets = new WeakMap<DescMethod, { spec: ReturnType<typeof createMethodImplSpec>; interceptors: Interceptor[] }>();
  const targetOf = (method: DescMethod) => {
    let target = targets.get(method);
    if (target === undefined) {
      const mounted = options.lookup(method);
      const fn = mounted?.impl[method.localName];
      if (!mounted || typeof fn !== "function") return undefined;
      const spec = createMethodImplSpec(method as never, (fn as (...args: unknown[]) => unknown).bind(mounted.impl) as never);
      targets.set(method, (target = { spec, interceptors: mounted.interceptors }));
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
      const callee = async (req: UnaryRequest): Promise<UnaryResponse> => {
        const context = createHandlerContext({
          service: method.parent,
          method,
          protocolName: "in-process",
          requestMethod: "POST",
          url: req.url,
          requestSignal: req.signal,
          requestHeader: req.header,
          // The callee's own values: what the caller's interceptors put there is not the callee's to see.
          contextValues: createContextValues(),
        });
        try {
          const message = await invokeUnaryImplementation(target.spec as never, context, req.message as never, target.interceptors);
          return { stream: false, service: method.parent, method, header: context.responseHeader, trailer: context.responseTrailer, message } as UnaryResponse;
        } finally {
          context.abort(finished);
        }
      };
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
      const aborted = new Promise<never>((_, reject) => {
        const fail = () => reject(ConnectError.from(getAbortSignalReason(linked.signal), Code.Canceled));
        if (linked.signal.aborted) fail();
        else linked.signal.addEventListener("abort", fail, { once: true });
      });
      aborted.catch(() => {});
      try {
        return (await Promise.race([next(request as never), aborted])) as never;
      } finally {
        deadline.cleanup();
        linked.abort(finished);
      }
    },
    stream: (...args) => options.fallback().stream(...args),
  };
}
