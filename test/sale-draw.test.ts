import { timestampFromDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { execFile } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Reason } from "../gen/boxoffice/common/v1/error_pb.js";
import { ConcertAdminService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueInternalService, QueueService, QueueState, QueueingMethod, DrawState, type QueueStatus } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { reasonOf } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { bearer, client, failure, inDays, newUser, operator, startTestSuite, testSecrets, withQueueToken } from "./support.js";

/**
 * A scheduled sale on three instances of the whole suite sharing one Redis and
 * one PostgreSQL, as a deployment runs them: fans enter the pre-queue through
 * all three; nobody is admitted before the opening; at the opening the
 * pre-queue is drawn, and the line's order is exactly what the repo's verifier
 * script computes from the published seed and list; later arrivals wait behind.
 */

const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };
let suites: Suite[];

beforeAll(async () => {
  const shared = { REDIS_URL: "redis://127.0.0.1:6379", REDIS_KEY_PREFIX: `test:sale:${randomUUID()}:` };
  suites = await Promise.all([startTestSuite(shared), startTestSuite(shared), startTestSuite(shared)]);
});
afterAll(async () => {
  await Promise.all((suites ?? []).map((suite) => suite.close()));
});

const at = (ms: number) => timestampFromDate(new Date(ms));
const sleepUntil = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms - Date.now())));

async function scheduledConcert(times: { prequeueOpensAt: number; saleOpensAt: number; saleClosesAt?: number }) {
  const { concert, schedules } = await client(suites[0]!, ConcertAdminService).createConcert(
    {
      title: `Scheduled ${randomUUID().slice(0, 8)}`,
      venue: "Test Hall",
      schedules: [{ startsAt: inDays(10), seatCount: 100, price: 10n }],
      prequeueOpensAt: at(times.prequeueOpensAt),
      saleOpensAt: at(times.saleOpensAt),
      saleClosesAt: times.saleClosesAt === undefined ? undefined : at(times.saleClosesAt),
    },
    operator,
  );
  return { concert: concert!, scheduleId: schedules[0]!.id };
}

/** A new fan entering through instance `i`. */
async function enterVia(i: number, concertId: string) {
  const suite = suites[i % suites.length]!;
  const user = await newUser(suite);
  const { queueToken, status } = await client(suite, QueueService).enterQueue({ concertId }, bearer(user.token));
  return { ...user, queueToken, entered: status!, suite };
}

const statusOf = async (suite: Suite, queueToken: string): Promise<QueueStatus> => (await client(suite, QueueService).getQueueStatus({}, withQueueToken(queueToken))).status!;

async function verifier(url: string, concertId: string, ...args: string[]) {
  const run = await promisify(execFile)(process.execPath, ["services/queue/verify-draw.ts", "--url", url, "--concert", concertId, ...args]).catch(
    (error: { stdout: string; code: number }) => error,
  );
  return { ...(JSON.parse(run.stdout) as { drawn: boolean; commitmentMatches?: boolean; order?: string[]; place?: number }), exit: "code" in run ? run.code : 0 };
}

describe("a scheduled sale across three queue instances", () => {
  it("draws the pre-queue at the opening in exactly the verifier's order, admits nobody before, and puts later arrivals behind", async () => {
    const opensAt = Date.now() + 6_000;
    const { concert } = await scheduledConcert({ prequeueOpensAt: Date.now() - 1_000, saleOpensAt: opensAt });
    const concertId = concert.id;
    await client(suites[1]!, QueueAdminService).setAdmissionPolicy({ concertId, policy: { maxActive: 5 } }, operator);

    // Published before anyone queues: the commitment, and nothing else.
    const before = await client(suites[2]!, QueueService).getSaleFairness({ concertId });
    expect(before).toMatchObject({ state: DrawState.COMMITTED, seed: "", entryIds: [] });
    expect(before.seedCommitment).toMatch(/^[0-9a-f]{64}$/);
    expect(before.seedCommitment).toBe(concert.seedCommitment);
    expect((await verifier(suites[0]!.host.url, concertId)).exit).toBe(2);

    // 30 fans enter the pre-queue through the three instances, at once.
    const early = await Promise.all(Array.from({ length: 30 }, (_, i) => enterVia(i, concertId)));
    for (const fan of early) {
      expect(fan.entered).toMatchObject({ state: QueueState.WAITING, position: 0n, reason: Reason.SALE_NOT_OPEN });
      expect(timestampMs(fan.entered.saleOpensAt!)).toBe(opensAt);
      expect(fan.entered.entryId).toMatch(/^[0-9a-f]{32}$/);
    }
    // Until the opening, nobody is admitted: every status has no place, and the gate refuses.
    while (Date.now() < opensAt - 300) {
      for (const fan of early.slice(0, 10)) {
        const status = await statusOf(fan.suite, fan.queueToken);
        expect([status.state, status.position]).toEqual([QueueState.WAITING, 0n]);
      }
      const refused = await failure(client(suites[0]!, QueueInternalService).checkAdmission({ queueToken: early[0]!.queueToken }, internal));
      expect([refused.code, reasonOf(refused)]).toEqual([Code.FailedPrecondition, Reason.NOT_ADMITTED]);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }

    // After the opening, five more fans arrive.
    await sleepUntil(opensAt + 50);
    const late = [];
    for (let i = 0; i < 5; i++) late.push(await enterVia(i, concertId));

    // The draw is published once made.
    let fairness = await client(suites[1]!, QueueService).getSaleFairness({ concertId });
    for (const deadline = Date.now() + 10_000; fairness.state !== DrawState.DRAWN && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      fairness = await client(suites[1]!, QueueService).getSaleFairness({ concertId });
    }
    expect(fairness.state).toBe(DrawState.DRAWN);
    expect(createHash("sha256").update(Buffer.from(fairness.seed, "hex")).digest("hex")).toBe(before.seedCommitment);
    expect([...fairness.entryIds].sort()).toEqual(early.map((fan) => fan.entered.entryId).sort());
    expect(fairness.entryIds).toEqual([...fairness.entryIds].sort());

    // The verifier, from the published seed and list alone.
    const verified = await verifier(suites[2]!.host.url, concertId);
    expect(verified).toMatchObject({ drawn: true, commitmentMatches: true, exit: 0 });
    const order = verified.order!;
    const place = new Map(order.map((id, i) => [id, i + 1]));

    // The line is exactly that order: the first five (max_active) admitted, the rest waiting by drawn place, then the late arrivals.
    const byPlace = [...early].sort((a, b) => place.get(a.entered.entryId)! - place.get(b.entered.entryId)!);
    const states = await Promise.all(byPlace.map((fan) => statusOf(fan.suite, fan.queueToken)));
    expect(states.map((status) => (status.state === QueueState.ADMITTED ? 0 : Number(status.position)))).toEqual([0, 0, 0, 0, 0, ...Array.from({ length: 25 }, (_, i) => i + 1)]);
    const lateStates = await Promise.all(late.map((fan) => statusOf(fan.suite, fan.queueToken)));
    // Only entries made in the pre-queue have an id in the draw.
    expect(late.map((fan) => fan.entered.entryId)).toEqual(["", "", "", "", ""]);
    expect(states.every((status) => /^[0-9a-f]{32}$/.test(status.entryId))).toBe(true);
    expect(lateStates.map((status) => [status.state, Number(status.position)])).toEqual(late.map((_, i) => [QueueState.WAITING, 26 + i]));

    // Any fan checks their own place.
    const fan = byPlace[7]!;
    expect(await verifier(suites[0]!.host.url, concertId, "--entry", fan.entered.entryId)).toMatchObject({ place: 8, exit: 0 });
  });

  it("refuses to queue before the pre-queue opens and after the sale closes, saying when; a draft cannot be queued for", async () => {
    const now = Date.now();
    const { concert: later } = await scheduledConcert({ prequeueOpensAt: now + 3_600_000, saleOpensAt: now + 7_200_000 });
    const early = await failure(enterVia(0, later.id));
    expect([early.code, reasonOf(early)]).toEqual([Code.FailedPrecondition, Reason.SALE_NOT_OPEN]);
    expect(early.rawMessage).toContain(new Date(timestampMs(later.prequeueOpensAt!)).toISOString());

    const { concert: short } = await scheduledConcert({ prequeueOpensAt: now - 1_000, saleOpensAt: now - 500, saleClosesAt: now + 2_500 });
    const inTime = await enterVia(1, short.id);
    expect([QueueState.WAITING, QueueState.ADMITTED]).toContain(inTime.entered.state);
    await sleepUntil(now + 2_700);
    const tooLate = await failure(enterVia(2, short.id));
    expect([tooLate.code, reasonOf(tooLate)]).toEqual([Code.FailedPrecondition, Reason.SALE_CLOSED]);

    const { concert: draft } = await client(suites[0]!, ConcertAdminService).createConcert(
      { title: "Draft", venue: "", schedules: [{ startsAt: inDays(5), seatCount: 5, price: 1n }], draft: true },
      operator,
    );
    const drafted = await failure(enterVia(0, draft!.id));
    expect([drafted.code, reasonOf(drafted)]).toEqual([Code.FailedPrecondition, Reason.SALE_NOT_OPEN]);
  });

  it("tells waiting fans of a cancelled concert CLOSED with the reason, and keeps newcomers out", async () => {
    const { concert } = await scheduledConcert({ prequeueOpensAt: Date.now() - 1_000, saleOpensAt: Date.now() + 60_000 });
    const fan = await enterVia(0, concert.id);
    await client(suites[1]!, ConcertAdminService).cancelConcert({ concertId: concert.id, reason: "the artist is ill" }, operator);
    let status = await statusOf(fan.suite, fan.queueToken);
    for (const deadline = Date.now() + 5_000; status.state !== QueueState.CLOSED && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      status = await statusOf(fan.suite, fan.queueToken);
    }
    expect(status).toMatchObject({ state: QueueState.CLOSED, reason: Reason.CONCERT_CANCELLED });
    expect(status.detail).toContain("the artist is ill");
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // past the supply cache
    const refused = await failure(enterVia(2, concert.id));
    expect([refused.code, reasonOf(refused)]).toEqual([Code.FailedPrecondition, Reason.CONCERT_CANCELLED]);
    expect((await client(suites[0]!, ConcertService).listConcerts({})).concerts.map((listed) => listed.id)).not.toContain(concert.id);
  });

  it("admits by lot with the random method: fans are told so instead of a place, and the policy says RANDOM", async () => {
    const { concert } = await scheduledConcert({ prequeueOpensAt: Date.now() - 2_000, saleOpensAt: Date.now() - 1_000 });
    const admin = client(suites[0]!, QueueAdminService);
    await admin.pauseAdmission({ concertId: concert.id }, operator);
    const { policy } = await admin.setAdmissionPolicy({ concertId: concert.id, policy: { method: QueueingMethod.RANDOM, maxActive: 2 } }, operator);
    expect(policy!.method).toBe(QueueingMethod.RANDOM);
    const fans = await Promise.all(Array.from({ length: 6 }, (_, i) => enterVia(i, concert.id)));
    await admin.resumeAdmission({ concertId: concert.id }, operator);
    let statuses: QueueStatus[] = [];
    for (const deadline = Date.now() + 5_000; Date.now() < deadline; ) {
      statuses = await Promise.all(fans.map((fan) => statusOf(fan.suite, fan.queueToken)));
      if (statuses.filter((status) => status.state === QueueState.ADMITTED).length === 2) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(statuses.filter((status) => status.state === QueueState.ADMITTED)).toHaveLength(2);
    for (const status of statuses.filter((status) => status.state === QueueState.WAITING)) {
      expect(status).toMatchObject({ position: 0n, reason: Reason.RANDOM_ADMISSION });
      expect(status.estimatedWait).toBeUndefined();
    }
    const bad = await failure(admin.setAdmissionPolicy({ concertId: concert.id, policy: { method: 7 as QueueingMethod } }, operator));
    expect([bad.code, bad.rawMessage]).toEqual([Code.InvalidArgument, expect.stringContaining("policy.method")]);
  });
});
