import { createContextKey } from "@connectrpc/connect";

/**
 * The network address a call came from, as the host saw the connection
 * (`socket.remoteAddress`; behind a proxy, the proxy's). Set by the host on
 * every call it serves over the network; undefined on calls made in process
 * between services. Which proxy header, if any, names the real client is the
 * rate limiter's business, not the host's.
 */
export const peerAddressKey = createContextKey<string | undefined>(undefined, { description: "the caller's network address" });
