import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { reasonOf, Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { admittedFan, bearer, client, failure, gated, newUser, operator, startTestSuite } from "./support.js";

/** The gate when the concert service runs without the queue service beside it. */
let whole: Suite;
let split: Suite;
let alone: Suite;
let concertId: string;
let scheduleId: string;

beforeAll(async () => {
  whole = await startTestSuite();
  split = await startTestSuite({ SERVICES: "concert", QUEUE_URL: whole.host.url });
  alone = await startTestSuite({ SERVICES: "concert" });
  const created = await client(whole, ConcertAdminService).createConcert(
    { title: "Gate test", schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 86_400_000)), seatCount: 5, price: 100n }] },
    operator,
  );
  concertId = created.concert!.id;
  scheduleId = created.schedules[0]!.id;
});
afterAll(async () => {
  await alone?.close();
  await split?.close();
  await whole?.close();
});

describe("gated RPCs in a process without the queue service", () => {
  it("pass with an admitted token, checked over the network by QueueInternalService.CheckAdmission", async () => {
    const fan = await admittedFan(whole, concertId);
    const { seats } = await client(split, ConcertService).listSeats({ scheduleId }, fan.headers);
    expect(seats).toHaveLength(5);
  });

  it("refuse a waiting token with the queue service's own reason", async () => {
    await client(whole, QueueAdminService).pauseAdmission({ concertId }, operator);
    try {
      const user = await newUser(whole);
      const { queueToken } = await client(whole, QueueService).enterQueue({ concertId }, bearer(user.token));
      const error = await failure(client(split, ConcertService).listSeats({ scheduleId }, gated(user.token, queueToken)));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(reasonOf(error)).toBe(Reason.NOT_ADMITTED);
    } finally {
      await client(whole, QueueAdminService).resumeAdmission({ concertId }, operator);
    }
  });

  it("refuse a forged token and another user's token", async () => {
    const fan = await admittedFan(whole, concertId);
    const forged = fan.queueToken.slice(0, -2) + (fan.queueToken.endsWith("AA") ? "BB" : "AA");
    const stranger = await newUser(whole);
    for (const headers of [gated(fan.token, forged), gated(stranger.token, fan.queueToken)]) {
      const error = await failure(client(split, ConcertService).listSeats({ scheduleId }, headers));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(reasonOf(error)).toBe(Reason.QUEUE_TOKEN_INVALID);
    }
  });

  it("fail closed, as Unavailable, when the queue service is not configured at all", async () => {
    const fan = await admittedFan(whole, concertId);
    const error = await failure(client(alone, ConcertService).listSeats({ scheduleId }, fan.headers));
    expect(error.code).toBe(Code.Unavailable);
    expect(reasonOf(error)).toBe(Reason.DEPENDENCY_UNAVAILABLE);
  });
});
