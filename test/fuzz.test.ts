// Fuzzing every RPC over every protocol with malformed messages, frames,
// headers and query strings (issue 15, item 4). Properties (fast-check), one per
// family of broken input and transport, over every RPC of gen/; a sweep that
// sends each RPC one case of each family over each transport; then the
// server's memory after a load of them, and whether it is still up.
//
// What every answer must be (test/fuzz/verdict.ts): there, within the deadline
// and some slack; of the protocol's own status (or an HTTP refusal with a
// meaning: 404, 405, 413, 414, 415, 431), never Internal, Unknown or DataLoss;
// the one code the input admits where it admits one (InvalidArgument for what
// cannot be decoded, Unimplemented for an unknown compression, ResourceExhausted
// for over 1 MiB); a message of at most 1 KiB with no stack, path or SQL.
//
// The server runs as its own process (test/fuzz/server.ts) on PostgreSQL and
// Redis, so that a crash is seen as one (and the server started again for the
// rest), and its memory is its own.
//
//   FUZZ_SEED=<n>      replay a run (every run prints its seed)
//   FUZZ_RUNS=<n>      cases per property (default 20; a sixth of it for bodies that never end and bodies over 1 MiB); scale up locally
//   FUZZ_PATH=<path>   with FUZZ_SEED and `-t '<property>'`: replay exactly the counterexample fast-check reported
//   FUZZ_TIME_MS=<n>   time limit of one property, shrinking included (default 10000)
//   FUZZ_SURVEY=1      do not stop at the first failure: send every case and report the failures by class
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ConcertAdminService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TokenService } from "../gen/boxoffice/token/v1/token_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { applies, familyArb, rawHttpArb, transports, type Family, type Fixtures, type FuzzCase } from "./fuzz/cases.js";
import { loadRpcs, type Rpc } from "./fuzz/rpcs.js";
import { FuzzServer } from "./fuzz/server-handle.js";
import { describeAnswer, failureClass, judge, type Verdict } from "./fuzz/verdict.js";
import { dropKeys } from "./redis-keys.js";
import { testSecrets } from "./support.js";

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
const runs = Number(process.env.FUZZ_RUNS ?? 20);
const propertyTimeMs = Number(process.env.FUZZ_TIME_MS ?? 10_000);
const survey = process.env.FUZZ_SURVEY === "1";
const replayPath = process.env.FUZZ_PATH;
console.log(
  `fuzz: seed ${seed}, ${runs} runs per property${survey ? ", survey mode" : ""}. Replay with ` +
    `FUZZ_SEED=${seed} npx vitest run --config test/vitest.config.ts test/fuzz.test.ts (add -t '<property>' and FUZZ_PATH=<path> for one counterexample)`,
);

const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:fuzz:${randomUUID()}:`;
let server: FuzzServer;
let rpcs: Rpc[];
let fixtures: Fixtures;

interface Failure {
  where: string;
  c: FuzzCase;
  v: Verdict;
}
const failures: Failure[] = [];

beforeAll(async () => {
  rpcs = await loadRpcs();
  server = new FuzzServer({
    ...process.env,
    DATABASE_URL: inject("databaseUrl"),
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisPrefix,
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-fuzz-")),
    SEED_DEMO: "false",
    SHUTDOWN_GRACE_MS: "2000",
    QUEUE_TICK_MS: "20",
    WATCH_REFRESH_MS: "100",
    // Rate limits on, as deployed, but out of reach of this many calls from one address and one user; the proxy
    // header read, so that garbage in it is fuzzed too.
    ...Object.fromEntries(["ACCOUNT", "QUEUE", "CHARGE", "HOLD"].flatMap((rule) => [`RATE_LIMIT_${rule}_PER_ADDRESS`, `RATE_LIMIT_${rule}_PER_USER`].map((name) => [name, "1000000"]))),
    TRUST_PROXY_HEADER: "x-forwarded-for",
    ...testSecrets,
  });
  await server.ensure();
  fixtures = await makeFixtures();
}, 120_000);

afterAll(async () => {
  report();
  await server?.stop();
  await dropKeys(redisUrl, redisPrefix);
}, 30_000);

/** Real rows and tokens, so that decodable requests get past the access checks and reach the handlers and the stores. */
async function makeFixtures(): Promise<Fixtures> {
  // Over HTTP/1.1, whose idle connections the server closes after 5 s: none is left for the memory test to see.
  const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${server.port}`, httpVersion: "1.1" });
  const operator = { headers: { authorization: `Bearer ${testSecrets.OPERATOR_KEY}` } };
  const user = await createClient(TokenService, transport).issueUserToken({});
  const created = await createClient(ConcertAdminService, transport).createConcert(
    {
      title: `Fuzz ${randomUUID().slice(0, 8)}`,
      venue: "Fuzz Hall",
      schedules: [{ startsAt: timestampFromDate(new Date(Date.now() + 10 * 24 * 3600 * 1000)), seatCount: 50, price: 100n }],
    },
    operator,
  );
  const concertId = created.concert!.id;
  const scheduleId = created.schedules[0]!.id;
  const queue = createClient(QueueService, transport);
  const { queueToken } = await queue.enterQueue({ concertId }, { headers: { authorization: `Bearer ${user.token}` } });
  for (const deadline = Date.now() + 15_000; ; ) {
    const { status } = await queue.getQueueStatus({}, { headers: { "x-queue-token": queueToken } });
    if (status?.state === QueueState.ADMITTED) break;
    if (Date.now() > deadline) throw new Error("the fuzz fan was not admitted");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const gated = { headers: { authorization: `Bearer ${user.token}`, "x-queue-token": queueToken } };
  const { reservation } = await createClient(ReservationService, transport).holdSeats({ scheduleId, seatNumbers: [1] }, gated);
  return {
    userId: user.userId,
    userToken: user.token,
    queueToken,
    concertId,
    scheduleId,
    reservationId: reservation!.id,
    operatorKey: testSecrets.OPERATOR_KEY,
    scannerKey: testSecrets.SCANNER_KEY,
    internalCredential: testSecrets.INTERNAL_CREDENTIAL,
  };
}

function failureText(c: FuzzCase, v: Verdict): string {
  return `${v.problems.join("; ")}\n  answer: ${describeAnswer(v)}\n${c.toString()}`;
}

/** How many cases the last sendAll sent. */
let sent = 0;

/** Runs cases `concurrency` at a time, judging each, and starting none after `withinMs`; the failures. */
async function sendAll(cases: FuzzCase[], concurrency: number, where: string, withinMs = Infinity): Promise<Failure[]> {
  const found: Failure[] = [];
  let next = 0;
  sent = 0;
  const stopAt = performance.now() + withinMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < cases.length && performance.now() < stopAt) {
        const c = cases[next++]!;
        sent++;
        const v = await judge(c, server);
        if (v.problems.length > 0) found.push({ where, c, v });
      }
    }),
  );
  failures.push(...found);
  return found;
}

/** The failures by class, each with how often, over which transports and RPCs, what inputs, and its smallest example. */
function classes(list: Failure[]): string[] {
  const byClass = new Map<string, { count: number; transports: Set<string>; rpcs: Set<string>; inputs: Set<string>; problems: Set<string>; example: Failure }>();
  for (const failure of list) {
    const key = failureClass(failure.c, failure.v);
    const input = failure.c.what.replace(/; with credentials.*$/, "").replace(/\d+/g, "N");
    const problems = failure.v.problems.map((p) => p.replace(/: ….*$/, "").replace(/\d+/g, "N")).join("; ");
    const entry = byClass.get(key);
    if (!entry) byClass.set(key, { count: 1, transports: new Set([failure.c.transport]), rpcs: new Set([failure.c.rpc]), inputs: new Set([input]), problems: new Set([problems]), example: failure });
    else {
      entry.problems.add(problems);
      entry.count++;
      entry.transports.add(failure.c.transport);
      entry.rpcs.add(failure.c.rpc);
      entry.inputs.add(input);
      const size = (f: Failure) => f.c.exchange.body.length + f.c.exchange.path.length + JSON.stringify(f.c.exchange.headers).length;
      if (size(failure) < size(entry.example)) entry.example = failure;
    }
  }
  const some = (set: Set<string>, n: number) => [...set].slice(0, n).join(", ") + (set.size > n ? `, … (${set.size} in all)` : "");
  return [...byClass.entries()]
    .sort((a, b) => b[1].count - a[1].count)
    .map(
      ([key, { count, transports: over, rpcs: on, inputs, problems, example }]) =>
        `${count}× ${key}\n  wrong: ${some(problems, 4)}\n  over: ${[...over].join(", ")}\n  RPCs: ${some(on, 4)}\n  inputs: ${some(inputs, 8)}\n  e.g. ${failureText(example.c, example.v).replace(/\n/g, "\n  ")}`,
    );
}

function report() {
  const lines: string[] = [`fuzz seed ${seed}: ${failures.length} failing answers`];
  if (failures.length > 0) lines.push(...classes(failures));
  if (server?.deaths.length) lines.push(`the server died ${server.deaths.length} time(s); the last output before the first death:\n${server.deaths[0]!.output.slice(-2500)}`);
  if (server?.stderrLines.size) {
    lines.push("what the server wrote to stderr (first lines, by count):");
    for (const [line, count] of [...server.stderrLines].sort((a, b) => b[1] - a[1]).slice(0, 40)) lines.push(`  ${count}× ${line}`);
  }
  const text = lines.join("\n");
  console.log(text);
  if (process.env.FUZZ_REPORT) writeFileSync(process.env.FUZZ_REPORT, text);
}

/**
 * One property: every case of the arbitrary answered as verdict.ts says. Bounded in time by its own clock, not
 * fast-check's interrupt (which abandons the case in flight, and with it a hang it was about to report): past
 * `propertyTimeMs` the remaining runs, and the remaining shrinking, are not sent, and count as passed.
 */
async function property(name: string, arb: fc.Arbitrary<FuzzCase>, numRuns: number) {
  const mine: Failure[] = [];
  const stopAt = performance.now() + propertyTimeMs;
  let sentRuns = 0;
  try {
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        if (performance.now() > stopAt) return;
        sentRuns++;
        const v = await judge(c, server);
        fc.pre(!v.reply.refused); // Node's own client would not send it as generated
        if (v.problems.length === 0) return;
        mine.push({ where: name, c, v });
        if (!survey) throw new Error(`${v.problems.join("; ")}\n  answer: ${describeAnswer(v)}`); // fast-check prints the case itself
      }),
      { seed, numRuns, includeErrorInReport: true, ...(replayPath ? { path: replayPath } : {}) },
    );
  } finally {
    // Kept for the report: the first failure found and the smallest one shrinking reached.
    if (mine.length > 0) failures.push(...(survey ? mine : [mine[0]!, mine.at(-1)!]));
    if (performance.now() > stopAt) console.log(`${name}: time limit (${propertyTimeMs} ms) reached after ${sentRuns} cases${mine.length ? " (shrinking cut short)" : ""}`);
  }
  if (survey) expect(classes(mine), `${name}: failing answers by class`).toEqual([]);
}

const families: { family: Family; numRuns: () => number }[] = [
  { family: "random", numRuns: () => runs },
  { family: "mutated", numRuns: () => runs },
  { family: "shaped", numRuns: () => runs },
  { family: "json", numRuns: () => runs },
  { family: "framing", numRuns: () => runs },
  { family: "headers", numRuns: () => runs },
  { family: "query", numRuns: () => runs },
  { family: "stall", numRuns: () => Math.max(2, Math.ceil(runs / 6)) },
  { family: "oversize", numRuns: () => Math.max(2, Math.ceil(runs / 6)) },
];

describe("the RPCs fuzzed", () => {
  it("are every method of every service in gen/, and the server routes each", async () => {
    expect(rpcs.length).toBeGreaterThan(30);
    expect(rpcs.map((r) => r.path)).toContain("/grpc.health.v1.Health/Check");
    // A well-formed call of each reaches a handler (no 404: the path the test builds is the one served).
    const unrouted: string[] = [];
    for (const rpc of rpcs) {
      // A stream may go on (Health.Watch does): the status line is all this needs.
      const abort = new AbortController();
      const response = await fetch(`http://127.0.0.1:${server.port}${rpc.path}`, {
        method: "POST",
        headers: { "content-type": rpc.streaming ? "application/connect+json" : "application/json", "connect-timeout-ms": "2000" },
        body: rpc.streaming ? Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]) : "{}",
        signal: abort.signal,
      });
      abort.abort();
      if (response.status === 404 && response.headers.get("content-type") !== "application/json") unrouted.push(rpc.path);
    }
    expect(unrouted).toEqual([]);
  });
});

describe("properties: malformed input, every RPC, by family and transport", () => {
  for (const { family, numRuns } of families) {
    for (const t of transports.filter((t) => applies(family, t))) {
      it(`${family} over ${t.name}`, async () => {
        const arb = familyArb(family, t, rpcs, fixtures);
        expect(arb, "cases for some RPC").toBeDefined();
        await property(`${family} over ${t.name}`, arb!, numRuns());
      }, propertyTimeMs + 30_000);
    }
  }
  it("raw HTTP/1.x the clients would not send (no Host, an invalid Host, broken framing)", async () => {
    await property("raw HTTP/1.x", rawHttpArb(rpcs, fixtures), runs);
  }, propertyTimeMs + 60_000);
});

describe("sweep: each RPC, each transport, one case of each family", () => {
  it("answers every one as it should", async () => {
    const cases: FuzzCase[] = [];
    const sweepFamilies: Family[] = ["random", "mutated", "shaped", "json", "framing", "headers", "query"];
    for (const rpc of rpcs) {
      for (const t of transports) {
        for (const family of sweepFamilies) {
          const arb = familyArb(family, t, [rpc], fixtures);
          if (arb) cases.push(...fc.sample(arb, { seed: seed + cases.length, numRuns: 1 }));
        }
      }
    }
    // A body that never ends, over each protocol's main transports, for every RPC at once (each waits out its deadline).
    for (const rpc of rpcs) {
      for (const t of transports.filter((t) => ["gRPC over h2", "gRPC-Web over HTTP/1.1", "Connect over HTTP/1.1", "Connect over h2"].includes(t.name))) {
        cases.push(...fc.sample(familyArb("stall", t, [rpc], fixtures)!, { seed: seed + cases.length, numRuns: 1 }));
      }
    }
    // What breaks HTTP itself (an invalid Host, say) is for the properties, one request at a time: if it brings the
    // server down, every request in flight beside it would fail too, and the report would blame them.
    const sendable = cases.filter((c) => !c.options.httpInvalid);
    const starts = server.starts;
    const found = await sendAll(sendable, 24, "sweep");
    console.log(`sweep: ${sendable.length} cases over ${rpcs.length} RPCs and ${transports.length} transports, ${found.length} failing`);
    if (server.starts !== starts) console.log("sweep: the server died during the sweep; of the failures that say so, most are requests in flight beside the one that killed it");
    expect(classes(found), "failing answers of the sweep, by class").toEqual([]);
  }, 120_000);
});

describe("the server after all that", () => {
  it("gives its memory back: the heap after a load of malformed calls is at the level before it", async () => {
    await server.ensure();
    const pid = server.pid;
    const mixed = (n: number, s: number): FuzzCase[] => {
      const arbs = families.flatMap(({ family }) => transports.map((t) => familyArb(family, t, rpcs, fixtures))).filter((a): a is fc.Arbitrary<FuzzCase> => a !== undefined);
      const abandon = transports.map((t) => familyArb("abandon", t, rpcs, fixtures)).filter((a): a is fc.Arbitrary<FuzzCase> => a !== undefined);
      // Not what breaks HTTP itself (see the sweep): a server that died would have no memory to compare.
      return fc.sample(fc.oneof(...arbs, ...abandon), { seed: s, numRuns: n * 2 })
        .filter((c) => !c.options.httpInvalid)
        .slice(0, n);
    };
    // Warm up (code paths compiled, pools and caches filled), then measure; then the load; then measure again.
    // Bounded in time: where calls hang, fewer are sent, and the hangs are the properties' to report.
    await sendAll(mixed(300, seed + 1), 16, "memory warm-up", 30_000);
    const before = await settledMemory();
    await sendAll(mixed(1000, seed + 2), 16, "memory load", 60_000);
    const loaded = sent;
    const after = await settledMemory();
    const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    console.log(
      `server heap: ${mib(before.heapUsed)} before, ${mib(after.heapUsed)} after ${loaded} malformed calls (external ${mib(before.external)} → ${mib(after.external)}, rss ${mib(before.rss)} → ${mib(after.rss)}); ` +
        `resources ${JSON.stringify(before.resources)} → ${JSON.stringify(after.resources)}`,
    );
    expect(server.pid, "the server died during the load").toBe(pid);
    // Generous margins: a leak of what one call holds shows as megabytes over 1500 calls; noise does not reach them.
    expect(after.heapUsed, "heap used after the load").toBeLessThan(before.heapUsed * 1.25 + 16 * 1024 * 1024);
    expect(after.external + after.arrayBuffers, "external memory after the load").toBeLessThan((before.external + before.arrayBuffers) * 1.25 + 16 * 1024 * 1024);
    // Timers and sockets the calls left behind (a deadline timer of a call that has ended, a connection held open).
    expect(after.resources.Timeout ?? 0, "active timers").toBeLessThanOrEqual((before.resources.Timeout ?? 0) + 10);
    // Every client connection of the load is closed: the server holds none of them open (its pools to PostgreSQL and
    // Redis may grow under load, so its socket count says nothing; the connections on its port do).
    const held = await heldConnections(server.port);
    if (held !== undefined) expect(held, "client connections the server still holds open after the load").toEqual([]);
  }, 180_000);

  it("stayed up: no request made the server process die, and it still answers", async () => {
    const deaths = server.deaths.map((d) => `exit ${d.code ?? d.signal}:\n${d.output.slice(-1500)}`);
    expect(deaths, "the server died").toEqual([]);
    const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.port}` });
    expect((await createClient(Health, transport).check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

/**
 * The connections on the server's port that it still holds (ESTABLISHED, or CLOSE_WAIT: the client has gone and the
 * server has not closed), from /proc/net/tcp*, after letting closes finish; undefined where there is no /proc.
 */
async function heldConnections(port: number): Promise<string[] | undefined> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const read = (): string[] | undefined => {
    try {
      return ["/proc/net/tcp", "/proc/net/tcp6"].flatMap((file) =>
        readFileSync(file, "utf8")
          .split("\n")
          .slice(1)
          .map((line) => line.trim().split(/\s+/))
          .filter((f) => f.length > 3 && f[1]!.endsWith(`:${hex}`) && (f[3] === "01" || f[3] === "08"))
          .map((f) => `${f[3] === "01" ? "ESTABLISHED" : "CLOSE_WAIT"} from ${f[2]}`),
      );
    } catch {
      return undefined;
    }
  };
  let held = read();
  for (let i = 0; i < 30 && held && held.length > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    held = read();
  }
  return held;
}

/** The server's memory once the connections of the load have closed (a second after the last answer) and its timers settled. */
async function settledMemory() {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await server.memory();
  await new Promise((resolve) => setTimeout(resolve, 500));
  return server.memory();
}
