import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { Reason } from "../gen/boxoffice/common/v1/error_pb.js";
import { ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueInternalService, QueueService, QueueState, type QueueStatus } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { reasonOf } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { databaseBehindProxy } from "./cuttable-proxy.js";
import { startRedis, type RedisProcess } from "./redis-cluster.js";
import { bearer, client, concertOnSale, failure, gated, newUser, operator, startTestSuite, testSecrets, waitForState, withQueueToken } from "./support.js";
import { watchLogs } from "../services/platform/log.js";

/**
 * The waiting room on a Redis of the test's own, which the tests kill, freeze
 * and start again empty (no persistence: a restart loses every key), with two
 * queue service instances on it, as in a real deployment.
 */

const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };
/** What the message used to say: it blamed the queue service, which was up. */
const blamedService = "the queue service";

let redis: RedisProcess;
/** Two instances of the whole suite on one Redis and one PostgreSQL. */
let a: Suite;
let b: Suite;
/** Token and concert only, reaching the queue of `a` over gRPC: a gate in another process. */
let edge: Suite;

beforeAll(async () => {
  redis = await startRedis();
  const shared = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `test:resilience:${randomUUID()}:`, QUEUE_MAX_ACTIVE: "100" };
  a = await startTestSuite(shared);
  b = await startTestSuite(shared);
  edge = await startTestSuite({ SERVICES: "token,concert", QUEUE_URL: a.host.url });
});

afterAll(async () => {
  await edge?.close();
  await b?.close();
  await a?.close();
  await redis?.kill();
});

const queue = () => client(a, QueueService);
const admin = () => client(a, QueueAdminService);

async function enter(concertId: string) {
  const user = await newUser(a);
  const { queueToken, status } = await queue().enterQueue({ concertId }, bearer(user.token));
  return { ...user, queueToken, entered: status! };
}

const statusOf = async (queueToken: string): Promise<QueueStatus> => (await queue().getQueueStatus({}, withQueueToken(queueToken))).status!;

/** Starts the test's Redis again with nothing in it, and waits until the suite's store is connected again. */
async function restartEmpty() {
  await redis.kill();
  await redis.start();
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      await admin().getQueueStats({ concertId: (await concertOnSale(a, [{ seatCount: 1, price: 1n }])).concertId }, operator);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** How long a call took to fail, and how. */
async function timedFailure(call: () => Promise<unknown>) {
  const started = performance.now();
  const error = await failure(call());
  return { ms: performance.now() - started, code: error.code, reason: reasonOf(error), message: error.rawMessage };
}

describe("after Redis restarts empty", () => {
  it("every room moves again within a tick, a paused room stays paused, a policy stays in force, and fans whose places were lost are told to enter again", async () => {
    const open = (await concertOnSale(a, [{ seatCount: 10, price: 1_000n }])).concertId;
    const paused = (await concertOnSale(a, [{ seatCount: 10, price: 1_000n }])).concertId;
    const narrow = (await concertOnSale(a, [{ seatCount: 10, price: 1_000n }])).concertId;

    const before = await enter(open);
    await waitForState(a, before.queueToken, QueueState.ADMITTED);
    await admin().pauseAdmission({ concertId: paused }, operator);
    await admin().setAdmissionPolicy({ concertId: narrow, policy: { maxActive: 1 } }, operator);
    const pausedBefore = await enter(paused);

    const logged = watchLogs();
    try {
      await restartEmpty();

      // A fan new to a room that had been entered before is admitted (this used to wait for good).
      const started = performance.now();
      const newcomer = await enter(open);
      await waitForState(a, newcomer.queueToken, QueueState.ADMITTED, 2_000);
      expect(performance.now() - started).toBeLessThan(1_000);

      // The fan admitted before the wipe lost the session: told so, with what to do.
      const lost = await statusOf(before.queueToken);
      expect(QueueState[lost.state]).toBe("EXPIRED");
      expect(lost.reason).toBe(Reason.QUEUE_TOKEN_EXPIRED);
      expect(lost.detail).toContain("enter the queue again");
      const gate = await failure(client(a, QueueInternalService).checkAdmission({ queueToken: before.queueToken }, internal));
      expect([gate.code, reasonOf(gate)]).toEqual([Code.FailedPrecondition, Reason.QUEUE_TOKEN_EXPIRED]);
      expect(gate.rawMessage).toContain("enter the queue again");
      // Entering again works, and admits.
      const again = await queue().enterQueue({ concertId: open }, bearer(before.token));
      expect(again.queueToken).not.toBe(before.queueToken);
      await waitForState(a, again.queueToken, QueueState.ADMITTED, 2_000);

      // The paused room stays paused, and says so.
      const pausedAfter = await enter(paused);
      await new Promise((resolve) => setTimeout(resolve, 300)); // 15 ticks
      const waiting = await statusOf(pausedAfter.queueToken);
      expect([QueueState[waiting.state], waiting.reason]).toEqual(["WAITING", Reason.QUEUE_PAUSED]);
      expect(waiting.detail).toContain("paused");
      expect(waiting.estimatedWait).toBeUndefined();
      expect((await statusOf(pausedBefore.queueToken)).reason).toBe(Reason.QUEUE_TOKEN_EXPIRED);
      const pausedStats = await admin().getQueueStats({ concertId: paused }, operator);
      expect([pausedStats.paused, pausedStats.waiting, pausedStats.admitted]).toEqual([true, 1n, 0n]);

      // The policy set before the wipe is still in force on both instances.
      const first = await enter(narrow);
      const second = await enter(narrow);
      await waitForState(a, first.queueToken, QueueState.ADMITTED, 2_000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(QueueState[(await statusOf(second.queueToken)).state]).toBe("WAITING");
      const narrowStats = await client(b, QueueAdminService).getQueueStats({ concertId: narrow }, operator);
      expect([narrowStats.policy!.maxActive, narrowStats.admitted]).toEqual([1, 1n]);

      // Said once, by one of the two instances.
      const said = logged.entries.filter((entry) => entry.level === 40 && entry.message.includes("waiting-room store is empty"));
      expect(said).toHaveLength(1);
    } finally {
      logged.stop();
    }
  });

  it("a pause made while Redis is down holds once Redis is back, though Redis never heard of it", async () => {
    const { concertId } = await concertOnSale(a, [{ seatCount: 10, price: 1_000n }]);
    await redis.kill();
    await admin().pauseAdmission({ concertId }, operator);
    await redis.start();
    const fan = await enter(concertId).catch(async () => {
      await new Promise((resolve) => setTimeout(resolve, 500));
      return enter(concertId);
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await statusOf(fan.queueToken)).reason).toBe(Reason.QUEUE_PAUSED);
    await admin().resumeAdmission({ concertId }, operator);
    await waitForState(a, fan.queueToken, QueueState.ADMITTED, 2_000);
  });
});

describe("when Redis evicts part of a room", () => {
  it("a room hash lost alone (its arrival counter with it) does not let a newcomer jump the line", async () => {
    const { concertId } = await concertOnSale(a, [{ seatCount: 10, price: 1_000n }]);
    await admin().pauseAdmission({ concertId }, operator);
    const first = await enter(concertId);
    const second = await enter(concertId);
    const redisClient = new Redis(redis.url);
    try {
      const [roomKey] = await redisClient.keys(`*queue:{${concertId}}:room`);
      expect(roomKey).toBeDefined();
      await redisClient.del(roomKey!);
    } finally {
      redisClient.disconnect();
    }
    const third = await enter(concertId);
    expect(third.entered.position).toBe(3n);
    await new Promise((resolve) => setTimeout(resolve, 200)); // ticks restore the room's settings: still paused
    expect([(await statusOf(first.queueToken)).position, (await statusOf(second.queueToken)).position, (await statusOf(third.queueToken)).position]).toEqual([1n, 2n, 3n]);
    expect((await statusOf(third.queueToken)).reason).toBe(Reason.QUEUE_PAUSED);
  });
});

describe("an upgrade from the layout that kept rooms in Redis only", () => {
  it("imports the rooms with their pause and overrides into PostgreSQL at start, so a paused room stays paused and its line moves on resume", async () => {
    const prefix = `test:legacy:${randomUUID()}:`;
    const { concertId } = await concertOnSale(a, [{ seatCount: 10, price: 1_000n }]);
    const userId = randomUUID();
    const redisClient = new Redis(redis.url);
    try {
      // What the earlier layout left: the rooms set, a paused room with an override, and a fan waiting in it.
      await redisClient.sadd(`${prefix}queue:rooms`, concertId);
      await redisClient.hset(`${prefix}queue:{${concertId}}:room`, "seq", "1", "paused", "1", "maxActive", "2");
      await redisClient.zadd(`${prefix}queue:{${concertId}}:line`, 1, userId);
      await redisClient.zadd(`${prefix}queue:{${concertId}}:seen`, Date.now(), userId);
      await redisClient.hset(`${prefix}queue:{${concertId}}:entries`, userId, "1:W:0");
      const upgraded = await startTestSuite({ REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, SERVICES: "queue,concert,token" });
      try {
        const stats = await client(upgraded, QueueAdminService).getQueueStats({ concertId }, operator);
        expect([stats.paused, stats.policy!.maxActive, stats.waiting]).toEqual([true, 2, 1n]);
        expect(await redisClient.exists(`${prefix}queue:rooms`)).toBe(0);
        const newcomer = await newUser(upgraded);
        const { queueToken } = await client(upgraded, QueueService).enterQueue({ concertId }, bearer(newcomer.token));
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect((await client(upgraded, QueueService).getQueueStatus({}, withQueueToken(queueToken))).status).toMatchObject({ position: 2n, reason: Reason.QUEUE_PAUSED });
        await client(upgraded, QueueAdminService).resumeAdmission({ concertId }, operator);
        await waitForState(upgraded, queueToken, QueueState.ADMITTED, 2_000);
        expect((await client(upgraded, QueueAdminService).getQueueStats({ concertId }, operator)).admitted).toBe(2n);
      } finally {
        await upgraded.close();
      }
    } finally {
      redisClient.disconnect();
    }
  });
});

describe("while PostgreSQL is cut off", () => {
  it("the line keeps moving on the rooms and supply last read: a slot given up is taken by the next fan", async () => {
    const { proxy, databaseUrl } = await databaseBehindProxy(inject("databaseUrl"));
    const cutOff = await startTestSuite({ DATABASE_URL: databaseUrl, REDIS_URL: redis.url, REDIS_KEY_PREFIX: `test:pg-cut:${randomUUID()}:` });
    try {
      const { concertId } = await concertOnSale(cutOff, [{ seatCount: 10, price: 1_000n }]);
      await client(cutOff, QueueAdminService).setAdmissionPolicy({ concertId, policy: { maxActive: 1 } }, operator);
      const queueOf = client(cutOff, QueueService);
      const [ahead, behind] = [await newUser(cutOff), await newUser(cutOff)];
      const first = await queueOf.enterQueue({ concertId }, bearer(ahead.token));
      await waitForState(cutOff, first.queueToken, QueueState.ADMITTED);
      const second = await queueOf.enterQueue({ concertId }, bearer(behind.token));
      expect(QueueState[second.status!.state]).toBe("WAITING");

      await proxy.cut();
      await queueOf.leaveQueue({}, withQueueToken(first.queueToken));
      // The rooms come from the last read of queue.room, the supply from the last answer (good for 10 s).
      await waitForState(cutOff, second.queueToken, QueueState.ADMITTED, 3_000);
    } finally {
      await proxy.open();
      await cutOff.close();
      await proxy.cut();
    }
  });
});

describe("while Redis is down", () => {
  it("every queue-backed and gated call answers Unavailable within 1 s, naming the waiting-room store, and all work again once it is back", async () => {
    const { concertId, scheduleIds } = await concertOnSale(a, [{ seatCount: 10, price: 1_000n }]);
    const fan = await enter(concertId);
    await waitForState(a, fan.queueToken, QueueState.ADMITTED);
    await redis.kill();
    try {
      const user = await newUser(a);
      const calls: [string, () => Promise<unknown>][] = [
        ["EnterQueue", () => queue().enterQueue({ concertId }, bearer(user.token))],
        ["GetQueueStatus", () => queue().getQueueStatus({}, withQueueToken(fan.queueToken))],
        ["CheckAdmission", () => client(a, QueueInternalService).checkAdmission({ queueToken: fan.queueToken }, internal)],
        ["IssueQueueToken", () => client(a, TokenService).issueQueueToken({ concertId }, bearer(user.token))],
        ["gated ListSeats", () => client(a, ConcertService).listSeats({ scheduleId: scheduleIds[0]! }, gated(fan.token, fan.queueToken))],
        ["ListSeats gated from another process", () => client(edge, ConcertService).listSeats({ scheduleId: scheduleIds[0]! }, gated(fan.token, fan.queueToken))],
        ["IssueQueueToken from another process", () => client(edge, TokenService).issueQueueToken({ concertId }, bearer(user.token))],
        ["GetQueueStats", () => admin().getQueueStats({ concertId }, operator)],
      ];
      for (const [name, call] of calls) {
        const failed = await timedFailure(call);
        expect({ name, code: Code[failed.code], reason: failed.reason }).toEqual({ name, code: "Unavailable", reason: Reason.DEPENDENCY_UNAVAILABLE });
        expect(failed.message, name).toContain("waiting-room store (Redis)");
        expect(failed.message, name).not.toContain(blamedService);
        expect(failed.ms, name).toBeLessThan(1_000);
      }
    } finally {
      await redis.start();
    }
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      try {
        await client(a, ConcertService).listSeats({ scheduleId: scheduleIds[0]! }, gated(fan.token, fan.queueToken));
        break;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    // Back: entering works (the admitted fan's session was in the Redis that restarted empty).
    const later = await enter(concertId);
    await waitForState(a, later.queueToken, QueueState.ADMITTED, 2_000);
  });

  it("a Redis that hangs (frozen, the connection open) costs the first call its 2 s command timeout, and the calls after it fail at once", async () => {
    const { concertId } = await concertOnSale(a, [{ seatCount: 10, price: 1_000n }]);
    const fan = await enter(concertId);
    redis.pause();
    try {
      const first = await timedFailure(() => queue().getQueueStatus({}, withQueueToken(fan.queueToken)));
      // The 2 s timeout, and what a loaded machine adds to it: not the 5-12 s of before.
      expect([Code[first.code], first.ms < 3_000]).toEqual(["Unavailable", true]);
      for (let i = 0; i < 5; i++) {
        const next = await timedFailure(() => queue().getQueueStatus({}, withQueueToken(fan.queueToken)));
        expect(Code[next.code]).toBe("Unavailable");
        expect(next.ms).toBeLessThan(200);
      }
    } finally {
      redis.resume();
    }
    const deadline = Date.now() + 3_000;
    for (;;) {
      try {
        expect(QueueState[(await statusOf(fan.queueToken)).state]).toMatch(/WAITING|ADMITTED/);
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  });
});
