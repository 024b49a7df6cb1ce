import { create, createFileRegistry, fromBinary, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ExtensionRequestSchema, ServerReflection as ReflectionV1, ServerReflectionRequestSchema, type ServerReflectionRequest, type ServerReflectionResponse } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { modules } from "../services/modules.js";
import { Reflection } from "../services/platform/reflection.js";
import type { Suite } from "../services/platform/suite.js";
import { concertOnSale, startTestSuite, transport } from "./support.js";

const buf = join(import.meta.dirname, "..", "node_modules/.bin/buf");
const run = promisify(execFile);

/** `buf curl` over gRPC (h2c), its schema from reflection only: no proto files, no --schema. */
async function curl(protocol: string | undefined, ...args: string[]) {
  const reflect = protocol ? ["--reflect", "--reflect-protocol", protocol] : [];
  const { stdout } = await run(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...reflect, ...args], {
    // Away from the repository, so that nothing but the server can give it a schema.
    cwd: "/",
    timeout: 30_000,
  });
  return stdout;
}

const lines = (text: string) => text.split("\n").filter(Boolean);

const served = [...new Set(modules.flatMap((module) => module.serves.map((service) => service.typeName)))];
const everyService = [...served, Health.typeName, ReflectionV1.typeName, ReflectionV1alpha.typeName].sort();

/** The files of a file_descriptor_response, as a registry of the first (which fails unless every import came along). */
function registryOf(response: ServerReflectionResponse): FileRegistry {
  expect(response.messageResponse.case).toBe("fileDescriptorResponse");
  const bytes = response.messageResponse.case === "fileDescriptorResponse" ? response.messageResponse.value.fileDescriptorProto : [];
  const [first, ...imports] = bytes.map((file) => fromBinary(FileDescriptorProtoSchema, file));
  return createFileRegistry(first!, (name) => imports.find((file) => file.name === name));
}

type Request = ServerReflectionRequest;
const ask = (messageRequest: Request["messageRequest"]) => create(ServerReflectionRequestSchema, { messageRequest });

/** One reflection stream, open until `end`: each request is sent when asked, as reflection clients do. */
function openStream(suite: Suite, service: typeof ReflectionV1 | typeof ReflectionV1alpha) {
  const queue: Request[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  async function* outgoing() {
    for (;;) {
      while (queue.length) yield queue.shift()!;
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  }
  // v1alpha's messages are v1's field for field; the client takes and gives them alike.
  const responses = (createClient(service as typeof ReflectionV1, transport(suite)).serverReflectionInfo(outgoing()) as AsyncIterable<ServerReflectionResponse>)[Symbol.asyncIterator]();
  return {
    async ask(request: Request) {
      queue.push(request);
      wake?.();
      const next = await responses.next();
      if (next.done) throw new Error("the stream ended");
      return next.value;
    },
    /** Ends the requests; resolves when the responses end too. */
    async end() {
      ended = true;
      wake?.();
      expect((await responses.next()).done).toBe(true);
    },
    next: () => responses.next(),
    /** Ends the requests, without waiting for the responses. */
    finish() {
      ended = true;
      wake?.();
    },
  };
}

/** Each request's answer, in turn on one stream, which then ends. */
async function converse(suite: Suite, service: typeof ReflectionV1 | typeof ReflectionV1alpha, requests: Request[]) {
  const stream = openStream(suite, service);
  const answers: ServerReflectionResponse[] = [];
  for (const request of requests) answers.push(await stream.ask(request));
  await stream.end();
  return answers;
}

describe("server reflection", () => {
  let suite: Suite;
  let concertTitle: string;
  beforeAll(async () => {
    suite = await startTestSuite();
    const { concertId } = await concertOnSale(suite, [{ seatCount: 2, price: 1000n }]);
    concertTitle = (await createClient(ConcertService, transport(suite)).listConcerts({})).concerts.find((c) => c.id === concertId)!.title;
  });
  afterAll(() => suite?.close());

  for (const protocol of ["grpc-v1", "grpc-v1alpha"]) {
    describe(`buf curl --reflect-protocol ${protocol}`, () => {
      it("lists every service served, health and reflection", async () => {
        expect(lines(await curl(protocol, "--list-services", suite.host.url)).sort()).toEqual(everyService);
      });

      it("lists every method of every service", async () => {
        const all = lines(await curl(protocol, "--list-methods", suite.host.url));
        const expected = modules.flatMap((module) => module.serves).flatMap((service) => service.methods.map((method) => `${service.typeName}/${method.name}`));
        expected.push("grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch", `${ReflectionV1.typeName}/ServerReflectionInfo`, `${ReflectionV1alpha.typeName}/ServerReflectionInfo`);
        expect(all.sort()).toEqual([...new Set(expected)].sort());
      });

      it("calls ListConcerts with nothing but reflection", async () => {
        const out = JSON.parse(await curl(protocol, "-d", "{}", `${suite.host.url}/${ConcertService.typeName}/ListConcerts`)) as { concerts: { title: string }[] };
        expect(out.concerts.map((c) => c.title)).toContain(concertTitle);
      });

      it("calls Health/Check (a service outside boxoffice)", async () => {
        expect(JSON.parse(await curl(protocol, "-d", "{}", `${suite.host.url}/grpc.health.v1.Health/Check`))).toEqual({ status: "SERVING" });
      });
    });
  }

  it("buf curl with its defaults, as in the README", async () => {
    expect(lines(await curl(undefined, "--list-services", suite.host.url))).toContain(ConcertService.typeName);
    expect(JSON.parse(await curl(undefined, "-d", "{}", `${suite.host.url}/${ConcertService.typeName}/ListConcerts`))).toHaveProperty("concerts");
  });

  for (const service of [ReflectionV1, ReflectionV1alpha]) {
    describe(`${service.typeName} over a Connect client`, () => {
      const conversation = (requests: ServerReflectionRequest[]) => converse(suite, service, requests);

      it("describes a service and a message from their file and its imports", async () => {
        const [byService, byMessage] = await conversation([
          ask({ case: "fileContainingSymbol", value: ConcertService.typeName }),
          ask({ case: "fileContainingSymbol", value: "boxoffice.concert.v1.Schedule" }),
        ]);
        const registry = registryOf(byService!);
        expect(registry.getService(ConcertService.typeName)!.methods.map((m) => m.name)).toEqual(["ListConcerts", "ListSchedules", "ListSeats"]);
        const schedule = registry.getMessage("boxoffice.concert.v1.Schedule")!;
        expect(schedule.fields.map((f) => `${f.name}:${f.fieldKind === "message" ? f.message.typeName : f.scalar}`)).toContain("starts_at:google.protobuf.Timestamp");
        // The method's access option survives, as an extension a client can read.
        expect(registry.getExtension("boxoffice.common.v1.access")).toBeDefined();
        // The same file again on the stream: the asked file, not the imports already sent.
        expect(byMessage!.messageResponse.case === "fileDescriptorResponse" && byMessage!.messageResponse.value.fileDescriptorProto.length).toBe(1);
      });

      it("answers file_by_filename, extensions, and methods as symbols", async () => {
        const [byName, method, extension, numbers, unknownType] = await conversation([
          ask({ case: "fileByFilename", value: "boxoffice/concert/v1/concert.proto" }),
          ask({ case: "fileContainingSymbol", value: `${ConcertService.typeName}.ListSeats` }),
          ask({ case: "fileContainingExtension", value: create(ExtensionRequestSchema, { containingType: "google.protobuf.MethodOptions", extensionNumber: 50001 }) }),
          ask({ case: "allExtensionNumbersOfType", value: "google.protobuf.MethodOptions" }),
          ask({ case: "allExtensionNumbersOfType", value: "boxoffice.nope.v1.Nothing" }),
        ]);
        const names = (r: ServerReflectionResponse) => (r.messageResponse.case === "fileDescriptorResponse" ? r.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name) : []);
        expect(names(byName!)).toEqual(expect.arrayContaining(["boxoffice/concert/v1/concert.proto", "boxoffice/common/v1/access.proto", "google/protobuf/descriptor.proto", "google/protobuf/timestamp.proto"]));
        expect(names(byName!)[0]).toBe("boxoffice/concert/v1/concert.proto");
        expect(names(method!)).toEqual(["boxoffice/concert/v1/concert.proto"]);
        expect(names(extension!)[0]).toBe("boxoffice/common/v1/access.proto");
        expect(numbers!.messageResponse).toMatchObject({ case: "allExtensionNumbersResponse", value: { baseTypeName: "google.protobuf.MethodOptions", extensionNumber: [50001] } });
        expect(unknownType!.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
      });

      it("answers an unknown symbol with error_response NOT_FOUND, and the stream goes on", async () => {
        const [unknown, unknownFile, after] = await conversation([
          ask({ case: "fileContainingSymbol", value: "boxoffice.nope.v1.NoSuchService" }),
          ask({ case: "fileByFilename", value: "boxoffice/nope.proto" }),
          ask({ case: "listServices", value: "" }),
        ]);
        expect(unknown!.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: 'no symbol "boxoffice.nope.v1.NoSuchService"' } });
        expect(unknown!.originalRequest?.messageRequest).toEqual({ case: "fileContainingSymbol", value: "boxoffice.nope.v1.NoSuchService" });
        expect(unknownFile!.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
        expect(after!.messageResponse.case === "listServicesResponse" && after!.messageResponse.value.service.map((s) => s.name)).toEqual(everyService);
      });
    });
  }
});

describe("Reflection (the implementation alone)", () => {
  const reflection = new Reflection(() => [ConcertService, Health]);
  const ask = (messageRequest: Request["messageRequest"]) => reflection.answer(create(ServerReflectionRequestSchema, { host: "h", messageRequest }));

  it("answers an unknown symbol with error_response NOT_FOUND", () => {
    const answer = ask({ case: "fileContainingSymbol", value: "boxoffice.concert.v1.NoSuchMessage" });
    expect(answer.validHost).toBe("h");
    expect(answer.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: 'no symbol "boxoffice.concert.v1.NoSuchMessage"' } });
  });

  it("knows only the files of the services it is given, and their imports", () => {
    expect(ask({ case: "listServices", value: "*" }).messageResponse).toMatchObject({ case: "listServicesResponse", value: { service: [{ name: ConcertService.typeName }, { name: Health.typeName }] } });
    expect(ask({ case: "fileContainingSymbol", value: "boxoffice.point.v1.PointService" }).messageResponse.case).toBe("errorResponse");
    for (const symbol of ["boxoffice.concert.v1.SeatState", "boxoffice.concert.v1.SEAT_STATE_HELD", "boxoffice.concert.v1.Seat.number", "google.protobuf.Timestamp", ".grpc.health.v1.Health.Watch"]) {
      expect(ask({ case: "fileContainingSymbol", value: symbol }).messageResponse.case, symbol).toBe("fileDescriptorResponse");
    }
  });

  it("answers a request that asks nothing with INVALID_ARGUMENT", () => {
    expect(ask({ case: undefined }).messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: Code.InvalidArgument } });
  });
});

describe("an open reflection stream at shutdown", () => {
  it("ends Unavailable at once, not when the grace period is over", async () => {
    const suite = await startTestSuite({ SERVICES: "token", SHUTDOWN_GRACE_MS: "5000" });
    const stream = openStream(suite, ReflectionV1);
    expect((await stream.ask(ask({ case: "listServices", value: "" }))).messageResponse.case).toBe("listServicesResponse");
    const started = Date.now();
    const ending = stream.next().then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    const closed = suite.close();
    expect((await ending)?.code).toBe(Code.Unavailable);
    expect(Date.now() - started).toBeLessThan(1_000);
    // gRPC clients reset a stream the server has ended; Connect's client ends its side when its requests end.
    stream.finish();
    await closed;
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
