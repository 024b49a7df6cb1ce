/**
 * npm run bench [-- --quick]: starts the suite as its own process on PostgreSQL
 * and Redis, drives each RPC from this process over gRPC (h2c) with a fixed
 * concurrency, and prints throughput and latency, each as a ratio to the health
 * check served by the same server in the same run (the machine's own ceiling).
 * Then it times the admission tick against lines of growing length.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { ConcertService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueService, QueueState } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { UserTokens } from "../../services/platform/tokens.js";
import { createDatabase } from "../databases.js";
import { startServerProcess } from "../server-process.js";
import { dropKeys } from "../redis-keys.js";
import { measureAdmissionTicks } from "./admission-tick.js";
import { measureFlashSale } from "./flash-sale.js";
import { holdCases } from "./holds.js";
import { measure as measureCase } from "./measure.js";
import { measureWatchStreams, serverPid } from "./watch-streams.js";

const quick = process.argv.includes("--quick");
const seconds = quick ? 3 : 10;
const concurrency = 32;
const root = join(import.meta.dirname, "../..");
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const tokenSecret = randomUUID() + randomUUID();
const redisKeyPrefix = `bench:${randomUUID()}:`;
const operatorKey = randomUUID();

function startServer(databaseUrl: string) {
  const dataDir = mkdtempSync(join(tmpdir(), "boxoffice-bench-"));
  return startServerProcess({
    ...process.env,
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisKeyPrefix,
    TOKEN_SECRET: tokenSecret,
    OPERATOR_KEY: operatorKey,
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: dataDir,
  });
}

/** Tokens of fans who never asked for one: the queue trusts the signature, so each EnterQueue is a new fan. */
async function fanTokens(count: number): Promise<string[]> {
  const tokens = new UserTokens(tokenSecret, 3600);
  return Promise.all(Array.from({ length: count }, async () => (await tokens.sign(randomUUID())).token));
}

const measure = (name: string, call: () => Promise<unknown>) => measureCase(name, call, { seconds, concurrency });

const databaseUrl = await createDatabase("boxoffice_bench");
const server = await startServer(databaseUrl);
try {
  const transport = createGrpcTransport({ baseUrl: server.url });
  const health = createClient(Health, transport);
  const concerts: Client<typeof ConcertService> = createClient(ConcertService, transport);
  const tokens = createClient(TokenService, transport);
  const queue = createClient(QueueService, transport);
  const user = await tokens.issueUserToken({});
  const auth = { headers: { authorization: `Bearer ${user.token}` } };
  const [first, second, third] = (await concerts.listConcerts({})).concerts;
  const concertId = first!.id;
  const scheduleId = (await concerts.listSchedules({ concertId })).schedules[0]!.id;
  // ListSeats is gated: this fan queues for the first concert and is admitted (the line is empty).
  const { queueToken } = await queue.enterQueue({ concertId }, auth);
  while ((await queue.getQueueStatus({}, { headers: { "x-queue-token": queueToken } })).status!.state !== QueueState.ADMITTED) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const admitted = { headers: { ...auth.headers, "x-queue-token": queueToken } };
  // New fans flood the second concert; the last of them polls its place far down the line.
  const fans = await fanTokens(seconds * 5_000 + 10_000);
  let next = 0;
  let lastQueueToken = "";
  const enter = async () => {
    const entered = await queue.enterQueue({ concertId: second!.id }, { headers: { authorization: `Bearer ${fans[next++ % fans.length]}` } });
    lastQueueToken = entered.queueToken;
  };

  const holds = await holdCases(transport, operatorKey, fans);

  // The ceiling is measured first and last, and averaged, so drift during the run shows and cancels out.
  const results = [
    await measure("ceiling: grpc.health.v1.Health/Check (first)", () => health.check({})),
    await measure("ConcertService/ListConcerts", () => concerts.listConcerts({})),
    await measure("ConcertService/ListSchedules", () => concerts.listSchedules({ concertId })),
    await measure("ConcertService/ListSeats (gated)", () => concerts.listSeats({ scheduleId }, admitted)),
    await measure("TokenService/IssueUserToken (new user)", () => tokens.issueUserToken({})),
    await measure("QueueService/EnterQueue (new fans)", enter),
    await measure("QueueService/GetQueueStatus (far down the line)", () =>
      queue.getQueueStatus({}, { headers: { "x-queue-token": lastQueueToken } }),
    ),
    await measure("ReservationService/HoldSeats (distinct seats)", holds.distinct),
    await measure("ReservationService/HoldSeats (one contested seat)", holds.contested),
    await measure("ceiling: grpc.health.v1.Health/Check (last)", () => health.check({})),
  ];
  if (next > fans.length) console.warn(`EnterQueue ran out of new fans: ${next - fans.length} calls re-entered`);
  const ceiling = (results[0]!.perSecond + results.at(-1)!.perSecond) / 2;
  console.log(`\n${seconds}s per case, ${concurrency} concurrent calls over one h2c connection, server in its own process\n`);
  console.log("| case | calls/s | ratio to ceiling | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|");
  for (const r of results) {
    console.log(`| ${r.name} | ${r.perSecond.toFixed(0)} | ${(r.perSecond / ceiling).toFixed(2)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} |`);
  }

  const flashFans = quick ? 5_000 : 20_000;
  const sale = await measureFlashSale({
    transports: Array.from({ length: 20 }, () => createGrpcTransport({ baseUrl: server.url })),
    operatorKey,
    databaseUrl,
    fanTokens: fans.slice(-flashFans),
  });
  console.log(`\nflash sale: ${sale.fans} fans for ${sale.seats} seats (10 dates × 50), each admitted fan lists, holds a random free seat, charges and pays\n`);
  console.log("| sold | sold out after | bookings/s | hold conflicts | fans told sold out | p99 enter | list seats | hold | charge | pay | check: seats sold, sold twice, points conserved |");
  console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  const p = sale.p99Ms;
  console.log(
    `| ${sale.sold} | ${(sale.soldOutAfterMs / 1000).toFixed(1)} s | ${sale.bookingsPerSecond.toFixed(1)} | ${sale.conflicts} | ${sale.soldOutFans} | ${p.enter!.toFixed(0)} ms | ${p.listSeats!.toFixed(0)} ms | ${p.hold!.toFixed(0)} ms | ${p.charge!.toFixed(0)} ms | ${p.pay!.toFixed(0)} ms | ${sale.checks.seatsSold}, ${sale.checks.seatsSoldTwice}, ${sale.checks.pointsConserved} |`,
  );
  const saleVerified = sale.checks.seatsSold === sale.seats && sale.checks.seatsSoldTwice === 0 && sale.checks.pointsConserved && sale.sold === sale.seats;
  console.log(saleVerified ? "flash sale verified: every seat sold once, points conserved" : "FLASH SALE VERIFICATION FAILED");
  if (!saleVerified) process.exitCode = 1;

  const streams = quick ? 2_000 : 10_000;
  const watch = await measureWatchStreams({
    url: server.url,
    serverPid: serverPid(server.process.pid!),
    redisUrl,
    operatorKey,
    concertId: third!.id,
    fanTokens: fans.slice(0, streams),
    connections: 20,
  });
  console.log(`\nWatchQueueStatus: ${watch.streams} open streams over ${watch.connections} h2c connections\n`);
  console.log("| server RSS before | with streams open | per stream | Redis script calls/s while open | Redis commands/s (inside scripts too) | ADMITTED heard p50 | p99 | all |");
  console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
  console.log(
    `| ${watch.rssBeforeMiB.toFixed(0)} MiB | ${watch.rssOpenMiB.toFixed(0)} MiB | ${watch.kibPerStream.toFixed(1)} KiB | ${watch.redisScriptCallsPerSecond.toFixed(1)} | ${watch.redisCommandsPerSecond.toFixed(0)} | ${watch.admittedP50Ms.toFixed(0)} ms | ${watch.admittedP99Ms.toFixed(0)} ms | ${watch.allAdmittedMs.toFixed(0)} ms |`,
  );

  const sizes = quick ? [1_000, 100_000] : [1_000, 100_000, 1_000_000];
  const ticks = await measureAdmissionTicks(redisUrl, sizes);
  const base = (store: string) => ticks.find((t) => t.store === store && t.waiting === sizes[0])!.msPerTick;
  console.log(`\nadmission tick admitting ${ticks[0]!.admittedPerTick} fans, by line length (ratio to the shortest line, same store)\n`);
  console.log("| store | waiting | ms per tick | ratio |\n|---|---:|---:|---:|");
  for (const t of ticks) console.log(`| ${t.store} | ${t.waiting} | ${t.msPerTick.toFixed(2)} | ${(t.msPerTick / base(t.store)).toFixed(2)} |`);

  const dir = join(root, "test/bench/results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ quick, seconds, concurrency, results, sale, watch, ticks }, null, 2));
  console.log(`\nresults: ${file}`);
} finally {
  await server.stop();
  await dropKeys(redisUrl, redisKeyPrefix);
}
