/**
 * npm run bench [-- --quick]: starts the suite as its own process on PostgreSQL,
 * drives each RPC from this process over gRPC (h2c) with a fixed concurrency,
 * and prints throughput and latency, each as a ratio to the health check
 * served by the same server in the same run (the machine's own ceiling).
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConcertService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { createDatabase } from "../databases.js";
import { startServerProcess } from "../server-process.js";

const quick = process.argv.includes("--quick");
const seconds = quick ? 3 : 10;
const concurrency = 32;
const root = join(import.meta.dirname, "../..");

function startServer(databaseUrl: string) {
  const dataDir = mkdtempSync(join(tmpdir(), "boxoffice-bench-"));
  return startServerProcess({ ...process.env, DATABASE_URL: databaseUrl, PORT: "0", HOST: "127.0.0.1", DATA_DIR: dataDir });
}

interface Result {
  name: string;
  calls: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

async function measure(name: string, call: () => Promise<unknown>): Promise<Result> {
  const warm = performance.now() + 1000;
  while (performance.now() < warm) await call();
  const latencies: number[] = [];
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        await call();
        latencies.push(performance.now() - started);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  return { name, calls: latencies.length, perSecond: latencies.length / seconds, p50Ms: at(0.5), p99Ms: at(0.99) };
}

const server = await startServer(await createDatabase("boxoffice_bench"));
try {
  const transport = createGrpcTransport({ baseUrl: server.url });
  const health = createClient(Health, transport);
  const concerts: Client<typeof ConcertService> = createClient(ConcertService, transport);
  const tokens = createClient(TokenService, transport);
  const user = await tokens.issueUserToken({});
  const auth = { headers: { authorization: `Bearer ${user.token}` } };
  const concertId = (await concerts.listConcerts({})).concerts[0]!.id;
  const scheduleId = (await concerts.listSchedules({ concertId })).schedules[0]!.id;

  // The ceiling is measured first and last, and averaged, so drift during the run shows and cancels out.
  const results = [
    await measure("ceiling: grpc.health.v1.Health/Check (first)", () => health.check({})),
    await measure("ConcertService/ListConcerts", () => concerts.listConcerts({})),
    await measure("ConcertService/ListSchedules", () => concerts.listSchedules({ concertId })),
    await measure("ConcertService/ListSeats", () => concerts.listSeats({ scheduleId }, auth)),
    await measure("TokenService/IssueUserToken (new user)", () => tokens.issueUserToken({})),
    await measure("ceiling: grpc.health.v1.Health/Check (last)", () => health.check({})),
  ];
  const ceiling = (results[0]!.perSecond + results.at(-1)!.perSecond) / 2;
  console.log(`\n${seconds}s per case, ${concurrency} concurrent calls over one h2c connection, server in its own process\n`);
  console.log("| case | calls/s | ratio to ceiling | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|");
  for (const r of results) {
    console.log(`| ${r.name} | ${r.perSecond.toFixed(0)} | ${(r.perSecond / ceiling).toFixed(2)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} |`);
  }
  const dir = join(root, "test/bench/results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ quick, seconds, concurrency, results }, null, 2));
  console.log(`\nresults: ${file}`);
} finally {
  await server.stop();
}
