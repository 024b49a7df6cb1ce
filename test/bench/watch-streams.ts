/**
 * WatchQueueStatus at scale: N fans wait in one paused room, each with an open
 * watch stream (spread over several HTTP/2 connections). Measures the server's
 * memory per open stream, the Redis commands per second while the streams sit
 * open (one batched refresh per concert, not one per stream), and, once
 * admission resumes for everyone, how long each stream takes to hear ADMITTED.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { readFileSync } from "node:fs";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueAdminService, QueueState } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { quantile } from "./measure.js";
import { enterFans } from "./setup.js";

export interface WatchResult {
  streams: number;
  connections: number;
  rssBeforeMiB: number;
  rssOpenMiB: number;
  kibPerStream: number;
  /** Script calls per second (the admission ticks and the batched refreshes): round trips. */
  redisScriptCallsPerSecond: number;
  /** Commands Redis ran per second, counting every command inside a script. */
  redisCommandsPerSecond: number;
  admittedP50Ms: number;
  admittedP99Ms: number;
  allAdmittedMs: number;
}

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

/** Script calls Redis has served (each one round trip) and all commands it ran (a script's inner calls count each). */
async function redisCounts(redis: Redis): Promise<{ scripts: number; commands: number }> {
  const stats = await redis.info("commandstats");
  const scripts = Number(/^cmdstat_evalsha:calls=(\d+)/m.exec(stats)?.[1] ?? 0) + Number(/^cmdstat_eval:calls=(\d+)/m.exec(stats)?.[1] ?? 0);
  const commands = Number(/total_commands_processed:(\d+)/.exec(await redis.info("stats"))![1]);
  return { scripts, commands };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function measureWatchStreams(options: {
  url: string;
  serverPid: number;
  redisUrl: string;
  operatorKey: string;
  concertId: string;
  fanTokens: string[];
  connections: number;
}): Promise<WatchResult> {
  const { url, concertId, fanTokens, connections } = options;
  const operator = { headers: { authorization: `Bearer ${options.operatorKey}` } };
  const transports = Array.from({ length: connections }, () => createGrpcTransport({ baseUrl: url }));
  const admin = createClient(QueueAdminService, transports[0]!);
  await admin.pauseAdmission({ concertId }, operator);

  // Everyone enters the paused room.
  const queueTokens = (await enterFans(transports[0]!, concertId, fanTokens)).map((headers) => headers["x-queue-token"]!);

  global.gc?.();
  await sleep(1_000);
  const rssBefore = rssMiB(options.serverPid);

  // Open every stream; each resolves with the time it heard ADMITTED.
  const watchers: Client<typeof CoordinatorService>[] = transports.map((t) => createClient(CoordinatorService, t));
  const opened: Promise<void>[] = [];
  const abort = new AbortController();
  let resumedAt = 0;
  const admittedAfter: Promise<number>[] = [];
  // In waves of 500, as a crowd arrives (and as the page's reconnects, spread by their jitter, come back after a
  // deploy): 10,000 streams opened in the same instant each wait for their first status, and on a busy machine some
  // ran into the 5 s deadline between services.
  for (let wave = 0; wave < queueTokens.length; wave += 500) {
    const waveOpened: Promise<void>[] = [];
    queueTokens.slice(wave, wave + 500).forEach((queueToken, j) => {
      const i = wave + j;
      let markOpen!: () => void;
      waveOpened.push(new Promise<void>((resolve) => (markOpen = resolve)));
      const heard = (async () => {
        const stream = watchers[i % watchers.length]!.watchQueueStatus({}, { headers: { "x-queue-token": queueToken }, signal: abort.signal, timeoutMs: 0 });
        for await (const update of stream) {
          markOpen();
          if (update.status?.state === QueueState.ADMITTED) return performance.now() - resumedAt;
        }
        throw new Error("a watch stream ended before ADMITTED");
      })();
      heard.catch(() => markOpen());
      admittedAfter.push(heard);
    });
    await Promise.all(waveOpened);
    opened.push(...waveOpened);
  }
  await sleep(3_000);
  const rssOpen = rssMiB(options.serverPid);

  const redis = new Redis(options.redisUrl);
  // While the streams sit open: how many script calls (round trips) and how many commands inside Redis per second.
  const before = await redisCounts(redis);
  const windowMs = 5_000;
  await sleep(windowMs);
  const after = await redisCounts(redis);
  redis.disconnect();
  const perSecond = (n: number) => n / (windowMs / 1000);

  // Room for everyone, then resume: every stream should hear ADMITTED within about one refresh.
  await admin.setAdmissionPolicy({ concertId, policy: { maxActive: queueTokens.length + 1 } }, operator);
  resumedAt = performance.now();
  await admin.resumeAdmission({ concertId }, operator);
  const delays = (await Promise.all(admittedAfter)).sort((a, b) => a - b);
  abort.abort();
  return {
    streams: queueTokens.length,
    connections,
    rssBeforeMiB: rssBefore,
    rssOpenMiB: rssOpen,
    kibPerStream: ((rssOpen - rssBefore) * 1024) / queueTokens.length,
    redisScriptCallsPerSecond: perSecond(after.scripts - before.scripts),
    redisCommandsPerSecond: perSecond(after.commands - before.commands),
    admittedP50Ms: quantile(delays, 0.5),
    admittedP99Ms: quantile(delays, 0.99),
    allAdmittedMs: delays.at(-1)!,
  };
}
