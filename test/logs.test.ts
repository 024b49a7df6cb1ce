import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ConcertAdminService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueAdminService, QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { startServerProcess, type ServerProcess } from "./server-process.js";
import { testSecrets } from "./support.js";

/**
 * The log of a real server process, read line by line from its stdout: JSON
 * with level, time, component; the access log with request and trace ids; an
 * audit line per operator action with before and after; and no secret
 * anywhere in it.
 */

let server: ServerProcess;
let output = "";
beforeAll(async () => {
  server = await startServerProcess({
    ...process.env,
    DATABASE_URL: inject("databaseUrl"),
    DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-logs-")),
    HOST: "127.0.0.1",
    PORT: "0",
    SEED_DEMO: "false",
    ACCESS_LOG_SAMPLE: "1",
    REDIS_KEY_PREFIX: `test:${randomUUID()}:`,
    ...testSecrets,
  });
  server.process.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
});
afterAll(() => server?.stop());

const lines = () =>
  output
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as Record<string, unknown>);

describe("the log", () => {
  it("is JSON lines with a level, a time and the component; calls carry service, RPC, code, duration, request and trace ids; operator actions are audited with before and after; no secret appears", async () => {
    const transport = createGrpcTransport({ baseUrl: server.url });
    const operator = { authorization: `Bearer ${testSecrets.OPERATOR_KEY}` };
    const user = await createClient(TokenService, transport).issueUserToken({});
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    await createClient(PointService, transport).chargePoints(
      { amount: 100n, idempotencyKey: randomUUID() },
      { headers: { authorization: `Bearer ${user.token}`, "x-request-id": "req-42", traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
    );
    const { concert } = await createClient(ConcertAdminService, transport).createConcert(
      { title: "Audited", venue: "Hall", schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 86_400_000)), seatCount: 5, price: 10n }] },
      { headers: operator },
    );
    const { queueToken } = await createClient(QueueService, transport).enterQueue({ concertId: concert!.id }, { headers: { authorization: `Bearer ${user.token}` } });
    await createClient(QueueAdminService, transport).pauseAdmission({ concertId: concert!.id }, { headers: operator });
    await createClient(QueueAdminService, transport).setAdmissionPolicy({ concertId: concert!.id, policy: { maxActive: 7 } }, { headers: operator });
    await expect.poll(() => lines().filter((line) => line.component === "audit").length).toBe(3);

    const all = lines();
    for (const line of all) {
      expect(line).toMatchObject({ level: expect.stringMatching(/^(info|warn|error)$/), time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), msg: expect.any(String) });
    }

    const charge = all.find((line) => line.component === "access" && line.rpc === "ChargePoints");
    expect(charge).toMatchObject({ level: "info", service: "boxoffice.point.v1.PointService", code: "OK", requestId: "req-42", traceId, ms: expect.any(Number), peer: "127.0.0.1" });

    const audits = all.filter((line) => line.component === "audit");
    expect(audits.map((line) => line.rpc)).toEqual(["CreateConcert", "PauseAdmission", "SetAdmissionPolicy"]);
    for (const line of audits) expect(line).toMatchObject({ who: "operator", code: "OK", peer: "127.0.0.1" });
    expect(audits[1]!.changes).toEqual([{ subject: `waiting room of concert ${concert!.id}`, before: { paused: false }, after: { paused: true } }]);
    const policy = (audits[2]!.changes as { before: { maxActive: number }; after: { maxActive: number } }[])[0]!;
    expect([policy.before.maxActive, policy.after.maxActive]).toEqual([200, 7]);

    for (const secret of [user.token, queueToken, testSecrets.OPERATOR_KEY, testSecrets.INTERNAL_CREDENTIAL, testSecrets.TOKEN_SECRET]) {
      expect(output).not.toContain(secret);
    }
  });
});
