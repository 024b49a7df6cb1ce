import { create, fromBinary, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  ErrorResponseSchema,
  ExtensionNumberResponseSchema,
  FileDescriptorResponseSchema,
  ListServiceResponseSchema,
  ServerReflection as ServerReflectionV1,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1alpha,
  ServerReflectionRequestSchema as ServerReflectionRequestSchemaV1alpha,
  ServerReflectionResponseSchema as ServerReflectionResponseSchemaV1alpha,
  type ServerReflectionRequest as ServerReflectionRequestV1alpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { quoted } from "./errors.js";
import { shutdownError } from "./host.js";

/** What a reflection answer is made of: the response's oneof. */
type Answer = ServerReflectionResponse["messageResponse"];

/** Everything reflection can tell about a set of services, built from their generated descriptors. */
interface Index {
  services: string[];
  /** Every file the services' files import, transitively, by file name (`boxoffice/concert/v1/concert.proto`). */
  files: Map<string, DescFile>;
  /** Every fully-qualified symbol of those files (types, services, methods, fields, oneofs, enum values) and its file. */
  symbols: Map<string, DescFile>;
  /** The message types among them. */
  messages: Set<string>;
  /** Extensions by the message they extend, then by number: the file that declares each. */
  extensions: Map<string, Map<number, DescFile>>;
}

function buildIndex(services: Iterable<DescService>): Index {
  const names = new Set<string>();
  const files = new Map<string, DescFile>();
  const add = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    file.dependencies.forEach(add);
  };
  for (const service of services) {
    names.add(service.typeName);
    add(service.file);
  }
  const symbols = new Map<string, DescFile>();
  const messages = new Set<string>();
  const extensions = new Map<string, Map<number, DescFile>>();
  for (const file of files.values()) {
    for (const type of nestedTypes(file)) {
      symbols.set(type.typeName, file);
      switch (type.kind) {
        case "service":
          for (const method of type.methods) symbols.set(`${type.typeName}.${method.name}`, file);
          break;
        case "message":
          messages.add(type.typeName);
          for (const field of type.fields) symbols.set(`${type.typeName}.${field.name}`, file);
          for (const oneof of type.oneofs) symbols.set(`${type.typeName}.${oneof.name}`, file);
          break;
        case "enum": {
          // Enum values are scoped beside their enum, as in C++: `boxoffice.concert.v1.SEAT_STATE_HELD`.
          const scope = type.typeName.slice(0, type.typeName.length - type.name.length);
          for (const value of type.values) symbols.set(`${scope}${value.name}`, file);
          break;
        }
        case "extension": {
          let numbers = extensions.get(type.extendee.typeName);
          if (!numbers) extensions.set(type.extendee.typeName, (numbers = new Map()));
          numbers.set(type.number, file);
          break;
        }
      }
    }
  }
  return { services: [...names].sort(), files, symbols, messages, extensions };
}

const failure = (code: Code, message: string): Answer => ({ case: "errorResponse", value: create(ErrorResponseSchema, { errorCode: code, errorMessage: message }) });
const notFound = (message: string) => failure(Code.NotFound, message);

/**
 * gRPC server reflection (grpc.reflection.v1, and v1alpha on the same answers) over the generated descriptors of
 * the services given: what `buf curl`, grpcurl and Postman ask to call a server without its proto files. Every
 * answer is in the response stream, unknown names as an `error_response` (NOT_FOUND); the stream goes on.
 */
export class Reflection {
  readonly #services: () => Iterable<DescService>;
  #index: Index | undefined;
  readonly #encoded = new Map<string, Uint8Array>();

  /** `services` is read at the first request, so that a router's handlers can be mounted after this is made. */
  constructor(services: () => Iterable<DescService>) {
    this.#services = services;
  }

  get #built(): Index {
    return (this.#index ??= buildIndex(this.#services()));
  }

  /** The answer to one request. `sent` is the files this stream has already sent, and gains those sent now. */
  answer(request: ServerReflectionRequest, sent: Set<string> = new Set()): ServerReflectionResponse {
    return create(ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse: this.#answer(request, sent) });
  }

  #answer({ messageRequest: asked }: ServerReflectionRequest, sent: Set<string>): Answer {
    const index = this.#built;
    switch (asked.case) {
      case "listServices":
        return { case: "listServicesResponse", value: create(ListServiceResponseSchema, { service: index.services.map((name) => ({ name })) }) };
      case "fileByFilename": {
        const file = index.files.get(asked.value);
        return file ? this.#files(file, sent) : notFound(`no file ${quoted(asked.value)}`);
      }
      case "fileContainingSymbol": {
        const file = index.symbols.get(asked.value.replace(/^\./, ""));
        return file ? this.#files(file, sent) : notFound(`no symbol ${quoted(asked.value)}`);
      }
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = asked.value;
        const file = index.extensions.get(containingType)?.get(extensionNumber);
        return file ? this.#files(file, sent) : notFound(`no extension ${extensionNumber} of ${quoted(containingType)}`);
      }
      case "allExtensionNumbersOfType": {
        const type = asked.value;
        if (!index.messages.has(type)) return notFound(`no message type ${quoted(type)}`);
        const numbers = [...(index.extensions.get(type)?.keys() ?? [])].sort((a, b) => a - b);
        return { case: "allExtensionNumbersResponse", value: create(ExtensionNumberResponseSchema, { baseTypeName: type, extensionNumber: numbers }) };
      }
      default:
        return failure(Code.InvalidArgument, "the request asks nothing (set one of message_request)");
    }
  }

  /**
   * The file and every file it imports, transitively, as serialized FileDescriptorProtos, the asked file first.
   * Imports this stream has already sent are left out, as the protocol allows (and grpc-go does); the asked file
   * itself is always sent.
   */
  #files(file: DescFile, sent: Set<string>): Answer {
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const queue = [file];
    for (let next = queue.shift(); next; next = queue.shift()) {
      const name = next.proto.name;
      if (seen.has(name)) continue;
      seen.add(name);
      if (next === file || !sent.has(name)) {
        sent.add(name);
        out.push(this.#encode(next));
      }
      queue.push(...next.dependencies);
    }
    return { case: "fileDescriptorResponse", value: create(FileDescriptorResponseSchema, { fileDescriptorProto: out }) };
  }

  #encode(file: DescFile): Uint8Array {
    let bytes = this.#encoded.get(file.proto.name);
    if (!bytes) this.#encoded.set(file.proto.name, (bytes = toBinary(FileDescriptorProtoSchema, file.proto)));
    return bytes;
  }

  /** Answers each request of a stream as it comes, until the caller ends it (or the call ends: see untilEnded). */
  async *stream(requests: AsyncIterable<ServerReflectionRequest>, signal: AbortSignal): AsyncIterable<ServerReflectionResponse> {
    const sent = new Set<string>();
    for await (const request of untilEnded(requests, signal)) yield this.answer(request, sent);
  }

  /** The same, for grpc.reflection.v1alpha: its messages are v1's field for field, so they are carried over on the wire. */
  async *streamV1alpha(requests: AsyncIterable<ServerReflectionRequestV1alpha>, signal: AbortSignal) {
    const sent = new Set<string>();
    for await (const request of untilEnded(requests, signal)) {
      const answer = this.answer(fromBinary(ServerReflectionRequestSchema, toBinary(ServerReflectionRequestSchemaV1alpha, request)), sent);
      yield fromBinary(ServerReflectionResponseSchemaV1alpha, toBinary(ServerReflectionResponseSchema, answer));
    }
  }
}

/**
 * The requests of a stream until the call's signal aborts: a client that leaves its reflection stream open (an
 * interactive tool) holds no shutdown up to its grace period. A shutdown ends the stream Unavailable, as health's
 * Watch does; the caller's cancel or deadline ends it quietly.
 */
async function* untilEnded<T>(requests: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  const iterator = requests[Symbol.asyncIterator]();
  const aborted = new Promise<"aborted">((resolve) => {
    if (signal.aborted) resolve("aborted");
    else signal.addEventListener("abort", () => resolve("aborted"), { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next === "aborted") {
        const shutdown = shutdownError(signal);
        if (shutdown) throw shutdown;
        return;
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    void Promise.resolve(iterator.return?.()).catch(() => undefined);
  }
}

/**
 * Mounts grpc.reflection.v1 and v1alpha ServerReflection, describing every service on `router` (theirs too, and
 * health): mount it with the other services, in any order. Public, like health: the contracts are open source.
 */
export function reflectionRoutes(router: ConnectRouter): void {
  const reflection = new Reflection(() => router.handlers.map((handler) => handler.service));
  router.service(ServerReflectionV1, { serverReflectionInfo: (requests, ctx: HandlerContext) => reflection.stream(requests, ctx.signal) });
  router.service(ServerReflectionV1alpha, { serverReflectionInfo: (requests, ctx: HandlerContext) => reflection.streamV1alpha(requests, ctx.signal) });
}
