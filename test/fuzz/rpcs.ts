// Every RPC the suite serves, read from the generated descriptors in gen/: a new
// RPC (or a new file of them) is fuzzed without a change to the test.
import { getOption, type DescFile, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Access, access } from "../../gen/boxoffice/common/v1/access_pb.js";

export interface Rpc {
  service: DescService;
  method: DescMethod;
  /** The request path, as Connect's router serves it. */
  path: string;
  /** Requests and answers are enveloped even over the Connect protocol (application/connect+proto). */
  streaming: boolean;
  /** Connect GET is served for NO_SIDE_EFFECTS methods only. */
  getAllowed: boolean;
  access: Access;
  input: DescMessage;
}

const genDir = join(import.meta.dirname, "..", "..", "gen");

/** Every method of every service of every file under gen/ (boxoffice.*.v1 and grpc.health.v1), by path. */
export async function loadRpcs(): Promise<Rpc[]> {
  const files = readdirSync(genDir, { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith("_pb.ts"))
    .sort();
  const rpcs = new Map<string, Rpc>();
  for (const file of files) {
    const exports = (await import(pathToFileURL(join(genDir, file)).href)) as Record<string, unknown>;
    for (const value of Object.values(exports)) {
      if (!isFile(value)) continue;
      for (const service of value.services) {
        for (const method of service.methods) {
          const path = `/${service.typeName}/${method.name}`;
          rpcs.set(path, {
            service,
            method,
            path,
            streaming: method.methodKind !== "unary",
            getAllowed: method.methodKind === "unary" && method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
            access: getOption(method, access),
            input: method.input,
          });
        }
      }
    }
  }
  return [...rpcs.values()];
}

function isFile(value: unknown): value is DescFile {
  return typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "file" && Array.isArray((value as DescFile).services);
}
