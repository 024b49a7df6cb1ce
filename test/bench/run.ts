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
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { spawn } from "node:child_process";
import http from "node:http";
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
import { admissionRateFans, measureAdmissionRate, measureBacklogDrain } from "./admission-rate.js";
import { measureAdmissionTicks } from "./admission-tick.js";
import { measureDraws } from "./draw.js";
import { measureFlashSale } from "./flash-sale.js";
import { holdCases } from "./holds.js";
import { cpuPerCall, cpuSnapshot, type CpuPerCall, type CpuSnapshot } from "./cpu.js";
import { Exhausted, measure, spread, type Result } from "./measure.js";
import { paymentCases } from "./payments.js";
import { prepareReaders, readCases } from "./reads.js";
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

/** The physical baseline (bare-grpc.ts) as its own process. */
async function startBareGrpc(): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [join(import.meta.dirname, "bare-grpc.ts")], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      const match = /on (http:\/\/[\d.]+:\d+)/.exec(chunk.toString());
      if (match) resolve(match[1]!);
    });
    child.once("exit", (code) => reject(new Error(`the bare gRPC server exited with ${code}`)));
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { url, pid: child.pid!, stop: () => (child.kill("SIGTERM"), exited) };
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

/** --flash-fans=N: a sale of another size (the arrivals keep the spread below). */
const flashFans = Number(args.find((a) => a.startsWith("--flash-fans="))?.slice("--flash-fans=".length) ?? (quick ? 5_000 : 100_000));
/** The quick sale keeps the earlier shape (1,000 arrivals a second, near EnterQueue's capacity) at a twentieth of the fans. */
const flashSpreadMs = quick ? 5_000 : 10_000;
const admissionFans = admissionRateFans(timing.seconds, timing.warmSeconds);
const watchStreams = quick ? 2_000 : 10_000;
const payers = quick ? 500 : 2_500;
const newFanCount = (timing.seconds + timing.warmSeconds) * 4_000;
/** Fans with a paid booking whose balance, booking and payment the read cases read. */
const readerCount = 200;

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
  const take = await fanPool(2 + 2_000 + newFanCount + readerCount + 300 + 2 * payers + watchStreams + flashFans + admissionFans);
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

  const readerFans = take(readerCount);
  const readers = ["PointService/GetBalance", "ReservationService/GetReservation", "ReservationService/ListReservations", "PaymentService/GetPayment"].some(
    (name) => selected(name) || selected(`${name} (browser)`),
  )
    ? await prepareReaders(transport, operatorKey, readerFans)
    : undefined;
  const browserTransport = createConnectTransport({
    baseUrl: server.url,
    httpVersion: "1.1",
    useBinaryFormat: false,
    nodeOptions: { agent: new http.Agent({ keepAlive: true, maxSockets: concurrency }) },
  });
  /** The gated seat list and a queue place, over `t`. */
  const gatedReads = (t: Transport) => {
    const seats = createClient(ConcertService, t);
    const places = createClient(QueueService, t);
    return [
      ["ConcertService/ListSeats (gated, 50 seats)", () => seats.listSeats({ scheduleId }, { headers: admitted! })],
      ["QueueService/GetQueueStatus (far down the line)", () => places.getQueueStatus({}, { headers: farDown })],
    ] as const;
  };
  const cases: (readonly [string, () => Promise<unknown>])[] = [
    ["ConcertService/ListSchedules", () => concerts.listSchedules({ concertId })],
    gatedReads(transport)[0],
    ["QueueService/EnterQueue (new fans)", enter],
    gatedReads(transport)[1],
    ...(readers ? readCases(transport, readers) : []),
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
  const serverProcessId = server.process.pid!;
  /** Measures `call` right after the no-op `ceiling`, with the server's CPU per call of both. */
  const paired = async (name: string, ceilingCall: () => Promise<unknown>, call: () => Promise<unknown>, pid = serverProcessId): Promise<Paired> => {
    const ceilingCpu: CpuSnapshot[] = [];
    const ceiling = await measure("ceiling", ceilingCall, { ...timing, concurrency, onMeasuring: () => ceilingCpu.push(cpuSnapshot(pid)) });
    ceilingCpu.push(cpuSnapshot(pid));
    const cpu: CpuSnapshot[] = [];
    const result = await measure(name, call, { ...timing, concurrency, onMeasuring: () => cpu.push(cpuSnapshot(pid)) });
    cpu.push(cpuSnapshot(pid));
    return {
      ...result,
      ceilingPerSecond: ceiling.perSecond,
      ratio: result.perSecond / ceiling.perSecond,
      cpu: cpuPerCall(cpu[0]!, cpu[1]!, result.calls),
      ceilingCpu: cpuPerCall(ceilingCpu[0]!, ceilingCpu[1]!, ceiling.calls),
    };
  };
  const printPaired = (rows: Paired[], ceilingName = "no-op") => {
    console.log(`| case | calls/s | ${ceilingName} calls/s | ratio | p50 ms | p99 ms | server CPU µs/call (${ceilingName}) | driver | rest |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|`);
    for (const r of rows) {
      const c = r.cpu;
      console.log(
        `| ${r.name} | ${r.perSecond.toFixed(0)} | ${r.ceilingPerSecond.toFixed(0)} | ${r.ratio.toFixed(2)} | ${r.p50Ms.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ${c.serverUs.toFixed(0)} (${r.ceilingCpu.serverUs.toFixed(0)}) | ${c.driverUs.toFixed(0)} | ${c.restUs.toFixed(0)} |`,
      );
    }
  };

  if (selected("baseline")) {
    // The no-op against the physical baseline: the same client calling a bare node:http2 server (bare-grpc.ts).
    const bare = await startBareGrpc();
    try {
      const bareHealth = createClient(Health, spread(Array.from({ length: connections }, () => createGrpcTransport({ baseUrl: bare.url }))));
      await measure("warm-up", () => bareHealth.check({}), { ...timing, concurrency });
      const rounds: { noop: Paired; bare: Paired }[] = [];
      // Interleaved, twice: the no-op on the suite (its CPU per call as a ratio to the bare server's).
      for (let round = 0; round < 2; round++) {
        const noop = await paired("Health/Check on the suite", () => health.check({}), () => health.check({}));
        const bareRun = await paired("Health/Check on bare node:http2", () => bareHealth.check({}), () => bareHealth.check({}), bare.pid);
        rounds.push({ noop, bare: bareRun });
      }
      const perCall = (pick: (r: (typeof rounds)[number]) => Paired) => rounds.map((r) => pick(r).cpu.serverUs).sort((a, b) => a - b)[0]!;
      const suiteUs = perCall((r) => r.noop);
      const bareUs = perCall((r) => r.bare);
      const callsPerSecond = (pick: (r: (typeof rounds)[number]) => Paired) => Math.max(...rounds.map((r) => pick(r).perSecond));
      report.baseline = { rounds, suiteUs, bareUs, ratio: suiteUs / bareUs };
      console.log(`\nthe no-op against a bare node:http2 server answering a fixed gRPC response (best of 2 interleaved rounds each)\n`);
      console.log("| server | calls/s | server CPU µs/call | ratio to bare |\n|---|---:|---:|---:|");
      console.log(`| bare node:http2 | ${callsPerSecond((r) => r.bare).toFixed(0)} | ${bareUs.toFixed(0)} | 1.00 |`);
      console.log(`| suite, Health/Check | ${callsPerSecond((r) => r.noop).toFixed(0)} | ${suiteUs.toFixed(0)} | ${(suiteUs / bareUs).toFixed(2)} |`);
    } finally {
      await bare.stop();
    }
  }

  const results: Paired[] = [];
  for (const [name, call] of cases.filter(([name]) => selected(name))) results.push(await paired(name, () => health.check({}), call));
  report.results = results;
  if (results.length > 0) {
    console.log(`\n${timing.seconds} s per case after ${timing.warmSeconds} s of warm-up; ${concurrency} calls in flight over ${connections} h2c connections;`);
    console.log("ratio = the case's calls/s ÷ the no-op Health/Check's calls/s measured just before it\n");
    console.log("CPU µs per call while measured: the server process, the load driver, the rest of the machine (PostgreSQL, Redis)\n");
    printPaired(results);
  }

  // The browser's path: Connect JSON over HTTP/1.1 keep-alive connections, as a browser or wrk sends it.
  const browserCases = [...(readers ? readCases(browserTransport, readers) : []), ...gatedReads(browserTransport)].filter(([name]) => selected(`${name} (browser)`));
  if (browserCases.length > 0) {
    const browserHealth = createClient(Health, browserTransport);
    await measure("warm-up", () => browserHealth.check({}), { ...timing, concurrency });
    const browser: Paired[] = [];
    for (const [name, call] of browserCases) browser.push(await paired(`${name} (browser)`, () => browserHealth.check({}), call));
    report.browser = browser;
    console.log(`\nthe browser's path: Connect JSON over HTTP/1.1, ${concurrency} keep-alive connections; ratio to the no-op over the same path\n`);
    printPaired(browser);
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
      url: server.url,
      connections: 100,
      serverPid: server.process.pid!,
      operatorKey,
      databaseUrl,
      fanTokens: saleFans,
      arrivalSpreadMs: flashSpreadMs,
    });
    report.sale = sale;
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const o = sale.outcomes;
    console.log(
      `\nflash sale: ${sale.fans} fans arriving within ${s(sale.arrivalSpreadMs)} for ${sale.seats} seats (10 dates × 50), one watch stream each; ` +
        "each admitted fan lists a date's seats, holds a random free seat, charges and pays\n",
    );
    console.log("| sold | last sale after | every fan answered after | bookings/s | bought | sold out at entry | in line | at the seats | left | failed | hold conflicts | calls asked again | check: seats sold, sold twice, points conserved |");
    console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    console.log(
      `| ${sale.sold} | ${s(sale.soldOutAfterMs)} | ${s(sale.everyFanAnsweredMs)} | ${sale.bookingsPerSecond.toFixed(1)} | ${o.bought} | ${o.soldOutAtEntry} | ${o.soldOutInLine} | ${o.soldOutAtSeats} | ${o.left} | ${o.failed} | ${sale.conflicts} | ${sale.retries} | ${sale.checks.seatsSold}, ${sale.checks.seatsSoldTwice}, ${sale.checks.pointsConserved} |`,
    );
    const b = sale.buyers;
    console.log("\nwhere the buyers' time went: arrival → EnterQueue answered (entering), → ADMITTED heard (waiting), → payment SUCCEEDED (booking)\n");
    console.log("| | entering | waiting | booking |\n|---|---:|---:|---:|");
    console.log(`| p50 | ${s(b.entering.p50)} | ${s(b.waiting.p50)} | ${s(b.booking.p50)} |`);
    console.log(`| p99 | ${s(b.entering.p99)} | ${s(b.waiting.p99)} | ${s(b.booking.p99)} |`);
    if (b.last) console.log(`| last buyer | ${s(b.last.enteringMs)} | ${s(b.last.waitingMs)} | ${s(b.last.bookingMs)} |`);
    const m = sale.memory!;
    const c = sale.cpuSeconds!;
    const p = sale.p99Ms;
    console.log("\n| watch streams open at most | server RSS before → peak (VmHWM) | driver peak RSS | CPU s: server, driver, rest (wall) | driver lag p99 (max) | p99 enter | list seats | hold | charge | pay |");
    console.log("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    console.log(
      `| ${sale.peakWatching} | ${m.serverRssBeforeMiB.toFixed(0)} → ${m.serverPeakRssMiB.toFixed(0)} MiB (${m.serverHwmMiB.toFixed(0)}) | ${m.driverPeakRssMiB.toFixed(0)} MiB | ${c.server.toFixed(0)}, ${c.driver.toFixed(0)}, ${c.rest.toFixed(0)} (${c.wall.toFixed(0)}) | ${s(sale.driverLagMs.p99)} (${s(sale.driverLagMs.max)}) | ${s(p.enter!)} | ${s(p.listSeats!)} | ${s(p.hold!)} | ${s(p.charge!)} | ${s(p.pay!)} |`,
    );
    if (sale.retries > 0) console.log(`calls asked again, by code: ${JSON.stringify(sale.retriesByCode)}`);
    for (const [message, count] of Object.entries(sale.failures)) console.log(`  failed: ${count} × ${message}`);
    const answered = Object.values(sale.outcomes).reduce((sum, n) => sum + n, 0);
    const verified =
      sale.checks.seatsSold === sale.seats && sale.checks.seatsSoldTwice === 0 && sale.checks.pointsConserved && sale.sold === sale.seats && o.failed === 0 && answered === sale.fans;
    console.log(verified ? "flash sale verified: sold out, every seat sold once, points conserved, every fan answered, none failed" : "FLASH SALE VERIFICATION FAILED");
    if (!verified) process.exitCode = 1;
  }

  const rateFans = take(admissionFans);
  if (selected("admission rate")) {
    const rate = await measureAdmissionRate({ transport, url: server.url, operatorKey, fanTokens: rateFans, ...timing, concurrency });
    report.admissionRate = rate;
    console.log(`\nadmission rate: new fans enter as fast as the driver can (${concurrency} in flight) into a room with space for all (max_active 1,000,000, no rate limit)\n`);
    console.log("| arrivals/s | admissions/s | waiting at start | at end | longest | drained after | p99 enter | Redis tick steps (ms each) |\n|---:|---:|---:|---:|---:|---:|---:|---:|");
    const drain = await measureBacklogDrain(redisUrl, 20_000);
    report.backlogDrain = drain;
    console.log(
      `| ${rate.arrivalsPerSecond.toFixed(0)} | ${rate.admissionsPerSecond.toFixed(0)} | ${rate.waitingAtStart} | ${rate.waitingAtEnd} | ${rate.peakWaiting} | ${rate.drainedAfterMs === undefined ? "> 30 s" : `${rate.drainedAfterMs.toFixed(0)} ms`} | ${rate.enterP99Ms.toFixed(0)} ms | ${rate.tickSteps ?? "-"} (${rate.msPerTickStep?.toFixed(1) ?? "-"}) |`,
    );
    console.log(`\na backlog let in: ${drain.backlog} fans waiting in a room with space for all, admitted by the queue's AdmissionWorker (250 ms tick, batch 1,000) on Redis\n`);
    console.log(`| backlog | drained in | admissions/s |\n|---:|---:|---:|\n| ${drain.backlog} | ${drain.seconds.toFixed(2)} s | ${drain.admissionsPerSecond.toFixed(0)} |`);
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
