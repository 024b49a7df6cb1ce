// What the fuzz test sends: one malformed request per case, for any RPC over
// any protocol, in families by what is broken (the message, its frame, the
// headers, the query string, the JSON, the body's end, its size, the HTTP
// itself). Each case knows what may come back: a code it must be (where the
// input admits one answer only), or anything but an internal error.
import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { gzipSync, brotliCompressSync } from "node:zlib";
import { Access } from "../../gen/boxoffice/common/v1/access_pb.js";
import { encode, encodeJson, messageArb, mutatedArb, shapedArb, type Interesting } from "./protobuf.js";
import type { Rpc } from "./rpcs.js";
import type { Exchange, Framing, HttpVersion } from "./send.js";
import type { Protocol } from "./status.js";

export interface Fixtures {
  userId: string;
  userToken: string;
  queueToken: string;
  concertId: string;
  scheduleId: string;
  reservationId: string;
  operatorKey: string;
  scannerKey: string;
  internalCredential: string;
}

export interface Transport {
  name: string;
  kind: "grpc" | "grpc-web" | "connect" | "get";
  http: HttpVersion;
  json: boolean;
}

export const transports: Transport[] = [
  { name: "gRPC over h2", kind: "grpc", http: "2", json: false },
  { name: "gRPC+json over h2", kind: "grpc", http: "2", json: true },
  { name: "gRPC-Web over HTTP/1.1", kind: "grpc-web", http: "1.1", json: false },
  { name: "gRPC-Web+json over HTTP/1.1", kind: "grpc-web", http: "1.1", json: true },
  { name: "gRPC-Web over h2", kind: "grpc-web", http: "2", json: false },
  { name: "Connect over HTTP/1.1", kind: "connect", http: "1.1", json: false },
  { name: "Connect+json over HTTP/1.1", kind: "connect", http: "1.1", json: true },
  { name: "Connect over h2", kind: "connect", http: "2", json: false },
  { name: "Connect GET over HTTP/1.1", kind: "get", http: "1.1", json: false },
  { name: "Connect GET+json over HTTP/1.1", kind: "get", http: "1.1", json: true },
  { name: "Connect GET over h2", kind: "get", http: "2", json: false },
];

/** The deadline every case sends unless the case is about the deadline: the answer must come within it and the slack. */
export const deadlineMs = 2_000;
export const slackMs = 2_500;
/** The client gives up here: a hang. */
export const capMs = 6_000;
const readMaxBytes = 1024 * 1024;

export type Family = "random" | "mutated" | "shaped" | "json" | "framing" | "headers" | "query" | "stall" | "oversize" | "abandon" | "raw-http";

export class FuzzCase {
  constructor(
    readonly family: Family,
    readonly transport: string,
    readonly protocol: Protocol,
    readonly rpc: string,
    readonly exchange: Exchange,
    /** How the input was built. */
    readonly what: string,
    /** The only codes the answer may have; undefined: anything but an internal error. */
    readonly expect: readonly Code[] | undefined,
    /** The answer must come within this many ms. */
    readonly answerWithinMs: number,
    readonly options: {
      /** A long deadline was given: DeadlineExceeded would be one that fired at once. */
      notDeadlineExceeded?: boolean;
      /** The request breaks HTTP itself (an invalid Host, broken framing): a bare 400 or a PROTOCOL_ERROR reset is a fair answer. */
      httpInvalid?: boolean;
      /** For raw HTTP/1.x: the bytes as written on the socket. */
      raw?: Uint8Array;
    } = {},
  ) {}

  [fc.toStringMethod](): string {
    return this.toString();
  }

  toString(): string {
    const e = this.exchange;
    const lines = [
      `${this.transport}: ${e.method} ${e.path}${e.stall ? " (body never ends)" : ""}${e.abandon ? " (abandoned after sending)" : ""}`,
      `  family ${this.family}: ${this.what}`,
    ];
    if (this.options.raw) lines.push(`  raw request (${this.options.raw.length} bytes): ${JSON.stringify(preview(Buffer.from(this.options.raw).toString("latin1"), 600))}`);
    else {
      lines.push(`  headers: ${preview(JSON.stringify(e.headers), 1500)}`);
      lines.push(`  body (${e.body.length} bytes, hex): ${hexPreview(e.body)}`);
    }
    lines.push(`  expected: ${this.expect ? this.expect.map((c) => Code[c]).join(" or ") : "anything but Internal/Unknown/DataLoss"}${this.options.notDeadlineExceeded ? ", not DeadlineExceeded" : ""}, within ${this.answerWithinMs} ms`);
    return lines.join("\n");
  }
}

function preview(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} chars)`;
}

export function hexPreview(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString("hex");
  return hex.length <= 512 ? hex || "(empty)" : `${hex.slice(0, 384)}…${hex.slice(-64)} (${bytes.length} bytes in all)`;
}

export function protocolOf(t: Transport, rpc: Rpc): Protocol {
  if (t.kind === "get") return "connect-get";
  if (t.kind === "connect") return rpc.streaming ? "connect-stream" : "connect";
  return t.kind;
}

const framingOf = (p: Protocol): Framing => (p === "grpc" ? "grpc" : p === "grpc-web" ? "grpc-web" : p === "connect-stream" ? "connect-stream" : "none");

export function contentTypeOf(t: Transport, rpc: Rpc): string {
  switch (t.kind) {
    case "grpc":
      return t.json ? "application/grpc+json" : "application/grpc";
    case "grpc-web":
      return t.json ? "application/grpc-web+json" : "application/grpc-web+proto";
    default:
      return rpc.streaming ? (t.json ? "application/connect+json" : "application/connect+proto") : t.json ? "application/json" : "application/proto";
  }
}

export const timeoutHeader = (t: Transport) => (t.kind === "grpc" || t.kind === "grpc-web" ? "grpc-timeout" : "connect-timeout-ms");
const timeoutValue = (t: Transport, ms: number) => (timeoutHeader(t) === "grpc-timeout" ? `${ms}m` : String(ms));
export const encodingHeader = (t: Transport, rpc: Rpc) =>
  t.kind === "grpc" || t.kind === "grpc-web" ? "grpc-encoding" : rpc.streaming ? "connect-content-encoding" : "content-encoding";

/** The headers of a well-formed call of this protocol, with the test's deadline. */
export function protocolHeaders(t: Transport, rpc: Rpc, timeoutMs = deadlineMs): Record<string, string> {
  const headers: Record<string, string> = {};
  if (t.kind !== "get") headers["content-type"] = contentTypeOf(t, rpc);
  if (t.kind === "grpc") headers.te = "trailers";
  if (t.kind === "grpc-web") headers["x-grpc-web"] = "1";
  if (t.kind === "connect") headers["connect-protocol-version"] = "1";
  headers[timeoutHeader(t)] = timeoutValue(t, timeoutMs);
  return headers;
}

export function envelope(flags: number, payload: ArrayLike<number>, declaredLength = payload.length): Uint8Array {
  const out = Buffer.alloc(5 + payload.length);
  out[0] = flags;
  out.writeUInt32BE(declaredLength >>> 0, 1);
  out.set(Array.from(payload), 5);
  return out;
}

const isEnveloped = (p: Protocol) => p === "grpc" || p === "grpc-web" || p === "connect-stream";

/** A message's bytes as the protocol carries them in a body (enveloped or not), or in a GET query. */
function carry(t: Transport, rpc: Rpc, message: Uint8Array): { body: Uint8Array; query: string } {
  if (t.kind === "get") {
    const query = t.json ? `connect=v1&encoding=json&message=${encodeURIComponent(Buffer.from(message).toString("utf8"))}` : `connect=v1&encoding=proto&base64=1&message=${Buffer.from(message).toString("base64url")}`;
    return { body: new Uint8Array(0), query };
  }
  return { body: isEnveloped(protocolOf(t, rpc)) ? envelope(0, message) : message, query: "" };
}

interface Parts {
  family: Family;
  what: string;
  headers?: Record<string, string | string[]>;
  /** Headers to drop from the protocol's own. */
  drop?: string[];
  /** The message (proto bytes or JSON text), carried as the protocol carries it. */
  message?: Uint8Array;
  /** The body as sent, instead of a carried message. */
  body?: Uint8Array;
  /** The query string (after `?`), instead of a carried message's. */
  query?: string;
  method?: string;
  path?: string;
  expect?: readonly Code[];
  stall?: boolean;
  abandon?: boolean;
  answerWithinMs?: number;
  notDeadlineExceeded?: boolean;
  httpInvalid?: boolean;
  timeoutMs?: number;
}

function makeCase(t: Transport, rpc: Rpc, auth: Record<string, string>, parts: Parts): FuzzCase {
  const protocol = protocolOf(t, rpc);
  const headers: Record<string, string | string[]> = { ...protocolHeaders(t, rpc, parts.timeoutMs), ...auth };
  for (const name of parts.drop ?? []) delete headers[name];
  Object.assign(headers, parts.headers ?? {});
  const carried = parts.message ? carry(t, rpc, parts.message) : { body: new Uint8Array(0), query: t.kind === "get" ? "connect=v1&encoding=proto" : "" };
  const body = parts.body ?? carried.body;
  const query = parts.query ?? carried.query;
  const path = (parts.path ?? rpc.path) + (query ? `?${query}` : "");
  const method = parts.method ?? (t.kind === "get" ? "GET" : "POST");
  const exchange: Exchange = {
    http: t.http,
    method,
    path,
    headers,
    body,
    stall: parts.stall,
    abandon: parts.abandon,
    firstMessageIsEnough: rpc.streaming ? framingOf(protocol) : undefined,
    capMs,
  };
  // A URL past what an HTTP layer takes in its header block (16 KiB in Node's HTTP/1.1) may be refused before any RPC is reached.
  let expect = t.kind === "get" && path.length > 8000 ? undefined : parts.expect;
  // A bidi stream is not served over HTTP/1.1 at all (Connect answers so, Unimplemented): nothing is read to find fault with.
  if (rpc.method.methodKind === "bidi_streaming" && t.http === "1.1") expect = undefined;
  // The access check runs before the body is read (Connect's request gate: a request it refuses is never read), so
  // a call its credentials do not surely get through may be refused first, whatever is wrong with the body.
  if (expect && accessMayRefuse(rpc, headers)) expect = [...expect, ...accessRefusals];
  return new FuzzCase(parts.family, t.name, protocol, rpc.path, exchange, parts.what, expect, parts.answerWithinMs ?? deadlineMs + slackMs, {
    notDeadlineExceeded: parts.notDeadlineExceeded,
    httpInvalid: parts.httpInvalid,
  });
}

// ---------------------------------------------------------------- credentials

/** What the access check answers a call it refuses (access.ts, and the admission gate of gated RPCs). */
const accessRefusals = [Code.Unauthenticated, Code.PermissionDenied, Code.FailedPrecondition];
let known: Fixtures | undefined;

/** Whether the call's credentials might not pass its RPC's access check (they surely pass unless they are the fixtures' own). */
function accessMayRefuse(rpc: Rpc, headers: Record<string, string | string[]>): boolean {
  const f = known;
  if (!f) return true;
  const one = (name: string) => (typeof headers[name] === "string" ? (headers[name] as string) : headers[name] === undefined ? undefined : "(several)");
  const authorization = one("authorization");
  const userOk = authorization === `Bearer ${f.userToken}`;
  switch (rpc.access) {
    case Access.ANYONE:
      return !(authorization === undefined || userOk);
    case Access.USER:
    case Access.GATED_IDEMPOTENT:
      return !userOk;
    case Access.OPERATOR:
      return authorization !== `Bearer ${f.operatorKey}`;
    case Access.SCANNER:
      return authorization !== `Bearer ${f.scannerKey}`;
    case Access.INTERNAL:
      return one("x-internal-credential") !== f.internalCredential;
    case Access.QUEUE_TOKEN:
      return !one("x-queue-token");
    default:
      // GATED: the fan's admission may have ended (a LeaveQueue, a payment) since the fixtures were made.
      return true;
  }
}

/** Credentials that pass the RPC's access check, so that a decodable request reaches its handler. */
function validAuth(rpc: Rpc, f: Fixtures): fc.Arbitrary<Record<string, string>> {
  const user = `Bearer ${f.userToken}`;
  const operator = `Bearer ${f.operatorKey}`;
  const scanner = `Bearer ${f.scannerKey}`;
  return fc.oneof(
    { weight: 6, arbitrary: fc.constant({ authorization: rpc.access === Access.OPERATOR ? operator : rpc.access === Access.SCANNER ? scanner : user, "x-queue-token": f.queueToken, "x-internal-credential": f.internalCredential }) },
    { weight: 1, arbitrary: fc.constant({}) },
    { weight: 1, arbitrary: fc.constant({ authorization: operator }) },
  );
}

function garbageToken(f: Fixtures): fc.Arbitrary<string | string[]> {
  const flipped = f.userToken.slice(0, -2) + (f.userToken.endsWith("A") ? "BB" : "AA");
  return fc.oneof(
    fc.constantFrom<string | string[]>(
      "",
      "Bearer",
      "Bearer ",
      "bearer x",
      "Bearer  x y",
      "Basic Zm9vOmJhcg==",
      `Bearer ${flipped}`,
      `Bearer ${f.userToken}.x`,
      "Bearer a.b.c",
      "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
      `Bearer ${"x".repeat(4000)}`,
      "Bearer \xff\xfe\xfd",
      [`Bearer ${f.userToken}`, "Bearer other"],
      f.queueToken,
      `${f.queueToken}x`,
      f.queueToken.slice(0, 10),
      f.internalCredential.slice(0, -1),
      "' or 1=1 --",
      "null",
      "%00",
    ),
    printable(200),
  );
}

/** A header value Node's clients will send as given (visible ASCII and Latin-1, no leading or trailing blanks). */
function printable(maxLength: number): fc.Arbitrary<string> {
  return fc
    .string({ maxLength, unit: fc.oneof(fc.integer({ min: 0x21, max: 0x7e }), fc.integer({ min: 0xa1, max: 0xff }), fc.constant(0x20)).map((c) => String.fromCharCode(c)) })
    .map((s) => s.trim());
}

function garbageAuth(f: Fixtures): fc.Arbitrary<Record<string, string | string[]>> {
  return fc
    .record(
      { authorization: garbageToken(f), "x-queue-token": garbageToken(f), "x-internal-credential": garbageToken(f) },
      { requiredKeys: [] },
    )
    .map((h) => h as Record<string, string | string[]>);
}

// ---------------------------------------------------------------- the families

export interface Context {
  rpcs: Rpc[];
  fixtures: Fixtures;
}

function interesting(f: Fixtures): Interesting {
  return { strings: [f.concertId, f.scheduleId, f.reservationId, f.userId, f.queueToken, f.userToken] };
}

const validProto = (rpc: Rpc, f: Fixtures) => messageArb(rpc.input, interesting(f)).map((m) => [...encode(rpc.input, m)]);
const validJson = (rpc: Rpc, f: Fixtures) => messageArb(rpc.input, interesting(f)).map((m) => encodeJson(rpc.input, m));
const bytes = (text: string) => new Uint8Array(Buffer.from(text, "utf8"));

/** Whether a family of cases applies to a transport at all (JSON shapes to JSON codecs, frames to bodies, queries to GET). */
export function applies(family: Family, t: Transport): boolean {
  switch (family) {
    case "shaped":
      return !t.json;
    case "json":
      return t.json;
    case "framing":
    case "stall":
    case "abandon":
      return t.kind !== "get";
    case "query":
      return t.kind === "get";
    case "raw-http":
      return false;
    default:
      return true;
  }
}

/** Cases of a family for one transport, over the RPCs given; undefined if the family does not apply. */
export function familyArb(family: Family, t: Transport, rpcs: Rpc[], f: Fixtures): fc.Arbitrary<FuzzCase> | undefined {
  known = f;
  // Connect GET serves NO_SIDE_EFFECTS methods only (a GET of any other is one of the "headers" cases of the POST transports).
  const usable = t.kind === "get" ? rpcs.filter((r) => r.getAllowed) : rpcs;
  if (usable.length === 0) return undefined;
  const build = (make: (rpc: Rpc) => fc.Arbitrary<FuzzCase> | undefined): fc.Arbitrary<FuzzCase> | undefined => {
    const per = usable.map((rpc) => make(rpc)).filter((a): a is fc.Arbitrary<FuzzCase> => a !== undefined);
    return per.length === 0 ? undefined : fc.oneof(...per);
  };
  switch (family) {
    case "random":
      return build((rpc) =>
        fc.tuple(validAuth(rpc, f), t.json ? fc.oneof(fc.string({ maxLength: 80, unit: "binary" }), fc.json({ maxDepth: 3 })).map(bytes) : fc.uint8Array({ maxLength: 80 })).map(([auth, message]) =>
          makeCase(t, rpc, auth, { family, what: t.json ? "random text as the JSON message" : "random bytes as the message", message }),
        ),
      );
    case "mutated":
      return build((rpc) =>
        t.json
          ? fc.tuple(validAuth(rpc, f), validJson(rpc, f), fc.array(fc.tuple(fc.nat(), fc.string({ maxLength: 3, unit: "binary" }), fc.nat({ max: 3 })), { minLength: 1, maxLength: 3 })).map(([auth, json, edits]) => {
              let text = json;
              for (const [at, insert, remove] of edits) {
                const i = text.length === 0 ? 0 : at % (text.length + 1);
                text = text.slice(0, i) + insert + text.slice(i + remove);
              }
              return makeCase(t, rpc, auth, { family, what: `valid JSON ${JSON.stringify(json.slice(0, 200))}, edited`, message: bytes(text) });
            })
          : fc.tuple(validAuth(rpc, f), mutatedArb(validProto(rpc, f))).map(([auth, m]) => makeCase(t, rpc, auth, { family, what: m.what, message: new Uint8Array(m.bytes) })),
      );
    case "shaped":
      if (t.json) return undefined;
      return build((rpc) =>
        fc.tuple(validAuth(rpc, f), shapedArb(rpc.input, validProto(rpc, f))).map(([auth, shape]) =>
          makeCase(t, rpc, auth, { family, what: shape.what, message: new Uint8Array(shape.bytes), expect: shape.undecodable ? [Code.InvalidArgument] : undefined }),
        ),
      );
    case "json":
      if (!t.json) return undefined;
      return build((rpc) => fc.tuple(validAuth(rpc, f), badJsonArb(rpc)).map(([auth, j]) => makeCase(t, rpc, auth, { family, what: j.what, message: bytes(j.text), expect: j.invalid ? [Code.InvalidArgument] : undefined })));
    case "framing":
      if (t.kind === "get") return undefined;
      return build((rpc) => fc.tuple(validAuth(rpc, f), framingArb(t, rpc, f)).map(([auth, parts]) => makeCase(t, rpc, auth, parts)));
    case "headers":
      return build((rpc) => fc.tuple(validAuth(rpc, f), headersArb(t, rpc, f)).map(([auth, parts]) => makeCase(t, rpc, auth, parts)));
    case "query":
      if (t.kind !== "get") return undefined;
      return build((rpc) => fc.tuple(validAuth(rpc, f), queryArb(t, rpc, f)).map(([auth, parts]) => makeCase(t, rpc, auth, parts)));
    case "stall":
      if (t.kind === "get") return undefined;
      return build((rpc) =>
        fc.tuple(validAuth(rpc, f), validProto(rpc, f), validJson(rpc, f), fc.nat(), fc.constantFrom(200, 400)).map(([auth, proto, json, cut, timeoutMs]) => {
          const { body } = carry(t, rpc, t.json ? bytes(json) : new Uint8Array(proto));
          const sent = body.subarray(0, body.length === 0 ? 0 : cut % (body.length + 1));
          return makeCase(t, rpc, auth, {
            family,
            what: `${sent.length} of ${body.length} bytes of a valid body, then nothing (the body never ends), with a ${timeoutMs} ms deadline`,
            body: sent,
            stall: true,
            timeoutMs,
            answerWithinMs: timeoutMs + slackMs,
          });
        }),
      );
    case "oversize":
      return build((rpc) => fc.tuple(validAuth(rpc, f), oversizeArb(t, rpc)).map(([auth, parts]) => makeCase(t, rpc, auth, parts)));
    case "abandon":
      if (t.kind === "get") return undefined;
      return build((rpc) =>
        fc.tuple(validAuth(rpc, f), validProto(rpc, f), fc.nat()).map(([auth, proto, cut]) => {
          const { body } = carry(t, rpc, new Uint8Array(proto));
          return makeCase(t, rpc, auth, { family, what: "part of a valid body, then the caller goes away", body: body.subarray(0, cut % (body.length + 1)), abandon: true });
        }),
      );
    case "raw-http":
      return undefined; // see rawHttpArb
  }
}

// ---------------------------------------------------------------- JSON

interface BadJson {
  what: string;
  text: string;
  /** Not a message of this type: must be InvalidArgument. */
  invalid: boolean;
}

function badJsonArb(rpc: Rpc): fc.Arbitrary<BadJson> {
  const fields = rpc.input.fields;
  const name = fields.length ? fc.constantFrom(...fields.map((x) => x.jsonName)) : fc.constant("nope");
  const deep = (depth: number, open: string, close: string) => open.repeat(depth) + close.repeat(depth);
  const int64Fields = fields.filter((x) => x.fieldKind === "scalar" && [3, 4, 6, 16, 18].includes(x.scalar)).map((x) => x.jsonName);
  const int32Fields = fields.filter((x) => (x.fieldKind === "scalar" && [5, 13, 7, 15, 17].includes(x.scalar)) || (x.fieldKind === "list" && x.listKind === "scalar" && x.scalar === 5)).map((x) => x.jsonName);
  const messageFields = fields.filter((x) => x.fieldKind === "message" || (x.fieldKind === "list" && x.listKind === "message")).map((x) => x.jsonName);
  const shapes: fc.Arbitrary<BadJson>[] = [
    fc.constantFrom<BadJson>(
      { what: "not JSON: {", text: "{", invalid: true },
      { what: "not JSON: truncated object", text: '{"a":', invalid: true },
      { what: "not JSON: single quotes", text: "{'a': 1}", invalid: true },
      { what: "not JSON: a trailing comma", text: '{"a":1,}', invalid: true },
      { what: "not JSON: empty", text: "", invalid: true },
      { what: "not JSON: NaN", text: "NaN", invalid: true },
      { what: "a JSON array, not an object", text: "[]", invalid: true },
      { what: "JSON null", text: "null", invalid: false },
      { what: "a JSON number", text: "1", invalid: true },
      { what: "a JSON string", text: '"x"', invalid: true },
      { what: "JSON true", text: "true", invalid: true },
      // Connect ignores unknown JSON fields (ignoreUnknownFields), so these are fine messages.
      { what: "an unknown field", text: '{"noSuchField": 1}', invalid: false },
      { what: "__proto__ as a key", text: '{"__proto__": {"polluted": 1}}', invalid: false },
      { what: "constructor as a key", text: '{"constructor": {"prototype": {"x": 1}}}', invalid: false },
      { what: "a byte-order mark before {}", text: "\ufeff{}", invalid: false },
      { what: "{} then garbage", text: "{} x", invalid: true },
      { what: "a lone surrogate escaped in a string", text: '{"x": "\\ud800"}', invalid: false },
      { what: "two objects", text: "{}{}", invalid: true },
    ),
    fc.integer({ min: 1000, max: 200_000 }).map((depth) => ({ what: `${depth} nested arrays`, text: deep(depth, "[", "]"), invalid: true })),
    fc.tuple(name, fc.integer({ min: 1000, max: 100_000 })).map(([field, depth]) => ({ what: `${depth} nested objects in field ${field}`, text: `{"${field}":${deep(depth, '{"a":', "}").replace(/}$/, "1}")}}`, invalid: true })),
    fc.tuple(name, fc.constantFrom("{}", "[]", "true", "1.5", '"x"', "null", '{"a":1}', "[null]", '[[1]]', "1e400", "-0", '"\\u0000"', '"\\ud800"')).map(([field, value]) => ({
      what: `field ${field} = ${value}`,
      text: `{"${field}":${value}}`,
      invalid: false, // some of these are fine for some field types (null, "x" for a string)
    })),
    fc.tuple(name, fc.string({ maxLength: 20 })).map(([field, s]) => ({ what: `field ${field} duplicated`, text: `{"${field}":${JSON.stringify(s)},"${field}":${JSON.stringify(s)}}`, invalid: false })),
    fc.tuple(name, fc.integer({ min: 100_000, max: 900_000 })).map(([field, n]) => ({ what: `field ${field} = a string of ${n} chars`, text: `{"${field}":"${"x".repeat(n)}"}`, invalid: false })),
    // Decoders that replace invalid UTF-8 (U+FFFD) rather than refuse it are common: either answer is fair.
    fc.tuple(name, fc.uint8Array({ minLength: 1, maxLength: 6 })).map(([field, b]) => ({
      what: `invalid UTF-8 inside a JSON string (field ${field})`,
      text: `{"${field}":"${Buffer.from([0xff, ...b]).toString("latin1")}"}`,
      invalid: false,
    })),
    fc.constantFrom([0xf0, 0xaa, 0x87, 0x89], [0xf1, 0x86, 0xb2, 0x8e], [0xe2, 0x82, 0xac], [0xc3, 0xa9], [0xff]).map((b) => ({
      what: `not JSON: one character (${b.map((x) => x.toString(16)).join(" ")})`,
      text: Buffer.from(b).toString("latin1"),
      invalid: true,
    })),
  ];
  if (int64Fields.length) {
    shapes.push(
      fc.tuple(fc.constantFrom(...int64Fields), fc.constantFrom('"99999999999999999999"', "1e400", "9223372036854775808", '"-9223372036854775809"', '"0x10"', '"1e3"', '"1.5"', "1.5", '""', '" 1"', '"NaN"', "true", "[]")).map(([field, v]) => ({
        what: `int64 field ${field} = ${v}`,
        text: `{"${field}":${v}}`,
        invalid: !["1e3", '"1e3"'].includes(v),
      })),
    );
  }
  if (int32Fields.length) {
    shapes.push(
      fc.tuple(fc.constantFrom(...int32Fields), fc.constantFrom("2147483648", "-2147483649", "1.5", '"x"', "1e10", "[1.5]", "[\"2147483648\"]", "{}")).map(([field, v]) => ({
        what: `int32 field ${field} = ${v}`,
        text: `{"${field}":${v}}`,
        invalid: true,
      })),
    );
  }
  if (messageFields.length) {
    shapes.push(
      fc.tuple(fc.constantFrom(...messageFields), fc.constantFrom('"not a date"', '"9999-99-99T00:00:00Z"', '"10000-01-01T00:00:00Z"', '"1x"', "[1]", "1", '[{"startsAt":"x"}]', '[{"seatCount":"x"}]')).map(([field, v]) => ({
        what: `message field ${field} = ${v}`,
        text: `{"${field}":${v}}`,
        invalid: true,
      })),
    );
  }
  return fc.oneof(...shapes);
}

// ---------------------------------------------------------------- frames

const gzipBomb = gzipSync(Buffer.alloc(2 * readMaxBytes));

function framingArb(t: Transport, rpc: Rpc, f: Fixtures): fc.Arbitrary<Parts> {
  const family: Family = "framing";
  const protocol = protocolOf(t, rpc);
  const encodingName = encodingHeader(t, rpc);
  const message = t.json ? validJson(rpc, f).map(bytes) : validProto(rpc, f).map((b) => new Uint8Array(b));
  if (!isEnveloped(protocol)) {
    // Connect unary has no frame: what can break is the body's compression.
    return fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 40 }).map((garbage) => ({ family, what: "content-encoding gzip, body not gzip", headers: { [encodingName]: "gzip" }, body: garbage, expect: [Code.InvalidArgument] })),
      fc.tuple(message, fc.nat()).map(([m, cut]) => {
        const gz = gzipSync(m);
        return { family, what: "content-encoding gzip, the gzip stream cut short", headers: { [encodingName]: "gzip" }, body: gz.subarray(0, 1 + (cut % (gz.length - 1))), expect: [Code.InvalidArgument] };
      }),
      // Some short byte strings are whole brotli streams (of nothing): no code is certain.
      fc.uint8Array({ minLength: 1, maxLength: 40 }).map((garbage) => ({ family, what: "content-encoding br, body most likely not brotli", headers: { [encodingName]: "br" }, body: garbage })),
      fc.constant<Parts>({ family, what: "content-encoding gzip, 2 MiB once inflated (a gzip bomb)", headers: { [encodingName]: "gzip" }, body: gzipBomb, expect: [Code.ResourceExhausted] }),
      message.map((m) => ({ family, what: "content-encoding gzip, valid", headers: { [encodingName]: "gzip" }, body: gzipSync(m) })),
      message.map((m) => ({ family, what: "content-encoding identity", headers: { [encodingName]: "identity" }, body: m })),
    );
  }
  return fc.oneof(
    fc.tuple(message, fc.integer({ min: 1, max: 1000 })).map(([m, more]) => ({ family, what: `envelope length ${m.length + more} with ${m.length} bytes`, body: envelope(0, m, m.length + more), expect: [Code.InvalidArgument] })),
    fc.uint8Array({ minLength: 1, maxLength: 4 }).map((head) => ({ family, what: `${head.length} bytes of an envelope header`, body: head, expect: [Code.InvalidArgument] })),
    fc.tuple(message, fc.uint8Array({ minLength: 1, maxLength: 4 })).map(([m, tail]) => ({ family, what: `a message, then ${tail.length} stray bytes`, body: Buffer.concat([envelope(0, m), tail]), expect: [Code.InvalidArgument] })),
    fc.tuple(message, message).map(([a, b]) => ({ family, what: "two messages", body: Buffer.concat([envelope(0, a), envelope(0, b)]) })),
    fc.constant<Parts>({ family, what: "no message at all", body: new Uint8Array(0) }),
    message.map((m) => ({ family, what: "compressed flag, no encoding header", body: envelope(1, m), expect: [Code.InvalidArgument, Code.Unimplemented] })),
    message.map((m) => ({ family, what: "compressed flag, encoding identity", headers: { [encodingName]: "identity" }, body: envelope(1, m), expect: [Code.InvalidArgument, Code.Unimplemented] })),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((garbage) => ({ family, what: "compressed flag, gzip, payload not gzip", headers: { [encodingName]: "gzip" }, body: envelope(1, garbage), expect: [Code.InvalidArgument] })),
    fc.tuple(message, fc.nat()).map(([m, cut]) => {
      const gz = gzipSync(m);
      return { family, what: "compressed flag, gzip cut short", headers: { [encodingName]: "gzip" }, body: envelope(1, gz.subarray(0, 1 + (cut % (gz.length - 1)))), expect: [Code.InvalidArgument] };
    }),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((garbage) => ({ family, what: "compressed flag, br, payload most likely not brotli", headers: { [encodingName]: "br" }, body: envelope(1, garbage) })),
    fc.constant<Parts>({ family, what: "compressed flag, gzip, 2 MiB once inflated (a gzip bomb)", headers: { [encodingName]: "gzip" }, body: envelope(1, gzipBomb), expect: [Code.ResourceExhausted] }),
    message.map((m) => ({ family, what: "compressed flag, br, valid", headers: { [encodingName]: "br" }, body: envelope(1, brotliCompressSync(m)) })),
    message.map((m) => ({ family, what: "encoding gzip, flag not set (uncompressed)", headers: { [encodingName]: "gzip" }, body: envelope(0, m) })),
    fc.tuple(message, fc.constantFrom(0x02, 0x03, 0x80, 0x81, 0x7f, 0xff)).map(([m, flags]) => ({ family, what: `envelope flags 0x${flags.toString(16)}`, body: envelope(flags, m) })),
    fc.tuple(message, fc.constantFrom(readMaxBytes + 1, 0x7fffffff, 0xffffffff)).map(([m, length]) => ({
      family,
      what: `envelope length ${length} (over the 1 MiB limit) with ${m.length} bytes`,
      body: envelope(0, m, length),
      expect: [Code.ResourceExhausted, Code.InvalidArgument],
    })),
  );
}

// ---------------------------------------------------------------- headers

function headersArb(t: Transport, rpc: Rpc, f: Fixtures): fc.Arbitrary<Parts> {
  const family: Family = "headers";
  const tHeader = timeoutHeader(t);
  const foreign = tHeader === "grpc-timeout" ? "connect-timeout-ms" : "grpc-timeout";
  const encodingName = encodingHeader(t, rpc);
  const get = t.kind === "get";
  const message = t.json ? validJson(rpc, f).map(bytes) : validProto(rpc, f).map((b) => new Uint8Array(b));
  const malformedTimeouts =
    tHeader === "grpc-timeout"
      ? ["", "1", "S", "1s", "1h", "123456789S", "-1S", "+1S", "1.5S", "1 S", "0x10S", "1SS", "1e3m", "99999999999H", "NaNS", "\xb9S", `${"9".repeat(2000)}S`]
      : ["", "-1", "abc", "1.5", "12345678901", "1e3", "+1", "0x10", "1 0", "99999999999999999999", "NaN", "Infinity", "\xb9", "9".repeat(2000)];
  const longTimeouts = tHeader === "grpc-timeout" ? ["99999999H", "99999999M", "99999999S", "2147484m", "3000000S", "99999999m"] : ["9999999999", "2147483648", "4294967296", "3000000000"];
  const tinyTimeouts = tHeader === "grpc-timeout" ? ["0S", "0n", "1n", "1u", "1m", "0H"] : ["0", "1"];
  const contentTypes = [
    "",
    "application/grpc+xml",
    "application/grpc; charset=utf-8",
    "APPLICATION/GRPC",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/grpc-web+thrift",
    "application/proto; charset=utf-8",
    "application/json; charset=latin1",
    "application/json;charset=utf-8",
    "application/connect+proto; x=y",
    "application/connect+",
    "application/x-protobuf",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/",
    "*/*",
    "application/grpc\u00ff",
  ];
  const primary: fc.Arbitrary<Parts>[] = [
    fc.constantFrom(...malformedTimeouts).map((v) => ({ family, what: `${tHeader}: ${JSON.stringify(v.slice(0, 40))}${v.length > 40 ? `… (${v.length} chars)` : ""} (malformed)`, headers: { [tHeader]: v }, expect: [Code.InvalidArgument] })),
    fc.constantFrom(...longTimeouts).map((v) => ({ family, what: `${tHeader}: ${v} (valid, and longer than a timer can wait)`, headers: { [tHeader]: v }, notDeadlineExceeded: true })),
    fc.constantFrom(...tinyTimeouts).map((v) => ({ family, what: `${tHeader}: ${v} (tiny)`, headers: { [tHeader]: v } })),
    fc.constantFrom("garbage", "-1", "99999999H", "").map((v) => ({ family, what: `the other protocol's timeout header ${foreign}: ${JSON.stringify(v)}`, headers: { [foreign]: v } })),
    fc.constant({ family, what: "two timeout headers", headers: { [tHeader]: [timeoutValue(t, 1000), timeoutValue(t, 100000)] } }),
    fc.constantFrom(...contentTypes).map((v) => ({ family, what: `content-type: ${JSON.stringify(v)}`, headers: { "content-type": v } })),
    fc.constant({ family, what: "no content-type", drop: ["content-type"] }),
    fc.constant({ family, what: "two content-types", headers: { "content-type": [contentTypeOf(t, rpc), "application/json"] } }),
    fc.constantFrom("snappy", "GZIP", "gzip, br", "deflate", "x".repeat(3000), "zstd", "*", "identity, gzip").map((v) => ({
      family,
      what: get ? `compression=${v.slice(0, 40)} (unknown)` : `${encodingName}: ${v.slice(0, 40)}${v.length > 40 ? `… (${v.length} chars)` : ""} (unknown)`,
      ...(get ? { query: `connect=v1&encoding=${t.json ? "json" : "proto"}&compression=${encodeURIComponent(v.trim())}&message=` } : { headers: { [encodingName]: v } }),
      expect: [Code.Unimplemented],
    })),
    fc.constantFrom("snappy", "", "x".repeat(3000), "gzip;q=0", ",,,,", "*").map((v) => ({ family, what: `accept-encoding variants: ${v.slice(0, 30)}`, headers: { "grpc-accept-encoding": v, "accept-encoding": v, "connect-accept-encoding": v } })),
    fc.constantFrom("2", "0", "", "v1", "1.0", "x".repeat(2000)).map((v) => ({ family, what: `connect-protocol-version: ${v.slice(0, 20)}`, headers: { "connect-protocol-version": v } })),
    fc.constantFrom("", "gzip", "trailers, deflate").map((v) => ({ family, what: `te: ${JSON.stringify(v)}`, headers: { te: v } })),
    fc.constant({ family, what: "no te", drop: ["te"] }),
    fc.constantFrom("a b", "[", "[::1", "[::1]:x", "a:b:c", "@", "x".repeat(300), "localhost:99999", "%41", "a\tb", "évil", "localhost:8080/x", "http://x").map((v) => ({
      family,
      what: `${t.http === "2" ? ":authority" : "host"}: ${JSON.stringify(v.slice(0, 40))}`,
      headers: { [t.http === "2" ? ":authority" : "host"]: v },
      httpInvalid: true,
    })),
    fc.tuple(fc.constantFrom("x-padding", "user-agent", "authorization", "x-queue-token", "cookie", "grpc-trace-bin", "traceparent"), fc.constantFrom(8_000, 15_000, 60_000, 200_000)).map(([name, size]) => ({
      family,
      what: `${name}: ${size} chars`,
      headers: { [name]: "x".repeat(size) },
    })),
    fc.constantFrom(100, 127, 200, 1000).map((n) => ({
      family,
      what: `${n} extra headers`,
      headers: Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-extra-${i}`, String(i)])),
      // Over Node's 16 KiB header block on HTTP/1.1: its parser refuses the request (a bare 400) before any RPC.
      httpInvalid: n >= 1000 && t.http === "1.1",
    })),
    fc.constantFrom("x-forwarded-for", "x-real-ip", "forwarded", "grpc-status", "grpc-message", "grpc-status-details-bin", "connect-content-encoding", "traceparent", "grpc-trace-bin", "x-user-agent").chain((name) =>
      fc.constantFrom("", "garbage", "999.999.999.999", "::::", "for=\"[::1\"", "0", "-1", "%%%", "A".repeat(500), "\xff\xfe").map((v) => ({ family, what: `${name}: ${JSON.stringify(v.slice(0, 30))}`, headers: { [name]: v } })),
    ),
    fc.constantFrom("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", get ? "POST" : "GET", "FOO").map((method) => ({
      family,
      what: `HTTP method ${method}`,
      method,
      // Node's HTTP/1.1 parser knows the registered methods only, and answers any other with a bare 400.
      httpInvalid: method === "FOO" && t.http === "1.1",
    })),
    fc.constantFrom(`${rpc.path}/`, rpc.path.toLowerCase(), `/${rpc.path}`, rpc.path.replace("/", "/%2F"), `${rpc.path}%00`, `${rpc.path};x`, `${rpc.path}/../${rpc.path.split("/")[2]}`, `/${"x".repeat(2000)}`).map((path) => ({ family, what: `path ${path.slice(0, 60)}`, path })),
  ];
  const noise = garbageAuth(f);
  return fc.tuple(fc.oneof(...primary), fc.option(noise, { nil: undefined, freq: 3 }), message).map(([parts, auth, m]) => {
    const out: Parts = { message: m, ...parts, headers: { ...(auth ?? {}), ...(parts.headers ?? {}) } };
    if (auth) out.what += `; with credentials ${preview(JSON.stringify(auth), 200)}`;
    // Credentials that fail come after the protocol's own checks (timeout, compression): the expected code stays.
    return out;
  });
}

// ---------------------------------------------------------------- Connect GET

function queryArb(t: Transport, rpc: Rpc, f: Fixtures): fc.Arbitrary<Parts> {
  const family: Family = "query";
  const encoding = t.json ? "json" : "proto";
  const valid = t.json ? validJson(rpc, f).map(bytes) : validProto(rpc, f).map((b) => new Uint8Array(b));
  const q = (params: [string, string][]) => params.map(([k, v]) => `${k}=${v}`).join("&");
  return fc.oneof(
    fc.constantFrom("!!!", "@@@@", "a", "ab=c", "====", "a===b", "%zz", "\u00e9\u00e9", "AAA!").map((m) => ({
      family,
      what: `base64=1&message=${m} (not base64)`,
      query: q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["message", encodeURIComponent(m)]]),
      expect: m === "a" || m === "ab=c" || m === "====" ? undefined : [Code.InvalidArgument],
    })),
    fc.uint8Array({ maxLength: 60 }).map((garbage) => ({
      family,
      what: "base64 of random bytes",
      query: q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["message", Buffer.from(garbage).toString("base64url")]]),
    })),
    fc.uint8Array({ maxLength: 60 }).map((garbage) => ({
      family,
      what: "random bytes, percent-encoded, no base64",
      query: q([["connect", "v1"], ["encoding", encoding], ["message", [...garbage].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("")]]),
    })),
    fc.constantFrom("xml", "", "PROTO", "JSON", "proto ", "json;charset=utf-8", "connect+proto", "x".repeat(1000)).chain((e) =>
      valid.map((m) => ({ family, what: `encoding=${e.slice(0, 30)}`, query: q([["connect", "v1"], ["encoding", encodeURIComponent(e)], ["base64", "1"], ["message", Buffer.from(m).toString("base64url")]]) })),
    ),
    valid.map((m) => ({ family, what: "no encoding parameter", query: q([["connect", "v1"], ["message", Buffer.from(m).toString("base64url")], ["base64", "1"]]) })),
    fc.constantFrom("snappy", "", "GZIP", "deflate", "x".repeat(1000)).chain((c) =>
      valid.map((m) => ({
        family,
        what: `compression=${c.slice(0, 30)} (unknown)`,
        query: q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["compression", encodeURIComponent(c)], ["message", Buffer.from(m).toString("base64url")]]),
        expect: [Code.Unimplemented],
      })),
    ),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((garbage) => ({
      family,
      what: "compression=gzip, message not gzip",
      query: q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["compression", "gzip"], ["message", Buffer.from(garbage).toString("base64url")]]),
      expect: [Code.InvalidArgument],
    })),
    fc.constant<Parts>({
      family,
      what: "compression=gzip, 2 MiB once inflated (a gzip bomb)",
      query: q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["compression", "gzip"], ["message", gzipBomb.toString("base64url")]]),
      expect: [Code.ResourceExhausted],
    }),
    fc.constantFrom("v2", "", "1", "v1&connect=v2").chain((v) =>
      valid.map((m) => ({ family, what: `connect=${v}`, query: q([["connect", v], ["encoding", encoding], ["base64", "1"], ["message", Buffer.from(m).toString("base64url")]]) })),
    ),
    fc.constantFrom("0", "true", "2", "").chain((b) => valid.map((m) => ({ family, what: `base64=${b}`, query: q([["connect", "v1"], ["encoding", encoding], ["base64", b], ["message", Buffer.from(m).toString("base64url")]]) }))),
    fc.constantFrom(12_000, 60_000, 300_000).map((n) => ({ family, what: `a message of ${n} base64 chars`, query: q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["message", "A".repeat(n)]]) })),
    fc.constantFrom("%", "%%", "&&&&", "=", "message", "message=&message=x", "a=%zz&b=%", ";;;", "#x").chain((extra) =>
      valid.map((m) => ({ family, what: `odd query ${extra}`, query: `${q([["connect", "v1"], ["encoding", encoding], ["base64", "1"], ["message", Buffer.from(m).toString("base64url")]])}&${extra}` })),
    ),
    fc.constant<Parts>({ family, what: "no query at all", query: "" }),
  );
}

// ---------------------------------------------------------------- too large

function oversizeArb(t: Transport, rpc: Rpc): fc.Arbitrary<Parts> {
  const family: Family = "oversize";
  const protocol = protocolOf(t, rpc);
  return fc.integer({ min: 1, max: 64 * 1024 }).map((over) => {
    const size = readMaxBytes + over;
    if (t.kind === "get") return { family, what: `a query of ${size} chars`, query: `connect=v1&encoding=proto&base64=1&message=${"A".repeat(size)}` };
    // One string field that large, in a message that is otherwise fine.
    const payload = Buffer.alloc(size, 0x61);
    const message = t.json ? Buffer.from(`{"x":"${payload.toString("latin1")}"}`) : Buffer.concat([Buffer.from([0xfa, 0xff, 0xff, 0x0f]), Buffer.from(varintBytes(size)), payload]);
    const body = isEnveloped(protocol) ? envelope(0, message) : message;
    return { family, what: `a body of ${body.length} bytes (over the 1 MiB limit)`, body, expect: [Code.ResourceExhausted] };
  });
}

function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

// ---------------------------------------------------------------- HTTP/1.x as written on the socket

const rawTransport = "raw HTTP/1.x socket";

export function rawHttpArb(rpcs: Rpc[], f: Fixtures): fc.Arbitrary<FuzzCase> {
  const rpc = fc.constantFrom(...rpcs);
  const kinds = fc.constantFrom(
    { protocol: "connect" as Protocol, contentType: "application/json", body: "{}" },
    { protocol: "connect" as Protocol, contentType: "application/proto", body: "" },
    { protocol: "grpc-web" as Protocol, contentType: "application/grpc-web+proto", body: "\x00\x00\x00\x00\x00" },
  );
  const hostLine = fc.constantFrom<string | undefined>(
    undefined,
    "Host: a b",
    "Host: [",
    "Host: [::1",
    "Host: a:b:c",
    "Host: ",
    "Host: @",
    "Host: localhost:99999",
    "Host: exa mple.com",
    "Host: ex%41mple",
    "Host: 127.0.0.1\r\nHost: 127.0.0.2",
    `Host: ${"x".repeat(3000)}`,
    "Host: 127.0.0.1",
  );
  const version = fc.constantFrom("HTTP/1.1", "HTTP/1.0");
  const target = fc.constantFrom("path", "absolute", "query", "fragment", "asterisk");
  const framing = fc.constantFrom("content-length", "chunked", "bad-chunk", "both", "negative-length", "letters-length", "obs-fold", "no-colon", "nul");
  return fc.tuple(rpc, kinds, hostLine, version, target, framing, fc.boolean()).map(([r, kind, host, httpVersion, targetKind, frame, authed]) => {
    const path = targetKind === "absolute" ? `http://127.0.0.1${r.path}` : targetKind === "query" ? `${r.path}?x=1` : targetKind === "fragment" ? `${r.path}#x` : targetKind === "asterisk" ? "*" : r.path;
    const lines = [`POST ${path} ${httpVersion}`];
    if (host !== undefined) lines.push(host);
    lines.push(`Content-Type: ${kind.contentType}`);
    if (kind.protocol === "connect") lines.push("Connect-Protocol-Version: 1");
    lines.push(kind.protocol === "connect" ? `Connect-Timeout-Ms: ${deadlineMs}` : `Grpc-Timeout: ${deadlineMs}m`);
    if (authed) lines.push(`Authorization: Bearer ${f.userToken}`, `X-Queue-Token: ${f.queueToken}`);
    lines.push("Connection: close");
    const body = Buffer.from(kind.body, "latin1");
    let bodyText = body.toString("latin1");
    switch (frame) {
      case "content-length":
        lines.push(`Content-Length: ${body.length}`);
        break;
      case "chunked":
        lines.push("Transfer-Encoding: chunked");
        bodyText = (body.length ? `${body.length.toString(16)}\r\n${bodyText}\r\n` : "") + "0\r\n\r\n";
        break;
      case "bad-chunk":
        lines.push("Transfer-Encoding: chunked");
        bodyText = "zz\r\nxx\r\n0\r\n\r\n";
        break;
      case "both":
        lines.push(`Content-Length: ${body.length + 3}`, "Transfer-Encoding: chunked");
        bodyText = "0\r\n\r\n";
        break;
      case "negative-length":
        lines.push("Content-Length: -1");
        break;
      case "letters-length":
        lines.push("Content-Length: abc");
        break;
      case "obs-fold":
        lines.push(`Content-Length: ${body.length}`, "X-Folded: a", " b");
        break;
      case "no-colon":
        lines.push(`Content-Length: ${body.length}`, "NoColonHere");
        break;
      case "nul":
        lines.push(`Content-Length: ${body.length}`, "X-Nul: a\u0000b");
        break;
    }
    const raw = Buffer.from(`${lines.join("\r\n")}\r\n\r\n${bodyText}`, "latin1");
    const broken = frame !== "content-length" && frame !== "chunked";
    const exchange: Exchange = { http: "1.1", method: "POST", path, headers: {}, body: new Uint8Array(0), capMs };
    return new FuzzCase(
      "raw-http",
      rawTransport,
      kind.protocol,
      r.path,
      exchange,
      `${httpVersion}, ${host === undefined ? "no Host" : JSON.stringify(host.slice(0, 60))}, target ${targetKind}, framing ${frame}`,
      undefined,
      deadlineMs + slackMs,
      { raw, httpInvalid: broken || targetKind !== "path" || !(host === "Host: 127.0.0.1" || (host === undefined && httpVersion === "HTTP/1.0")) },
    );
  });
}
