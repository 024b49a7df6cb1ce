import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * A standard gRPC client stack, as a backend team in another stack would use
 * it: @grpc/grpc-js over h2c, with the contract loaded at run time from the
 * .proto files in proto/ by @grpc/proto-loader (no generated code), and error
 * details decoded from the `grpc-status-details-bin` trailer with protobufjs.
 */

export const protoDir = fileURLToPath(new URL("../proto/", import.meta.url));

/** Every .proto file under proto/, relative to it (as the imports name them). */
export const protoFiles: string[] = readdirSync(protoDir, { recursive: true, encoding: "utf8" })
  .filter((file) => file.endsWith(".proto"))
  .map((file) => relative(protoDir, join(protoDir, file)).split("\\").join("/"))
  .sort();

/** Field names in lowerCamelCase; int64 as decimal strings, enums as their names, defaults filled in. */
export const packageDefinition = protoLoader.loadSync(protoFiles, {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [protoDir],
});

const grpcObject = grpc.loadPackageDefinition(packageDefinition);

/** A message as proto-loader decodes it: plain JSON-like objects. */
export type Message = Record<string, any>;
export type Headers = Record<string, string>;

/** The service definitions (services only, not messages or enums) of the loaded contract, by full name. */
export function serviceDefinitions(): Map<string, protoLoader.ServiceDefinition> {
  const services = new Map<string, protoLoader.ServiceDefinition>();
  for (const [name, definition] of Object.entries(packageDefinition)) {
    if (!("format" in definition) && !("valuesById" in definition)) services.set(name, definition as protoLoader.ServiceDefinition);
  }
  return services;
}

function serviceConstructor(service: string): grpc.ServiceClientConstructor {
  let node: unknown = grpcObject;
  for (const part of service.split(".")) node = (node as Record<string, unknown> | undefined)?.[part];
  if (typeof node !== "function") throw new Error(`no service ${service} in proto/`);
  return node as grpc.ServiceClientConstructor;
}

export function metadataOf(headers: Headers): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [name, value] of Object.entries(headers)) metadata.set(name, value);
  return metadata;
}

/** How the calls of one method went: calls ended OK, the status names of the others, messages streamed. */
export interface MethodTally {
  ok: number;
  failed: string[];
  /** For server streams: messages received (a stream cancelled after its messages still counts as served). */
  received: number;
}

/**
 * grpc-js clients for one server address ("127.0.0.1:PORT"), one per service,
 * sharing one channel. Every call is tallied by method path, so a test can
 * check that the whole contract was exercised.
 */
export class GrpcJs {
  readonly #clients = new Map<string, grpc.Client>();
  readonly tally = new Map<string, MethodTally>();

  constructor(readonly address: string) {}

  client(service: string): grpc.Client {
    let client = this.#clients.get(service);
    if (!client) {
      const Client = serviceConstructor(service);
      client = new Client(this.address, grpc.credentials.createInsecure());
      this.#clients.set(service, client);
    }
    return client;
  }

  #tallyOf(service: string, method: string): MethodTally {
    const path = `/${service}/${method}`;
    let tally = this.tally.get(path);
    if (!tally) this.tally.set(path, (tally = { ok: 0, failed: [], received: 0 }));
    return tally;
  }

  #record(service: string, method: string, code: grpc.status) {
    const tally = this.#tallyOf(service, method);
    if (code === grpc.status.OK) tally.ok++;
    else tally.failed.push(grpc.status[code]);
  }

  #method(service: string, method: string) {
    const client = this.client(service) as unknown as Record<string, unknown>;
    const fn = client[method];
    if (typeof fn !== "function") throw new Error(`no method ${method} on ${service}`);
    return (fn as (...args: unknown[]) => unknown).bind(client);
  }

  /** A unary call: `method` is the RPC name as in the .proto (e.g. "EnterQueue"). */
  unary(service: string, method: string, request: Message = {}, headers: Headers = {}, options: grpc.CallOptions = {}): Promise<Message> {
    const call = this.#method(service, method);
    return new Promise((resolve, reject) => {
      call(request, metadataOf(headers), options, (error: grpc.ServiceError | null, response: Message) => {
        this.#record(service, method, error ? error.code : grpc.status.OK);
        if (error) reject(error);
        else resolve(response);
      });
    });
  }

  /** A server-streaming call. */
  serverStream(service: string, method: string, request: Message = {}, headers: Headers = {}, options: grpc.CallOptions = {}): grpc.ClientReadableStream<Message> {
    const call = this.#method(service, method)(request, metadataOf(headers), options) as grpc.ClientReadableStream<Message>;
    call.on("data", () => this.#tallyOf(service, method).received++);
    call.on("status", (status: grpc.StatusObject) => this.#record(service, method, status.code));
    return call;
  }

  close() {
    for (const client of this.#clients.values()) client.close();
    this.#clients.clear();
  }
}

// ---------------------------------------------------------------- error details

/** google.rpc.Status and boxoffice.common.v1.ErrorDetail, for decoding the details trailer. */
const detailTypes = (() => {
  const root = new protobuf.Root();
  // google/protobuf/* come bundled with protobufjs; the rest from proto/.
  root.resolvePath = (_origin, target) => (target.startsWith("google/protobuf/") ? target : join(protoDir, target));
  root.loadSync(["google/protobuf/any.proto", "boxoffice/common/v1/error.proto"]);
  protobuf.parse(
    `syntax = "proto3";
     package google.rpc;
     message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }`,
    root,
  );
  root.resolveAll();
  return { status: root.lookupType("google.rpc.Status"), errorDetail: root.lookupType("boxoffice.common.v1.ErrorDetail") };
})();

export const errorDetailTypeUrl = "type.googleapis.com/boxoffice.common.v1.ErrorDetail";

/** What a failed call told a grpc-js client, with the boxoffice ErrorDetail decoded from the trailers. */
export interface GrpcFailure {
  /** The gRPC status name, e.g. "PERMISSION_DENIED". */
  code: string;
  /** grpc-message. */
  message: string;
  /** ErrorDetail.reason as its enum name ("REASON_…"); "" without a detail. */
  reason: string;
  /** ErrorDetail.field. */
  field: string;
  /** ErrorDetail.metadata. */
  metadata: Record<string, string>;
  /** The google.rpc.Status in grpc-status-details-bin, when there is one. */
  statusDetails?: { code: number; message: string; typeUrls: string[] };
}

export function grpcFailure(error: unknown): GrpcFailure {
  const serviceError = error as Partial<grpc.ServiceError>;
  if (typeof serviceError.code !== "number" || !(serviceError.metadata instanceof grpc.Metadata)) {
    throw new Error(`not a grpc-js ServiceError: ${String(error)}`, { cause: error });
  }
  const failure: GrpcFailure = {
    code: grpc.status[serviceError.code] ?? String(serviceError.code),
    message: serviceError.details ?? "",
    reason: "",
    field: "",
    metadata: {},
  };
  const [bin] = serviceError.metadata.get("grpc-status-details-bin");
  if (bin instanceof Buffer) {
    const status = detailTypes.status.toObject(detailTypes.status.decode(bin), { defaults: true }) as {
      code: number;
      message: string;
      details: { type_url: string; value: Uint8Array }[];
    };
    failure.statusDetails = { code: status.code, message: status.message, typeUrls: status.details.map((any) => any.type_url) };
    const any = status.details.find((candidate) => candidate.type_url === errorDetailTypeUrl);
    if (any) {
      const detail = detailTypes.errorDetail.toObject(detailTypes.errorDetail.decode(any.value), { enums: String, defaults: true }) as {
        reason: string;
        field: string;
        metadata: Record<string, string>;
      };
      Object.assign(failure, { reason: detail.reason, field: detail.field, metadata: detail.metadata });
    }
  }
  return failure;
}

/** Resolves to how the call failed; throws when it succeeds. */
export async function failureOf(call: Promise<unknown>): Promise<GrpcFailure> {
  try {
    await call;
  } catch (error) {
    return grpcFailure(error);
  }
  throw new Error("expected the call to fail, but it succeeded");
}

// ---------------------------------------------------------------- streams

/** A server stream read in the background: its messages, and how it ended. */
export class StreamReader {
  readonly messages: Message[] = [];
  /** Set when the stream ended (OK or not). */
  status: grpc.StatusObject | undefined;
  error: GrpcFailure | undefined;
  /** Fired 'end' (the readable side finished: a clean end). */
  endedCleanly = false;
  readonly done: Promise<void>;
  readonly #waiters = new Set<() => void>();

  constructor(readonly call: grpc.ClientReadableStream<Message>) {
    let statusSeen = false;
    let finished = false;
    this.done = new Promise<void>((resolve) => {
      const settle = () => {
        if (statusSeen && finished) resolve();
        this.#notify();
      };
      call.on("data", (message: Message) => {
        this.messages.push(message);
        this.#notify();
      });
      call.on("status", (status: grpc.StatusObject) => {
        this.status = status;
        statusSeen = true;
        settle();
      });
      call.on("end", () => {
        this.endedCleanly = true;
        finished = true;
        settle();
      });
      call.on("error", (error: unknown) => {
        this.error = grpcFailure(error);
        finished = true;
        settle();
      });
    });
  }

  get ended(): boolean {
    return this.status !== undefined && (this.endedCleanly || this.error !== undefined);
  }

  #notify() {
    for (const waiter of this.#waiters) waiter();
  }

  /** Waits until `predicate` holds (checked on every event), or fails after `timeoutMs`. */
  until(what: string, predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.messages.length} messages, status ${this.status ? grpc.status[this.status.code] : "none"}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
    });
  }

  /** Waits for the stream to end. */
  async ends(timeoutMs = 5_000) {
    await this.until("the stream to end", () => this.ended, timeoutMs);
    await this.done;
  }
}
