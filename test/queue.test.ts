import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ErrorDetailSchema } from "../gen/boxoffice/common/v1/error_pb.js";
import { ConcertAdminService, ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import {
  QueueAdminService,
  QueueInternalService,
  QueueService,
  QueueState,
  AdmissionPolicySchema,
  type QueueStatus,
} from "../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { modules } from "../services/modules.js";
import { Reason, reasonOf } from "../services/platform/errors.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { QueueTokens } from "../services/queue/queue-tokens.js";
import { holdsFor } from "./outcomes.js";
import { dropKeys } from "./redis-keys.js";
import { startRedisCluster, type RedisCluster } from "./redis-cluster.js";
import { brief, Watch } from "./watch.js";
import { bearer, client, failure, gated, operator, testConfig, testSecrets, waitForState, withQueueToken } from "./support.js";

/**
 * The waiting room end to end: QueueService, its internal and admin services,
 * the gate on ListSeats, and the coordinator's WatchQueueStatus stream, on a
 * real server over gRPC (h2c), against real PostgreSQL and, for the Redis
 * store, real Redis: the shared server, and a 3-master Redis Cluster this file
 * starts. The admission worker ticks every 20 ms and watch streams
 * refresh every 100 ms (test/support.ts).
 */

const redisUrl = "redis://127.0.0.1:6379";
const redisPrefixes: string[] = [];
const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };

let db: pg.Pool;
let cluster: RedisCluster;
beforeAll(async () => {
  db = new pg.Pool({ connectionString: inject("databaseUrl"), max: 2 });
  cluster = await startRedisCluster();
});
afterAll(async () => {
  await db?.end();
  for (const prefix of redisPrefixes) await dropKeys(redisUrl, prefix);
  await cluster?.stop(); // and its keys with it
});

/** Environment of a suite on a fresh Redis key prefix, deleted after the file. */
function redisEnv(): Record<string, string> {
  const prefix = `test:${randomUUID()}:`;
  redisPrefixes.push(prefix);
  return { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix };
}

/** Environment of a suite on the file's Redis Cluster, on a fresh key prefix. */
function clusterEnv(): Record<string, string> {
  return { REDIS_CLUSTER_NODES: cluster.nodes.join(","), REDIS_KEY_PREFIX: `test:${randomUUID()}:` };
}

/** Sets the state of seats of a concert straight in the database (no reservation service yet). */
async function setSeats(concertId: string, state: "AVAILABLE" | "HELD" | "SOLD", numbers?: number[]) {
  await db.query(
    `update concert.seat set state = $2 where schedule_id in (select id from concert.schedule where concert_id = $1)
       and ($3::int[] is null or number = any($3::int[]))`,
    [concertId, state, numbers ?? null],
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns something other than undefined/false, or fails after the deadline. */
async function until<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
    await sleep(20);
  }
}

/** Asserts a call fails with the code and reason (and, for InvalidArgument, the field named in the detail and message). */
async function expectFailure(call: Promise<unknown>, code: Code, reason: Reason, field?: string): Promise<ConnectError> {
  const error = await failure(call);
  expect({ code: Code[error.code], reason: Reason[reasonOf(error) ?? Reason.UNSPECIFIED] }, error.rawMessage).toEqual({
    code: Code[code],
    reason: Reason[reason],
  });
  if (field !== undefined) {
    expect(error.findDetails(ErrorDetailSchema)[0]?.field).toBe(field);
    expect(error.rawMessage).toContain(field);
  }
  expect(error.rawMessage).not.toMatch(/\bat .*\.(ts|js):\d+/);
  return error;
}

const forger = new QueueTokens("another-secret-that-is-also-long-enough");

/** Variants of a valid queue token that must not be accepted. */
function badTokens(queueToken: string): [string, string][] {
  const [q1, concertId, userId, seq, mac] = queueToken.split(".") as [string, string, string, string, string];
  const flipped = mac.slice(0, 5) + (mac[5] === "A" ? "B" : "A") + mac.slice(6);
  return [
    ["garbage", "not-a-queue-token"],
    ["tampered MAC", [q1, concertId, userId, seq, flipped].join(".")],
    ["signed with another secret", forger.sign({ concertId, userId, seq: Number(seq) })],
    ["moved to another user", [q1, concertId, randomUUID(), seq, mac].join(".")],
    ["moved to another concert", [q1, randomUUID(), userId, seq, mac].join(".")],
    ["another entry", [q1, concertId, userId, String(Number(seq) + 1), mac].join(".")],
  ];
}

interface Fan {
  userId: string;
  token: string;
  queueToken: string;
  /** The status EnterQueue answered. */
  entered: QueueStatus;
}

let crowdUsers: Promise<{ userId: string; token: string }[]> | undefined;
function crowdOf(tokens: Client<typeof TokenService>) {
  crowdUsers ??= (async () => {
    const users: { userId: string; token: string }[] = [];
    for (let start = 0; start < 1000; start += 200) {
      users.push(...(await Promise.all(Array.from({ length: 200 }, () => tokens.issueUserToken({})))));
    }
    return users;
  })();
  return crowdUsers;
}

const stores = [
  { store: "memory", env: (): Record<string, string> => ({}) },
  { store: "redis", env: redisEnv },
  { store: "redis cluster", env: clusterEnv },
];

describe.each(stores)("waiting room on the $store store", ({ env }) => {
  let suite: Suite;
  let storeEnv: Record<string, string>;
  /** RPCs served, by method name (every call, including in-process calls between services). */
  const served = new Map<string, number>();
  const counter: Interceptor = (next) => (req) => {
    served.set(req.method.name, (served.get(req.method.name) ?? 0) + 1);
    return next(req);
  };

  // One client (one HTTP/2 connection) per service for the whole suite: support's client() opens a new one per call.
  let clients: {
    queue: Client<typeof QueueService>;
    admin: Client<typeof QueueAdminService>;
    internal: Client<typeof QueueInternalService>;
    tokens: Client<typeof TokenService>;
    concerts: Client<typeof ConcertService>;
  };
  beforeAll(async () => {
    storeEnv = env();
    suite = await startSuite(testConfig(storeEnv), modules, { interceptors: [counter] });
    clients = {
      queue: client(suite, QueueService),
      admin: client(suite, QueueAdminService),
      internal: client(suite, QueueInternalService),
      tokens: client(suite, TokenService),
      concerts: client(suite, ConcertService),
    };
  });
  afterAll(() => suite?.close());

  const queue = () => clients.queue;
  const admin = () => clients.admin;
  const queueInternal = () => clients.internal;
  const newUser = () => clients.tokens.issueUserToken({});

  /** A concert with one date of `seats` seats; its ids. */
  async function newConcert(seats = 4) {
    const { concert, schedules } = await client(suite, ConcertAdminService).createConcert(
      {
        title: `Queue test ${randomUUID().slice(0, 8)}`,
        schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 7 * 86_400_000)), seatCount: seats, price: 50_000n }],
      },
      operator,
    );
    return { concertId: concert!.id, scheduleId: schedules[0]!.id };
  }

  async function setPolicy(concertId: string, policy: { maxActive?: number; ratePerMinute?: number; sessionTtlMs?: number; abandonAfterMs?: number }) {
    const response = await admin().setAdmissionPolicy(
      {
        concertId,
        policy: {
          maxActive: policy.maxActive ?? 0,
          ratePerMinute: policy.ratePerMinute,
          sessionTtl: policy.sessionTtlMs === undefined ? undefined : durationFromMs(policy.sessionTtlMs),
          abandonAfter: policy.abandonAfterMs === undefined ? undefined : durationFromMs(policy.abandonAfterMs),
        },
      },
      operator,
    );
    return response.policy!;
  }

  const pause = (concertId: string) => admin().pauseAdmission({ concertId }, operator);
  const resume = (concertId: string) => admin().resumeAdmission({ concertId }, operator);
  const stats = (concertId: string) => admin().getQueueStats({ concertId }, operator);

  /** `count` new users entering one after the other, so that their order in line is the array's. */
  async function enterFans(concertId: string, count: number): Promise<Fan[]> {
    const fans: Fan[] = [];
    for (let i = 0; i < count; i++) {
      const user = await newUser();
      const { queueToken, status } = await queue().enterQueue({ concertId }, bearer(user.token));
      fans.push({ userId: user.userId, token: user.token, queueToken, entered: status! });
    }
    return fans;
  }

  /** 1,000 users, made once for the file (users live in the shared database) and reused across concerts. */
  const crowd = () => crowdOf(clients.tokens);

  const status = async (fan: Fan) => (await queue().getQueueStatus({}, withQueueToken(fan.queueToken))).status!;
  const briefs = async (fans: Fan[]) => Promise.all(fans.map(async (fan) => brief(await status(fan))));

  /** Where a fan stands at the gate, without counting as presence: "ADMITTED" or the refusal's reason. */
  async function gate(fan: Fan): Promise<string> {
    try {
      await queueInternal().checkAdmission({ queueToken: fan.queueToken }, internal);
      return "ADMITTED";
    } catch (error) {
      return Reason[reasonOf(error) ?? Reason.UNSPECIFIED];
    }
  }

  const waitAdmitted = (fan: Fan, timeoutMs?: number) => waitForState(suite, fan.queueToken, QueueState.ADMITTED, timeoutMs);

  /** Opens a watch stream over a real gRPC (h2c) client. */
  function watch(queueToken: string, transport = createGrpcTransport({ baseUrl: suite.host.url })): Watch {
    const coordinator = createClient(CoordinatorService, transport);
    return new Watch((signal) => coordinator.watchQueueStatus({}, { ...withQueueToken(queueToken), signal }));
  }

  describe("EnterQueue and IssueQueueToken", () => {
    it("need a user token", async () => {
      const { concertId } = await newConcert();
      await expectFailure(queue().enterQueue({ concertId }), Code.Unauthenticated, Reason.TOKEN_MISSING);
      await expectFailure(clients.tokens.issueQueueToken({ concertId }), Code.Unauthenticated, Reason.TOKEN_MISSING);
      await expectFailure(queue().enterQueue({ concertId }, bearer("not-a-token")), Code.Unauthenticated, Reason.TOKEN_INVALID);
      await expectFailure(queue().enterQueue({ concertId }, withQueueToken("q1.x")), Code.Unauthenticated, Reason.TOKEN_MISSING);
      expect((await stats(concertId)).waiting).toBe(0n);
    });

    it("answer NotFound CONCERT_NOT_FOUND for a concert that does not exist", async () => {
      const user = await newUser();
      const concertId = randomUUID();
      await expectFailure(queue().enterQueue({ concertId }, bearer(user.token)), Code.NotFound, Reason.CONCERT_NOT_FOUND);
      await expectFailure(clients.tokens.issueQueueToken({ concertId }, bearer(user.token)), Code.NotFound, Reason.CONCERT_NOT_FOUND);
    });

    it("answer InvalidArgument naming concert_id for a malformed concert id", async () => {
      const user = await newUser();
      for (const concertId of ["", "nope", "123", "'; drop table concert.seat; --", `${randomUUID()}x`]) {
        await expectFailure(queue().enterQueue({ concertId }, bearer(user.token)), Code.InvalidArgument, Reason.INVALID_ARGUMENT, "concert_id");
        await expectFailure(
          clients.tokens.issueQueueToken({ concertId }, bearer(user.token)),
          Code.InvalidArgument,
          Reason.INVALID_ARGUMENT,
          "concert_id",
        );
      }
    });

    it("are idempotent: entering again, by either RPC, returns the same token and place", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      const fans = await enterFans(concertId, 3);
      expect(fans.map((fan) => brief(fan.entered))).toEqual(["WAITING 1", "WAITING 2", "WAITING 3"]);
      expect(fans.every((fan) => fan.queueToken.startsWith("q1.") && fan.entered.concertId === concertId)).toBe(true);

      const second = fans[1]!;
      const again = await queue().enterQueue({ concertId }, bearer(second.token));
      expect(again.queueToken).toBe(second.queueToken);
      expect(brief(again.status)).toBe("WAITING 2");
      const issued = await clients.tokens.issueQueueToken({ concertId }, bearer(second.token));
      expect(issued.queueToken).toBe(second.queueToken);
      expect(brief(issued.status)).toBe("WAITING 2");
      expect(await briefs(fans)).toEqual(["WAITING 1", "WAITING 2", "WAITING 3"]);
      expect((await stats(concertId)).waiting).toBe(3n);
    });

    it("give 1,000 concurrent entrants positions exactly 1..1000 and distinct tokens; repeating them returns the same tokens", async () => {
      const users = await crowd();
      const { concertId } = await newConcert();
      await pause(concertId);

      const enterAll = () => Promise.all(users.map((user) => queue().enterQueue({ concertId }, bearer(user.token))));
      const first = await enterAll();
      expect(first.every((entered) => entered.status!.state === QueueState.WAITING)).toBe(true);
      const positions = first.map((entered) => Number(entered.status!.position)).sort((a, b) => a - b);
      expect(positions).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
      expect(new Set(first.map((entered) => entered.queueToken)).size).toBe(1000);

      const second = await enterAll();
      expect(second.map((entered) => entered.queueToken)).toEqual(first.map((entered) => entered.queueToken));
      expect(second.map((entered) => entered.status!.position)).toEqual(first.map((entered) => entered.status!.position));

      // The positions handed out are the positions held: one batched look at every token.
      const { statuses } = await queueInternal().getQueueStatuses({ concertId, queueTokens: first.map((entered) => entered.queueToken) }, internal);
      expect(statuses.map((s) => s.position)).toEqual(first.map((entered) => entered.status!.position));
      const counts = await stats(concertId);
      expect([counts.waiting, counts.admitted]).toEqual([1000n, 0n]);
    });
  });

  describe("GetQueueStatus", () => {
    it("reports position and people ahead exactly, and the line closes up when someone ahead leaves", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      const fans = await enterFans(concertId, 4);
      const before = await Promise.all(fans.map(status));
      expect(before.map((s) => [s.state, s.position, s.peopleAhead, s.concertId])).toEqual([
        [QueueState.WAITING, 1n, 0n, concertId],
        [QueueState.WAITING, 2n, 1n, concertId],
        [QueueState.WAITING, 3n, 2n, concertId],
        [QueueState.WAITING, 4n, 3n, concertId],
      ]);
      expect(before.every((s) => s.admittedUntil === undefined)).toBe(true);

      await queue().leaveQueue({}, withQueueToken(fans[1]!.queueToken));
      const after = await Promise.all(fans.map(status));
      expect(after.map((s) => [brief(s), s.peopleAhead])).toEqual([
        ["WAITING 1", 0n],
        ["LEFT", 0n],
        ["WAITING 2", 1n],
        ["WAITING 3", 2n],
      ]);
    });

    it("leaves estimated_wait unset before any admission, then estimates it from the measured admission rate", async () => {
      const { concertId } = await newConcert();
      await setSeats(concertId, "HELD"); // nothing AVAILABLE: nobody is admitted, although admission is not paused
      await setPolicy(concertId, { maxActive: 1 });
      const fans = await enterFans(concertId, 3);
      await sleep(100); // a few worker ticks, none of which may admit
      const waiting = await Promise.all(fans.map(status));
      expect(waiting.map(brief)).toEqual(["WAITING 1", "WAITING 2", "WAITING 3"]);
      expect(waiting.map((s) => s.estimatedWait)).toEqual([undefined, undefined, undefined]);

      await setSeats(concertId, "AVAILABLE");
      const admitted = await waitAdmitted(fans[0]!);
      expect(admitted.estimatedWait).toBeUndefined();
      const [second, third] = await Promise.all(fans.slice(1).map(status));
      expect([brief(second), brief(third)]).toEqual(["WAITING 1", "WAITING 2"]);
      const secondWait = durationMs(second!.estimatedWait!);
      const thirdWait = durationMs(third!.estimatedWait!);
      expect(secondWait).toBeGreaterThan(0);
      expect(thirdWait).toBeGreaterThan(secondWait);
      const counts = await stats(concertId);
      expect(counts.admittedPerMinute).toBe(1n);
    });

    it("answers Unauthenticated QUEUE_TOKEN_MISSING without x-queue-token", async () => {
      const user = await newUser();
      await expectFailure(queue().getQueueStatus({}), Code.Unauthenticated, Reason.QUEUE_TOKEN_MISSING);
      await expectFailure(queue().getQueueStatus({}, bearer(user.token)), Code.Unauthenticated, Reason.QUEUE_TOKEN_MISSING);
      await expectFailure(queue().leaveQueue({}), Code.Unauthenticated, Reason.QUEUE_TOKEN_MISSING);
    });

    it("answers Unauthenticated QUEUE_TOKEN_INVALID for a forged or tampered token, and the real place is untouched", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      const [fan] = await enterFans(concertId, 1);
      for (const [name, token] of badTokens(fan!.queueToken)) {
        const error = await expectFailure(queue().getQueueStatus({}, withQueueToken(token)), Code.Unauthenticated, Reason.QUEUE_TOKEN_INVALID);
        expect(error.rawMessage, name).not.toContain(fan!.queueToken);
        await expectFailure(queue().leaveQueue({}, withQueueToken(token)), Code.Unauthenticated, Reason.QUEUE_TOKEN_INVALID);
      }
      expect(brief(await status(fan!))).toBe("WAITING 1");
    });
  });

  describe("admission", () => {
    it("admits exactly max_active fans and keeps the rest WAITING in FIFO order", async () => {
      const { concertId } = await newConcert();
      await setPolicy(concertId, { maxActive: 3 });
      const fans = await enterFans(concertId, 7);
      await until("3 admitted", async () => (await stats(concertId)).admitted === 3n);
      await holdsFor(200, async () => {
        const counts = await stats(concertId);
        expect([counts.admitted, counts.waiting]).toEqual([3n, 4n]);
      });
      const now = Date.now();
      const statuses = await Promise.all(fans.map(status));
      expect(statuses.map(brief)).toEqual(["ADMITTED", "ADMITTED", "ADMITTED", "WAITING 1", "WAITING 2", "WAITING 3", "WAITING 4"]);
      for (const admitted of statuses.slice(0, 3)) {
        const endsAt = timestampMs(admitted.admittedUntil!);
        expect(endsAt).toBeGreaterThan(now + 590_000); // the default session_ttl, 10 minutes
        expect(endsAt).toBeLessThanOrEqual(now + 600_000);
      }
    });

    it("LeaveQueue of an admitted fan answers LEFT and hands the slot to the next in line", async () => {
      const { concertId } = await newConcert();
      await setPolicy(concertId, { maxActive: 2 });
      const fans = await enterFans(concertId, 4);
      await waitAdmitted(fans[1]!);

      const left = await queue().leaveQueue({}, withQueueToken(fans[0]!.queueToken));
      expect(brief(left.status)).toBe("LEFT");
      await waitAdmitted(fans[2]!);
      expect(await briefs(fans)).toEqual(["LEFT", "ADMITTED", "ADMITTED", "WAITING 1"]);
      expect((await stats(concertId)).admitted).toBe(2n);

      // Leaving again changes nothing; a waiting fan can leave too.
      expect(brief((await queue().leaveQueue({}, withQueueToken(fans[0]!.queueToken))).status)).toBe("LEFT");
      expect(brief((await queue().leaveQueue({}, withQueueToken(fans[3]!.queueToken))).status)).toBe("LEFT");
      const counts = await stats(concertId);
      expect([counts.admitted, counts.waiting]).toEqual([2n, 0n]);

      // Coming back is a new entry with a new token, at the back of the line.
      const back = await queue().enterQueue({ concertId }, bearer(fans[3]!.token));
      expect(back.queueToken).not.toBe(fans[3]!.queueToken);
      expect(brief(back.status)).toBe("WAITING 1");
      // Only the latest entry is kept (see the QueueStore contract): the old token now reads EXPIRED, and stays refused.
      expect(brief(await status(fans[3]!))).toBe("EXPIRED");
      expect(await gate(fans[3]!)).toBe("QUEUE_TOKEN_EXPIRED");
    });

    it("CompleteSession with the internal credential ends the session COMPLETED and frees the slot; without it, PermissionDenied", async () => {
      const { concertId } = await newConcert();
      await setPolicy(concertId, { maxActive: 1 });
      const [first, second] = await enterFans(concertId, 2);
      await waitAdmitted(first!);

      const request = { userId: first!.userId, concertId };
      await expectFailure(queueInternal().completeSession(request), Code.PermissionDenied, Reason.INTERNAL_ONLY);
      await expectFailure(
        queueInternal().completeSession(request, { headers: { "x-internal-credential": "wrong" } }),
        Code.PermissionDenied,
        Reason.INTERNAL_ONLY,
      );
      await expectFailure(queueInternal().completeSession(request, bearer(first!.token)), Code.PermissionDenied, Reason.INTERNAL_ONLY);
      await expectFailure(queueInternal().completeSession(request, operator), Code.PermissionDenied, Reason.INTERNAL_ONLY);
      await expectFailure(
        queueInternal().completeSession({ userId: "me", concertId }, internal),
        Code.InvalidArgument,
        Reason.INVALID_ARGUMENT,
        "user_id",
      );
      expect(await briefs([first!, second!])).toEqual(["ADMITTED", "WAITING 1"]);

      await queueInternal().completeSession(request, internal);
      expect(brief(await status(first!))).toBe("COMPLETED");
      await waitAdmitted(second!);
      await queueInternal().completeSession(request, internal); // again: nothing left to end, still fine
      expect(brief(await status(first!))).toBe("COMPLETED");
      const counts = await stats(concertId);
      expect([counts.admitted, counts.waiting, counts.admittedPerMinute]).toEqual([1n, 0n, 2n]);
    });

    it("ends an admitted session EXPIRED after session_ttl and admits the next fan", async () => {
      const { concertId } = await newConcert();
      const policy = await setPolicy(concertId, { maxActive: 1, sessionTtlMs: 1000 });
      expect(durationMs(policy.sessionTtl!)).toBe(1000);
      const [first, second] = await enterFans(concertId, 2);
      const admitted = await waitAdmitted(first!);
      const admittedUntil = timestampMs(admitted.admittedUntil!);
      expect(admittedUntil - Date.now()).toBeLessThanOrEqual(1000);
      expect(brief(await status(second!))).toBe("WAITING 1");

      await until("the first session to expire", async () => (await gate(first!)) === "QUEUE_TOKEN_EXPIRED", 5_000);
      expect(Date.now()).toBeGreaterThanOrEqual(admittedUntil);
      expect(brief(await status(first!))).toBe("EXPIRED");
      await waitAdmitted(second!, 3_000);
    });

    it("drops a waiting fan silent past abandon_after (the line closes up) but keeps a fan who polls", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      await setPolicy(concertId, { abandonAfterMs: 1000 });
      const silentSince = Date.now(); // the silent fan's last (and only) presence is its entry, no earlier than this
      const [silent, pollerA, pollerB] = await enterFans(concertId, 3);
      let polling = true;
      const polls = (async () => {
        while (polling) {
          await Promise.all([status(pollerA!), status(pollerB!)]);
          await sleep(150);
        }
      })();
      try {
        await until("the silent fan to be abandoned", async () => (await stats(concertId)).abandoned === 1n, 5_000);
        expect(Date.now() - silentSince).toBeGreaterThanOrEqual(1000);
        expect(await gate(silent!)).toBe("QUEUE_TOKEN_EXPIRED");
        expect(await briefs([silent!, pollerA!, pollerB!])).toEqual(["EXPIRED", "WAITING 1", "WAITING 2"]);
        // The pollers entered right after the silent fan: without their polls they would be dropped within a few ticks.
        await holdsFor(400, async () => {
          const counts = await stats(concertId);
          expect([counts.waiting, counts.abandoned]).toEqual([2n, 1n]);
        });
      } finally {
        polling = false;
        await polls;
      }
      await resume(concertId);
      await waitAdmitted(pollerB!);
    });

    it("PauseAdmission stops admitting while admitted sessions carry on; ResumeAdmission admits again", async () => {
      const { concertId } = await newConcert();
      await setPolicy(concertId, { maxActive: 5 });
      const [first] = await enterFans(concertId, 1);
      await waitAdmitted(first!);

      await pause(concertId);
      expect((await stats(concertId)).paused).toBe(true);
      const later = await enterFans(concertId, 2);
      await holdsFor(300, async () => expect(await briefs([first!, ...later])).toEqual(["ADMITTED", "WAITING 1", "WAITING 2"]));

      await resume(concertId);
      expect((await stats(concertId)).paused).toBe(false);
      await waitAdmitted(later[0]!);
      await waitAdmitted(later[1]!);
    });

    it("rate_per_minute caps admissions in a minute even with free slots", async () => {
      const { concertId } = await newConcert();
      await setPolicy(concertId, { maxActive: 10, ratePerMinute: 2 });
      const fans = await enterFans(concertId, 3);
      await waitAdmitted(fans[1]!);
      await queueInternal().completeSession({ userId: fans[0]!.userId, concertId }, internal);
      await holdsFor(300, async () => expect(brief(await status(fans[2]!))).toBe("WAITING 1"));
      const counts = await stats(concertId);
      expect([counts.admitted, counts.admittedPerMinute, counts.waiting]).toEqual([1n, 2n, 1n]);
    });

    it("GetQueueStats counts waiting, admitted, admissions per minute, abandoned, paused, sold out, and the policy in force", async () => {
      const { concertId } = await newConcert();
      const initial = await stats(concertId);
      expect(initial).toMatchObject({ waiting: 0n, admitted: 0n, admittedPerMinute: 0n, abandoned: 0n, paused: false, soldOut: false });
      expect(initial.policy).toMatchObject({ maxActive: 200, ratePerMinute: 0 });
      expect(durationMs(initial.policy!.sessionTtl!)).toBe(600_000);
      expect(durationMs(initial.policy!.abandonAfter!)).toBe(120_000);

      await setPolicy(concertId, { maxActive: 2 });
      const fans = await enterFans(concertId, 5);
      await until("2 admitted", async () => (await stats(concertId)).admitted === 2n);
      expect(await stats(concertId)).toMatchObject({ waiting: 3n, admitted: 2n, admittedPerMinute: 2n, abandoned: 0n, paused: false, soldOut: false });

      await queueInternal().completeSession({ userId: fans[0]!.userId, concertId }, internal);
      await waitAdmitted(fans[2]!);
      await queue().leaveQueue({}, withQueueToken(fans[4]!.queueToken));
      await pause(concertId);
      const counts = await stats(concertId);
      expect(counts).toMatchObject({ waiting: 1n, admitted: 2n, admittedPerMinute: 3n, abandoned: 0n, paused: true, soldOut: false });
      expect(counts.policy?.maxActive).toBe(2);
    });

    it("admin RPCs need the operator key: otherwise PermissionDenied OPERATOR_ONLY, and nothing changes", async () => {
      const { concertId } = await newConcert();
      const user = await newUser();
      const outsiders = [{}, bearer(user.token), bearer("wrong-operator-key"), internal, { headers: { authorization: testSecrets.OPERATOR_KEY } }];
      for (const options of outsiders) {
        await expectFailure(admin().getQueueStats({ concertId }, options), Code.PermissionDenied, Reason.OPERATOR_ONLY);
        await expectFailure(admin().pauseAdmission({ concertId }, options), Code.PermissionDenied, Reason.OPERATOR_ONLY);
        await expectFailure(admin().resumeAdmission({ concertId }, options), Code.PermissionDenied, Reason.OPERATOR_ONLY);
        await expectFailure(
          admin().setAdmissionPolicy({ concertId, policy: { maxActive: 1 } }, options),
          Code.PermissionDenied,
          Reason.OPERATOR_ONLY,
        );
      }
      const counts = await stats(concertId);
      expect(counts.paused).toBe(false);
      expect(counts.policy?.maxActive).toBe(200);

      const unknown = randomUUID();
      await expectFailure(admin().getQueueStats({ concertId: unknown }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);
      await expectFailure(admin().pauseAdmission({ concertId: unknown }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);
      await expectFailure(admin().setAdmissionPolicy({ concertId: unknown, policy: { maxActive: 1 } }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);
      await expectFailure(admin().getQueueStats({ concertId: "x" }, operator), Code.InvalidArgument, Reason.INVALID_ARGUMENT, "concert_id");
    });

    it("SetAdmissionPolicy rejects out-of-range values naming the field, and keeps unset fields", async () => {
      const { concertId } = await newConcert();
      const cases: [MessageInitShape<typeof AdmissionPolicySchema> | undefined, string][] = [
        [undefined, "policy"],
        [{ maxActive: -1 }, "policy.max_active"],
        [{ maxActive: 1_000_001 }, "policy.max_active"],
        [{ ratePerMinute: -1 }, "policy.rate_per_minute"],
        [{ sessionTtl: durationFromMs(500) }, "policy.session_ttl"],
        [{ sessionTtl: durationFromMs(0) }, "policy.session_ttl"],
        [{ sessionTtl: durationFromMs(-5000) }, "policy.session_ttl"],
        [{ sessionTtl: durationFromMs(86_400_000 + 1000) }, "policy.session_ttl"],
        [{ abandonAfter: durationFromMs(999) }, "policy.abandon_after"],
      ];
      for (const [policy, field] of cases) {
        await expectFailure(admin().setAdmissionPolicy({ concertId, policy }, operator), Code.InvalidArgument, Reason.INVALID_ARGUMENT, field);
      }
      expect((await stats(concertId)).policy?.maxActive).toBe(200);

      const first = await setPolicy(concertId, { maxActive: 7, ratePerMinute: 30 });
      expect([first.maxActive, first.ratePerMinute, durationMs(first.sessionTtl!)]).toEqual([7, 30, 600_000]);
      const second = await setPolicy(concertId, { sessionTtlMs: 5000, ratePerMinute: 0 });
      expect([second.maxActive, second.ratePerMinute, durationMs(second.sessionTtl!), durationMs(second.abandonAfter!)]).toEqual([7, 0, 5000, 120_000]);
      const counts = await stats(concertId);
      expect([counts.policy?.maxActive, counts.policy?.ratePerMinute, durationMs(counts.policy!.sessionTtl!)]).toEqual([7, 0, 5000]);
    });
  });

  describe("the gate on ConcertService.ListSeats (and CheckAdmission)", () => {
    it("lets an admitted fan list the seats of the concert's dates", async () => {
      const { concertId, scheduleId } = await newConcert(4);
      const [fan] = await enterFans(concertId, 1);
      const admitted = await waitAdmitted(fan!);
      const { seats } = await clients.concerts.listSeats({ scheduleId }, gated(fan!.token, fan!.queueToken));
      expect(seats.map((seat) => [seat.number, seat.state])).toEqual([1, 2, 3, 4].map((n) => [n, SeatState.AVAILABLE]));

      const checked = await queueInternal().checkAdmission({ queueToken: fan!.queueToken, concertId, userId: fan!.userId }, internal);
      expect([checked.userId, checked.concertId]).toEqual([fan!.userId, concertId]);
      expect(timestampMs(checked.admittedUntil!)).toBe(timestampMs(admitted.admittedUntil!));
    });

    it("refuses a missing, forged, someone else's or another concert's token with PermissionDenied", async () => {
      const { concertId, scheduleId } = await newConcert(4);
      const other = await newConcert(4);
      const [fan, neighbour] = await enterFans(concertId, 2);
      const [elsewhere] = await enterFans(other.concertId, 1);
      await Promise.all([waitAdmitted(fan!), waitAdmitted(neighbour!), waitAdmitted(elsewhere!)]);
      const seats = clients.concerts;

      await expectFailure(seats.listSeats({ scheduleId }, bearer(fan!.token)), Code.PermissionDenied, Reason.QUEUE_TOKEN_MISSING);
      for (const [name, token] of badTokens(fan!.queueToken)) {
        const error = await expectFailure(seats.listSeats({ scheduleId }, gated(fan!.token, token)), Code.PermissionDenied, Reason.QUEUE_TOKEN_INVALID);
        expect(error.rawMessage, name).toBeTruthy();
        await expectFailure(queueInternal().checkAdmission({ queueToken: token }, internal), Code.PermissionDenied, Reason.QUEUE_TOKEN_INVALID);
      }
      // The neighbour's admitted token with the fan's user token.
      await expectFailure(seats.listSeats({ scheduleId }, gated(fan!.token, neighbour!.queueToken)), Code.PermissionDenied, Reason.QUEUE_TOKEN_INVALID);
      await expectFailure(
        queueInternal().checkAdmission({ queueToken: neighbour!.queueToken, userId: fan!.userId }, internal),
        Code.PermissionDenied,
        Reason.QUEUE_TOKEN_INVALID,
      );
      // Admitted to the other concert, asking for this one's seats.
      await expectFailure(seats.listSeats({ scheduleId }, gated(elsewhere!.token, elsewhere!.queueToken)), Code.PermissionDenied, Reason.NOT_ADMITTED);
      await expectFailure(
        queueInternal().checkAdmission({ queueToken: elsewhere!.queueToken, concertId }, internal),
        Code.PermissionDenied,
        Reason.NOT_ADMITTED,
      );
      // CheckAdmission itself is internal, and needs a token.
      await expectFailure(queueInternal().checkAdmission({ queueToken: fan!.queueToken }), Code.PermissionDenied, Reason.INTERNAL_ONLY);
      await expectFailure(queueInternal().checkAdmission({ queueToken: "" }, internal), Code.InvalidArgument, Reason.INVALID_ARGUMENT, "queue_token");
      // And the rightful owner still gets in.
      await seats.listSeats({ scheduleId }, gated(fan!.token, fan!.queueToken));
    });

    it("refuses a token still WAITING with FailedPrecondition NOT_ADMITTED", async () => {
      const { concertId, scheduleId } = await newConcert(4);
      await setPolicy(concertId, { maxActive: 1 });
      const [first, second] = await enterFans(concertId, 2);
      await waitAdmitted(first!);
      expect(brief(await status(second!))).toBe("WAITING 1");
      await expectFailure(
        clients.concerts.listSeats({ scheduleId }, gated(second!.token, second!.queueToken)),
        Code.FailedPrecondition,
        Reason.NOT_ADMITTED,
      );
      await expectFailure(queueInternal().checkAdmission({ queueToken: second!.queueToken }, internal), Code.FailedPrecondition, Reason.NOT_ADMITTED);
    });

    it("refuses a left, completed or expired session with FailedPrecondition QUEUE_TOKEN_EXPIRED", async () => {
      const { concertId, scheduleId } = await newConcert(4);
      await setPolicy(concertId, { maxActive: 3 });
      const [leaver, payer] = await enterFans(concertId, 2);
      await Promise.all([waitAdmitted(leaver!), waitAdmitted(payer!)]);
      await setPolicy(concertId, { sessionTtlMs: 1000 });
      const [expirer] = await enterFans(concertId, 1);
      await waitAdmitted(expirer!);

      await queue().leaveQueue({}, withQueueToken(leaver!.queueToken));
      await queueInternal().completeSession({ userId: payer!.userId, concertId }, internal);
      await until("the short session to run out", async () => (await gate(expirer!)) === "QUEUE_TOKEN_EXPIRED", 5_000);
      expect(await briefs([leaver!, payer!, expirer!])).toEqual(["LEFT", "COMPLETED", "EXPIRED"]);

      for (const fan of [leaver!, payer!, expirer!]) {
        await expectFailure(
          clients.concerts.listSeats({ scheduleId }, gated(fan.token, fan.queueToken)),
          Code.FailedPrecondition,
          Reason.QUEUE_TOKEN_EXPIRED,
        );
        await expectFailure(queueInternal().checkAdmission({ queueToken: fan.queueToken }, internal), Code.FailedPrecondition, Reason.QUEUE_TOKEN_EXPIRED);
      }
    });
  });

  describe("supply", () => {
    it("when every seat is SOLD, waiting fans are told SOLD_OUT, nobody enters any more, and the stats say sold out", async () => {
      const { concertId } = await newConcert(4);
      await setPolicy(concertId, { maxActive: 1 });
      const fans = await enterFans(concertId, 3);
      await waitAdmitted(fans[0]!);
      expect((await briefs(fans)).slice(1)).toEqual(["WAITING 1", "WAITING 2"]);

      await setSeats(concertId, "SOLD");
      await until("the waiting fans to hear SOLD_OUT", async () => (await briefs(fans.slice(1))).every((s) => s === "SOLD_OUT"), 5_000);
      const counts = await stats(concertId);
      expect([counts.soldOut, counts.waiting]).toEqual([true, 0n]);
      expect(await gate(fans[1]!)).toBe("SOLD_OUT");

      const latecomer = await newUser();
      const entered = await queue().enterQueue({ concertId }, bearer(latecomer.token));
      expect([entered.queueToken, brief(entered.status)]).toEqual(["", "SOLD_OUT"]);
      const issued = await clients.tokens.issueQueueToken({ concertId }, bearer(latecomer.token));
      expect([issued.queueToken, brief(issued.status)]).toEqual(["", "SOLD_OUT"]);
      const again = await queue().enterQueue({ concertId }, bearer(fans[2]!.token));
      expect(brief(again.status)).toBe("SOLD_OUT");
      expect((await stats(concertId)).waiting).toBe(0n);
    });

    it("while no seat is AVAILABLE (held or sold, not all sold) nobody new is admitted; when seats come back, admission resumes", async () => {
      const { concertId } = await newConcert(4);
      await setSeats(concertId, "SOLD", [1, 2, 3]);
      await setSeats(concertId, "HELD", [4]);
      await setPolicy(concertId, { maxActive: 10 });
      const fans = await enterFans(concertId, 2);
      await holdsFor(600, async () => {
        expect(await briefs(fans)).toEqual(["WAITING 1", "WAITING 2"]);
        const counts = await stats(concertId);
        expect([counts.admitted, counts.soldOut]).toEqual([0n, false]);
      });

      await setSeats(concertId, "AVAILABLE", [4]);
      await waitAdmitted(fans[0]!, 5_000);
      await waitAdmitted(fans[1]!, 5_000);
      expect((await stats(concertId)).admitted).toBe(2n);
    });
  });

  describe("WatchQueueStatus over a real gRPC client", () => {
    it("sends the current status first, then each change as fans ahead leave, then ADMITTED, and ends", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      const [a, b, c] = await enterFans(concertId, 3);
      const stream = watch(c!.queueToken);
      await stream.received(1);
      expect(stream.messages[0]!.heartbeat).toBe(false);
      expect(stream.messages[0]!.status).toMatchObject({ state: QueueState.WAITING, position: 3n, peopleAhead: 2n, concertId });

      await queue().leaveQueue({}, withQueueToken(a!.queueToken));
      await stream.received(2);
      expect(stream.changes).toEqual(["WAITING 3", "WAITING 2"]);
      await queue().leaveQueue({}, withQueueToken(b!.queueToken));
      await stream.received(3);
      expect(stream.changes).toEqual(["WAITING 3", "WAITING 2", "WAITING 1"]);

      await resume(concertId);
      await stream.ends();
      expect(stream.error).toBeUndefined();
      expect(stream.changes).toEqual(["WAITING 3", "WAITING 2", "WAITING 1", "ADMITTED"]);
      expect(stream.messages.every((m) => !m.heartbeat)).toBe(true);
      expect(timestampMs(stream.last!.admittedUntil!)).toBeGreaterThan(Date.now());
    });

    it("a stream that opens on an admitted token sends ADMITTED and ends", async () => {
      const { concertId } = await newConcert();
      const [fan] = await enterFans(concertId, 1);
      await waitAdmitted(fan!);
      const stream = watch(fan!.queueToken);
      await stream.ends();
      expect(stream.error).toBeUndefined();
      expect(stream.changes).toEqual(["ADMITTED"]);
    });

    it("an open stream keeps a waiting fan from being abandoned", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      await setPolicy(concertId, { abandonAfterMs: 1000 });
      const [silent, watched] = await enterFans(concertId, 2);
      const startedAt = Date.now();
      const stream = watch(watched!.queueToken);
      try {
        await until("the silent fan to be abandoned", async () => (await stats(concertId)).abandoned === 1n, 5_000);
        expect(await gate(silent!)).toBe("QUEUE_TOKEN_EXPIRED");
        await until("the stream to hear it moved up", () => stream.changes.includes("WAITING 1"), 2_000);
        // Watch on for three times abandon_after; CheckAdmission does not count as presence.
        await holdsFor(3000 - (Date.now() - startedAt), async () => expect(await gate(watched!)).toBe("NOT_ADMITTED"));
        expect(stream.ended).toBe(false);
        expect(stream.changes).toEqual(["WAITING 2", "WAITING 1"]);
        const counts = await stats(concertId);
        expect([counts.waiting, counts.abandoned]).toEqual([1n, 1n]);
      } finally {
        await stream.cancel();
      }
    });

    it("sends heartbeats when nothing changes", async () => {
      const beating = await startSuite(testConfig({ ...storeEnv, WATCH_HEARTBEAT_MS: "300" }), modules);
      try {
        // Everything through the heartbeat suite: with the memory store, its waiting room is its own.
        const { concertId } = await newConcert();
        await client(beating, QueueAdminService).pauseAdmission({ concertId }, operator);
        const user = await client(beating, TokenService).issueUserToken({});
        const { queueToken } = await client(beating, QueueService).enterQueue({ concertId }, bearer(user.token));
        const stream = new Watch((signal) =>
          createClient(CoordinatorService, createGrpcTransport({ baseUrl: beating.host.url })).watchQueueStatus({}, { ...withQueueToken(queueToken), signal }),
        );
        try {
          await stream.received(4, 3_000);
          const [first, ...beats] = stream.messages.slice(0, 4);
          expect([first!.heartbeat, brief(first!.status)]).toEqual([false, "WAITING 1"]);
          expect(beats.map((m) => [m.heartbeat, brief(m.status)])).toEqual([
            [true, "WAITING 1"],
            [true, "WAITING 1"],
            [true, "WAITING 1"],
          ]);
          const gaps = stream.times.slice(1, 4).map((t, i) => t - stream.times[i]!);
          for (const gap of gaps) {
            expect(gap).toBeGreaterThanOrEqual(150);
            expect(gap).toBeLessThanOrEqual(1000);
          }
        } finally {
          await stream.cancel();
        }
      } finally {
        await beating.close();
      }
    });

    it("selling out ends open streams with SOLD_OUT", async () => {
      const { concertId } = await newConcert(2);
      await pause(concertId);
      const fans = await enterFans(concertId, 2);
      const streams = fans.map((fan) => watch(fan.queueToken));
      await Promise.all(streams.map((stream) => stream.received(1)));

      await setSeats(concertId, "SOLD");
      await Promise.all(streams.map((stream) => stream.ends(5_000)));
      expect(streams.map((stream) => stream.error)).toEqual([undefined, undefined]);
      expect(streams.map((stream) => stream.changes)).toEqual([
        ["WAITING 1", "SOLD_OUT"],
        ["WAITING 2", "SOLD_OUT"],
      ]);
    });

    it("a missing or forged queue token is Unauthenticated", async () => {
      const { concertId } = await newConcert();
      await pause(concertId);
      const [fan] = await enterFans(concertId, 1);
      const coordinator = client(suite, CoordinatorService);
      const drain = async (options: { headers?: Record<string, string> }) => {
        for await (const message of coordinator.watchQueueStatus({}, options)) void message;
      };
      await expectFailure(drain({}), Code.Unauthenticated, Reason.QUEUE_TOKEN_MISSING);
      await expectFailure(drain(bearer(fan!.token)), Code.Unauthenticated, Reason.QUEUE_TOKEN_MISSING);
      for (const [, token] of badTokens(fan!.queueToken)) {
        await expectFailure(drain(withQueueToken(token)), Code.Unauthenticated, Reason.QUEUE_TOKEN_INVALID);
      }
    });

    it("1,000 streams over four HTTP/2 connections all end with ADMITTED once max_active is raised, refreshed in batches", async () => {
      const users = await crowd();
      const { concertId } = await newConcert();
      await setPolicy(concertId, { maxActive: 1 });
      const entered = await Promise.all(users.map((user) => queue().enterQueue({ concertId }, bearer(user.token))));
      await until("the one slot to be taken", async () => (await stats(concertId)).admitted === 1n);
      const connections = Array.from({ length: 4 }, () => createGrpcTransport({ baseUrl: suite.host.url }));
      const streams = entered.map(({ queueToken }, i) => watch(queueToken, connections[i % connections.length]));
      try {
        await until("every stream's first message", () => streams.every((stream) => stream.messages.length > 0), 15_000);
        const first = streams.map((stream) => stream.messages[0]!.status!);
        expect(first.filter((s) => s.state === QueueState.ADMITTED)).toHaveLength(1);
        const waitingPositions = first.filter((s) => s.state === QueueState.WAITING).map((s) => Number(s.position));
        expect(waitingPositions.sort((x, y) => x - y)).toEqual(Array.from({ length: 999 }, (_, i) => i + 1));

        served.clear();
        const raisedAt = Date.now();
        await setPolicy(concertId, { maxActive: 1000 });
        await until("every stream to end", () => streams.every((stream) => stream.ended), 15_000);
        const elapsed = Date.now() - raisedAt;
        expect(streams.filter((stream) => stream.error !== undefined).map((stream) => stream.error!.message)).toEqual([]);
        expect(streams.filter((stream) => stream.last?.state !== QueueState.ADMITTED).map((stream) => brief(stream.last))).toEqual([]);
        // One GetQueueStatuses per refresh (100 ms) for the whole concert, never one call per stream.
        expect(served.get("GetQueueStatus") ?? 0).toBe(0);
        expect(served.get("GetQueueStatuses") ?? 0).toBeGreaterThan(0);
        expect(served.get("GetQueueStatuses")!).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 2);
        expect((await stats(concertId)).admitted).toBe(1000n);
      } finally {
        await Promise.all(streams.map((stream) => stream.cancel()));
      }
    });
  });
});

describe.each(stores.slice(1))("two queue service instances on one Redis ($store)", ({ env: storeEnv }) => {
  let one: Suite;
  let two: Suite;
  beforeAll(async () => {
    const env = storeEnv();
    [one, two] = await Promise.all([startSuite(testConfig(env), modules), startSuite(testConfig(env), modules)]);
  });
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close()]);
  });

  it("never admit more than max_active together, and admit in FIFO order", async () => {
    const instances = [one, two].map((suite) => ({
      queue: client(suite, QueueService),
      internal: client(suite, QueueInternalService),
      admin: client(suite, QueueAdminService),
      tokens: client(suite, TokenService),
    }));
    const { concert } = await client(one, ConcertAdminService).createConcert(
      { title: "Two instances", schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 86_400_000)), price: 1000n }] },
      operator,
    );
    const concertId = concert!.id;
    await instances[1]!.admin.setAdmissionPolicy({ concertId, policy: { maxActive: 10 } }, operator);

    const users = await Promise.all(Array.from({ length: 200 }, (_, i) => instances[i % 2]!.tokens.issueUserToken({})));
    const fans: { userId: string; queueToken: string }[] = [];
    for (const [i, user] of users.entries()) {
      const { queueToken } = await instances[i % 2]!.queue.enterQueue({ concertId }, bearer(user.token));
      fans.push({ userId: user.userId, queueToken });
    }

    let sampling = true;
    let samples = 0;
    let mostAdmitted = 0n;
    const sampler = (async () => {
      while (sampling) {
        const counts = await instances[samples % 2]!.admin.getQueueStats({ concertId }, operator);
        if (counts.admitted > mostAdmitted) mostAdmitted = counts.admitted;
        samples++;
      }
    })();

    try {
      const deadline = Date.now() + 20_000;
      for (let round = 0; ; round++) {
        const { statuses } = await instances[round % 2]!.internal.getQueueStatuses(
          { concertId, queueTokens: fans.map((fan) => fan.queueToken) },
          internal,
        );
        const states = statuses.map((s) => s.state);
        const admitted = states.flatMap((state, i) => (state === QueueState.ADMITTED ? [i] : []));
        const served = states.flatMap((state, i) => (state === QueueState.ADMITTED || state === QueueState.COMPLETED ? [i] : []));
        const waiting = states.flatMap((state, i) => (state === QueueState.WAITING ? [i] : []));
        expect(admitted.length).toBeLessThanOrEqual(10);
        expect(served.length + waiting.length).toBe(200);
        // FIFO: everyone admitted so far entered before everyone still waiting, and the line is in entry order.
        if (served.length > 0 && waiting.length > 0) expect(Math.max(...served)).toBeLessThan(Math.min(...waiting));
        expect(waiting.map((i) => Number(statuses[i]!.position))).toEqual(waiting.map((_, k) => k + 1));
        if (waiting.length === 0 && admitted.length === 0) break;
        expect(Date.now(), `round ${round}: ${served.length} served`).toBeLessThan(deadline);
        // The admitted fans pay; their sessions end, alternately through either instance.
        await Promise.all(
          admitted.map((i) => instances[i % 2]!.internal.completeSession({ userId: fans[i]!.userId, concertId }, internal)),
        );
        await sleep(10);
      }
    } finally {
      sampling = false;
      await sampler;
    }
    expect(samples).toBeGreaterThan(20);
    expect(mostAdmitted).toBeLessThanOrEqual(10n);
    expect(mostAdmitted).toBeGreaterThan(0n);
    const [fromOne, fromTwo] = await Promise.all(instances.map((instance) => instance.admin.getQueueStats({ concertId }, operator)));
    expect(fromOne).toMatchObject({ waiting: 0n, admitted: 0n, admittedPerMinute: 200n });
    expect(fromTwo).toMatchObject({ waiting: 0n, admitted: 0n, admittedPerMinute: 200n });
  });
});
