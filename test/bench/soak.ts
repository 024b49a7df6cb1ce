/**
 * npm run bench -- --soak [--soak-minutes=10] [--soak-fans=2000] [--soak-charge-seconds=60] [--soak-sample-seconds=5]
 *
 * Memory under load. Starts the suite as its own process on PostgreSQL and
 * Redis (as `npm start` runs it, see test/server-process.ts), then:
 *
 * 1. the booking mix for --soak-minutes: flash sales back to back, each a new
 *    concert (10 dates × 50 seats) and --soak-fans fans who get a user token
 *    (IssueUserToken), then do what the bench's flash sale has them do
 *    (flash-sale.ts: enter the queue, watch their place, list seats, hold one,
 *    charge points, pay), over gRPC h2c;
 * 2. ChargePoints over HTTP/1.1 for --soak-charge-seconds: Connect JSON from
 *    64 keep-alive connections (as wrk would), each call a new idempotency key;
 * 3. 30 s without traffic.
 *
 * Every --soak-sample-seconds it records the server's RSS (/proc/<pid>/status)
 * and, from a probe loaded into the server (--import, below), heap used, heap
 * total and the heap used right after the last full GC (what is live). It
 * prints a table over time and a verdict, and writes the samples to
 * test/bench/results/soak-*.json:
 *
 * - peak RSS under load (phases 1 and 2) at most 400 MiB;
 * - flat after warm-up: the booking mix is cut in thirds, the first being
 *   warm-up; the mean of the last third is at most 10 % above the mean of the
 *   middle third, for RSS and for the heap after a full GC.
 *
 * A failed verdict or a failed check of a sale (seats sold once, points
 * conserved) makes the run exit 1.
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import { UserTokens } from "../../services/platform/tokens.js";
import { createDatabase, dropDatabase } from "../databases.js";
import { dropKeys } from "../redis-keys.js";
import { startFlags, startServerProcess } from "../server-process.js";
import { measureFlashSale, type FlashSaleResult } from "./flash-sale.js";

const rssLimitMiB = 400;
/** How much higher the last third's mean may be than the middle third's and still be flat. */
const flatTolerance = 0.1;
const restSeconds = 30;
const chargeConnections = 64;

type Phase = "mix" | "charge" | "rest";

interface Sample {
  /** Seconds since the server listened. */
  t: number;
  phase: Phase;
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  /** Heap used just after the most recent full (mark-compact) GC: the live heap. */
  heapAfterFullGcMiB: number;
  /** Seats sold so far. */
  sold: number;
}

/** What the server reports about its own heap, from the probe. */
interface Probe {
  heapUsed: number;
  heapTotal: number;
  afterFull: number;
}

/**
 * Loaded into the server with --import (a data: URL, so nothing is added to the server's code): every
 * `ms` it writes its heap figures to stderr, and it notes the heap used after each full GC.
 */
function probeModule(ms: number): string {
  const code = `
    import v8 from "node:v8";
    import { PerformanceObserver, constants } from "node:perf_hooks";
    let afterFull = 0;
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) afterFull = v8.getHeapStatistics().used_heap_size;
      }
    }).observe({ entryTypes: ["gc"] });
    setInterval(() => {
      const { heapUsed, heapTotal } = process.memoryUsage();
      process.stderr.write("soak-probe " + JSON.stringify({ heapUsed, heapTotal, afterFull }) + "\\n");
    }, ${ms}).unref();`;
  return `data:text/javascript,${encodeURIComponent(code)}`;
}

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / Math.max(values.length, 1);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (bytes: number) => bytes / 2 ** 20;

/** Fans get their user tokens as the page does, from IssueUserToken, 500 at a time. */
async function issueTokens(transport: Transport, count: number): Promise<string[]> {
  const tokens = createClient(TokenService, transport);
  const all: string[] = [];
  for (let start = 0; start < count; start += 500) {
    const batch = Array.from({ length: Math.min(500, count - start) }, async () => (await tokens.issueUserToken({})).token);
    all.push(...(await Promise.all(batch)));
  }
  return all;
}

/** ChargePoints as Connect JSON over HTTP/1.1 keep-alive, `connections` calls in flight, for `seconds`. */
async function chargeOverHttp1(url: string, fanTokens: string[], connections: number, seconds: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const target = new URL("/boxoffice.point.v1.PointService/ChargePoints", url);
  let calls = 0;
  let failed = 0;
  let lastFailure = "";
  let next = 0;
  const call = () =>
    new Promise<void>((resolve) => {
      const body = JSON.stringify({ amount: "1", idempotencyKey: randomUUID() });
      const headers = { "content-type": "application/json", authorization: `Bearer ${fanTokens[next++ % fanTokens.length]}`, "content-length": Buffer.byteLength(body) };
      const request = http.request(target, { method: "POST", agent, headers }, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          if (response.statusCode === 200) calls++;
          else (failed++, (lastFailure = `${response.statusCode} ${Buffer.concat(chunks).toString().slice(0, 200)}`));
          resolve();
        });
      });
      request.on("error", (error) => (failed++, (lastFailure = String(error)), resolve()));
      request.end(body);
    });
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < until) await call();
    }),
  );
  agent.destroy();
  return { calls, failed, lastFailure, perSecond: calls / ((performance.now() - started) / 1000) };
}

export async function runSoak(args: string[]) {
  const setting = (name: string, fallback: number) => {
    const given = args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const value = given === undefined ? fallback : Number(given);
    if (!(value > 0)) throw new Error(`--${name} must be a positive number`);
    return value;
  };
  const minutes = setting("soak-minutes", 10);
  const fansPerSale = setting("soak-fans", 2_000);
  const chargeSeconds = setting("soak-charge-seconds", 60);
  const sampleSeconds = setting("soak-sample-seconds", 5);

  const root = join(import.meta.dirname, "../..");
  const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
  const tokenSecret = randomUUID() + randomUUID();
  const operatorKey = randomUUID();
  const redisKeyPrefix = `soak:${randomUUID()}:`;
  const databaseName = "boxoffice_soak";
  const databaseUrl = await createDatabase(databaseName);
  const probeMs = Math.min(sampleSeconds * 1000, 5_000) / 2;
  const server = await startServerProcess(
    {
      ...process.env,
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: redisKeyPrefix,
      TOKEN_SECRET: tokenSecret,
      OPERATOR_KEY: operatorKey,
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: mkdtempSync(join(tmpdir(), "boxoffice-soak-")),
      // One process: its RSS is the figure (where the suite can run several workers, they are not asked for).
      WORKERS: "1",
      // npm start's pool (config.ts), not the small one test/server-process.ts gives test servers.
      DATABASE_POOL_SIZE: process.env.DATABASE_POOL_SIZE ?? "10",
      // Thousands of fans from 127.0.0.1: the rate limits (where the suite has them) set far above what the soak asks.
      ...Object.fromEntries(
        ["ACCOUNT", "QUEUE", "CHARGE", "HOLD"].flatMap((rule) => ["ADDRESS", "USER"].map((per) => [`RATE_LIMIT_${rule}_PER_${per}`, "1000000"])),
      ),
    },
    ["--import", probeModule(probeMs)],
  );
  const pid = server.process.pid!;
  const began = performance.now();
  let probe: Probe = { heapUsed: 0, heapTotal: 0, afterFull: 0 };
  let pending = "";
  server.process.stderr!.on("data", (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith("soak-probe ")) probe = JSON.parse(line.slice("soak-probe ".length)) as Probe;
      else process.stderr.write(`server: ${line}\n`);
    }
  });

  let phase: Phase = "mix";
  let sold = 0;
  const samples: Sample[] = [];
  const sample = () =>
    samples.push({
      t: (performance.now() - began) / 1000,
      phase,
      rssMiB: rssMiB(pid),
      heapUsedMiB: mib(probe.heapUsed),
      heapTotalMiB: mib(probe.heapTotal),
      heapAfterFullGcMiB: mib(probe.afterFull),
      sold,
    });
  const sampler = setInterval(sample, sampleSeconds * 1000);
  const sales: (Omit<FlashSaleResult, "p99Ms"> & { round: number; startedAtS: number; tokensMs: number })[] = [];
  let failedChecks = 0;
  let charge: Awaited<ReturnType<typeof chargeOverHttp1>> | undefined;
  console.log(
    `soak: booking mix for ${minutes} min (flash sales of ${fansPerSale} fans for 500 seats, back to back), then ChargePoints over HTTP/1.1 ` +
      `(${chargeConnections} keep-alive connections, Connect JSON) for ${chargeSeconds} s, then ${restSeconds} s idle; ` +
      `server: node ${startFlags.join(" ")} --import tsx services/main.ts (pid ${pid}), sampled every ${sampleSeconds} s`,
  );
  try {
    const transports = Array.from({ length: 20 }, () => createGrpcTransport({ baseUrl: server.url }));
    sample();
    for (let round = 1; performance.now() - began < minutes * 60_000; round++) {
      const startedAtS = (performance.now() - began) / 1000;
      const tokensStarted = performance.now();
      const fanTokens = await issueTokens(transports[round % transports.length]!, fansPerSale);
      const tokensMs = performance.now() - tokensStarted;
      const { p99Ms: _p99, ...sale } = await measureFlashSale({ transports, operatorKey, databaseUrl, fanTokens });
      sold += sale.sold;
      const ok = sale.sold === sale.seats && sale.checks.seatsSold === sale.seats && sale.checks.seatsSoldTwice === 0 && sale.checks.pointsConserved;
      if (!ok) failedChecks++;
      sales.push({ round, startedAtS, tokensMs, ...sale });
      console.error(
        `soak sale ${round} at +${startedAtS.toFixed(0)} s: ${sale.sold} sold in ${(sale.soldOutAfterMs / 1000).toFixed(1)} s, ` +
          `${sale.retries} asked again, check ${ok ? "passed" : `FAILED ${JSON.stringify(sale.checks)}`}; server RSS ${rssMiB(pid).toFixed(0)} MiB`,
      );
    }

    phase = "charge";
    sample();
    const signer = new UserTokens(tokenSecret, 3600);
    const chargeFans = await Promise.all(Array.from({ length: 1_000 }, async () => (await signer.sign(randomUUID())).token));
    charge = await chargeOverHttp1(server.url, chargeFans, chargeConnections, chargeSeconds);
    console.error(`soak ChargePoints over HTTP/1.1: ${charge.calls} calls (${charge.perSecond.toFixed(0)}/s), ${charge.failed} failed ${charge.lastFailure}`);

    phase = "rest";
    sample();
    await sleep(restSeconds * 1000);
    sample();
  } finally {
    clearInterval(sampler);
    await server.stop();
    await dropKeys(redisUrl, redisKeyPrefix);
    await dropDatabase(databaseName);
  }

  // The table: one row per 30 s (or per sample, if sampled less often), the highest RSS and heap in it.
  const rowSeconds = Math.max(30, sampleSeconds);
  const rows = new Map<string, Sample[]>();
  for (const s of samples) {
    const key = `${s.phase}:${Math.floor(s.t / rowSeconds)}`;
    rows.set(key, [...(rows.get(key) ?? []), s]);
  }
  console.log(`\nserver memory over time (each row ${rowSeconds} s: highest RSS and heap used in it, heap after the last full GC at its end)\n`);
  console.log("| t | phase | RSS MiB | heap used MiB | heap total MiB | heap after full GC MiB | seats sold |\n|---:|---|---:|---:|---:|---:|---:|");
  for (const group of rows.values()) {
    const last = group.at(-1)!;
    const max = (pick: (s: Sample) => number) => Math.max(...group.map(pick)).toFixed(0);
    console.log(
      `| ${group[0]!.t.toFixed(0)} s | ${last.phase} | ${max((s) => s.rssMiB)} | ${max((s) => s.heapUsedMiB)} | ${max((s) => s.heapTotalMiB)} | ${last.heapAfterFullGcMiB.toFixed(0)} | ${last.sold} |`,
    );
  }

  const mix = samples.filter((s) => s.phase === "mix");
  const third = Math.floor(mix.length / 3);
  const middle = mix.slice(third, 2 * third);
  const last = mix.slice(2 * third);
  const flatness = (pick: (s: Sample) => number) => {
    // A figure of 0 is one not known yet (no full GC so far).
    const before = mean(middle.map(pick).filter((v) => v > 0));
    const after = mean(last.map(pick).filter((v) => v > 0));
    return { middleMiB: before, lastMiB: after, change: after / before - 1 };
  };
  const rss = flatness((s) => s.rssMiB);
  const live = flatness((s) => s.heapAfterFullGcMiB);
  const underLoad = samples.filter((s) => s.phase !== "rest");
  const peakRss = Math.max(...underLoad.map((s) => s.rssMiB));
  const peakMix = Math.max(...mix.map((s) => s.rssMiB));
  const peakCharge = Math.max(...samples.filter((s) => s.phase === "charge").map((s) => s.rssMiB));
  const afterRest = samples.at(-1)!.rssMiB;
  const flat = third > 0 && rss.change <= flatTolerance && live.change <= flatTolerance;
  const bounded = peakRss <= rssLimitMiB;
  const chargeOk = charge !== undefined && charge.failed === 0;

  const percent = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)} %`;
  console.log(`\n${sales.length} sales, ${sold} seats sold; ChargePoints over HTTP/1.1: ${charge?.calls ?? 0} calls, ${charge?.perSecond.toFixed(0) ?? 0}/s, ${charge?.failed ?? 0} failed`);
  console.log(`peak RSS under load: ${peakRss.toFixed(0)} MiB (booking mix ${peakMix.toFixed(0)}, ChargePoints over HTTP/1.1 ${peakCharge.toFixed(0)}); after ${restSeconds} s idle: ${afterRest.toFixed(0)} MiB`);
  console.log(
    `booking mix, middle third → last third (the first third is warm-up): RSS ${rss.middleMiB.toFixed(0)} → ${rss.lastMiB.toFixed(0)} MiB (${percent(rss.change)}), ` +
      `heap after full GC ${live.middleMiB.toFixed(1)} → ${live.lastMiB.toFixed(1)} MiB (${percent(live.change)})`,
  );
  console.log(
    `verdict: ${flat ? "flat" : "NOT FLAT"} after warm-up (last third within ${100 * flatTolerance} % of the middle), ` +
      `${bounded ? "bounded" : "OVER"}: peak RSS ${peakRss.toFixed(0)} MiB ${bounded ? "≤" : ">"} ${rssLimitMiB} MiB` +
      `${failedChecks > 0 ? `; ${failedChecks} SALE CHECKS FAILED` : ""}${chargeOk ? "" : "; CHARGEPOINTS CALLS FAILED"}`,
  );
  if (!flat || !bounded || failedChecks > 0 || !chargeOk) process.exitCode = 1;

  const resultsDir = join(root, "test/bench/results");
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  const machine = { cpus: cpus().length, model: cpus()[0]?.model, memoryGiB: totalmem() / 2 ** 30, node: process.version, loadavg: loadavg() };
  const verdict = { flat, bounded, peakRssMiB: peakRss, peakMixMiB: peakMix, peakChargeMiB: peakCharge, afterRestMiB: afterRest, rss, live, failedChecks };
  writeFileSync(file, JSON.stringify({ minutes, fansPerSale, chargeSeconds, sampleSeconds, serverFlags: startFlags, machine, verdict, charge, sales, samples }, null, 2));
  console.log(`\nresults: ${file}`);
}
