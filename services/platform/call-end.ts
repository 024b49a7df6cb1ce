import type { StreamResponse, UnaryResponse } from "@connectrpc/connect";

/**
 * Runs a call and tells `done` how it ended (undefined, or what it failed
 * with): a unary call when it answers, a stream when its last message has
 * gone or it fails. For the interceptors that observe calls (metrics, the
 * access log).
 */
export async function untilEnd<R extends UnaryResponse | StreamResponse>(call: Promise<R>, done: (error: unknown) => void): Promise<R> {
  let res: R;
  try {
    res = await call;
  } catch (error) {
    done(error);
    throw error;
  }
  if (!res.stream) {
    done(undefined);
    return res;
  }
  const messages = res.message;
  return {
    ...res,
    message: (async function* () {
      try {
        yield* messages;
        done(undefined);
      } catch (error) {
        done(error);
        throw error;
      }
    })(),
  };
}

