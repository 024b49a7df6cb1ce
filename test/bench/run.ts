/**
 * npm run bench [-- --quick] [-- --only=<text>] [-- --profile]
 * npm run bench -- --soak [--soak-minutes=10]   (server memory under load over time; see soak.ts)
 *
 * Starts the suite as its own process on PostgreSQL and Redis, and drives it
 * from this process (the load driver) over gRPC h2c, 32 calls in flight spread
 * over 8 HTTP/2 connections. Every case is measured right after the ceiling, a
 * no-op RPC (grpc.health.v1.Health/Check) through the same server stack, and
 * reported as a ratio to it. Then the open watch streams, the flash sale and
 * the admission tick. --only runs the cases and sections whose name contains
 * one of the texts (comma-separated); --profile runs the server under --cpu-prof and prints where its
 * CPU time went. Results also go to test/bench/results/*.json.
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { ConcertService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { UserTokens } from "../../services/platform/tokens.js";
import { createDatabase } from "../databases.js";
import { startServerProcess } from "../server-process.js";
import { dropKeys } from "../redis-keys.js";
import { measureAdmissionTicks } from "./admission-tick.js";
import { measureDraws } from "./draw.js";
import { measureFlashSale } from "./flash-sale.js";
import { holdCases } from "./holds.js";
import { cpuPerCall, cpuSnapshot, type CpuPerCall, type CpuSnapshot } from "./cpu.js";
import { Exhausted, measure, spread, type Result } from "./measure.js";
import { paymentCases } from "./payments.js";
import { summariseProfile, type ProfileSummary } from "./profile.js";
import { admitFans, enterFans } from "./setup.js";
import { measureWatchStreams } from "./watch-streams.js";

const args = process.argv.slice(2);
if (args.includes("--soak")) {
  // The memory soak is a run of its own (soak.ts): the booking mix for minutes, then ChargePoints over HTTP/1.1.
  await (await import("./soak.js")).runSoak(args);
  process.exit();
}
if (args.includes("--workers")) {
  // WORKERS=1 against WORKERS=2, back to back (workers.ts).
  await (await import("./workers.js")).runWorkers(args);
  process.exit();
}
const quick = args.includes("--quick");
const profiling = args.includes("--profile");
const only = args.find((a) => a.startsWith("--only="))?.slice("--only=".length).toLowerCase().split(",");
const selected = (name: string) => only === undefined || only.some((text) => name.toLowerCase().includes(text));

const timing = quick ? { seconds: 2, warmSeconds: 0.5 } : { seconds: 8, warmSeconds: 1 };
const concurrency = 32;
const connections = 8;
const root = join(import.meta.dirname, "../..");
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const tokenSecret = randomUUID() + randomUUID();
const redisKeyPrefix = `bench:${randomUUID()}:`;
const operatorKey = randomUUID();
const resultsDir = join(root, "test/bench/results");
const profileDir = join(resultsDir, `profile-${Date.now()}`);

function startServer(databaseUrl: string) {
  return startServerProcess(
    {
      ...process.env,
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: redisKeyPrefix,
      TOKEN_SECRET: tokenSecret,
      OPERATOR_KEY: operatorKey,
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-bench-")),
      // npm start's pool (config.ts), not the small one test/server-process.ts gives test servers.
      DATABASE_POOL_SIZE: process.env.DATABASE_POOL_SIZE ?? "10",
      // Thousands of fans from 127.0.0.1, a few hundred users calling hundreds of times each: the limits are
      // counted (their cost is in the figures) but set far above what the bench asks.
      ...Object.fromEntries(
        ["ACCOUNT", "QUEUE", "CHARGE", "HOLD"].flatMap((rule) => ["ADDRESS", "USER"].map((per) => [`RATE_LIMIT_${rule}_PER_${per}`, "1000000"])),
      ),
    },
    profiling ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [],
  );
}

/** Tokens of fans who never asked for one (the services trust the signature), handed out so no two uses share a fan. */
async function fanPool(count: number) {
  const tokens = new UserTokens(tokenSecret, 3600);
  const all = await Promise.all(Array.from({ length: count }, async () => (await tokens.sign(randomUUID())).token));
  let used = 0;
  return (n: number) => {
    if (used + n > all.length) throw new Error(`the bench needs more than ${count} fans`);
    return all.slice(used, (used += n));
  };
}

interface Paired extends Result {
  ceilingPerSecond: number;
  ratio: number;
  /** CPU µs per call while measured: the server process, this load driver, and the rest of the machine (PostgreSQL, Redis). */
  cpu: CpuPerCall;
  ceilingCpu: CpuPerCall;
}

const flashFans = quick ? 5_000 : 20_000;
const watchStreams = quick ? 2_000 : 10_000;
const payers = quick ? 500 : 2_500;
const newFanCount = (timing.seconds + timing.warmSeconds) * 4_000;

const databaseUrl = await createDatabase("boxoffice_bench");
const server = await startServer(databaseUrl);
// What the server reports (unexpected errors, outages) shows with the figures.
server.process.stderr!.on("data", (chunk: Buffer) => process.stderr.write(`server: ${chunk}`));
let profile: ProfileSummary | undefined;
const report: Record<string, unknown> = {
  quick,
  only,
  machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryGiB: totalmem() / 2 ** 30, node: process.version, loadavg: loadavg() },
  timing,
  concurrency,
  connections,
};
try {
  const transports: Transport[] = Array.from({ length: connections }, () => createGrpcTransport({ baseUrl: server.url }));
  const transport = spread(transports);
  const take = await fanPool(2 + 2_000 + newFanCount + 300 + 2 * payers + watchStreams + flashFans);
  const health = createClient(Health, transport);
  const concerts = createClient(ConcertService, transport);
  const queue = createClient(QueueService, transport);

  // A date of the demo concert, and one fan admitted to it (ListSeats is gated).
  const [demo, crowded, watched] = (await concerts.listConcerts({})).concerts;
  const concertId = demo!.id;
  const scheduleId = (await concerts.listSchedules({ concertId })).schedules[0]!.id;
  const [admitted] = await admitFans(transport, concertId, take(1));
  // New fans flood the second concert, paused so that nobody leaves the line; a fan 2,000 places
  // down polls its place, and EnterQueue adds more fans behind.
  await createClient(QueueAdminService, transport).pauseAdmission({ concertId: crowded!.id }, { headers: { authorization: `Bearer ${operatorKey}` } });
  const enterCrowded = (token: string) => queue.enterQueue({ concertId: crowded!.id }, { headers: { authorization: `Bearer ${token}` } });
  await enterFans(transport, crowded!.id, take(2_000));
  const farDown = { "x-queue-token": (await enterCrowded(take(1)[0]!)).queueToken };
  const newFans = take(newFanCount);
  let nextFan = 0;
  const enter = async () => {
    const token = newFans[nextFan++];
    if (token === undefined) throw new Exhausted();
    await enterCrowded(token);
  };
  const holdFans = take(300);
  const payFans = take(2 * payers);
  const holds = selected("HoldSeats") ? await holdCases(transport, operatorKey, holdFans) : undefined;
  const payments = ["ChargePoints", "Pay", "BookSeats"].some(selected) ? await paymentCases(transport, operatorKey, payFans, payers) : undefined;

  const cases: (readonly [string, () => Promise<unknown>])[] = [
    ["ConcertService/ListSchedules", () => concerts.listSchedules({ concertId })],
    ["ConcertService/ListSeats (gated, 50 seats)", () => concerts.listSeats({ scheduleId }, { headers: admitted! })],
    ["QueueService/EnterQueue (new fans)", enter],
    ["QueueService/GetQueueStatus (far down the line)", () => queue.getQueueStatus({}, { headers: farDown })],
    ...(holds
      ? ([
          ["ReservationService/HoldSeats (distinct seats)", holds.distinct],
          ["ReservationService/HoldSeats (one contested seat)", holds.contested],
        ] as const)
      : []),
    ...(payments
      ? ([
          ["PointService/ChargePoints", payments.charge],
          ["PaymentService/Pay", payments.pay],
          ["CoordinatorService/BookSeats", payments.book],
        ] as const)
      : []),
  ];
  // Warm the server and this driver up before the first figure counts.
  await measure("warm-up", () => health.check({}), { ...timing, concurrency, seconds: quick ? 2 : 5 });
  const results: Paired[] = [];
  const serverProcessId = server.process.pid!;
  for (const [name, call] of cases.filter(([name]) => selected(name))) {
    const ceilingCpu: CpuSnapshot[] = [];
    const ceiling = await measure("ceiling", () => health.check({}), { ...timing, concurrency, onMeasuring: () => ceilingCpu.push(cpuSnapshot(serverProcessId)) });
    ceilingCpu.push(cpuSnapshot(serverProcessId));
    const cpu: CpuSnapshot[] = [];
    const result = await measure(name, call, { ...timing, concurrency, onMeasuring: () => cpu.push(cpuSnapshot(serverProcessId)) });
    cpu.push(cpuSnapshot(serverProcessId));
    results.push({ ...result, ceilingPerSecond: ceiling.perSecond, ratio: result.perSecond / ceiling.perSecond,
      cpu: cpuPerCall(cpu[0]!, cpu[1]!, result.calls),
      ceilingCpu: cpuPerCall(ceilingCpu[0]!, ceilingCpu[1]!, ceiling.calls),
    });
  }
  report.results = results;
  if (results.length > 0) {
    console.log(`\n${timing.seconds} s per case after ${timing.warmSeconds} s of warm-up; ${concurrency} calls in flight over ${connections} h2c connections;`);
    console.log("ratio = the case's calls/s ÷ the no-op Health/Check's calls/s measured just before it\n");
    console.log("CPU µs per call while measured: the server process, the load driver, the rest of the machine (PostgreSQL, Redis)\n");
    console.log("| case | calls/s | no-op calls/s | ratio | p50 ms | p99 ms | server CPU µs/call (no-op) | driver | rest |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const r of results) {
      const c = r.cpu;
      console.log(
        `| ${r.name} | ${r.perSecond.toFixed(0)} | ${r.ceilingPerSecond.toFixed(0)} | ${r.ratio.toFixed(2)} | ${r.p50Ms.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ${c.serverUs.toFixed(0)} (${r.ceilingCpu.serverUs.toFixed(0)}) | ${c.driverUs.toFixed(0)} | ${c.restUs.toFixed(0)} |`,
      );
    }
  }

  const watchFans = take(watchStreams);
  if (selected("WatchQueueStatus")) {
    const watch = await measureWatchStreams({
      url: server.url,
      serverPid: server.process.pid!,
      redisUrl,
      operatorKey,
      concertId: watched!.id,
      fanTokens: watchFans,
      connections: 20,
    });
    report.watch = watch;
    console.log(`\nWatchQueueStatus: ${watch.streams} open streams over ${watch.connections} h2c connections\n`);
    console.log("| server RSS before | with streams open | per stream | Redis script calls/s while open | Redis commands/s (inside scripts too) | ADMITTED heard p50 | p99 | all |");
    console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
    console.log(
      `| ${watch.rssBeforeMiB.toFixed(0)} MiB | ${watch.rssOpenMiB.toFixed(0)} MiB | ${watch.kibPerStream.toFixed(1)} KiB | ${watch.redisScriptCallsPerSecond.toFixed(1)} | ${watch.redisCommandsPerSecond.toFixed(0)} | ${watch.admittedP50Ms.toFixed(0)} ms | ${watch.admittedP99Ms.toFixed(0)} ms | ${watch.allAdmittedMs.toFixed(0)} ms |`,
    );
  }

  const saleFans = take(flashFans);
  if (selected("flash sale")) {
    const sale = await measureFlashSale({
      transports: Array.from({ length: 20 }, () => createGrpcTransport({ baseUrl: server.url })),
      operatorKey,
      databaseUrl,
      fanTokens: saleFans,
    });
    report.sale = sale;
    console.log(`\nflash sale: ${sale.fans} fans for ${sale.seats} seats (10 dates × 50); each admitted fan lists a date's seats, holds a random free seat, charges and pays\n`);
    console.log("| sold | sold out after | bookings/s | hold conflicts | calls asked again | fans told sold out | p99 enter | list seats | hold | charge | pay | check: seats sold, sold twice, points conserved |");
    console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    const p = sale.p99Ms;
    console.log(
      `| ${sale.sold} | ${(sale.soldOutAfterMs / 1000).toFixed(1)} s | ${sale.bookingsPerSecond.toFixed(1)} | ${sale.conflicts} | ${sale.retries} | ${sale.soldOutFans} | ${p.enter!.toFixed(0)} ms | ${p.listSeats!.toFixed(0)} ms | ${p.hold!.toFixed(0)} ms | ${p.charge!.toFixed(0)} ms | ${p.pay!.toFixed(0)} ms | ${sale.checks.seatsSold}, ${sale.checks.seatsSoldTwice}, ${sale.checks.pointsConserved} |`,
    );
    const verified = sale.checks.seatsSold === sale.seats && sale.checks.seatsSoldTwice === 0 && sale.checks.pointsConserved && sale.sold === sale.seats;
    console.log(verified ? "flash sale verified: sold out, every seat sold once, points conserved" : "FLASH SALE VERIFICATION FAILED");
    if (!verified) process.exitCode = 1;
  }

  if (selected("admission tick")) {
    const sizes = quick ? [1_000, 100_000] : [1_000, 100_000, 1_000_000];
    const ticks = await measureAdmissionTicks(redisUrl, sizes);
    report.ticks = ticks;
    const base = (store: string) => ticks.find((t) => t.store === store && t.waiting === sizes[0])!.msPerTick;
    console.log(`\nadmission tick admitting ${ticks[0]!.admittedPerTick} fans, by line length (ratio to the shortest line, same store)\n`);
    console.log("| store | waiting | ms per tick | ratio |\n|---|---:|---:|---:|");
    for (const t of ticks) console.log(`| ${t.store} | ${t.waiting} | ${t.msPerTick.toFixed(2)} | ${(t.msPerTick / base(t.store)).toFixed(2)} |`);
  }
  if (selected("pre-queue draw")) {
    const sizes = quick ? [1_000, 10_000] : [1_000, 10_000, 100_000];
    const draws = await measureDraws(redisUrl, sizes);
    report.draws = draws;
    const base = (store: string) => draws.find((d) => d.store === store && d.prequeued === sizes[0])!.usPerFan;
    console.log(`\npre-queue draw at the sale's opening, by pre-queue size (cost per fan, ratio to the smallest pre-queue, same store)\n`);
    console.log("| store | pre-queued | ms to draw | µs per fan | ratio |\n|---|---:|---:|---:|---:|");
    for (const d of draws) console.log(`| ${d.store} | ${d.prequeued} | ${d.msToDraw.toFixed(0)} | ${d.usPerFan.toFixed(1)} | ${(d.usPerFan / base(d.store)).toFixed(2)} |`);
  }
} finally {
  await server.stop();
  await dropKeys(redisUrl, redisKeyPrefix);
}
if (profiling) {
  // The main thread's profile is the largest (tsx's module loader thread writes one too).
  const file = readdirSync(profileDir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .sort((a, b) => statSync(join(profileDir, b)).size - statSync(join(profileDir, a)).size)[0];
  if (file) {
    profile = summariseProfile(join(profileDir, file));
    report.profile = { file: join(profileDir, file), ...profile };
    console.log(`\nserver CPU profile: ${(profile.totalMs / 1000).toFixed(1)} s sampled, ${(profile.idleMs / 1000).toFixed(1)} s idle (${join(profileDir, file)})\n`);
    console.log("| where | CPU s | share of busy |\n|---|---:|---:|");
    const busy = profile.totalMs - profile.idleMs;
    for (const a of profile.byArea) console.log(`| ${a.area} | ${(a.ms / 1000).toFixed(2)} | ${((100 * a.ms) / busy).toFixed(1)} % |`);
    console.log("\n| function | CPU s |\n|---|---:|");
    for (const f of profile.byFunction) console.log(`| ${f.fn} | ${(f.ms / 1000).toFixed(2)} |`);
  }
}
mkdirSync(resultsDir, { recursive: true });
const file = join(resultsDir, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify(report, null, 2));
console.log(`\nresults: ${file}`);
