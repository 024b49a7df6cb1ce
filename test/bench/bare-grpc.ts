/**
 * The bench's physical baseline: a bare `node:http2` server that answers every
 * request with one fixed gRPC response, a grpc.health.v1 HealthCheckResponse
 * (status SERVING), after reading the request to its end. No router, no
 * decoding, no interceptors: what one gRPC call costs Node itself. Run as its
 * own process (`node test/bench/bare-grpc.ts`), so that its CPU is measured
 * as the suite's is; it prints the URL it listens on.
 */
import http2 from "node:http2";

// The length-prefixed message: not compressed, 2 bytes, field 1 (status) = 1 (SERVING).
const message = Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]);
const headers = { ":status": 200, "content-type": "application/grpc" };
const trailers = { "grpc-status": "0" };

const server = http2.createServer();
server.on("stream", (stream) => {
  stream.on("error", () => {});
  stream.on("end", () => {
    if (stream.destroyed) return;
    stream.respond(headers, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    stream.end(message);
  });
  stream.resume();
});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  if (address && typeof address === "object") console.log(`bare gRPC baseline on http://127.0.0.1:${address.port}`);
});
process.on("SIGTERM", () => process.exit(0));
