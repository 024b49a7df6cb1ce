import { getOption, type DescService } from "@bufbuild/protobuf";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { Access, access } from "../gen/boxoffice/common/v1/access_pb.js";
import { QueueAdminService, QueueInternalService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ScanResult, TicketScannerService } from "../gen/boxoffice/ticket/v1/ticket_pb.js";
import { accessInterceptor, internalCredentialHeader } from "../services/platform/access.js";
import { errorMapper, reasonOf, Reason } from "../services/platform/errors.js";
import { UserTokens } from "../services/platform/tokens.js";
import { failure } from "./support.js";

const genDir = join(import.meta.dirname, "../gen/boxoffice");

async function allServices(): Promise<DescService[]> {
  const files = readdirSync(genDir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith("_pb.ts"));
  const services: DescService[] = [];
  for (const file of files) {
    const module = (await import(/* @vite-ignore */ `./${relative(import.meta.dirname, join(genDir, file))}`)) as Record<string, unknown>;
    for (const value of Object.values(module)) {
      if ((value as DescService | null)?.kind === "service") services.push(value as DescService);
    }
  }
  return services;
}

describe("the contract", () => {
  it("declares an access level on every RPC, matching the service kind", async () => {
    const services = await allServices();
    expect(services.length).toBeGreaterThanOrEqual(12);
    for (const service of services) {
      for (const method of service.methods) {
        const level = getOption(method, access);
        const name = `${service.typeName}/${method.name}`;
        expect(level, name).not.toBe(Access.UNSPECIFIED);
        if (service.name.endsWith("InternalService")) expect(level, name).toBe(Access.INTERNAL);
        if (service.name.endsWith("AdminService")) expect(level, name).toBe(Access.OPERATOR);
      }
    }
  });
});

describe("internal and operator credentials, through the production interceptors", () => {
  const tokens = new UserTokens("secret-for-access-tests", 3600);
  const transport = createRouterTransport(
    (router) => {
      router.service(QueueInternalService, { checkAdmission: () => ({ userId: "u", concertId: "c" }), completeSession: () => ({}) });
      router.service(QueueAdminService, { pauseAdmission: () => ({}) });
      router.service(TicketScannerService, { scanTicket: () => ({ result: ScanResult.FORGED }) });
    },
    { router: { interceptors: [errorMapper, accessInterceptor({ tokens, internalCredential: "inside", operatorKey: "ops", scannerKey: "door" })] } },
  );
  const internal = createClient(QueueInternalService, transport);
  const admin = createClient(QueueAdminService, transport);
  const door = createClient(TicketScannerService, transport);

  it("refuses an internal RPC without the internal credential", async () => {
    const user = await tokens.sign("6f1c1f0e-4a5b-4c1d-9e8f-0a1b2c3d4e5f");
    for (const headers of [{} as Record<string, string>, { authorization: `Bearer ${user.token}` }, { [internalCredentialHeader]: "guess" }]) {
      const error = await failure(internal.checkAdmission({ queueToken: "t" }, { headers }));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(reasonOf(error)).toBe(Reason.INTERNAL_ONLY);
    }
    const ok = await internal.checkAdmission({ queueToken: "t" }, { headers: { [internalCredentialHeader]: "inside" } });
    expect(ok.userId).toBe("u");
  });

  it("refuses an admin RPC without the operator credential", async () => {
    for (const headers of [{} as Record<string, string>, { authorization: "Bearer wrong" }, { [internalCredentialHeader]: "inside" }]) {
      const error = await failure(admin.pauseAdmission({ concertId: "c" }, { headers }));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(reasonOf(error)).toBe(Reason.OPERATOR_ONLY);
    }
    await admin.pauseAdmission({ concertId: "c" }, { headers: { authorization: "Bearer ops" } });
  });

  it("refuses a scanner RPC without the scanner credential: the operator key and user tokens are not one", async () => {
    const user = await tokens.sign("6f1c1f0e-4a5b-4c1d-9e8f-0a1b2c3d4e5f");
    for (const headers of [{} as Record<string, string>, { authorization: "Bearer ops" }, { authorization: `Bearer ${user.token}` }, { [internalCredentialHeader]: "inside" }]) {
      const error = await failure(door.scanTicket({ code: "t1.x", scheduleId: "s", gate: "g" }, { headers }));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(reasonOf(error)).toBe(Reason.SCANNER_ONLY);
    }
    expect((await door.scanTicket({ code: "t1.x" }, { headers: { authorization: "Bearer door" } })).result).toBe(ScanResult.FORGED);
    // Nor does the scanner credential open an admin RPC.
    expect(reasonOf(await failure(admin.pauseAdmission({ concertId: "c" }, { headers: { authorization: "Bearer door" } })))).toBe(Reason.OPERATOR_ONLY);
  });

  it("answers an unimplemented RPC with Unimplemented, not a crash", async () => {
    const error = await failure(admin.getQueueStats({ concertId: "c" }, { headers: { authorization: "Bearer ops" } }));
    expect(error.code).toBe(Code.Unimplemented);
  });
});
