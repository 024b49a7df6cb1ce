import http2 from "node:http2";

/** What one raw HTTP/2 request got back: the response headers, the trailers (if any) and the body. */
export interface H2Answer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
}

/** One request over its own h2c connection (prior knowledge), as sent: for what Connect's clients cannot send. */
export function h2(url: string, path: string, headers: http2.OutgoingHttpHeaders, body: Uint8Array): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, te: "trailers", ...headers });
    const chunks: Buffer[] = [];
    let answer: Omit<H2Answer, "body" | "trailers"> | undefined;
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (answer = { status: Number(h[":status"]), headers: h }));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("end", () => {
      session.close();
      resolve({ ...answer!, trailers, body: Buffer.concat(chunks) });
    });
    stream.end(body);
  });
}

/** A gRPC length-prefixed message: the flags byte (1: compressed), the length, the bytes. */
export function envelope(bytes: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out[0] = flags;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}
