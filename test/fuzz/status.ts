// The status of a reply, read as each protocol's client reads it: the gRPC
// status trailer (or a trailers-only response), gRPC-Web's trailer frame,
// Connect's HTTP status and JSON error body, Connect streaming's end-stream
// message. Where a reply carries no status of its protocol, the code is the
// one the protocol's specification derives from the HTTP status or the HTTP/2
// reset (what a client shows its caller).
import { Code } from "@connectrpc/connect";
import type { Reply } from "./send.js";

export type Protocol = "grpc" | "grpc-web" | "connect" | "connect-stream" | "connect-get";

export interface Outcome {
  /** undefined: the call succeeded. */
  code: Code | undefined;
  message: string;
  /** Everything of the error a caller can read (message, details, debug text), for the leak checks. */
  text: string;
  /** Bytes of the error details (grpc-status-details-bin, or the JSON details). */
  detailBytes: number;
  /** Where the status came from. */
  source: "grpc-status" | "grpc-web-trailer" | "connect-error" | "end-stream" | "ok" | "http-status" | "reset" | "none";
}

const connectCodes = new Map<string, Code>(
  Object.entries({
    canceled: Code.Canceled,
    unknown: Code.Unknown,
    invalid_argument: Code.InvalidArgument,
    deadline_exceeded: Code.DeadlineExceeded,
    not_found: Code.NotFound,
    already_exists: Code.AlreadyExists,
    permission_denied: Code.PermissionDenied,
    resource_exhausted: Code.ResourceExhausted,
    failed_precondition: Code.FailedPrecondition,
    aborted: Code.Aborted,
    out_of_range: Code.OutOfRange,
    unimplemented: Code.Unimplemented,
    internal: Code.Internal,
    unavailable: Code.Unavailable,
    data_loss: Code.DataLoss,
    unauthenticated: Code.Unauthenticated,
  }),
);

/** gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md); Connect's is the same table. */
export function codeFromHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}

/** gRPC's RST_STREAM-to-status mapping (PROTOCOL-HTTP2.md, "Errors"). */
export function codeFromReset(rst: number): Code {
  switch (rst) {
    case 0x7: // REFUSED_STREAM
      return Code.Unavailable;
    case 0x8: // CANCEL
      return Code.Canceled;
    case 0xb: // ENHANCE_YOUR_CALM
      return Code.ResourceExhausted;
    case 0xc: // INADEQUATE_SECURITY
      return Code.PermissionDenied;
    default:
      return Code.Internal;
  }
}

function percentDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

interface Envelope {
  flags: number;
  data: Buffer;
}

function envelopes(body: Buffer): Envelope[] {
  const out: Envelope[] = [];
  let at = 0;
  while (body.length >= at + 5) {
    const length = body.readUInt32BE(at + 1);
    if (body.length < at + 5 + length) break;
    out.push({ flags: body[at]!, data: body.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return out;
}

function grpcStatus(fields: Record<string, string>, source: Outcome["source"]): Outcome | undefined {
  const raw = fields["grpc-status"];
  if (raw === undefined) return undefined;
  const number = Number(raw);
  const message = percentDecode(fields["grpc-message"] ?? "");
  const details = fields["grpc-status-details-bin"] ? Buffer.from(fields["grpc-status-details-bin"], "base64") : Buffer.alloc(0);
  const code = Number.isInteger(number) && number >= 0 && number <= 16 ? (number === 0 ? undefined : (number as Code)) : Code.Unknown;
  return { code, message, text: `${message}\n${details.toString("latin1")}`, detailBytes: details.length, source };
}

function fromHttp(reply: Reply, protocol: Protocol): Outcome {
  // A reply without its protocol's status: what the HTTP layer said, or how the stream ended.
  if (reply.status !== undefined && reply.status !== 200) {
    const body = reply.body.subarray(0, 2048).toString("utf8");
    return { code: codeFromHttpStatus(reply.status), message: `HTTP ${reply.status}${body ? `: ${body}` : ""}`, text: body, detailBytes: 0, source: "http-status" };
  }
  if (reply.reset !== undefined) {
    return { code: codeFromReset(reply.reset), message: `RST_STREAM ${reply.reset}`, text: "", detailBytes: 0, source: "reset" };
  }
  const what = protocol === "grpc" ? "no grpc-status" : protocol === "grpc-web" ? "no trailer frame" : "no end-stream message";
  return { code: Code.Internal, message: `HTTP ${reply.status ?? "-"} with ${what}${reply.error ? ` (${reply.error})` : ""}`, text: "", detailBytes: 0, source: "none" };
}

function connectError(json: unknown): Omit<Outcome, "source"> | undefined {
  if (typeof json !== "object" || json === null) return undefined;
  const { code, message, details } = json as { code?: unknown; message?: unknown; details?: unknown };
  if (typeof code !== "string") return undefined;
  const text = `${typeof message === "string" ? message : ""}\n${details === undefined ? "" : JSON.stringify(details)}`;
  let detailBytes = 0;
  if (Array.isArray(details)) for (const d of details) detailBytes += JSON.stringify(d).length;
  return { code: connectCodes.get(code) ?? Code.Unknown, message: typeof message === "string" ? message : "", text, detailBytes };
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
}

/** The status of the call as the protocol's client reads it. */
export function outcomeOf(protocol: Protocol, reply: Reply): Outcome {
  switch (protocol) {
    case "grpc":
      return grpcStatus(reply.headers, "grpc-status") ?? grpcStatus(reply.trailers, "grpc-status") ?? fromHttp(reply, protocol);
    case "grpc-web": {
      const trailersOnly = grpcStatus(reply.headers, "grpc-status");
      if (trailersOnly) return trailersOnly;
      if (reply.status !== 200) return fromHttp(reply, protocol);
      const trailer = envelopes(reply.body).find((e) => (e.flags & 0x80) !== 0);
      if (!trailer) return fromHttp(reply, protocol);
      const fields: Record<string, string> = {};
      for (const line of trailer.data.toString("latin1").split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) fields[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      return grpcStatus(fields, "grpc-web-trailer") ?? { code: Code.Internal, message: "trailer frame without grpc-status", text: "", detailBytes: 0, source: "none" };
    }
    case "connect":
    case "connect-get": {
      if (reply.status === 200) return { code: undefined, message: "", text: "", detailBytes: 0, source: "ok" };
      const error = (reply.headers["content-type"] ?? "").startsWith("application/json") ? connectError(parseJson(reply.body)) : undefined;
      return error ? { ...error, source: "connect-error" } : fromHttp(reply, protocol);
    }
    case "connect-stream": {
      if (reply.status !== 200) {
        const error = connectError(parseJson(reply.body));
        return error ? { ...error, source: "connect-error" } : fromHttp(reply, protocol);
      }
      const end = envelopes(reply.body).find((e) => (e.flags & 0x02) !== 0);
      if (!end) return fromHttp(reply, protocol);
      const json = parseJson(end.data) as { error?: unknown } | undefined;
      if (json && json.error === undefined) return { code: undefined, message: "", text: "", detailBytes: 0, source: "end-stream" };
      const error = connectError(json?.error);
      return error ? { ...error, source: "end-stream" } : { code: Code.Internal, message: `unreadable end-stream message: ${end.data.subarray(0, 200).toString("latin1")}`, text: "", detailBytes: 0, source: "none" };
    }
  }
}
